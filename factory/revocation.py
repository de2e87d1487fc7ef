"""Revocation and the issuing CA's CRL.

A certificate's status follows its request: signed but not yet published it is on hold
(listed with reason certificateHold), published it is good (absent), revoked it is
listed with its RFC 5280 reason. The ledger holds revocations and the CRL number; the
CRL is a view of the ledger signed by the issuing CA key, on a token or not.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import os
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import Column, DateTime, Engine, Integer, String, Table, Text, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from factory.errors import PermanentError, PolicyError, StateConflict
from factory.ledger import Ledger
from factory.tables import certificates, metadata, requests
from schemas.status import RequestState as S

revocations = Table(
    "revocations", metadata,
    Column("serial", String(40), primary_key=True),
    Column("request_id", String(32), nullable=False, index=True),
    Column("reason", String(32), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Column("revoked_by", String(128), nullable=False),
    Column("detail", Text, nullable=True),
)

# One row (id 1): the last CRL number handed out, moved by compare-and-set.
crl_state = Table(
    "crl_state", metadata,
    Column("id", Integer, primary_key=True),
    Column("crl_number", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Reasons a revocation may carry: RFC 5280 §5.3.1 less certificateHold (the hold is the
# pipeline's own status, released by publication) and removeFromCRL (delta CRLs only).
REASONS: dict[str, x509.ReasonFlags] = {
    flag.value: flag for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.certificate_hold, x509.ReasonFlags.remove_from_crl)
}
# A request in one of these may still end in a certificate, or has one: revocation stops it.
REVOCABLE_STATES = tuple(state for state in S if state not in (S.rejected, S.revoked))
CRL_VALIDITY = dt.timedelta(hours=24)

_ready: weakref.WeakSet[Engine] = weakref.WeakSet()


class RevocationRefused(PermanentError):
    """(A PermanentError) The revocation cannot be made as asked: unknown or unsigned
    certificate, a reason RFC 5280 lacks. The message says which."""

    def __init__(self, serial: str | None, message: str) -> None:
        super().__init__(message)
        self.serial = serial


@dataclass(frozen=True)
class Revocation:
    """A certificate's revocation as recorded; ``already`` when an earlier call made it."""

    serial: str
    request_id: str
    reason: str
    revoked_at: dt.datetime
    revoked_by: str
    already: bool = False

    @classmethod
    def recorded(cls, row: Any) -> Revocation:
        """The revocation a ledger row holds (made by an earlier call)."""
        return cls(row.serial, row.request_id, row.reason, _aware(row.revoked_at), row.revoked_by, already=True)


@dataclass(frozen=True)
class AgencyRevocation:
    """What revoking an agency did: certificates revoked, unsigned requests stopped."""

    revoked: list[Revocation]
    stopped_requests: list[str]


def ensure_tables(ledger: Ledger) -> None:
    """Create this module's tables on the ledger if missing (once per engine)."""
    if ledger.engine not in _ready:
        metadata.create_all(ledger.engine, tables=[revocations, crl_state])
        _ready.add(ledger.engine)


def _aware(at: dt.datetime) -> dt.datetime:
    return at if at.tzinfo else at.replace(tzinfo=dt.UTC)  # SQLite hands back naive UTC


def reason_flag(reason: str) -> x509.ReasonFlags:
    """The RFC 5280 reason named by ``reason`` (``keyCompromise``, ``key_compromise``, …)."""
    by_name = {name.lower(): flag for name, flag in REASONS.items()}
    wanted = reason.replace("_", "").replace("-", "").strip().lower()
    if wanted not in by_name:
        raise RevocationRefused(None, f"unknown revocation reason {reason!r}; RFC 5280 reasons: {', '.join(REASONS)}")
    return by_name[wanted]


def normalise_serial(serial: str) -> str:
    """A serial as the ledger and the repository write it: 32 lower-case hex digits."""
    text = serial.strip().lower().replace(":", "")
    value = int(text, 16) if re.fullmatch(r"[0-9a-f]{1,40}", text) else 0
    if not 0 < value < 2 ** 159:
        raise RevocationRefused(serial, f"serial {serial!r} is not a certificate serial: 1 to 2^159-1, in hex")
    return f"{value:032x}"


def _revoke_in(ledger: Ledger, connection: Connection, serial: str, flag: x509.ReasonFlags, by: str,
               now: dt.datetime, detail: str | None) -> Revocation:
    if known := connection.execute(select(revocations).where(revocations.c.serial == serial)).first():
        return Revocation.recorded(known)
    certificate = connection.execute(select(certificates).where(certificates.c.serial == serial)).first()
    if certificate is None:
        raise RevocationRefused(serial, f"no certificate with serial {serial}")
    if certificate.der is None:
        raise RevocationRefused(serial, f"certificate {serial} is not signed yet: there is nothing to revoke")
    connection.execute(insert(revocations).values(serial=serial, request_id=certificate.request_id,
                                                  reason=flag.value, revoked_at=now, revoked_by=by, detail=detail))
    connection.execute(update(certificates).where(certificates.c.serial == serial).values(status="revoked"))
    state = connection.execute(select(requests.c.state).where(requests.c.id == certificate.request_id)).scalar()
    if state is not None and S(state) in REVOCABLE_STATES:
        # Read and moved in one transaction: the compare-and-set names the state just read.
        ledger.transition(certificate.request_id, S(state), S.revoked, connection=connection,
                          detail={"serial": serial, "reason": flag.value, "by": by, "detail": detail})
    return Revocation(serial, certificate.request_id, flag.value, now, by)


def revoke(ledger: Ledger, serial_hex: str, reason: str, by: str, now: dt.datetime,
           detail: str | None = None) -> Revocation:
    """Revoke one certificate (idempotent: a second call returns the first revocation).

    The certificate's status becomes ``revoked`` and its request moves to ``revoked``
    from wherever it was on the path, with an audit event naming who and why."""
    ensure_tables(ledger)
    flag, serial = reason_flag(reason), normalise_serial(serial_hex)
    for attempt in (1, 2, 3):
        try:
            with ledger.transaction() as connection:
                return _revoke_in(ledger, connection, serial, flag, by, now, detail)
        except (IntegrityError, StateConflict):  # a concurrent revocation or stage moved it: read again
            if attempt == 3:
                raise
    raise AssertionError("unreachable")


def revoke_agency(ledger: Ledger, agency_code: str, reason: str, by: str, now: dt.datetime,
                  detail: str | None = None) -> AgencyRevocation:
    """Revoke every signed, unrevoked certificate of an agency in one transaction (a
    merged or dissolved agency), and stop its requests not yet signed so none is issued later."""
    ensure_tables(ledger)
    flag = reason_flag(reason)
    note = {"agency_code": agency_code, "reason": flag.value, "by": by, "detail": detail}
    with ledger.transaction() as connection:
        serials = connection.execute(
            select(certificates.c.serial).join(requests, requests.c.id == certificates.c.request_id)
            .where(requests.c.agency_code == agency_code, certificates.c.der.is_not(None),
                   certificates.c.status != "revoked").order_by(certificates.c.serial)).scalars().all()
        revoked = [_revoke_in(ledger, connection, serial, flag, by, now, detail) for serial in serials]
        before_signing = (S.received, S.validated, S.key_generated, S.failed)
        unsigned = connection.execute(select(requests.c.id, requests.c.state).where(
            requests.c.agency_code == agency_code, requests.c.state.in_([s.value for s in before_signing]),
            requests.c.id.not_in(select(certificates.c.request_id).where(certificates.c.der.is_not(None))))).all()
        for row in unsigned:
            ledger.transition(row.id, S(row.state), S.revoked, connection=connection,
                              detail={**note, "certificate": None})
        ledger.audit(connection, "agency_revoked", detail={**note, "certificates": len(revoked),
                                                            "stopped_requests": len(unsigned)})
    return AgencyRevocation(revoked, [row.id for row in unsigned])


def revocation_for(ledger: Ledger, serial_hex: str) -> Revocation | None:
    """The recorded revocation of a certificate, or None."""
    ensure_tables(ledger)
    with ledger.engine.connect() as connection:
        row = connection.execute(select(revocations).where(
            revocations.c.serial == normalise_serial(serial_hex))).first()
    return None if row is None else Revocation.recorded(row)


def next_crl_number(ledger: Ledger, now: dt.datetime) -> int:
    """Take the next CRL number (compare-and-set on the ledger's counter): strictly
    greater than every number handed out before, by any process."""
    ensure_tables(ledger)
    for _ in range(50):
        with ledger.transaction() as connection:
            current = connection.execute(select(crl_state.c.crl_number).where(crl_state.c.id == 1)).scalar()
            if current is None:
                try:
                    with connection.begin_nested():
                        connection.execute(insert(crl_state).values(id=1, crl_number=1, updated_at=now))
                    return 1
                except IntegrityError:
                    continue  # another process made the row first: read it again
            moved = connection.execute(update(crl_state).where(crl_state.c.id == 1, crl_state.c.crl_number == current)
                                       .values(crl_number=current + 1, updated_at=now))
            if moved.rowcount == 1:
                return int(current) + 1
    raise StateConflict("crl_state", "1", "unchanged", "moving")


@functools.lru_cache(maxsize=200_000)
def _entry(serial: str, at: dt.datetime, flag: x509.ReasonFlags) -> x509.RevokedCertificate:
    # Cached: an entry never changes, and a process regenerating the CRL every few seconds
    # while a large batch is on hold then builds only the new entries (~60 us each).
    builder = x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(_aware(at))
    if flag != x509.ReasonFlags.unspecified:  # RFC 5280 §5.3.1: omit rather than say unspecified
        builder = builder.add_extension(x509.CRLReason(flag), critical=False)
    return builder.build()


def build_crl(ledger: Ledger, issuing_cert: x509.Certificate, issuing_key: CertificateIssuerPrivateKeyTypes,
              now: dt.datetime, next_update: dt.datetime) -> x509.CertificateRevocationList:
    """The issuing CA's CRL: every revoked certificate with its reason and every held one
    (signed, not yet published) with certificateHold; a fresh CRL number, nextUpdate,
    AKI; signed with SHA-256 by ``issuing_key`` (which may live on a token)."""
    if next_update <= now:
        raise PolicyError(f"CRL nextUpdate {next_update.isoformat()} is not after thisUpdate {now.isoformat()}")
    if issuing_key.public_key() != issuing_cert.public_key():
        raise PolicyError("the CRL signing key is not the issuing CA certificate's key")
    ensure_tables(ledger)
    with ledger.engine.connect() as connection:
        revoked = connection.execute(select(revocations.c.serial, revocations.c.revoked_at, revocations.c.reason)
                                     .order_by(revocations.c.serial)).all()
        held = connection.execute(select(certificates.c.serial, certificates.c.not_before).where(
            certificates.c.status == "hold", certificates.c.der.is_not(None)).order_by(certificates.c.serial)).all()
    number = next_crl_number(ledger, now)  # recorded before signing: a failed signature skips a number
    ski = issuing_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    entries = [_entry(row.serial, row.revoked_at, REASONS[row.reason]) for row in revoked]
    # On hold since it was signed (not_before is the signing time, backdated).
    entries += [_entry(hold.serial, hold.not_before, x509.ReasonFlags.certificate_hold) for hold in held]
    # The entries go to the constructor in one list: add_revoked_certificate copies the
    # list on every call, O(n^2) for a CRL holding a 50,000-certificate batch on hold.
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=issuing_cert.subject, last_update=now, next_update=next_update,
        extensions=[x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
                    x509.Extension(x509.AuthorityKeyIdentifier.oid, False,
                                   x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski))],
        revoked_certificates=entries)
    crl = builder.sign(issuing_key, hashes.SHA256())
    if not crl.is_signature_valid(issuing_cert.public_key()):  # type: ignore[arg-type]
        raise PolicyError("the CRL just signed does not verify against the issuing CA certificate")
    return crl


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _number(crl: x509.CertificateRevocationList) -> int:
    return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)


def write_crl(repository_root: Path, crl: x509.CertificateRevocationList) -> Path:
    """Write ``crl/issuing.crl`` (DER) and ``crl/issuing.pem`` atomically; a CRL older
    than the one already there (a lower CRL number, from a slower process) is not written.
    Returns the DER path."""
    folder = repository_root / "crl"
    folder.mkdir(parents=True, exist_ok=True)
    der_path = folder / "issuing.crl"
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _number(x509.load_der_x509_crl(der_path.read_bytes())) >= _number(crl):
                return der_path
        except (OSError, ValueError, x509.ExtensionNotFound):
            pass  # none yet, or unreadable: write it
        _replace(folder / "issuing.pem", crl.public_bytes(Encoding.PEM))
        _replace(der_path, crl.public_bytes(Encoding.DER))
    return der_path


def issue_crl(ledger: Ledger, issuing_cert: x509.Certificate, issuing_key: CertificateIssuerPrivateKeyTypes,
              repository_root: Path, now: dt.datetime, validity: dt.timedelta = CRL_VALIDITY) -> dict[str, Any]:
    """Build, sign and write a fresh CRL (on every change and on a schedule); returns a summary."""
    crl = build_crl(ledger, issuing_cert, issuing_key, now, now + validity)
    path = write_crl(repository_root, crl)
    summary = {"crl_number": _number(crl), "entries": len(crl), "this_update": now.isoformat(),
               "next_update": (now + validity).isoformat(), "path": str(path)}
    with ledger.transaction() as connection:
        ledger.audit(connection, "crl_issued", detail=summary)
    return summary
