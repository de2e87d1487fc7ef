"""Who may call: API keys per agency, and operators' keys.

A key is shown once, when created, and stored only as its SHA-256 hash: the ledger
never holds a secret that opens the API (as it never holds a PIN). A key has ~256 bits
of randomness, so an unsalted hash looked up by equality leaks nothing useful. The
rules of who sees what are here too, so the HTTP edge only asks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import weakref
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, DateTime, Engine, String, Table, insert, select, update

from factory.agencies import fingerprint, list_agencies
from factory.errors import PermanentError
from factory.ledger import Ledger
from factory.tables import metadata

api_keys = Table(
    "api_keys", metadata,
    Column("key_id", String(16), primary_key=True),
    Column("agency_code", String(64), nullable=True, index=True),  # NULL: an operator's key
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

KEY_PREFIX = "cfk"
OPERATOR = "operator"

_ready: weakref.WeakSet[Engine] = weakref.WeakSet()


def ensure_tables(ledger: Ledger) -> None:
    """Create the api_keys table on the ledger if missing (once per engine)."""
    if ledger.engine not in _ready:
        metadata.create_all(ledger.engine, tables=[api_keys])
        _ready.add(ledger.engine)


@dataclass(frozen=True)
class Principal:
    """The caller a key stands for: an agency (by code) or an operator."""

    key_id: str
    agency_code: str | None

    @property
    def is_operator(self) -> bool:
        """Operators act for every agency and may retry and reconcile."""
        return self.agency_code is None

    @property
    def name(self) -> str:
        """How audit events and rate limits name the caller."""
        return OPERATOR if self.is_operator else f"agency:{self.agency_code}"

    def may_act_for(self, agency_code: str) -> bool:
        """Whether this caller may see or act on a request of ``agency_code``."""
        return self.is_operator or self.agency_code == agency_code


def key_hash(plaintext: str) -> str:
    """The stored form of a key: SHA-256, hex."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_api_key(ledger: Ledger, agency_code: str | None, now: dt.datetime) -> str:
    """Issue a key for ``agency_code`` (None: an operator). Returns the plaintext, which
    is not stored anywhere: hand it over now. The audit trail records the key id only."""
    if agency_code is not None and not agency_code.strip():
        raise PermanentError("agency code is empty: give the agency's code, or none for an operator key")
    ensure_tables(ledger)
    key_id = secrets.token_hex(6)
    plaintext = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
    with ledger.transaction() as connection:
        connection.execute(insert(api_keys).values(key_id=key_id, agency_code=agency_code and agency_code.strip(),
                                                   key_hash=key_hash(plaintext), created_at=now))
        ledger.audit(connection, "api_key_created", detail={"key_id": key_id, "agency_code": agency_code})
    return plaintext


def revoke_api_key(ledger: Ledger, key_id: str, now: dt.datetime) -> bool:
    """Withdraw a key; False when there is no such live key."""
    ensure_tables(ledger)
    with ledger.transaction() as connection:
        moved = connection.execute(update(api_keys).where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                                   .values(revoked_at=now)).rowcount
        if moved:
            ledger.audit(connection, "api_key_revoked", detail={"key_id": key_id})
    return bool(moved)


def list_api_keys(ledger: Ledger, agency_code: str | None = None) -> list[Any]:
    """Keys by id, agency and dates (never a hash), oldest first; optionally one agency's."""
    ensure_tables(ledger)
    query = select(api_keys.c.key_id, api_keys.c.agency_code, api_keys.c.created_at, api_keys.c.revoked_at
                   ).order_by(api_keys.c.created_at, api_keys.c.key_id)
    if agency_code is not None:
        query = query.where(api_keys.c.agency_code == agency_code)
    with ledger.engine.connect() as connection:
        return list(connection.execute(query))


def authenticate_certificate(ledger: Ledger, der: bytes) -> Principal | None:
    """The agency whose registered head certificate is exactly ``der`` (mutual TLS: the
    TLS layer checked the chain and the key; this names the agency), or None."""
    wanted = hashlib.sha256(der).hexdigest()
    for agency in list_agencies(ledger):
        if fingerprint(agency.certificate()) == wanted:
            return Principal(f"cert:{wanted[:12]}", agency.agency_code)
    return None


def authenticate(ledger: Ledger, presented: str) -> Principal | None:
    """The principal of a live key, or None for an unknown or withdrawn one."""
    if not presented.startswith(KEY_PREFIX + "_") or len(presented) > 200:
        return None
    ensure_tables(ledger)
    with ledger.engine.connect() as connection:
        row = connection.execute(select(api_keys.c.key_id, api_keys.c.agency_code).where(
            api_keys.c.key_hash == key_hash(presented), api_keys.c.revoked_at.is_(None))).first()
    return None if row is None else Principal(row.key_id, row.agency_code)
