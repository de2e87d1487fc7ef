"""The whole pipeline on the real parts: redis-server, dramatiq workers, SoftHSM2 tokens,
SQLite and PostgreSQL ledgers. Every certificate it issues is verified like a relying
party would, and every device is opened like a subscriber would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from factory.ledger import Ledger
from tests.conftest import run_cli
from tests.pki import lint_rfc5280

SOFTHSM2 = "/usr/lib/softhsm/libsofthsm2.so"

pytestmark = pytest.mark.integration


def _published(home: Path) -> list[Path]:
    return sorted((home / "repository" / "certs").glob("*.pem"))


def _openssl_verify(home: Path, certificate: Path) -> subprocess.CompletedProcess[str]:
    ca = home / "repository" / "ca"
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca / "root.pem"), "-untrusted", str(ca / "issuing.pem"),
                           str(certificate)], capture_output=True, text=True)


def _pkcs11_tool(device: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOFTHSM2_CONF": str(device / "softhsm2.conf")}
    return subprocess.run(["pkcs11-tool", "--module", SOFTHSM2, *args], env=env, capture_output=True, text=True)


def _device_of(home: Path, certificate: x509.Certificate) -> str:
    ledger = Ledger.connect(f"sqlite:///{home / 'ledger.sqlite'}")
    row = ledger.certificate_for_serial(format(certificate.serial_number, "032x"))
    assert row is not None
    request = ledger.get_request(row.request_id)
    ledger.close()
    assert request is not None and request.device_serial
    return str(request.device_serial)


def _check_device(home: Path, certificate_pem: Path, tmp_path: Path) -> None:
    certificate = x509.load_pem_x509_certificate(certificate_pem.read_bytes())
    serial = _device_of(home, certificate)
    device = home / "devices" / serial
    envelope_path = home / "pin-envelopes" / f"{serial}.json"
    assert stat.S_IMODE(envelope_path.stat().st_mode) == 0o600
    pin = json.loads(envelope_path.read_text())["user_pin"]
    listing = _pkcs11_tool(device, "--login", "--pin", pin, "--list-objects", "--type", "privkey")
    assert listing.returncode == 0, listing.stderr
    assert "sensitive" in listing.stdout and "never extractable" in listing.stdout, listing.stdout
    data = tmp_path / "document.txt"
    data.write_bytes("Quyết định số 01/2026".encode())
    signature = tmp_path / "document.sig"
    mechanism = "SHA256-RSA-PKCS" if isinstance(certificate.public_key(), rsa.RSAPublicKey) else "ECDSA-SHA256"
    signed = _pkcs11_tool(device, "--login", "--pin", pin, "--sign", "--mechanism", mechanism,
                          "--input-file", str(data), "--output-file", str(signature), "--signature-format", "openssl")
    assert signed.returncode == 0, signed.stderr
    public = certificate.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        public.verify(signature.read_bytes(), data.read_bytes(), padding.PKCS1v15(), hashes.SHA256())
    else:
        assert isinstance(public, ec.EllipticCurvePublicKey)
        public.verify(signature.read_bytes(), data.read_bytes(), ec.ECDSA(hashes.SHA256()))
    stored = _pkcs11_tool(device, "--login", "--pin", pin, "--list-objects", "--type", "cert")
    assert stored.stdout.count("Certificate Object") == 3, stored.stdout  # subscriber, issuing, root


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_demo_publishes_every_certificate_on_each_ledger(database: str, tmp_path: Path, request: pytest.FixtureRequest,
                                                         tools: dict[str, str]) -> None:
    """`certfactory demo` issues a batch through all six stages and every certificate it
    publishes verifies against the repository's CA certificates and passes RFC 5280 lint."""
    home = tmp_path / "var"
    extra = {"CERTFACTORY_DATABASE_URL": request.getfixturevalue("postgres_url")} if database == "postgresql" else {}
    result = run_cli(home, "demo", "--count", "6", "--key-type", "ecdsa-p256", "--json", **extra)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["states"]["published"] == 6
    certificates = _published(home)
    assert len(certificates) == 6
    for certificate in certificates:
        verified = _openssl_verify(home, certificate)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert lint_rfc5280(certificate.read_bytes()) == []
    index = json.loads((home / "repository" / "index.json").read_text())
    assert len(index["certificates"]) == 6


def test_rsa_device_holds_a_sensitive_key_matching_its_published_certificate(tmp_path: Path,
                                                                           tools: dict[str, str]) -> None:
    """A packaged RSA-2048 device, opened with pkcs11-tool and its envelope PIN, holds a
    sensitive never-extractable key whose signature verifies with its published certificate."""
    home = tmp_path / "var"
    run_cli(home, "demo", "--count", "2", "--key-type", "rsa2048", "--json")
    certificates = _published(home)
    assert len(certificates) == 2
    for certificate in certificates:
        assert _openssl_verify(home, certificate).returncode == 0
        assert lint_rfc5280(certificate.read_bytes()) == []
        _check_device(home, certificate, tmp_path)


def test_no_pin_reaches_the_ledger_logs_or_broker(tmp_path: Path, tools: dict[str, str]) -> None:
    """After a full run, no device or CA PIN appears in the ledger file, a worker log or
    Redis's append-only file: PINs live only in 0600 envelope and PIN files."""
    home = tmp_path / "var"
    run_cli(home, "demo", "--count", "3", "--key-type", "ecdsa-p256")
    pins = {(home / "ca" / name).read_text().strip() for name in ("user.pin", "so.pin")}
    for envelope in (home / "pin-envelopes").glob("*.json"):
        assert stat.S_IMODE(envelope.stat().st_mode) == 0o600
        data = json.loads(envelope.read_text())
        pins |= {data["user_pin"], data["so_pin"]}
    assert len(pins) == 2 + 2 * 3
    haystacks = [*home.glob("ledger.sqlite*"), *(home / "run" / "logs").glob("*.log"),
                 *(home / "run" / "redis").rglob("*.aof*")]
    assert any(p.name.endswith(".aof") or ".aof." in p.name for p in haystacks), "no AOF found to check"
    for path in haystacks:
        content = path.read_bytes()
        for pin in pins:
            assert pin.encode() not in content, f"a PIN appears in {path}"

