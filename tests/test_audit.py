"""The audit trail is a hash chain: any edited, deleted or reordered row is found."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, func, select, update

from factory.audit import verify_chain
from factory.ledger import Ledger
from factory.tables import audit_events
from schemas.status import RequestState


def _fill(ledger: Ledger) -> None:
    now = dt.datetime.now(dt.UTC)
    batch_id = uuid.uuid4().hex
    rows = [{"id": uuid.uuid4().hex, "batch_id": batch_id, "agency_code": "BTC", "request_ref": f"HS-{i}",
             "citizen_id": f"0380930155{i:02d}", "record": "{}", "key_type": "rsa2048", "state": "received",
             "reason_code": None, "reason": None, "received_at": now, "updated_at": now} for i in range(3)]
    ledger.add_batch({"id": batch_id, "agency_code": "BTC", "source": "t.jsonl", "submitted_at": now, "rows": 3,
                      "accepted": 3, "rejected": 0, "duplicates": 0}, rows)
    for row in rows:
        ledger.transition(row["id"], RequestState.received, RequestState.validated, detail={"tên": "Nguyễn Thị Ánh"})


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request: pytest.FixtureRequest, tmp_path) -> Iterator[Ledger]:
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}" if request.param == "sqlite" \
        else request.getfixturevalue("postgres_url")
    opened = Ledger.connect(url)
    _fill(opened)
    yield opened
    opened.close()


def _middle(ledger: Ledger) -> int:
    with ledger.engine.connect() as connection:
        return int(connection.execute(select(func.max(audit_events.c.seq))).scalar()) // 2


def test_an_untouched_chain_verifies(ledger: Ledger) -> None:
    """Every row written through the ledger chains onto the one before it."""
    checked, broken = verify_chain(ledger)
    assert broken is None and checked == 3 + 1 + 3  # received ×3, batch_submitted, transitions ×3


def test_an_edited_row_is_reported_as_changed(ledger: Ledger) -> None:
    """Changing one field of one row breaks its hash."""
    seq = _middle(ledger)
    with ledger.transaction() as connection:
        connection.execute(update(audit_events).where(audit_events.c.seq == seq).values(to_state="published"))
    _, broken = verify_chain(ledger)
    assert broken is not None and (broken.seq, broken.problem) == (seq, "changed")


def test_a_deleted_row_is_reported_after_the_gap(ledger: Ledger) -> None:
    """Deleting a row leaves the next one pointing at a hash that is no longer there."""
    seq = _middle(ledger)
    with ledger.transaction() as connection:
        connection.execute(delete(audit_events).where(audit_events.c.seq == seq))
    _, broken = verify_chain(ledger)
    assert broken is not None and (broken.seq, broken.problem) == (seq + 1, "deleted")


def test_two_swapped_rows_are_reported_out_of_order(ledger: Ledger) -> None:
    """Swapping the order of two rows breaks the chain at the first of them."""
    seq = _middle(ledger)
    with ledger.transaction() as connection:
        connection.execute(update(audit_events).where(audit_events.c.seq == seq).values(seq=-1))
        connection.execute(update(audit_events).where(audit_events.c.seq == seq + 1).values(seq=seq))
        connection.execute(update(audit_events).where(audit_events.c.seq == -1).values(seq=seq + 1))
    _, broken = verify_chain(ledger)
    assert broken is not None and broken.seq == seq and broken.problem == "out_of_order"


def test_deleting_the_newest_row_is_found_through_the_head(ledger: Ledger) -> None:
    """The chain's head remembers the last hash, so cutting off the end is seen too."""
    with ledger.transaction() as connection:
        last = connection.execute(select(func.max(audit_events.c.seq))).scalar()
        connection.execute(delete(audit_events).where(audit_events.c.seq == last))
    _, broken = verify_chain(ledger)
    assert broken is not None and broken.problem == "truncated"
