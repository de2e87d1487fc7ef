"""The public repository: what the CA's website serves.

``certs/<serial-hex>.cer`` (DER) and ``.pem``, ``index.json`` of published
certificates, ``ca/`` with the CA certificates. Files are written atomically, so a
relying party never reads half a certificate and a second publication is harmless.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding


def serial_hex(serial: int) -> str:
    """How serials are written in file names and the ledger: 32 lower-case hex digits."""
    return f"{serial:032x}"


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


class Repository:
    """The repository folder under ``$CERTFACTORY_HOME/repository``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.certs = root / "certs"
        self.ca = root / "ca"

    def publish_ca(self, root: x509.Certificate, issuing: x509.Certificate) -> None:
        """Publish the CA certificates (DER and PEM) and the chain."""
        self.ca.mkdir(parents=True, exist_ok=True)
        for name, certificate in (("root", root), ("issuing", issuing)):
            _write_atomically(self.ca / f"{name}.cer", certificate.public_bytes(Encoding.DER))
            _write_atomically(self.ca / f"{name}.pem", certificate.public_bytes(Encoding.PEM))
        _write_atomically(self.ca / "chain.pem",
                          issuing.public_bytes(Encoding.PEM) + root.public_bytes(Encoding.PEM))

    def publish(self, certificate: x509.Certificate) -> Path:
        """Publish one subscriber certificate; returns its DER path."""
        self.certs.mkdir(parents=True, exist_ok=True)
        name = serial_hex(certificate.serial_number)
        _write_atomically(self.certs / f"{name}.pem", certificate.public_bytes(Encoding.PEM))
        path = self.certs / f"{name}.cer"
        _write_atomically(path, certificate.public_bytes(Encoding.DER))
        return path

    def is_published(self, serial: int) -> bool:
        """Whether the certificate's file is in the repository."""
        return (self.certs / f"{serial_hex(serial)}.cer").exists()

    def write_index(self, entries: Iterable[dict[str, Any]]) -> None:
        """Rewrite index.json: one entry per published certificate."""
        self.root.mkdir(parents=True, exist_ok=True)
        body = {"certificates": list(entries)}
        _write_atomically(self.root / "index.json",
                          json.dumps(body, ensure_ascii=False, indent=1, default=str).encode())
