"""Reading a batch into request rows for the ledger: every row accounted for.

``check_batch`` streams a file (.xlsx, .csv, .jsonl) row by row, in chunks: each row is
shaped (``parse_row``), put through the domain rules (``validate_record``) and checked
for duplicates, in the batch and against the ledger (one certificate per person). A row
that fails is kept as a rejected request with its reasons, so nothing an agency sent is
lost and one bad row never stops the others. Checked rows wait in a temporary spool
file, not in memory, until ``record_batch`` writes them in one short transaction: any
file of 100,000 rows is checked in bounded memory.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import IO, Any

from sqlalchemy import insert, or_, select, update

from factory.ledger import Ledger, append_audit
from factory.spreadsheets import BatchFileError, read_table
from factory.tables import batches, requests
from factory.validation import canonical_name, normalise_name, normalise_phone, parse_row, validate_record
from schemas import RequestRecord, Role
from schemas.status import Rejection, RequestState

Row = tuple[int, dict[str, Any] | Rejection]
CHUNK = 500  # rows checked against the ledger per query
# A request in these states holds no certificate and asks for none.
DEAD_STATES = (RequestState.rejected.value, RequestState.failed.value, RequestState.revoked.value)
LIVE_CERTIFICATE_STATES = (RequestState.activated.value, RequestState.published.value)
FORMATS = (".xlsx", ".csv", ".jsonl")


@dataclass(slots=True)
class RowOutcome:
    """What became of one input row."""

    row: int
    request_ref: str | None
    status: str  # accepted | rejected | duplicate
    reasons: list[Rejection] = field(default_factory=list)


@dataclass
class CheckedBatch:
    """A batch after every check, not yet recorded: per-row outcomes, warnings and the
    spool of request rows waiting for ``record_batch``."""

    batch_id: str
    agency_code: str
    source: str
    checked_at: dt.datetime
    outcomes: list[RowOutcome]
    warnings: list[str]
    spool: IO[str]

    def count(self, status: str) -> int:
        """Rows with this status."""
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    def report(self) -> dict[str, Any]:
        """The submission report in the shape of ``schemas.BatchSubmitted`` (the public
        contract; built as plain data: validating 100,000 rows again would cost seconds)."""
        return {"batch_id": self.batch_id, "accepted": self.count("accepted"), "rejected": self.count("rejected"),
                "duplicates": self.count("duplicate"),
                "rows": [{"row": o.row, "request_ref": o.request_ref, "status": o.status,
                          "reasons": [reason.model_dump() for reason in o.reasons]} for o in self.outcomes],
                "warnings": self.warnings}

    def close(self) -> None:
        """Delete the spool."""
        self.spool.close()


def _reason(code: str, field: str | None, english: str, vietnamese: str) -> Rejection:
    return Rejection(code=code, field=field, message=f"{field or 'row'}: {english} / {vietnamese}")


def read_jsonl(path: Path) -> Iterator[Row]:
    """(row number, parsed object or the reason it is not one) for each non-blank line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
            except (UnicodeDecodeError, ValueError, RecursionError) as error:  # RecursionError: "[[[[…" nested
                yield number, _reason("row.unreadable", None, f"line {number} is not a JSON object "
                                      f"({type(error).__name__})", "Dòng không đọc được")
                continue
            if not isinstance(value, dict):
                yield number, _reason("row.unreadable", None, f"line {number}: expected a JSON object",
                                      "Dòng phải là đối tượng JSON")
                continue
            yield number, value


def read_rows(path: Path) -> Iterator[Row]:
    """Rows of a batch file by its suffix (.xlsx, .csv, .jsonl); ``BatchFileError`` when
    the file as a whole cannot be read."""
    if path.suffix.lower() == ".jsonl":
        return read_jsonl(path)
    return read_table(path)


def _ref(raw: dict[str, Any], number: int) -> str:
    ref = raw.get("request_ref")
    text = str(ref).strip() if ref is not None and not isinstance(ref, (dict, list)) else ""
    return text[:64] or f"row-{number}"


def _stored(record: RequestRecord) -> RequestRecord:
    """The record as the ledger keeps it: name in NFC with single spaces, phone as +84…"""
    update_: dict[str, Any] = {"full_name": normalise_name(record.full_name)}
    if record.phone:
        update_["phone"] = normalise_phone(record.phone)
    return record.model_copy(update=update_)


class _LedgerView:
    """The ledger facts a batch is checked against, queried a chunk at a time."""

    def __init__(self, ledger: Ledger, agency_code: str) -> None:
        self.ledger, self.agency_code = ledger, agency_code

    def refs(self, refs: list[str]) -> dict[str, tuple[str, str, str]]:
        """request_ref → (request id, state, batch id) of the agency's earlier requests."""
        with self.ledger.engine.connect() as connection:
            rows = connection.execute(select(requests.c.request_ref, requests.c.id, requests.c.state,
                                             requests.c.batch_id)
                                      .where(requests.c.agency_code == self.agency_code,
                                             requests.c.request_ref.in_(refs)))
            return {row.request_ref: (row.id, row.state, row.batch_id) for row in rows}

    def live_people(self, citizen_ids: list[str]) -> dict[str, tuple[str, str]]:
        """citizen_id → (state, stored full name) of a live request or certificate."""
        with self.ledger.engine.connect() as connection:
            rows = connection.execute(select(requests.c.citizen_id, requests.c.state, requests.c.record)
                                      .where(requests.c.citizen_id.in_(citizen_ids),
                                             requests.c.state.not_in(DEAD_STATES)))
            return {row.citizen_id: (row.state, json.loads(row.record).get("full_name", "")) for row in rows}

    def units_with(self) -> dict[Role, set[str]]:
        """Budget units that already have a live account holder / chief accountant."""
        found: dict[Role, set[str]] = {Role.account_holder: set(), Role.chief_accountant: set()}
        # The roles live inside the record JSON; the LIKE narrows the scan to candidates.
        query = (select(requests.c.record).where(requests.c.state.not_in(DEAD_STATES))
                 .where(or_(*(requests.c.record.like(f'%"role":"{role.value}"%') for role in found))))
        with self.ledger.engine.connect() as connection:
            for (text,) in connection.execute(query.execution_options(yield_per=1000)):
                record = json.loads(text)
                role = record.get("role")
                if role in (Role.account_holder.value, Role.chief_accountant.value):
                    found[Role(role)].add(str(record.get("unit_code")))
        return found


@dataclass
class _Seen:
    """What earlier rows of the batch held, for duplicates and the batch-wide warnings."""

    refs: dict[str, int] = field(default_factory=dict)
    people: dict[str, tuple[int, str]] = field(default_factory=dict)  # citizen_id → (row, canonical name)
    name_birth: dict[tuple[str, dt.date], tuple[int, str]] = field(default_factory=dict)
    roles: dict[str, set[Role]] = field(default_factory=dict)  # unit_code → roles accepted
    role_counts: dict[tuple[str, Role], int] = field(default_factory=dict)


_TREASURY_LIMITS = {Role.account_holder: 1, Role.account_holder_delegate: 3,
                    Role.chief_accountant: 1, Role.chief_accountant_delegate: 2}


def _same_person(record: RequestRecord, number: int, seen: _Seen, warnings: list[str]) -> list[Rejection]:
    """Duplicates inside the batch: the same CCCD twice (names compared canonically)."""
    name = canonical_name(record.full_name)
    if record.citizen_id in seen.people:
        first, first_name = seen.people[record.citizen_id]
        names = "the same person" if first_name == name else "a different name: check the citizen_id"
        return [_reason("citizen_id.duplicate_in_batch", "citizen_id",
                        f"{record.citizen_id} is already on row {first} ({names}); one certificate per person",
                        f"Số CCCD đã có ở dòng {first}; mỗi người một chứng thư số")]
    seen.people[record.citizen_id] = (number, name)
    other = seen.name_birth.setdefault((name, record.date_of_birth), (number, record.citizen_id))
    if other[0] != number:
        warnings.append(f"row {number}: same name and date of birth as row {other[0]} with another citizen_id "
                        f"({other[1]} / {record.citizen_id}): the same person twice? / Dòng {number} trùng họ tên "
                        f"và ngày sinh với dòng {other[0]} nhưng khác số CCCD")
    return []


def _live(record: RequestRecord, live: dict[str, tuple[str, str]]) -> list[Rejection]:
    """Duplicates against the ledger: a live certificate or a request in flight."""
    if (found := live.get(record.citizen_id)) is None:
        return []
    state, stored_name = found
    names = "" if canonical_name(stored_name) == canonical_name(record.full_name) else \
        f" under the name {stored_name!r}"
    if state in LIVE_CERTIFICATE_STATES:
        return [_reason("citizen_id.live_certificate", "citizen_id",
                        f"this person already holds a live certificate{names}; one certificate per person "
                        "(revoke it first for a renewal)", "Người này đã có chứng thư số còn hiệu lực")]
    return [_reason("citizen_id.in_flight", "citizen_id",
                    f"this person already has a request in progress{names} (state {state})",
                    "Người này đã có yêu cầu đang được xử lý")]


def _treasury_warnings(seen: _Seen, held: dict[Role, set[str]]) -> list[str]:
    """Per unit: no live account holder / chief accountant once the batch is issued, or
    more of a Treasury role than the Treasury accepts (DOMAIN.md)."""
    warnings = []
    for unit in sorted(seen.roles):
        for role, signature in ((Role.account_holder, "first"), (Role.chief_accountant, "second")):
            if role not in seen.roles[unit] and unit not in held[role]:
                warnings.append(f"unit {unit}: would have no live {role.value} (the Treasury's {signature} signature),"
                                f" counting the ledger / Đơn vị {unit}: thiếu "
                                f"{'chủ tài khoản' if role is Role.account_holder else 'kế toán trưởng'}")
        for role, limit in _TREASURY_LIMITS.items():
            if (count := seen.role_counts.get((unit, role), 0)) > limit:
                warnings.append(f"unit {unit}: {count} {role.value} in this batch, the Treasury accepts at most "
                                f"{limit} / Đơn vị {unit}: {count} người vai trò {role.value}, tối đa {limit}")
    return warnings


def check_batch(ledger: Ledger, path: Path, agency_code: str, *, now: dt.datetime,
                allowed_key_types: tuple[str, ...]) -> CheckedBatch:
    """Check every row of ``path`` for ``agency_code``; ``BatchFileError`` when the file
    cannot be read at all. Nothing is written to the ledger."""
    if path.suffix.lower() not in FORMATS:
        raise BatchFileError(f"{path.name}: unsupported format {path.suffix!r}; use .xlsx, .csv or .jsonl")
    view = _LedgerView(ledger, agency_code)
    seen, outcomes, warnings = _Seen(), [], []  # type: ignore[var-annotated]
    spool = tempfile.TemporaryFile("w+", encoding="utf-8")
    batch_id = uuid.uuid4().hex
    rows = read_rows(path)
    try:
        while chunk := list(islice(rows, CHUNK)):
            parsed = [(number, raw, parse_row(raw) if isinstance(raw, dict) else (None, [raw]))
                      for number, raw in chunk]
            known = view.refs([_ref(raw, n) for n, raw, _ in parsed if isinstance(raw, dict)])
            live = view.live_people([record.citizen_id for _, _, (record, _) in parsed if record is not None])
            for number, raw, (record, reasons) in parsed:
                ref = _ref(raw, number) if isinstance(raw, dict) else None
                earlier = known.get(ref) if ref else None
                if earlier and earlier[1] != RequestState.rejected.value:
                    outcomes.append(RowOutcome(number, ref, "duplicate", [_reason(
                        "request_ref.known", "request_ref", f"{ref} was filed before (batch {earlier[2]}, "
                        f"state {earlier[1]}); nothing new is issued", "Hồ sơ đã được nộp trước đó")]))
                    continue
                first = seen.refs.setdefault(ref, number) if ref is not None else number
                if first != number:  # not spooled: the ref is the row's key in the ledger
                    outcomes.append(RowOutcome(number, ref, "rejected", [*reasons, _reason(
                        "request_ref.duplicate_in_batch", "request_ref", f"{ref} is already used on row {first}",
                        f"Mã hồ sơ trùng dòng {first}")]))
                    continue
                if record is not None:
                    reasons = validate_record(record, today=now.date(), allowed_key_types=allowed_key_types)
                    reasons += _live(record, live)
                    # Only a good row claims its person: a bad first row must not hold back a good second.
                    reasons = reasons or _same_person(record, number, seen, warnings)
                status = "rejected" if reasons else "accepted"
                outcomes.append(RowOutcome(number, ref, status, reasons))
                if record is not None and not reasons:
                    seen.roles.setdefault(record.unit_code, set()).add(record.role)
                    seen.role_counts[(record.unit_code, record.role)] = \
                        seen.role_counts.get((record.unit_code, record.role), 0) + 1
                if ref is not None:  # an unreadable line has no ref: the report is its record
                    spool.write(json.dumps(_request_row(raw, record, reasons, ref, earlier), ensure_ascii=False,
                                           default=str) + "\n")
    except BaseException:
        spool.close()
        raise
    warnings += _treasury_warnings(seen, view.units_with()) if seen.roles else []
    spool.seek(0)
    return CheckedBatch(batch_id, agency_code, path.name, now, outcomes, warnings, spool)


def _request_row(raw: Any, record: RequestRecord | None, reasons: list[Rejection], ref: str,
                 earlier: tuple[str, str, str] | None) -> dict[str, Any]:
    good = record is not None and not reasons
    return {
        "id": earlier[0] if earlier else uuid.uuid4().hex, "replaces": earlier is not None, "request_ref": ref,
        "citizen_id": (record.citizen_id if record else str(raw.get("citizen_id") or ""))[:32],
        "record": _stored(record).model_dump_json() if good and record else json.dumps(raw, default=str,
                                                                                        ensure_ascii=False),
        "key_type": (record.key_type.value if record else str(raw.get("key_type") or ""))[:16],
        "state": (RequestState.received if good else RequestState.rejected).value,
        "reason_code": reasons[0].code if reasons else None,
        "reason": json.dumps([r.model_dump() for r in reasons], ensure_ascii=False) if reasons else None,
    }


def record_batch(ledger: Ledger, checked: CheckedBatch, endorsement: dict[str, Any]) -> list[str]:
    """Write the batch, its requests and its endorsement in one transaction; returns the
    ids of the requests now `received` (to enqueue). A request_ref filed meanwhile by a
    concurrent submission of the same rows is turned into a duplicate here."""
    now = checked.checked_at
    fresh: list[str] = []
    with ledger.transaction() as connection:
        connection.execute(insert(batches).values(
            id=checked.batch_id, agency_code=checked.agency_code, source=checked.source, submitted_at=now,
            rows=len(checked.outcomes), accepted=0, rejected=0, duplicates=0,
            endorsement=json.dumps(endorsement, ensure_ascii=False)))
        late: set[str] = set()
        while lines := list(islice(checked.spool, CHUNK)):
            chunk = [json.loads(line) for line in lines]
            known = {row.request_ref: row.state for row in connection.execute(
                select(requests.c.request_ref, requests.c.state).where(
                    requests.c.agency_code == checked.agency_code,
                    requests.c.request_ref.in_([row["request_ref"] for row in chunk])))}
            new, events = [], []
            for row in chunk:
                replaces = row.pop("replaces")
                state_before = known.get(row["request_ref"])
                if state_before is not None and (not replaces or state_before != RequestState.rejected.value):
                    late.add(row["request_ref"])
                    continue
                values = {**row, "batch_id": checked.batch_id, "agency_code": checked.agency_code,
                          "received_at": now, "updated_at": now}
                if replaces:  # a row rejected before, filed again (corrected or not)
                    connection.execute(update(requests).where(requests.c.id == row["id"]).values(**values))
                else:
                    new.append(values)
                if row["state"] == RequestState.received.value:
                    fresh.append(row["id"])
                events.append({"at": now, "request_id": row["id"], "batch_id": checked.batch_id,
                               "kind": "resubmitted" if replaces else "received",
                               "from_state": RequestState.rejected.value if replaces else None,
                               "to_state": row["state"],
                               "detail": json.dumps({"reason_code": row["reason_code"]}) if row["reason_code"]
                               else None})
            if new:
                connection.execute(insert(requests), new)
            append_audit(connection, events)
        for outcome in checked.outcomes:
            if outcome.request_ref in late and outcome.status != "duplicate":
                outcome.status, outcome.reasons = "duplicate", [_reason(
                    "request_ref.known", "request_ref", f"{outcome.request_ref} was filed by another submission "
                    "meanwhile; nothing new is issued", "Hồ sơ đã được nộp trước đó")]
        counts = {status: checked.count(status) for status in ("accepted", "rejected", "duplicate")}
        connection.execute(update(batches).where(batches.c.id == checked.batch_id).values(
            accepted=counts["accepted"], rejected=counts["rejected"], duplicates=counts["duplicate"]))
        ledger.audit(connection, "batch_submitted", batch_id=checked.batch_id,
                     detail={"rows": len(checked.outcomes), **counts, "source": checked.source,
                             "endorsement": endorsement})
    return fresh

