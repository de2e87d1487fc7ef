"""The agency registry: each managing agency, its head and the head's certificate.

A batch is accepted only when the head registered here endorsed it (DESIGN.md §4,
``factory.endorsement``), so the registry is a trust anchor: every import is audited,
and a head certificate that cannot be read or is not valid at import is refused with
the reason while the file's other rows are still imported.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column, DateTime, Engine, String, Table, Text, insert, select, update

from factory.ledger import Ledger, append_audit, utcnow
from factory.spreadsheets import Columns, read_table
from factory.tables import metadata
from schemas.status import Rejection

agencies = Table(
    "agencies", metadata,
    Column("agency_code", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("parent", String(64), nullable=True),
    Column("head_name", Text, nullable=False),
    Column("head_position", Text, nullable=False),
    Column("head_certificate", Text, nullable=False),  # PEM
    Column("pickup_address", Text, nullable=True),
    Column("pickup_hours", Text, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

FIELDS = ("agency_code", "name", "parent", "head_name", "head_position", "head_certificate",
          "pickup_address", "pickup_hours")
REQUIRED = frozenset({"agency_code", "name", "head_name", "head_position", "head_certificate"})
AGENCY_COLUMNS = Columns(labels={name: (name,) for name in FIELDS}, required=REQUIRED, ignored=frozenset())


class Agency(BaseModel):
    """One registered agency, as the registry holds it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agency_code: str
    name: str
    parent: str | None
    head_name: str
    head_position: str
    head_certificate: str  # PEM
    pickup_address: str | None
    pickup_hours: str | None
    updated_at: dt.datetime

    def certificate(self) -> x509.Certificate:
        """The head's certificate, parsed."""
        return x509.load_pem_x509_certificate(self.head_certificate.encode("ascii"))

    def summary(self) -> dict[str, Any]:
        """What `agencies list --json` shows: the row without the PEM, with the certificate's
        subject, validity and SHA-256 fingerprint."""
        cert = self.certificate()
        return {**self.model_dump(mode="json", exclude={"head_certificate"}),
                "head_certificate_subject": cert.subject.rfc4514_string(),
                "head_certificate_not_after": cert.not_valid_after_utc.isoformat(),
                "head_certificate_sha256": fingerprint(cert)}


@dataclass
class ImportReport:
    """What an import did: codes added, updated, unchanged, and rows refused with the reason."""

    source: str
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)  # {"row", "agency_code", "reason"}

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {"source": self.source, "added": self.added, "updated": self.updated,
                "unchanged": self.unchanged, "refused": self.refused}


def fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lowercase hex."""
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def _engine(target: Engine | Ledger, *, audited: bool = False) -> Engine:
    engine = target.engine if isinstance(target, Ledger) else target
    # Checked each time: the ledger may predate the registry (create_all skips what exists).
    metadata.create_all(engine, tables=None if audited else [agencies])
    return engine


def load_head_certificate(path: Path, now: dt.datetime) -> x509.Certificate:
    """Read a head's PEM certificate and check it is valid at ``now``; ``ValueError`` says why not."""
    try:
        with path.open("rb") as handle:
            data = handle.read(1 << 20)  # a certificate is a few kB; never read a device or a log whole
    except OSError as error:
        raise ValueError(f"head_certificate {path.name}: cannot be read ({error.strerror or error})") from None
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise ValueError(f"head_certificate {path.name}: not a PEM certificate") from None
    if cert.not_valid_after_utc < now:
        raise ValueError(f"head_certificate {path.name}: expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if cert.not_valid_before_utc > now:
        raise ValueError(f"head_certificate {path.name}: not valid before {cert.not_valid_before_utc:%Y-%m-%d} UTC")
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return cert
    if not (usage.digital_signature or usage.content_commitment):
        raise ValueError(f"head_certificate {path.name}: its key usage does not allow signing")
    return cert


def _row(raw: dict[str, Any] | Rejection, folder: Path, now: dt.datetime) -> dict[str, Any]:
    """A registry row from a file row; ``ValueError`` with the reason it is refused."""
    if isinstance(raw, Rejection):
        raise ValueError(raw.message)
    values = {name: str(raw[name]).strip() if raw.get(name) is not None else None for name in FIELDS}
    if missing := [name for name in sorted(REQUIRED) if not values[name]]:
        raise ValueError(f"required field(s) missing: {', '.join(missing)}")
    if len(str(values["agency_code"])) > 64 or len(values["parent"] or "") > 64:
        raise ValueError("agency_code and parent are at most 64 characters")
    cert = load_head_certificate(folder / str(values["head_certificate"]), now)
    values["head_certificate"] = cert.public_bytes(Encoding.PEM).decode("ascii")
    return values


def import_agencies(target: Engine | Ledger, path: Path, *, now: dt.datetime | None = None) -> ImportReport:
    """Import or update agencies from a .csv or .xlsx file (columns: ``FIELDS``), where
    ``head_certificate`` is a PEM file relative to the imported file's folder.

    Rows already registered are updated in place; a row refused (unreadable, expired or
    not-yet-valid certificate, missing field, code given twice) leaves the others
    imported. Every change is audited. A file that cannot be read at all raises
    ``BatchFileError``.
    """
    now = now or utcnow()
    report = ImportReport(source=path.name)
    rows: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    for number, raw in read_table(path, AGENCY_COLUMNS):
        code = str(raw.get("agency_code") or "").strip() if isinstance(raw, dict) else ""
        try:
            if code in seen:
                raise ValueError(f"agency_code {code} already given on row {seen[code]}")
            if code:
                seen[code] = number
            rows[code] = _row(raw, path.parent, now)
        except ValueError as error:
            report.refused.append({"row": number, "agency_code": code or None, "reason": str(error)})
    with _engine(target, audited=True).begin() as connection:
        known = {row.agency_code: row for row in connection.execute(
            select(agencies).where(agencies.c.agency_code.in_(list(rows))))}
        events = []
        for code, values in rows.items():
            old = known.get(code)
            if old is not None and all(getattr(old, name) == values[name] for name in FIELDS):
                report.unchanged.append(code)
                continue
            if old is None:
                connection.execute(insert(agencies).values(**values, updated_at=now))
                report.added.append(code)
            else:
                connection.execute(update(agencies).where(agencies.c.agency_code == code)
                                   .values(**values, updated_at=now))
                report.updated.append(code)
            cert = x509.load_pem_x509_certificate(values["head_certificate"].encode("ascii"))
            detail = {"agency_code": code, "source": path.name, "head_name": values["head_name"],
                      "head_certificate_sha256": fingerprint(cert), "change": "updated" if old else "added"}
            events.append({"at": now, "request_id": None, "batch_id": None, "kind": "agency_registered",
                           "from_state": None, "to_state": None, "detail": json.dumps(detail, ensure_ascii=False)})
        append_audit(connection, events)
    return report


def list_agencies(target: Engine | Ledger) -> list[Agency]:
    """Every registered agency, by code."""
    with _engine(target).connect() as connection:
        rows = connection.execute(select(agencies).order_by(agencies.c.agency_code))
        return [Agency.model_validate(row._asdict()) for row in rows]


def get_agency(target: Engine | Ledger, agency_code: str) -> Agency | None:
    """One registered agency, or None."""
    with _engine(target).connect() as connection:
        row = connection.execute(select(agencies).where(agencies.c.agency_code == agency_code)).first()
    return Agency.model_validate(row._asdict()) if row else None
