"""The ledger's tables (SQLAlchemy Core): batches, requests, devices, certificates, the
outbox and the audit trail with the head of its hash chain. Only :mod:`factory.ledger`
writes them; readers that need a query of their own import the table from here."""

from __future__ import annotations

from sqlalchemy import (
    Column, Date, DateTime, ForeignKey, Integer, LargeBinary, MetaData, String, Table, Text, UniqueConstraint,
)

metadata = MetaData()

batches = Table(
    "batches", metadata,
    Column("id", String(32), primary_key=True),
    Column("agency_code", String(64), nullable=False),
    Column("source", Text, nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("endorsement", Text, nullable=True),
)

requests = Table(
    "requests", metadata,
    Column("id", String(32), primary_key=True),
    Column("batch_id", String(32), ForeignKey("batches.id"), nullable=False, index=True),
    Column("agency_code", String(64), nullable=False),
    Column("request_ref", String(64), nullable=False),
    Column("citizen_id", String(32), nullable=False, index=True),
    Column("record", Text, nullable=False),
    Column("key_type", String(16), nullable=False),
    Column("state", String(24), nullable=False, index=True),
    Column("reason_code", String(64), nullable=True),
    Column("reason", Text, nullable=True),
    Column("device_serial", String(32), nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("ready_deadline", Date, nullable=True),
    Column("publish_deadline", Date, nullable=True),
    Column("activation_requested_at", DateTime(timezone=True), nullable=True),
    Column("effective_at", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("agency_code", "request_ref", name="uq_request_agency_ref"),
)

devices = Table(
    "devices", metadata,
    Column("serial", String(32), primary_key=True),
    Column("station", String(64), nullable=False, index=True),
    Column("token_dir", String(64), nullable=False),
    Column("state", String(24), nullable=False, index=True),
    Column("request_id", String(32), nullable=True, unique=True),
    Column("key_id", String(64), nullable=True),
    Column("public_key", LargeBinary, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

certificates = Table(
    "certificates", metadata,
    Column("serial", String(40), primary_key=True),
    Column("request_id", String(32), nullable=False, unique=True),
    Column("der", LargeBinary, nullable=True),
    Column("status", String(16), nullable=False),
    Column("not_before", DateTime(timezone=True), nullable=True),
    Column("not_after", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
)

outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(32), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("payload", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("request_id", "kind", name="uq_outbox_request_kind"),
)

audit_events = Table(
    "audit_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("seq", Integer, nullable=False, unique=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("request_id", String(32), nullable=True, index=True),
    Column("batch_id", String(32), nullable=True),
    Column("kind", String(48), nullable=False),
    Column("from_state", String(24), nullable=True),
    Column("to_state", String(24), nullable=True),
    Column("detail", Text, nullable=True),
)


# The head of the audit hash chain: one row, locked by every transaction that appends.
audit_head = Table(
    "audit_head", metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)
