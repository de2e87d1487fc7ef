"""End to end over HTTP and the CRL, on certificates the real pipeline issued
(redis-server, dramatiq workers, SoftHSM2 devices and CA token, `certfactory serve`):
an agency files and activates over HTTP; the workers' debounced CRL puts a signed
certificate on hold and releases it at publication; `certfactory revoke` re-signs it on
the CA token; OpenSSL, as a relying party, refuses held and revoked certificates and
accepts published ones; serve serves it and re-signs it after an HTTP revocation."""

from __future__ import annotations

import hashlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certfactory.demo import DEMO_AGENCY, write_batch
from certfactory.demo_agency import register_demo_agency
from certfactory.embedded import free_port
from certfactory.settings import Settings
from factory import access
from factory.endorsement import sign_detached
from factory.ledger import Ledger
from schemas.status import RequestState as S
from tests.conftest import certfactory_env, run_cli
from tests.pki import lint_rfc5280

pytestmark = pytest.mark.integration

COUNT = 3


def _wait_for(what: str, check: Any, timeout: float = 120.0, log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.3)
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in sorted(log.glob("*.log"))) if log else ""
    pytest.fail(f"timed out waiting for {what}\n{logs}")


def _crl(home: Path) -> x509.CertificateRevocationList | None:
    path = home / "repository" / "crl" / "issuing.crl"
    return x509.load_der_x509_crl(path.read_bytes()) if path.exists() else None


def _number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def _reasons(crl: x509.CertificateRevocationList) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for entry in crl:
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.value
        except x509.ExtensionNotFound:
            reason = None
        found[f"{entry.serial_number:032x}"] = reason
    return found


def _openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


def _verify(home: Path, certificate: Path) -> subprocess.CompletedProcess[str]:
    return _openssl("verify", "-crl_check", "-CAfile", str(home / "repository" / "ca" / "chain.pem"),
                    "-CRLfile", str(home / "repository" / "crl" / "issuing.pem"), str(certificate))


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory, tools: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Three P-256 requests through the real pipeline, filed and activated over HTTP on
    `certfactory serve` with the agency's key: two published, one left awaiting activation
    (on hold). Keeps the CRLs the workers wrote, then stops them; serve runs on."""
    base = tmp_path_factory.mktemp("crl")
    home = base / "var"
    run_cli(home, "init")
    ledger = Ledger.connect(f"sqlite:///{home / 'ledger.sqlite'}")
    head, head_key = register_demo_agency(Settings(home=home), ledger, DEMO_AGENCY)
    key = access.create_api_key(ledger, DEMO_AGENCY, dt.datetime.now(dt.UTC))
    env = certfactory_env(home, CERTFACTORY_DRAMATIQ_METRICS_ADDRESS=f"127.0.0.1:{free_port()}")
    workers = subprocess.Popen([sys.executable, "-m", "certfactory.cli", "worker"], env=env, cwd=base,
                               stdout=(base / "worker.out").open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    logs = home / "run" / "logs"
    port = free_port()
    server = None
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def count(state: S) -> int:
        return ledger.state_counts()[state]

    def listening() -> bool:
        try:
            return http.get("/openapi.json").status_code == 200
        except httpx.TransportError:
            return False

    try:
        _wait_for("the embedded redis-server", (home / "run" / "redis.url").exists, 60)
        server = subprocess.Popen([sys.executable, "-m", "certfactory.cli", "serve"], cwd=base,
                                  env={**env, "CERTFACTORY_HTTP_ADDRESS": f"127.0.0.1:{port}"},
                                  stdout=(base / "serve.log").open("wb"), stderr=subprocess.STDOUT)
        _wait_for("certfactory serve", listening, 60)
        batch = write_batch(base / "batch", COUNT, "ecdsa-p256", seed=71)
        filed = http.post("/batches", files={"file": (batch.name, batch.read_bytes()), "signature": (
            batch.name + ".p7s", sign_detached(batch.read_bytes(), head, head_key))})
        assert filed.status_code == 202 and filed.json()["accepted"] == COUNT, filed.text
        _wait_for("every request awaiting activation", lambda: count(S.awaiting_activation) == COUNT, log=logs)
        ids = ledger.request_ids()
        serials = [ledger.certificate_for_request(i).serial for i in ids]  # type: ignore[union-attr]
        held_crl = _wait_for("the workers' CRL holding every signed certificate",
                             lambda: (c := _crl(home)) is not None and set(serials) <= set(_reasons(c)) and c, 60)
        for request_id in ids[1:]:
            activated = http.post(f"/requests/{request_id}/activation", json={})
            assert activated.status_code == 200 and activated.json()["activated"] is True, activated.text
        _wait_for("two published", lambda: count(S.published) == 2, log=logs)
        released_crl = _wait_for("the workers' CRL releasing the published ones",
                                 lambda: (c := _crl(home)) is not None and set(_reasons(c)) == {serials[0]} and c,
                                 60)
    except BaseException:
        if server is not None:
            server.kill()
        raise
    finally:
        os.killpg(workers.pid, signal.SIGTERM)
        workers.wait(60)
    held, revoked, published = serials
    held_pem = base / f"{held}.pem"  # not in the repository: it is not published
    held_pem.write_bytes(x509.load_der_x509_certificate(
        ledger.certificate_for_serial(held).der).public_bytes(Encoding.PEM))  # type: ignore[union-attr]
    yield {"home": home, "base": base, "ledger": ledger, "held": held, "revoked": revoked, "published": published,
           "held_pem": held_pem, "held_crl": held_crl, "released_crl": released_crl, "http": http,
           "request_of": dict(zip(serials, ids, strict=True))}
    http.close()
    server.terminate()
    server.wait(20)
    ledger.close()


def test_the_workers_crl_puts_signed_certificates_on_hold_and_publication_releases_them(
        issued: dict[str, Any]) -> None:
    """Signed, not yet activated: certificateHold; once published: no longer listed — both
    from the debounced refresh actor on the CA pool, signed by the issuing key on the token."""
    held_crl, released_crl = issued["held_crl"], issued["released_crl"]
    assert set(_reasons(held_crl).values()) == {"certificateHold"}
    assert _reasons(released_crl) == {issued["held"]: "certificateHold"}
    assert _number(released_crl) > _number(held_crl)
    issuing = x509.load_pem_x509_certificate((issued["home"] / "repository" / "ca" / "issuing.pem").read_bytes())
    assert released_crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
    assert released_crl.next_update_utc > released_crl.last_update_utc


def test_certificates_carry_the_crl_url_and_pass_pkilint(issued: dict[str, Any]) -> None:
    """The CRL distribution point names the repository's crl/issuing.crl; pkilint finds nothing."""
    pem = (issued["home"] / "repository" / "certs" / f"{issued['published']}.pem").read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    urls = [name.value for point in points for name in point.full_name or []]
    assert urls == ["http://127.0.0.1:8080/repository/crl/issuing.crl"]
    assert lint_rfc5280(pem) == []


def test_revoke_re_signs_the_crl_which_openssl_verifies_against_the_issuing_ca(issued: dict[str, Any]) -> None:
    """`certfactory revoke SERIAL --reason` records who and why and re-signs the CRL on the
    CA token; `openssl crl -verify` accepts it and pkilint's CRL lint finds nothing."""
    home = issued["home"]
    done = run_cli(home, "revoke", issued["revoked"].upper(), "--reason", "keyCompromise", "--note", "token lost",
                   "--json")
    result = json.loads(done.stdout)
    assert result["reason"] == "keyCompromise" and result["already"] is False
    assert result["crl"]["crl_number"] > _number(issued["released_crl"])
    der = home / "repository" / "crl" / "issuing.crl"
    checked = _openssl("crl", "-verify", "-inform", "DER", "-in", str(der), "-noout",
                       "-CAfile", str(home / "repository" / "ca" / "issuing.pem"))
    assert checked.returncode == 0 and "verify OK" in checked.stdout + checked.stderr, checked.stderr
    lint = subprocess.run([str(Path(sys.executable).parent / "lint_crl"), "lint", "-t", "CRL", "-p", "PKIX",
                           "-s", "WARNING", str(der)], capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout.strip() == "", lint.stdout
    trail = issued["ledger"].audit_trail(issued["request_of"][issued["revoked"]])
    moved = [event for event in trail if event.to_state == "revoked"]
    assert len(moved) == 1 and moved[0].from_state == "published"
    assert json.loads(moved[0].detail)["detail"] == "token lost"
    assert json.loads(moved[0].detail)["by"].startswith("operator:")


def test_openssl_refuses_the_revoked_and_the_held_certificate_and_accepts_the_published_one(
        issued: dict[str, Any]) -> None:
    """`openssl verify -crl_check` with the chain and the current CRL."""
    home, certs = issued["home"], issued["home"] / "repository" / "certs"
    assert _reasons(_crl(home)) == {issued["revoked"]: "keyCompromise",  # type: ignore[arg-type]
                                    issued["held"]: "certificateHold"}
    for path, refused in ((certs / f"{issued['revoked']}.pem", True), (issued["held_pem"], True),
                          (certs / f"{issued['published']}.pem", False)):
        result = _verify(home, path)
        assert (result.returncode != 0) is refused, (path.name, result.stdout, result.stderr)
        assert ("certificate revoked" in result.stdout + result.stderr) is refused, result.stderr


def test_revoke_refuses_bad_input_with_a_message(issued: dict[str, Any]) -> None:
    """An unknown reason, or both SERIAL and --agency: a message, no traceback, nothing
    revoked (bad and unknown serials: test_revocation)."""
    home = issued["home"]
    for args, message in ((("revoke", issued["published"], "--reason", "stolen"), "RFC 5280 reasons"),
                          (("revoke", issued["published"], "--agency", DEMO_AGENCY, "--reason", "superseded"),
                           "either SERIAL or --agency")):
        done = run_cli(home, *args, check=False)
        assert done.returncode != 0 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert _verify(home, home / "repository" / "certs" / f"{issued['published']}.pem").returncode == 0


def test_serve_serves_the_crl_and_re_signs_it_after_an_http_revocation(issued: dict[str, Any]) -> None:
    """`certfactory serve` serves the current CRL and /metrics; after the agency revokes
    over HTTP the served CRL lists the certificate within seconds and the search drops it."""
    http: httpx.Client = issued["http"]

    def served() -> x509.CertificateRevocationList:
        answer = http.get("/repository/crl/issuing.crl")
        assert answer.status_code == 200 and answer.headers["content-type"] == "application/pkix-crl"
        return x509.load_der_x509_crl(answer.content)

    assert _number(served()) == _number(_crl(issued["home"]))  # type: ignore[arg-type]
    record = json.loads(issued["ledger"].get_request(issued["request_of"][issued["published"]]).record)
    digest = hashlib.sha256(record["citizen_id"].encode()).hexdigest()
    found = http.get("/repository/search", params={"q": digest}).json()
    assert [r["serial"] for r in found["results"]] == [issued["published"]]
    revoked = http.post(f"/certificates/{issued['published']}/revocation", json={"reason": "superseded"})
    assert revoked.status_code == 200 and revoked.json()["revoked_by"].startswith(f"agency:{DEMO_AGENCY}")
    after = _wait_for("the CRL listing the certificate revoked over HTTP",
                      lambda: issued["published"] in _reasons(c := served()) and c, 30)
    assert _reasons(after)[issued["published"]] == "superseded"
    assert http.get("/repository/search", params={"q": digest}).json()["count"] == 0
    metrics = http.get("/metrics").text
    assert "certfactory_requests{" in metrics and "certfactory_stage_duration_seconds_count{" in metrics, \
        metrics[:2000]
    assert "Traceback" not in (issued["base"] / "serve.log").read_text()


def test_revoking_an_agency_revokes_its_live_certificates_at_once(issued: dict[str, Any]) -> None:
    """A dissolved agency: every live certificate revoked in one call, the CRL re-signed."""
    home = issued["home"]
    done = json.loads(run_cli(home, "revoke", "--agency", DEMO_AGENCY, "--reason", "cessationOfOperation",
                              "--json").stdout)
    assert [r["serial"] for r in done["revoked"]] == [issued["held"]]  # the others were revoked before
    assert _reasons(_crl(home))[issued["held"]] == "cessationOfOperation"  # type: ignore[arg-type]
    assert _verify(home, issued["held_pem"]).returncode != 0
    assert issued["ledger"].state_counts()[S.revoked] == COUNT
