"""Mutual TLS: `certfactory serve` over HTTPS asks for a client certificate, and an
agency presenting its head's registered certificate is that agency without an API key."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfactory import wiring
from certfactory.demo_agency import register_demo_agency
from certfactory.embedded import free_port
from certfactory.settings import Settings
from factory.tables import audit_events
from tests.conftest import certfactory_env
from tests.softca import file_batch


def _server_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "server.pem", folder / "server-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.integration
def test_an_agency_presenting_its_head_certificate_acts_for_itself_only(tmp_path: Path) -> None:
    """With its head's certificate BTC reads its request (200) and is refused BNV's (403,
    audited); without a certificate or key the call is 401."""
    settings = Settings(home=tmp_path / "var")
    ledger = wiring.ledger(settings)
    register_demo_agency(settings, ledger, "BTC")
    own = file_batch(ledger, tmp_path, "BTC", 1, seed=31)[0]
    other = file_batch(ledger, tmp_path, "BNV", 1, seed=32)[0]
    head = settings.resolved_home / "demo-agencies" / "BTC"
    server_cert, server_key = _server_certificate(tmp_path)
    port = free_port()
    env = certfactory_env(settings.home, CERTFACTORY_HTTP_ADDRESS=f"127.0.0.1:{port}",
                          CERTFACTORY_HTTP_TLS_CERT=str(server_cert), CERTFACTORY_HTTP_TLS_KEY=str(server_key),
                          CERTFACTORY_HTTP_TLS_CLIENT_CA=str(head / "head-certificate.pem"))
    log = tmp_path / "serve.log"
    server = subprocess.Popen([sys.executable, "-m", "certfactory.cli", "serve"], env=env, cwd=tmp_path,
                              stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    try:
        anonymous = httpx.Client(verify=ssl.create_default_context(cafile=server_cert), timeout=5)
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous.get(f"{url}/openapi.json")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail(f"serve did not start over TLS:\n{log.read_text()}")
                time.sleep(0.2)
        assert anonymous.get(f"{url}/requests/{own}").status_code == 401
        anonymous.close()
        with_certificate = ssl.create_default_context(cafile=server_cert)
        with_certificate.load_cert_chain(head / "head-certificate.pem", head / "head-key.pem")
        with httpx.Client(verify=with_certificate, timeout=5) as agency:
            mine = agency.get(f"{url}/requests/{own}")
            assert mine.status_code == 200 and mine.json()["agency_code"] == "BTC", mine.text
            theirs = agency.get(f"{url}/requests/{other}")
            assert theirs.status_code == 403 and "another agency" in theirs.json()["detail"]
    finally:
        server.terminate()
        server.wait(20)
    with ledger.engine.connect() as connection:
        refused = list(connection.execute(audit_events.select().where(audit_events.c.kind == "access_refused")))
    assert len(refused) == 2 and '"caller": "agency:BTC"' in refused[1].detail
    assert "Traceback" not in log.read_text()
