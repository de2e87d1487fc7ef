"""A software CA and real ledger rows, for tests that need signed certificates in the
ledger but not the CA token (the token path is tested with `certfactory demo`)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from factory import ca
from factory.intake import check_batch, record_batch
from factory.ledger import Ledger
from factory.publication import Repository, serial_hex
from factory.synthetic import generate_requests
from schemas.request import RequestRecord
from schemas.status import RequestState as S

PATH = list(S)[:8]  # received … published
POLICY = ca.Policy(organization="certfactory Test CA", certificate_days=365, policy_oid="1.3.6.1.5.5.7.13.1",
                   repository_url="http://127.0.0.1:1/repository", allowed_key_types=("ecdsa-p256",))


@dataclass(frozen=True)
class SoftCA:
    """Root and issuing CA with their keys in memory."""

    root: x509.Certificate
    issuing: x509.Certificate
    issuing_key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls) -> SoftCA:
        """A fresh two-level hierarchy built with factory.ca's CA profile."""
        now = dt.datetime.now(dt.UTC)
        root_key, issuing_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        root_name = ca.ca_name(POLICY.organization, "Test Root CA")
        issuing_name = ca.ca_name(POLICY.organization, "Test Issuing CA")
        root = ca.sign(ca.ca_builder(root_name, root_name, root_key.public_key(), root_key.public_key(), now, 2, 1),
                       root_key)
        issuing = ca.sign(ca.ca_builder(issuing_name, root_name, issuing_key.public_key(), root_key.public_key(),
                                        now, 2, 0), root_key)
        return cls(root, issuing, issuing_key)


def file_batch(ledger: Ledger, folder: Path, agency_code: str, count: int, seed: int) -> list[str]:
    """Record a batch of ``count`` synthetic requests for an agency; their ids."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{agency_code}-{seed}.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in generate_requests(count, seed=seed,
                                                                                      key_type="ecdsa-p256")))
    checked = check_batch(ledger, path, agency_code, now=dt.datetime.now(dt.UTC), allowed_key_types=("ecdsa-p256",))
    try:
        return record_batch(ledger, checked, {"kind": "test", "note": "filed by tests/softca.py"})
    finally:
        checked.close()


def advance(ledger: Ledger, request_id: str, target: S) -> None:
    """Move a request along the path, one compare-and-set at a time, up to ``target``."""
    state = S(ledger.get_request(request_id).state)  # type: ignore[union-attr]
    for new in PATH[PATH.index(state) + 1:PATH.index(target) + 1]:
        ledger.transition(request_id, state, new)
        state = new


def issue(ledger: Ledger, authority: SoftCA, request_id: str, *, publish: bool) -> str:
    """Sign a certificate for the request (on hold) and, if asked, publish it; its serial."""
    row = ledger.get_request(request_id)
    assert row is not None
    record = RequestRecord.model_validate_json(row.record)
    public_der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    advance(ledger, request_id, S.key_generated)
    reserved = ledger.reserve_certificate(request_id, serial_hex(ca.new_serial()))
    now = dt.datetime.now(dt.UTC)
    certificate = ca.sign(ca.subscriber_builder(record, public_der, int(reserved.serial, 16), authority.issuing, now,
                                                POLICY), authority.issuing_key)
    with ledger.transaction() as connection:
        ledger.store_certificate(reserved.serial, certificate.public_bytes(Encoding.DER),
                                 certificate.not_valid_before_utc, certificate.not_valid_after_utc, connection)
    advance(ledger, request_id, S.signed)
    if publish:
        advance(ledger, request_id, S.activated)
        with ledger.transaction() as connection:
            ledger.mark_published(reserved.serial, now, connection)
        advance(ledger, request_id, S.published)
    return str(reserved.serial)


def certificate(ledger: Ledger, serial: str) -> x509.Certificate:
    """The signed certificate with this serial."""
    row = ledger.certificate_for_serial(serial)
    assert row is not None and row.der is not None
    return x509.load_der_x509_certificate(row.der)


def publish_index(ledger: Ledger, repository_root: Path) -> None:
    """Write the repository's index.json from the ledger, as the publish stage does."""
    Repository(repository_root).write_index(ledger.index_entries())


def full_name(ledger: Ledger, request_id: str) -> str:
    """The subscriber's name as filed."""
    return str(json.loads(ledger.get_request(request_id).record)["full_name"])  # type: ignore[union-attr]
