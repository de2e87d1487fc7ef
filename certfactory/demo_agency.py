"""Submitting as an agency would, for the demo, the load test and the chaos harness.

A demo agency's head has a key and a self-signed certificate kept under
``$CERTFACTORY_HOME/demo-agencies/<code>/`` (the key file mode 0600); the agency is
registered through the same `agencies import` path an operator uses, and each batch is
signed over its exact bytes with a detached CMS signature, then submitted.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certfactory import operations
from certfactory.settings import Settings
from factory.agencies import FIELDS, import_agencies
from factory.endorsement import sign_detached
from factory.errors import ConfigurationError
from factory.ledger import Ledger

HEAD_NAME = "Nguyễn Văn Thủ Trưởng"
HEAD_POSITION = "Thủ trưởng cơ quan"
VALID_DAYS = 365


def _folder(settings: Settings, agency_code: str) -> Path:
    folder = settings.resolved_home / "demo-agencies" / agency_code
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _key(folder: Path) -> ec.EllipticCurvePrivateKey:
    path = folder / "head-key.pem"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigurationError(f"{path}: not the demo head's EC key; delete the folder to start afresh")
        return key
    key = ec.generate_private_key(ec.SECP256R1())
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return key


def _certificate(folder: Path, key: ec.EllipticCurvePrivateKey, agency_code: str) -> x509.Certificate:
    """The head's certificate, made anew when missing, for another key or within a day of expiry."""
    path = folder / "head-certificate.pem"
    now = dt.datetime.now(dt.UTC)
    if path.exists():
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        if cert.public_key() == key.public_key() and cert.not_valid_after_utc > now + dt.timedelta(days=1):
            return cert
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Demo agency {agency_code}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, HEAD_NAME)])
    usage = x509.KeyUsage(digital_signature=True, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS)).add_extension(usage, critical=True)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def register_demo_agency(settings: Settings, ledger: Ledger, agency_code: str
                         ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """Register (or keep) AGENCY_CODE with a head whose key this machine holds; idempotent."""
    folder = _folder(settings, agency_code)
    key = _key(folder)
    cert = _certificate(folder, key, agency_code)
    registry = folder / "agencies.csv"
    with registry.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerow({"agency_code": agency_code, "name": f"Demo agency {agency_code}", "parent": "",
                         "head_name": HEAD_NAME, "head_position": HEAD_POSITION,
                         "head_certificate": "head-certificate.pem", "pickup_address": settings.pickup_address,
                         "pickup_hours": settings.pickup_hours})
    report = import_agencies(ledger, registry)
    if report.refused:
        raise ConfigurationError(f"demo agency {agency_code} not registered: {report.refused[0]['reason']}")
    return cert, key


def submit_endorsed(settings: Settings, ledger: Ledger, file: Path, agency_code: str,
                    *, dry_run: bool = False) -> dict[str, Any]:
    """Submits FILE for AGENCY_CODE, endorsed by that agency's head (registered first)."""
    cert, key = register_demo_agency(settings, ledger, agency_code)
    signature = sign_detached(file.read_bytes(), cert, key)
    file.with_name(file.name + ".p7s").write_bytes(signature)  # as an agency would send it
    return operations.submit(settings, ledger, file, agency_code, signature=signature, dry_run=dry_run)
