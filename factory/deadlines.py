"""Where requests stand against their two legal deadlines (DESIGN.md §6).

``ready``: 3 working days from a valid request to a packaged device, owed while the
request has not yet been packaged; ``publish``: 1 working day from the activation
request to publication, owed while it is activated but not published. A deadline is at
risk when it falls today or on the next working day, breached once it has passed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import and_, case, func, select

from factory.calendar import WorkingCalendar
from factory.ledger import Ledger
from factory.tables import requests
from schemas.status import RequestState as S

OWED_BY: dict[str, tuple[Any, tuple[S, ...]]] = {
    "ready": (requests.c.ready_deadline, (S.received, S.validated, S.key_generated, S.signed)),
    "publish": (requests.c.publish_deadline, (S.activated,)),
}
"""Per deadline: its column, and the states in which a request still owes it."""


@dataclass(frozen=True)
class Standing:
    """The open requests owing one deadline."""

    open: int
    at_risk: int
    breached: int
    next_due: dt.date | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, dates in ISO."""
        data = asdict(self)
        data["next_due"] = self.next_due.isoformat() if self.next_due else None
        return data


def standings(ledger: Ledger, calendar: WorkingCalendar, today: dt.date,
              batch_id: str | None = None) -> dict[str, Standing]:
    """Per deadline, how many open requests owe it, are at risk, are breached, and the
    earliest date still to come."""
    risk_until = calendar.next_working_day(today)
    result = {}
    with ledger.engine.connect() as connection:
        for name, (column, states) in OWED_BY.items():
            where = [requests.c.state.in_([state.value for state in states]), column.is_not(None)]
            if batch_id is not None:
                where.append(requests.c.batch_id == batch_id)
            query = select(func.count(),
                           func.coalesce(func.sum(case((and_(column >= today, column <= risk_until), 1), else_=0)), 0),
                           func.coalesce(func.sum(case((column < today, 1), else_=0)), 0),
                           func.min(case((column >= today, column), else_=None))).where(*where)
            total, at_risk, breached, next_due = connection.execute(query).one()
            if isinstance(next_due, str):  # SQLite hands an aggregate over a Date back as text
                next_due = dt.date.fromisoformat(next_due)
            result[name] = Standing(int(total), int(at_risk), int(breached), next_due)
    return result
