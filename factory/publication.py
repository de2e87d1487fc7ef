"""The public repository: what the CA's website serves.

``certs/<serial-hex>.cer`` (DER) and ``.pem``, ``index.json`` of published
certificates, ``ca/`` with the CA certificates. Files are written atomically, so a
relying party never reads half a certificate and a second publication is harmless.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
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
        lines = ",\n".join(index_line(entry) for entry in entries)
        _write_atomically(self.root / "index.json", ('{"certificates": [\n' + lines + "\n]}\n").encode())

    def append_index(self, entries: Iterable[dict[str, Any]]) -> None:
        """index.json with entries added at its end; the entries already there stream
        through a line at a time (never all in memory), then the new file replaces it."""
        path = self.root / "index.json"
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        separator = ""
        with open(temporary, "w", encoding="utf-8") as out:
            out.write('{"certificates": [\n')
            if path.exists():
                with open(path, encoding="utf-8") as old:
                    for number, line in enumerate(old):
                        body = line.rstrip("\n")
                        if number == 0 or body in ("", "]}"):
                            continue  # the opening line, the closing one
                        out.write(separator + body.rstrip(","))
                        separator = ",\n"
            for entry in entries:
                out.write(separator + index_line(entry))
                separator = ",\n"
            out.write("\n]}\n")
        os.replace(temporary, path)


def index_line(entry: dict[str, Any]) -> str:
    """One entry of index.json, one line (json's C encoder: indenting takes its slow one)."""
    return json.dumps(entry, ensure_ascii=False, default=str)


class IndexCache:
    """What a process knows of index.json since its last refresh: how many entries it
    holds and the serials published in the last minute, so that a refresh reads only what
    was published lately and appends what is new. A publication can commit a moment after
    its publication time, so each read overlaps the last by a minute; older serials are
    forgotten, so memory stays flat however large the repository grows. A count that
    disagrees with the ledger's (a revocation took an entry out) makes a whole rewrite."""

    OVERLAP = dt.timedelta(minutes=1)

    def __init__(self) -> None:
        self.recent: dict[str, dt.datetime] = {}  # serial → published_at, within OVERLAP of the latest
        self.latest: dt.datetime | None = None
        self.count = 0
        self.lock = threading.Lock()

    def since(self) -> dt.datetime | None:
        """Where the next read starts; None for a whole read."""
        return None if self.latest is None else self.latest - self.OVERLAP

    def fresh(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Those of a recent read not in index.json yet."""
        return [entry for entry in entries if entry["serial"] not in self.recent]

    def add(self, entries: list[dict[str, Any]], *, whole: bool = False) -> None:
        """Note entries written (all of them, when ``whole``)."""
        if whole:
            self.recent, self.latest, self.count = {}, None, 0
        for entry in entries:
            self.recent[entry["serial"]] = entry["published_at"]  # never None: published certificates
            if self.latest is None or entry["published_at"] > self.latest:
                self.latest = entry["published_at"]
        self.count += len(entries)
        horizon = self.since()
        if horizon is not None:
            self.recent = {serial: at for serial, at in self.recent.items() if at >= horizon}
