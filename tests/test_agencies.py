"""The agency registry: importing agencies and their heads' certificates, again and again."""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from openpyxl import Workbook
from sqlalchemy import select

from factory.agencies import FIELDS, fingerprint, get_agency, import_agencies, list_agencies
from factory.audit import verify_chain
from factory.ledger import Ledger
from factory.tables import audit_events

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Head:
    """A head of agency with a key and a certificate, written to ``pem``."""

    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    pem: Path


def make_head(folder: Path, name: str, *, not_before: dt.datetime = NOW - dt.timedelta(days=30),
              days: int = 3 * 365, ecdsa: bool = False, signing: bool = True) -> Head:
    """A self-signed head certificate (as if from the government CA) written to ``folder/<file>.pem``."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if ecdsa else rsa.generate_private_key(public_exponent=65537,
                                                                                       key_size=2048))
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bộ Tài chính"),
                         x509.NameAttribute(NameOID.COMMON_NAME, name)])
    usage = x509.KeyUsage(digital_signature=signing, content_commitment=signing, key_encipherment=not signing,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_before + dt.timedelta(days=days))
                   .add_extension(usage, critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                   .sign(key, hashes.SHA256()))
    pem = folder / f"head-{certificate.serial_number:x}.pem"
    pem.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Head(key, certificate, pem)


def agency_row(code: str, head: Head | str, **changes: str) -> dict[str, str]:
    """A registry row for ``code`` whose head certificate file is ``head`` (a Head or a file name)."""
    pem = head.pem.name if isinstance(head, Head) else head
    return {"agency_code": code, "name": f"Cơ quan {code}", "parent": "BTC", "head_name": "Nguyễn Văn Thủ",
            "head_position": "Vụ trưởng", "head_certificate": pem, "pickup_address": "28 Trần Hưng Đạo, Hà Nội",
            "pickup_hours": "8:00-17:00 thứ Hai-thứ Sáu", **changes}


def write_agencies(path: Path, rows: list[dict[str, str]]) -> Path:
    """The registry file as .csv (UTF-8 with BOM, as Excel writes it) or .xlsx."""
    if path.suffix == ".xlsx":
        workbook = Workbook()
        workbook.active.append(list(FIELDS))
        for row in rows:
            workbook.active.append([row.get(name) for name in FIELDS])
        workbook.save(path)
        return path
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    """A fresh SQLite ledger."""
    return Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_importing_registers_every_agency_with_its_head_certificate(tmp_path: Path, ledger: Ledger,
                                                                     suffix: str) -> None:
    """Each row becomes an agency whose head certificate is the PEM file named beside the imported file."""
    heads = [make_head(tmp_path, "Nguyễn Văn Thủ"), make_head(tmp_path, "Lê Thị Trưởng", ecdsa=True)]
    path = write_agencies(tmp_path / f"agencies{suffix}", [agency_row("BTC-KHTC", heads[0]),
                                                           agency_row("UBND-HN", heads[1], parent="")])
    report = import_agencies(ledger, path, now=NOW)
    assert report.as_dict() == {"source": path.name, "added": ["BTC-KHTC", "UBND-HN"], "updated": [],
                                "unchanged": [], "refused": []}
    assert [a.agency_code for a in list_agencies(ledger)] == ["BTC-KHTC", "UBND-HN"]
    agency = get_agency(ledger, "UBND-HN")
    assert agency is not None and agency.parent is None and agency.head_position == "Vụ trưởng"
    assert agency.certificate() == heads[1].certificate
    assert agency.summary()["head_certificate_sha256"] == fingerprint(heads[1].certificate)
    assert get_agency(ledger, "NOBODY") is None


def test_importing_again_updates_in_place(tmp_path: Path, ledger: Ledger) -> None:
    """A new head and address for a known code replace the old ones; nothing is duplicated."""
    old, new = make_head(tmp_path, "Nguyễn Văn Cũ"), make_head(tmp_path, "Trần Thị Mới")
    import_agencies(ledger, write_agencies(tmp_path / "a.csv", [agency_row("BTC", old)]), now=NOW)
    later = NOW + dt.timedelta(days=1)
    report = import_agencies(ledger, write_agencies(tmp_path / "a.csv", [
        agency_row("BTC", new, head_name="Trần Thị Mới", pickup_address="1 Tràng Tiền")]), now=later)
    assert (report.added, report.updated) == ([], ["BTC"])
    [agency] = list_agencies(ledger)
    assert (agency.head_name, agency.pickup_address) == ("Trần Thị Mới", "1 Tràng Tiền")
    assert agency.certificate() == new.certificate
    assert agency.updated_at.replace(tzinfo=dt.UTC) == later


def test_importing_the_same_file_twice_changes_and_audits_nothing_more(tmp_path: Path, ledger: Ledger) -> None:
    """A second identical import reports every agency unchanged and adds no audit event."""
    path = write_agencies(tmp_path / "a.csv", [agency_row("BTC", make_head(tmp_path, "Nguyễn Văn Thủ"))])
    import_agencies(ledger, path, now=NOW)
    with ledger.engine.connect() as connection:
        events = connection.execute(select(audit_events.c.kind, audit_events.c.detail)).all()
    assert [kind for kind, _ in events] == ["agency_registered"]
    assert json.loads(events[0].detail)["agency_code"] == "BTC"
    assert import_agencies(ledger, path, now=NOW).unchanged == ["BTC"]
    with ledger.engine.connect() as connection:
        assert len(connection.execute(select(audit_events.c.id)).all()) == 1
    assert verify_chain(ledger)[1] is None


def test_an_expired_or_unreadable_certificate_refuses_its_row_with_the_reason(tmp_path: Path,
                                                                             ledger: Ledger) -> None:
    """Expired, not yet valid, missing, garbage and non-signing certificates are refused; good rows still import."""
    (tmp_path / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    rows = [
        agency_row("GOOD", make_head(tmp_path, "Nguyễn Văn Tốt")),
        agency_row("EXPIRED", make_head(tmp_path, "Hết Hạn", not_before=NOW - dt.timedelta(days=400), days=365)),
        agency_row("FUTURE", make_head(tmp_path, "Chưa Tới", not_before=NOW + dt.timedelta(days=10))),
        agency_row("MISSING", "no-such-file.pem"),
        agency_row("GARBAGE", "garbage.pem"),
        agency_row("NOSIGN", make_head(tmp_path, "Không Ký", signing=False)),
        agency_row("NOHEAD", make_head(tmp_path, "X"), head_name=""),
        agency_row("GOOD", make_head(tmp_path, "Nguyễn Văn Lặp")),
    ]
    report = import_agencies(ledger, write_agencies(tmp_path / "a.csv", rows), now=NOW)
    assert report.added == ["GOOD"]
    reasons = {r["agency_code"]: (r["row"], r["reason"]) for r in report.refused}
    assert set(reasons) == {"EXPIRED", "FUTURE", "MISSING", "GARBAGE", "NOSIGN", "NOHEAD", "GOOD"}
    assert "expired on 2026-01-26" in reasons["EXPIRED"][1] and reasons["EXPIRED"][0] == 3
    assert "not valid before 2026-03-12" in reasons["FUTURE"][1]
    assert "no-such-file.pem: cannot be read" in reasons["MISSING"][1]
    assert "not a PEM certificate" in reasons["GARBAGE"][1]
    assert "key usage does not allow signing" in reasons["NOSIGN"][1]
    assert "required field(s) missing: head_name" in reasons["NOHEAD"][1]
    assert reasons["GOOD"] == (9, "agency_code GOOD already given on row 2")
    assert [a.agency_code for a in list_agencies(ledger)] == ["GOOD"]
