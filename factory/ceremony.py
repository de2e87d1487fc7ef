"""The key ceremony: a CA token with the root and issuing keys made on it, and their
certificates. Running it again changes nothing."""

from __future__ import annotations

import datetime as dt
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from factory import ca, softhsm, tokens
from factory.ca import CAToken
from factory.publication import Repository

TRANSPORT_SO_PIN = "ca-transport-so"
TRANSPORT_USER_PIN = "ca-transport-user"


@dataclass(frozen=True)
class CAFiles:
    """Where the CA's public material lives under its folder."""

    folder: Path

    @property
    def root(self) -> Path:
        """The root CA certificate (PEM)."""
        return self.folder / "root.pem"

    @property
    def issuing(self) -> Path:
        """The issuing CA certificate (PEM)."""
        return self.folder / "issuing.pem"

    def load(self) -> tuple[x509.Certificate, x509.Certificate]:
        """(root, issuing) certificates."""
        return (x509.load_pem_x509_certificate(self.root.read_bytes()),
                x509.load_pem_x509_certificate(self.issuing.read_bytes()))


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)


def create_ca_token(config: Path, label: str, module: str, pin_file: Path) -> bool:
    """Create and PIN the CA token (SoftHSM2 only). False when it already exists."""
    if pin_file.exists():
        return False
    softhsm.init_token(config, label, TRANSPORT_SO_PIN, TRANSPORT_USER_PIN)
    user_pin, so_pin = secrets.token_urlsafe(12), secrets.token_urlsafe(18)
    token = tokens.find_token(module, label=label)
    with tokens.token_lock:
        with token.open(rw=True, so_pin=TRANSPORT_SO_PIN) as session:
            session.set_pin(TRANSPORT_SO_PIN, so_pin)
            session.init_pin(user_pin)
    _write_secret(pin_file, user_pin)
    _write_secret(pin_file.with_name("so.pin"), so_pin)
    return True


def create_hierarchy(ca_token: CAToken, files: CAFiles, repository: Repository, organization: str,
                     now: dt.datetime) -> bool:
    """Root and issuing CA keys on the token and their certificates. False when present."""
    if files.root.exists() and files.issuing.exists():
        root, issuing = files.load()
        repository.publish_ca(root, issuing)
        return False
    root_key = ca_token.generate(ca.ROOT_LABEL)
    issuing_key = ca_token.generate(ca.ISSUING_LABEL)
    root_name = ca.ca_name(organization, f"{organization} Root CA G1")
    issuing_name = ca.ca_name(organization, f"{organization} Issuing CA G1")
    root = ca.sign(ca.ca_builder(root_name, root_name, root_key.public_key(), root_key.public_key(), now,
                                 years=20, path_length=1), root_key)
    issuing = ca.sign(ca.ca_builder(issuing_name, root_name, issuing_key.public_key(), root_key.public_key(), now,
                                    years=20, path_length=0), root_key)
    files.folder.mkdir(parents=True, exist_ok=True)
    files.root.write_bytes(root.public_bytes(Encoding.PEM))
    files.issuing.write_bytes(issuing.public_bytes(Encoding.PEM))
    repository.publish_ca(root, issuing)
    return True
