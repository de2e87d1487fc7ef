"""Tests that submit as an agency: register it with a head the test holds, sign the batch."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from factory.endorsement import sign_detached
from tests.conftest import run_cli


def make_head(folder: Path, name: str = "Nguyễn Văn Thủ", *, days: int = 365,
              not_before: dt.datetime | None = None) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A head of agency: key and self-signed certificate written to ``folder/<serial>.pem``."""
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    subject = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days)).sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    pem = folder / f"head-{cert.serial_number:x}.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return pem, key, cert


def register(home: Path, folder: Path, agency: str = "BTC", pem: Path | None = None, **env: str
             ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """`agencies import` AGENCY with a new head (or the head certificate ``pem``); the head's key and certificate."""
    if pem is None:
        pem, key, cert = make_head(folder)
    else:
        key, cert = None, x509.load_pem_x509_certificate(pem.read_bytes())  # type: ignore[assignment]
    registry = folder / f"agencies-{agency}.csv"
    registry.write_text("agency_code,name,parent,head_name,head_position,head_certificate,pickup_address,pickup_hours\n"
                        f"{agency},Bộ Tài chính,,Nguyễn Văn Thủ,Bộ trưởng,{pem.relative_to(folder)},"
                        "\"28 Trần Hưng Đạo, Hà Nội\",08:00-16:30\n", encoding="utf-8")
    run_cli(home, "agencies", "import", str(registry), **env)
    return key, cert


def endorsed(home: Path, batch: Path, agency: str = "BTC", **env: str) -> list[str]:
    """Register AGENCY with a head the test holds and sign BATCH: `submit`'s endorsement options."""
    key, cert = register(home, batch.parent / f"head-{agency}", agency, **env)
    signature = batch.with_name(batch.name + ".p7s")
    signature.write_bytes(sign_detached(batch.read_bytes(), cert, key))
    return ["--signature", str(signature)]
