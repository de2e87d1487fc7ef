"""Verifying the audit trail's hash chain: the first row changed, deleted or out of order."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from factory.ledger import GENESIS_HASH, Ledger, audit_hash
from factory.tables import audit_events, audit_head


@dataclass(frozen=True)
class ChainBreak:
    """Where the chain first breaks and how."""

    seq: int
    event_id: int | None
    problem: str  # changed | deleted | out_of_order | truncated

    def describe(self) -> str:
        """A sentence for the operator."""
        what = {"changed": "was changed after it was written",
                "deleted": "follows a deleted row",
                "out_of_order": "was inserted out of order",
                "truncated": "is missing: rows were deleted from the end"}[self.problem]
        return f"audit row seq {self.seq} (id {self.event_id}) {what}"


def verify_chain(ledger: Ledger) -> tuple[int, ChainBreak | None]:
    """Walk the chain in order. Returns the rows checked and the first break, if any."""
    expected_prev, expected_seq, last_id, checked = GENESIS_HASH, 1, 0, 0
    with ledger.engine.connect() as connection:
        head = connection.execute(select(audit_head)).first()
        for row in connection.execute(select(audit_events).order_by(audit_events.c.seq)):
            checked += 1
            if row.seq != expected_seq or row.prev_hash != expected_prev:
                problem = "deleted" if row.seq > expected_seq else "out_of_order"
                return checked, ChainBreak(row.seq, row.id, problem)
            if row.id < last_id:
                return checked, ChainBreak(row.seq, row.id, "out_of_order")
            if audit_hash(row.prev_hash, row) != row.hash:
                return checked, ChainBreak(row.seq, row.id, "changed")
            expected_prev, expected_seq, last_id = row.hash, row.seq + 1, row.id
    if head is not None and (head.seq != expected_seq - 1 or head.hash != expected_prev):
        return checked, ChainBreak(expected_seq, None, "truncated")
    return checked, None
