"""The ledger: certfactory's system of record (SQLAlchemy Core, SQLite or PostgreSQL).

Batches, requests, devices, certificates, the outbox and audit events. Every state
change is a compare-and-set that names the state it expects, written in the same
transaction as its audit event, so a redelivered message can never move a request
twice. PINs never enter this module.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Table, bindparam, create_engine, func, insert, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql import Executable
from sqlalchemy.exc import IntegrityError

from factory.errors import StateConflict
from factory.sqlite import WRITER, WriterTurns, immediate_transactions
from factory.tables import audit_events, audit_head, batches, certificates, devices, metadata, outbox, requests
from schemas.status import RequestState

GENESIS_HASH = "0" * 64

# The statements every certificate runs, built once: building a statement and its cache
# key took ~110 µs of a ~180 µs read (bench/ledger_path.py). Bound names start with b_
# (a bind named like a column clashes with an UPDATE's SET parameters).
_AUDIT_HEAD = select(audit_head).where(audit_head.c.id == 1).with_for_update()
_AUDIT_HEAD_MOVE = update(audit_head).where(audit_head.c.id == 1)
_AUDIT_APPEND = insert(audit_events)
_AUDIT_TRAIL = select(audit_events).where(audit_events.c.request_id == bindparam("b_request")) \
    .order_by(audit_events.c.id)


def _keyed(table: Table, key: str, bound: str, moved_returns: str) -> tuple[Executable, ...]:
    """A stateful table's row, state, plain update and compare-and-set moves (from one
    state, from any of several), by its key. An expanding IN is compiled again on every
    execution (7% of a station worker's processor in a P-256 load test): the move from one
    state, nearly every move, compares with ``=`` and stays compiled."""
    where = table.c[key] == bindparam(bound)
    returning = table.c[moved_returns]
    return (select(table).where(where), select(table.c.state).where(where), update(table).where(where),
            update(table).where(where, table.c.state == bindparam("b_expected")).returning(returning),
            update(table).where(where, table.c.state.in_(bindparam("b_expected", expanding=True))).returning(returning))


def _move(from_one: Executable, from_any: Executable, expected: Sequence[str]) -> tuple[Executable, str | list[str]]:
    """The compare-and-set for these expected states, and its b_expected."""
    return (from_one, expected[0]) if len(expected) == 1 else (from_any, list(expected))


_REQUEST, _REQUEST_STATE, _REQUEST_SET, _REQUEST_MOVE, _REQUEST_MOVE_ANY = _keyed(requests, "id", "b_id", "batch_id")
_DEVICE, _DEVICE_STATE, _DEVICE_SET, _DEVICE_MOVE, _DEVICE_MOVE_ANY = _keyed(devices, "serial", "b_serial",
                                                                             "request_id")
_DEVICE_ADD = insert(devices)
_DEVICE_OF_REQUEST = select(devices).where(devices.c.request_id == bindparam("b_request"))
_BLANK_DEVICES = select(devices.c.serial).where(devices.c.station == bindparam("b_station"),
                                                devices.c.state == "blank").limit(8)
_DEVICE_CLAIM = update(devices).where(devices.c.serial == bindparam("b_serial"), devices.c.state == "blank") \
    .returning(*devices.c)
_CERTIFICATE_OF_REQUEST = select(certificates).where(certificates.c.request_id == bindparam("b_request"))
_CERTIFICATE = select(certificates).where(certificates.c.serial == bindparam("b_serial"))
_CERTIFICATE_ADD = insert(certificates)
_CERTIFICATE_STORE = update(certificates).where(certificates.c.serial == bindparam("b_serial"),
                                                certificates.c.der.is_(None))
_CERTIFICATE_SET = update(certificates).where(certificates.c.serial == bindparam("b_serial"))
_OUTBOX_FIND = select(outbox.c.id).where(outbox.c.request_id == bindparam("b_request"),
                                         outbox.c.kind == bindparam("b_kind"))
_OUTBOX_ADD = insert(outbox)
_LIVE_OF_PERSON = select(requests.c.id, requests.c.received_at).where(
    requests.c.citizen_id == bindparam("b_citizen"), requests.c.id != bindparam("b_id"),
    requests.c.state.not_in([RequestState.rejected.value, RequestState.failed.value, RequestState.revoked.value]))
_RECEIVED_AT = select(requests.c.received_at).where(requests.c.id == bindparam("b_id"))


def utcnow() -> dt.datetime:
    """The ledger's clock: aware UTC."""
    return dt.datetime.now(dt.UTC)


def _utc_text(at: dt.datetime) -> str:
    # SQLite hands datetimes back naive, PostgreSQL aware: hash one spelling of UTC.
    return (at.astimezone(dt.UTC) if at.tzinfo else at).replace(tzinfo=None).isoformat(timespec="microseconds")


def audit_event(kind: str, *, request_id: str | None = None, batch_id: str | None = None,
                from_state: str | None = None, to_state: str | None = None,
                detail: dict[str, Any] | None = None, at: dt.datetime | None = None) -> dict[str, Any]:
    """One audit event, ready for ``append_audit`` (the detail as JSON)."""
    return {"at": at or utcnow(), "request_id": request_id, "batch_id": batch_id, "kind": kind,
            "from_state": from_state, "to_state": to_state,
            "detail": json.dumps(detail, ensure_ascii=False, default=str) if detail else None}


def audit_hash(prev_hash: str, event: dict[str, Any] | Row) -> str:
    """The chain hash of one audit event: SHA-256 over the previous hash and its fields."""
    get = event.get if isinstance(event, dict) else event._mapping.get
    body = json.dumps([get("seq"), _utc_text(get("at")), get("request_id"), get("batch_id"), get("kind"),
                       get("from_state"), get("to_state"), get("detail"), prev_hash], ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


def append_audit(connection: Connection, events: list[dict[str, Any]]) -> None:
    """Append events to the hash chain, holding its head locked (FOR UPDATE on PostgreSQL;
    SQLite's BEGIN IMMEDIATE already serialises writers)."""
    if not events:
        return
    head = connection.execute(_AUDIT_HEAD).first()
    if head is None:
        try:
            with connection.begin_nested():
                connection.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS_HASH))
        except IntegrityError:
            pass  # another writer created it first
        head = connection.execute(_AUDIT_HEAD).first()
    assert head is not None
    seq, prev = head.seq, head.hash
    rows = []
    for event in events:
        seq += 1
        row = {**event, "at": event["at"].astimezone(dt.UTC), "seq": seq, "prev_hash": prev}
        row["hash"] = prev = audit_hash(prev, row)
        rows.append(row)
    connection.execute(_AUDIT_APPEND, rows if len(rows) > 1 else rows[0])
    connection.execute(_AUDIT_HEAD_MOVE, {"seq": seq, "hash": prev})


class Ledger:
    """The system of record. One instance per process; thread-safe through its pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writers = WriterTurns.for_engine(engine)

    @classmethod
    def connect(cls, url: str) -> Ledger:
        """Open the ledger at ``url`` and create its tables if they are missing."""
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        # a SQLite file does not drop connections: no ping before every checkout
        engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        if engine.dialect.name == "sqlite":
            immediate_transactions(engine)
        metadata.create_all(engine)
        return cls(engine)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One atomic unit of work."""
        with self._writers.turn(), self.engine.connect().execution_options(**{WRITER: True}) as connection, \
                connection.begin():
            yield connection

    # -- audit ------------------------------------------------------------------------

    @staticmethod
    def audit(connection: Connection, kind: str, *, request_id: str | None = None, batch_id: str | None = None,
              from_state: str | None = None, to_state: str | None = None,
              detail: dict[str, Any] | None = None) -> None:
        """Append an audit event inside the caller's transaction."""
        append_audit(connection, [audit_event(kind, request_id=request_id, batch_id=batch_id, from_state=from_state,
                                              to_state=to_state, detail=detail)])

    def audit_trail(self, request_id: str) -> list[Row]:
        """Every audit event of one request, oldest first."""
        with self.engine.connect() as connection:
            return list(connection.execute(_AUDIT_TRAIL, {"b_request": request_id}))

    # -- batches and requests -------------------------------------------------------------

    def add_batch(self, batch: dict[str, Any], rows: Sequence[dict[str, Any]]) -> tuple[list[str], int]:
        """Record a batch and its requests; a row whose (agency, request_ref) is already
        known is skipped. Returns the ids of the new requests and the count skipped."""
        known = self.known_refs(batch["agency_code"], [row["request_ref"] for row in rows])
        fresh = [row for row in rows if row["request_ref"] not in known]
        with self.transaction() as connection:
            connection.execute(insert(batches).values(**batch))
            if fresh:
                connection.execute(insert(requests), list(fresh))
                append_audit(connection, [
                    {"at": row["received_at"], "request_id": row["id"], "batch_id": batch["id"], "kind": "received",
                     "from_state": None, "to_state": row["state"],
                     "detail": json.dumps({"reason_code": row["reason_code"]}) if row.get("reason_code") else None}
                    for row in fresh
                ])
            self.audit(connection, "batch_submitted", batch_id=batch["id"],
                       detail={"rows": batch["rows"], "accepted": batch["accepted"], "source": batch["source"]})
        return [row["id"] for row in fresh], len(rows) - len(fresh)

    def known_refs(self, agency_code: str, refs: Iterable[str]) -> set[str]:
        """Which of these request references the agency has filed before."""
        refs = list(refs)
        found: set[str] = set()
        with self.engine.connect() as connection:
            for start in range(0, len(refs), 500):
                chunk = refs[start:start + 500]
                found.update(connection.execute(select(requests.c.request_ref).where(
                    requests.c.agency_code == agency_code, requests.c.request_ref.in_(chunk))).scalars())
        return found

    def get_request(self, request_id: str) -> Row | None:
        """One request row, or None."""
        with self.engine.connect() as connection:
            return connection.execute(_REQUEST, {"b_id": request_id}).first()

    def request_ids(self, *, batch_id: str | None = None, state: RequestState | None = None) -> list[str]:
        """Ids of requests, optionally of one batch and in one state."""
        query = select(requests.c.id).order_by(requests.c.received_at, requests.c.id)
        if batch_id:
            query = query.where(requests.c.batch_id == batch_id)
        if state:
            query = query.where(requests.c.state == state.value)
        with self.engine.connect() as connection:
            return list(connection.execute(query).scalars())

    def requests_in(self, state: RequestState, batch_id: str | None = None, limit: int = 100) -> list[Row]:
        """Up to ``limit`` requests in ``state``, oldest update first."""
        query = select(requests).where(requests.c.state == state.value)
        if batch_id is not None:
            query = query.where(requests.c.batch_id == batch_id)
        with self.engine.connect() as connection:
            return list(connection.execute(query.order_by(requests.c.updated_at).limit(limit)))

    def transition(self, request_id: str, expected: RequestState | tuple[RequestState, ...], new: RequestState,
                   *, detail: dict[str, Any] | None = None, connection: Connection | None = None,
                   **fields: Any) -> None:
        """Move a request from ``expected`` to ``new`` (compare-and-set) with its audit event.

        Raises StateConflict when the request is in another state; the caller decides
        whether that means "already done" (a redelivery) or a real conflict.
        """
        expected_states = (expected,) if isinstance(expected, RequestState) else expected
        if connection is None:
            with self.transaction() as own:
                return self.transition(request_id, expected, new, detail=detail, connection=own, **fields)
        statement, expected_bound = _move(_REQUEST_MOVE, _REQUEST_MOVE_ANY, [s.value for s in expected_states])
        moved = connection.execute(statement, {
            "b_id": request_id, "b_expected": expected_bound, "state": new.value,
            "updated_at": utcnow(), **fields}).first()
        if moved is None:
            actual = connection.execute(_REQUEST_STATE, {"b_id": request_id}).scalar()
            raise StateConflict("request", request_id, "|".join(s.value for s in expected_states), actual)
        self.audit(connection, "transition", request_id=request_id, batch_id=moved.batch_id,
                   from_state=expected_states[0].value if len(expected_states) == 1 else None,
                   to_state=new.value, detail=detail)

    def state_counts(self, batch_id: str | None = None) -> dict[RequestState, int]:
        """Requests per state, every state present."""
        query = select(requests.c.state, func.count()).group_by(requests.c.state)
        if batch_id:
            query = query.where(requests.c.batch_id == batch_id)
        counts = {state: 0 for state in RequestState}
        with self.engine.connect() as connection:
            for state, count in connection.execute(query):
                counts[RequestState(state)] = count
        return counts

    # -- devices ------------------------------------------------------------------------

    def add_blank_devices(self, station: str, found: Iterable[tuple[str, str]]) -> None:
        """Register blank devices (serial, token directory) of a station; ones already
        registered (by a station process racing this one) are left as they are."""
        found = list(found)
        for attempt in (1, 2):
            try:
                with self.transaction() as connection:
                    known = set(connection.execute(select(devices.c.serial).where(
                        devices.c.serial.in_([serial for serial, _ in found]))).scalars())
                    now = utcnow()
                    fresh = [(serial, token_dir) for serial, token_dir in found if serial not in known]
                    if fresh:
                        connection.execute(_DEVICE_ADD, [
                            {"serial": serial, "station": station, "token_dir": token_dir, "state": "blank",
                             "created_at": now, "updated_at": now} for serial, token_dir in fresh])
                        append_audit(connection, [
                            audit_event("device_provisioned", detail={"serial": serial, "station": station}, at=now)
                            for serial, _ in fresh])
                return
            except IntegrityError:
                if attempt == 2:
                    raise

    def device_for_request(self, request_id: str) -> Row | None:
        """The device assigned to a request, or None."""
        with self.engine.connect() as connection:
            return connection.execute(_DEVICE_OF_REQUEST, {"b_request": request_id}).first()

    def get_device(self, serial: str) -> Row | None:
        """One device row, or None."""
        with self.engine.connect() as connection:
            return connection.execute(_DEVICE, {"b_serial": serial}).first()

    def claim_blank_device(self, station: str, request_id: str, key_id: str) -> Row | None:
        """Assign a blank device of this station to the request (compare-and-set), recording
        the key id before any key exists. None when the station has no blank device."""
        with self.transaction() as connection:
            candidates = connection.execute(_BLANK_DEVICES, {"b_station": station}).scalars().all()
            for serial in candidates:
                claimed = connection.execute(_DEVICE_CLAIM, {
                    "b_serial": serial, "state": "claimed", "request_id": request_id, "key_id": key_id,
                    "updated_at": utcnow()}).first()
                if claimed is not None:
                    self.audit(connection, "device_claimed", request_id=request_id, detail={"serial": serial})
                    connection.execute(_REQUEST_SET, {"b_id": request_id, "device_serial": serial,
                                                      "updated_at": utcnow()})
                    return claimed
        return None

    def remove_claimed_device(self, serial: str, request_id: str) -> None:
        """A claimed device was pulled out before its key was recorded: it leaves the
        request, which claims another, and stays in the ledger as `removed` (to be wiped)."""
        with self.transaction() as connection:
            result = connection.execute(
                update(devices).where(devices.c.serial == serial, devices.c.state == "claimed",
                                      devices.c.request_id == request_id)
                .values(state="removed", request_id=None, updated_at=utcnow()))
            if result.rowcount == 1:
                self.audit(connection, "device_removed", request_id=request_id, detail={"serial": serial})
                connection.execute(update(requests).where(requests.c.id == request_id)
                                   .values(device_serial=None, updated_at=utcnow()))

    def set_device(self, serial: str, expected: str | tuple[str, ...], new: str, *,
                   connection: Connection | None = None, **fields: Any) -> None:
        """Move a device between lifecycle states (compare-and-set), with an audit event;
        inside the caller's transaction when given one."""
        expected_states = (expected,) if isinstance(expected, str) else expected
        if connection is None:
            with self.transaction() as own:
                return self.set_device(serial, expected, new, connection=own, **fields)
        statement, expected_bound = _move(_DEVICE_MOVE, _DEVICE_MOVE_ANY, expected_states)
        moved = connection.execute(statement, {"b_serial": serial, "b_expected": expected_bound,
                                               "state": new, "updated_at": utcnow(), **fields}).first()
        if moved is None:
            actual = connection.execute(_DEVICE_STATE, {"b_serial": serial}).scalar()
            raise StateConflict("device", serial, "|".join(expected_states), actual)
        self.audit(connection, "device_" + new, request_id=moved.request_id, detail={"serial": serial})

    def device_counts(self) -> dict[str, int]:
        """Devices per lifecycle state."""
        with self.engine.connect() as connection:
            return dict(connection.execute(select(devices.c.state, func.count()).group_by(devices.c.state)).all())

    # -- certificates ----------------------------------------------------------------------

    def reserve_certificate(self, request_id: str, serial: str) -> Row:
        """Record the serial before signing (intent first). Returns the request's one
        certificate row: the new one, or the one an earlier attempt reserved."""
        try:
            with self.transaction() as connection:
                connection.execute(_CERTIFICATE_ADD, {"serial": serial, "request_id": request_id,
                                                      "status": "issuing", "created_at": utcnow()})
                self.audit(connection, "serial_reserved", request_id=request_id, detail={"serial": serial})
        except IntegrityError:
            pass  # an earlier delivery reserved one (or, once in 2^128, the serial is taken)
        row = self.certificate_for_request(request_id)
        assert row is not None
        return row

    def store_certificate(self, serial: str, der: bytes, not_before: dt.datetime, not_after: dt.datetime,
                          connection: Connection) -> None:
        """Store the signed certificate, on hold until published."""
        connection.execute(_CERTIFICATE_STORE, {"b_serial": serial, "der": der, "status": "hold",
                                                "not_before": not_before, "not_after": not_after})

    def certificate_for_request(self, request_id: str) -> Row | None:
        """The certificate row of a request, or None."""
        with self.engine.connect() as connection:
            return connection.execute(_CERTIFICATE_OF_REQUEST, {"b_request": request_id}).first()

    def certificate_for_serial(self, serial: str) -> Row | None:
        """The certificate row with this serial (32 hex digits), or None."""
        with self.engine.connect() as connection:
            return connection.execute(_CERTIFICATE, {"b_serial": serial}).first()

    # -- outbox ----------------------------------------------------------------------------

    def add_outbox(self, connection: Connection, request_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Queue a notification once per (request, kind), inside the caller's transaction."""
        exists = connection.execute(_OUTBOX_FIND, {"b_request": request_id, "b_kind": kind}).first()
        if exists is None:
            connection.execute(_OUTBOX_ADD, {"request_id": request_id, "kind": kind,
                                             "payload": json.dumps(payload, ensure_ascii=False),
                                             "created_at": utcnow()})

    def outbox_for(self, request_id: str) -> list[Row]:
        """Notifications queued for a request."""
        with self.engine.connect() as connection:
            return list(connection.execute(select(outbox).where(outbox.c.request_id == request_id)))

    # -- queries the stages need -------------------------------------------------------------

    def earlier_live_request(self, citizen_id: str, request_id: str) -> Row | None:
        """Another request of the same person, received before this one and still live
        (in flight or published): one certificate per person."""
        with self.engine.connect() as connection:
            own = connection.execute(_RECEIVED_AT, {"b_id": request_id}).scalar()
            for other in connection.execute(_LIVE_OF_PERSON, {"b_citizen": citizen_id, "b_id": request_id}):
                if (other.received_at, other.id) < (own, request_id):
                    return other
        return None

    def device_serials(self, station: str) -> set[str]:
        """Serials of every device the ledger knows on a station."""
        with self.engine.connect() as connection:
            return set(connection.execute(select(devices.c.serial).where(devices.c.station == station)).scalars())

    def record_device_key(self, connection: Connection, serial: str, public_der: bytes) -> None:
        """The device holds its key pair now: record its public key."""
        connection.execute(_DEVICE_SET, {"b_serial": serial, "state": "personalised", "public_key": public_der,
                                         "updated_at": utcnow()})

    def mark_published(self, serial: str, at: dt.datetime, connection: Connection) -> None:
        """Release the certificate's hold: it is effective from ``at``."""
        connection.execute(_CERTIFICATE_SET, {"b_serial": serial, "status": "published", "published_at": at})

    def published_count(self) -> int:
        """How many certificates are published (and not revoked since)."""
        with self.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(certificates)
                                          .where(certificates.c.status == "published")).scalar() or 0)

    def index_entries(self, published_since: dt.datetime | None = None) -> list[dict[str, Any]]:
        """The repository index: serial, subject fields, validity, publication time, and
        the SHA-256 (hex) of the holder's CCCD for the repository's search; only those
        published since a moment, when given."""
        query = (select(certificates.c.serial, certificates.c.not_before, certificates.c.not_after,
                        certificates.c.published_at, requests.c.agency_code, requests.c.record)
                 .join(requests, requests.c.id == certificates.c.request_id)
                 .where(certificates.c.status == "published").order_by(certificates.c.published_at))
        if published_since is not None:
            query = query.where(certificates.c.published_at >= published_since)
        entries = []
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                record = json.loads(row.record)
                entries.append({
                    "serial": row.serial, "full_name": record["full_name"], "organization": record["organization"],
                    "agency_code": row.agency_code, "not_before": row.not_before, "not_after": row.not_after,
                    "published_at": row.published_at,
                    "der": f"certs/{row.serial}.cer", "pem": f"certs/{row.serial}.pem",
                    # Searchable by CCCD without listing it (it is in the certificate's subject anyway).
                    "citizen_id_sha256": hashlib.sha256(record["citizen_id"].encode()).hexdigest(),
                })
        return entries

    def unmoved_requests(self, states: tuple[RequestState, ...], older_than_seconds: float) -> list[Row]:
        """Requests in ``states`` not updated for ``older_than_seconds``."""
        cutoff = utcnow() - dt.timedelta(seconds=older_than_seconds)
        with self.engine.connect() as connection:
            return list(connection.execute(select(requests.c.id, requests.c.state).where(
                requests.c.state.in_([s.value for s in states]), requests.c.updated_at <= cutoff)))
