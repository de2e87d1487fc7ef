"""Revocation and the CRL as a view of the ledger, with a software CA (the CA token,
the real pipeline and OpenSSL: test_crl)."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pytest
from cryptography import x509

from factory import revocation
from factory.ledger import Ledger
from factory.revocation import RevocationRefused
from schemas.status import RequestState as S
from tests.softca import SoftCA, file_batch, issue

NOW = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)

def _reasons(crl: x509.CertificateRevocationList) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for entry in crl:
        try:
            found[f"{entry.serial_number:032x}"] = entry.extensions.get_extension_for_class(x509.CRLReason).value \
                .reason.value
        except x509.ExtensionNotFound:
            found[f"{entry.serial_number:032x}"] = None
    return found


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    """An empty SQLite ledger."""
    return Ledger.connect(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


def test_reasons_are_rfc_5280_names_and_hold_is_not_one_a_caller_may_give() -> None:
    """keyCompromise is taken in the usual spellings; certificateHold and nonsense are refused."""
    assert revocation.reason_flag("keyCompromise") is x509.ReasonFlags.key_compromise
    assert revocation.reason_flag("key_compromise") is x509.ReasonFlags.key_compromise
    for bad in ("certificateHold", "removeFromCRL", "stolen"):
        with pytest.raises(RevocationRefused, match="RFC 5280 reasons"):
            revocation.reason_flag(bad)


def test_the_http_api_offers_exactly_the_reasons_revoke_takes() -> None:
    """The OpenAPI enum of reasons and factory.revocation's list are the same names."""
    from schemas.api import RevocationReason

    assert {reason.value for reason in RevocationReason} == set(revocation.REASONS)


def test_revoking_twice_records_one_revocation_and_one_audit_event(ledger: Ledger, tmp_path: Path) -> None:
    """The second call returns the first revocation; the request moved to revoked once, with who and why."""
    authority = SoftCA.create()
    request_id = file_batch(ledger, tmp_path, "BTC", 1, seed=3)[0]
    serial = issue(ledger, authority, request_id, publish=True)
    first = revocation.revoke(ledger, serial.upper(), "affiliationChanged", "operator:lan", NOW, "left the unit")
    second = revocation.revoke(ledger, serial, "keyCompromise", "operator:binh", NOW)
    assert (first.already, second.already) == (False, True)
    assert second.reason == "affiliationChanged" and second.revoked_by == "operator:lan"
    assert ledger.get_request(request_id).state == "revoked"  # type: ignore[union-attr]
    assert ledger.certificate_for_serial(serial).status == "revoked"  # type: ignore[union-attr]
    moves = [e for e in ledger.audit_trail(request_id) if e.to_state == "revoked"]
    assert len(moves) == 1 and moves[0].from_state == "published"
    assert json.loads(moves[0].detail) == {"serial": serial, "reason": "affiliationChanged", "by": "operator:lan",
                                           "detail": "left the unit"}


def test_an_unknown_or_unsigned_certificate_cannot_be_revoked(ledger: Ledger, tmp_path: Path) -> None:
    """A serial the CA never reserved, or one reserved but not signed, is refused with the reason."""
    request_id = file_batch(ledger, tmp_path, "BTC", 1, seed=4)[0]
    with pytest.raises(RevocationRefused, match="no certificate"):
        revocation.revoke(ledger, "ab" * 16, "superseded", "operator", NOW)
    ledger.reserve_certificate(request_id, "cd" * 16)
    with pytest.raises(RevocationRefused, match="not signed yet"):
        revocation.revoke(ledger, "cd" * 16, "superseded", "operator", NOW)
    with pytest.raises(RevocationRefused, match="not a certificate serial"):
        revocation.revoke(ledger, "not-hex", "superseded", "operator", NOW)


def test_crl_lists_revoked_with_reason_held_as_certificate_hold_and_omits_published(ledger: Ledger,
                                                                                   tmp_path: Path) -> None:
    """The CRL is a view of the ledger: reasons per entry, AKI of the issuing CA, fresh numbers."""
    authority = SoftCA.create()
    ids = file_batch(ledger, tmp_path, "BTC", 4, seed=5)
    held = issue(ledger, authority, ids[0], publish=False)
    revoked = issue(ledger, authority, ids[1], publish=True)
    published = issue(ledger, authority, ids[2], publish=True)
    unspecified = issue(ledger, authority, ids[3], publish=True)
    revocation.revoke(ledger, revoked, "keyCompromise", "operator", NOW)
    revocation.revoke(ledger, unspecified, "unspecified", "operator", NOW)
    crl = revocation.build_crl(ledger, authority.issuing, authority.issuing_key, NOW, NOW + dt.timedelta(hours=6))
    assert _reasons(crl) == {held: "certificateHold", revoked: "keyCompromise", unspecified: None}
    assert published not in _reasons(crl)
    assert crl.is_signature_valid(authority.issuing_key.public_key())
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = authority.issuing.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest and crl.next_update_utc == NOW + dt.timedelta(hours=6)
    again = revocation.build_crl(ledger, authority.issuing, authority.issuing_key, NOW, NOW + dt.timedelta(hours=6))
    numbers = [c.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number for c in (crl, again)]
    assert numbers[1] > numbers[0]
    with pytest.raises(Exception, match="not the issuing CA certificate's key"):
        revocation.build_crl(ledger, authority.issuing, SoftCA.create().issuing_key, NOW, NOW + dt.timedelta(1))


def test_crl_numbers_stay_unique_under_concurrent_writers(ledger: Ledger) -> None:
    """Four threads taking numbers at once never get the same one (compare-and-set)."""
    taken: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        for _ in range(10):
            number = revocation.next_crl_number(ledger, NOW)
            with lock:
                taken.append(number)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(taken) == list(range(1, 41))


def test_an_older_crl_never_replaces_a_newer_one_in_the_repository(ledger: Ledger, tmp_path: Path) -> None:
    """A slow process writing CRL number n after another wrote n+1 leaves n+1 in place."""
    authority = SoftCA.create()
    older, newer = (revocation.build_crl(ledger, authority.issuing, authority.issuing_key, NOW,
                                         NOW + dt.timedelta(hours=1)) for _ in range(2))
    revocation.write_crl(tmp_path / "repository", newer)
    path = revocation.write_crl(tmp_path / "repository", older)
    assert x509.load_der_x509_crl(path.read_bytes()) == newer
    assert x509.load_pem_x509_crl((path.parent / "issuing.pem").read_bytes()) == newer


def test_revoking_an_agency_revokes_its_certificates_and_stops_its_unsigned_requests(ledger: Ledger,
                                                                                    tmp_path: Path) -> None:
    """A dissolved agency: published and held certificates revoked, a request not yet
    signed stopped (none is issued later); another agency's certificate untouched."""
    authority = SoftCA.create()
    ids = file_batch(ledger, tmp_path, "BTC", 3, seed=6)
    published = issue(ledger, authority, ids[0], publish=True)
    held = issue(ledger, authority, ids[1], publish=False)
    other = issue(ledger, authority, file_batch(ledger, tmp_path, "BNV", 1, seed=7)[0], publish=True)
    outcome = revocation.revoke_agency(ledger, "BTC", "cessationOfOperation", "operator:lan", NOW, "merged")
    assert sorted(r.serial for r in outcome.revoked) == sorted([published, held])
    assert outcome.stopped_requests == [ids[2]]
    assert {ledger.get_request(i).state for i in ids} == {S.revoked.value}  # type: ignore[union-attr]
    assert ledger.certificate_for_serial(other).status == "published"  # type: ignore[union-attr]
    again = revocation.revoke_agency(ledger, "BTC", "cessationOfOperation", "operator:lan", NOW)
    assert (again.revoked, again.stopped_requests) == ([], [])
