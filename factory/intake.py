"""Reading a batch into request rows for the ledger: every row accounted for.

A row that cannot be parsed is kept as a rejected request with its reasons, so nothing
an agency sent is lost and one bad row never stops the others.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factory.errors import PermanentError
from factory.validation import parse_row
from schemas.status import Rejection, RequestState


@dataclass
class RowOutcome:
    """What became of one input row."""

    row: int
    request_ref: str | None
    status: str  # accepted | rejected | duplicate
    reasons: list[Rejection] = field(default_factory=list)


@dataclass
class PreparedBatch:
    """A batch ready for the ledger: its row, its request rows and the per-row outcomes."""

    batch: dict[str, Any]
    requests: list[dict[str, Any]]
    outcomes: list[RowOutcome]


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | Rejection]]:
    """(row number, parsed object or the reason it is not one) for each non-blank line."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                yield number, Rejection(code="row.unreadable", field=None,
                                        message=f"row {number}: not a JSON object ({error}) / Dòng không đọc được")
                continue
            if not isinstance(value, dict):
                yield number, Rejection(code="row.unreadable", field=None,
                                        message=f"row {number}: expected a JSON object / Dòng phải là đối tượng JSON")
                continue
            yield number, value


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | Rejection]]:
    """Rows of a batch file by its suffix."""
    if path.suffix.lower() == ".jsonl":
        return read_jsonl(path)
    raise PermanentError(f"{path.name}: unsupported batch format {path.suffix!r}; use .jsonl")


def prepare_batch(path: Path, agency_code: str, now: dt.datetime, known_refs: set[str] | None = None) -> PreparedBatch:
    """Parse every row; good rows become `received` requests, bad rows `rejected` ones,
    rows whose request_ref the agency filed before are reported as duplicates only."""
    batch_id = uuid.uuid4().hex
    requests: list[dict[str, Any]] = []
    outcomes: list[RowOutcome] = []
    seen_refs: set[str] = set()
    for number, parsed in read_rows(path):
        if isinstance(parsed, Rejection):
            outcomes.append(RowOutcome(number, None, "rejected", [parsed]))
            continue
        record, reasons = parse_row(parsed)
        ref = str(parsed.get("request_ref") or "").strip()[:64] or f"row-{number}"
        if known_refs and ref in known_refs:
            outcomes.append(RowOutcome(number, ref, "duplicate"))
            continue
        if ref in seen_refs:
            reasons = [*reasons, Rejection(code="request_ref.duplicate", field="request_ref",
                                           message=f"request_ref: {ref} appears twice in this batch / Mã hồ sơ trùng")]
        seen_refs.add(ref)
        state = RequestState.rejected if reasons else RequestState.received
        requests.append({
            "id": uuid.uuid4().hex, "batch_id": batch_id, "agency_code": agency_code, "request_ref": ref,
            "citizen_id": (record.citizen_id if record else str(parsed.get("citizen_id") or ""))[:32],
            "record": record.model_dump_json() if record and not reasons else json.dumps(parsed, default=str),
            "key_type": (record.key_type.value if record else str(parsed.get("key_type") or ""))[:16],
            "state": state.value, "reason_code": reasons[0].code if reasons else None,
            "reason": json.dumps([r.model_dump() for r in reasons], ensure_ascii=False) if reasons else None,
            "received_at": now, "updated_at": now,
        })
        outcomes.append(RowOutcome(number, ref, "rejected" if reasons else "accepted", reasons))
    count = {status: sum(1 for o in outcomes if o.status == status) for status in ("accepted", "rejected", "duplicate")}
    batch = {"id": batch_id, "agency_code": agency_code, "source": path.name, "submitted_at": now,
             "rows": len(outcomes), "accepted": count["accepted"], "rejected": count["rejected"],
             "duplicates": count["duplicate"]}
    return PreparedBatch(batch, requests, outcomes)
