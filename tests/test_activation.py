"""Activation of many requests at once (``Issuance.activate_many``): a few hundred to a
transaction, only what awaits activation, each exactly once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import update

from factory.calendar import WorkingCalendar
from factory.issuance import Issuance, Pickup
from factory.ledger import Ledger
from factory.publication import Repository
from factory.tables import requests
from schemas.status import RequestState as S
from tests.softca import POLICY, file_batch


def test_many_activations_move_only_what_awaits_activation_once(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    issuance = Issuance(ledger, policy=POLICY, repository=Repository(tmp_path / "repository"),
                        calendar=WorkingCalendar(), pickup=Pickup("here", "9-17"))
    monkeypatch.setattr(Issuance, "ACTIVATIONS_PER_TRANSACTION", 2)  # several transactions for five
    ids = file_batch(ledger, tmp_path, "ACT", 6, seed=3)
    with ledger.transaction() as connection:  # five packaged and waiting; the sixth still at the start
        connection.execute(update(requests).where(requests.c.id.in_(ids[:5]))
                           .values(state=S.awaiting_activation.value))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)

    activated = issuance.activate_many([*ids, "no-such-request"], effective_at=later)

    assert activated == ids[:5]
    for request_id in ids[:5]:
        row = ledger.get_request(request_id)
        assert row is not None and row.state == S.activated.value and row.publish_deadline is not None
        assert row.effective_at is not None and abs(row.effective_at.replace(tzinfo=dt.UTC) - later).total_seconds() < 1
        moves = [event for event in ledger.audit_trail(request_id) if event.to_state == S.activated.value]
        assert len(moves) == 1
    waiting = ledger.get_request(ids[5])
    assert waiting is not None and waiting.state == S.received.value
    assert issuance.activate_many(ids) == []  # asked again: nothing moves, no second event
    assert all(len([e for e in ledger.audit_trail(i) if e.to_state == S.activated.value]) == 1 for i in ids[:5])
    assert issuance.activate_many([ids[5]]) == []  # one not yet packaged, alone: left as it is
