"""What the CLI (and later the HTTP API) do, over the ledger and the broker."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from certfactory import wiring
from certfactory.messaging import actors_for
from certfactory.settings import Settings
from factory.intake import prepare_batch
from factory.ledger import Ledger
from schemas.status import RequestState


def submit(settings: Settings, ledger: Ledger, path: Path, agency_code: str) -> dict[str, Any]:
    """Record a batch file and enqueue its good rows; returns the submission report."""
    from factory.intake import read_rows

    refs = {str(row.get("request_ref") or "").strip() for _, row in read_rows(path) if isinstance(row, dict)}
    prepared = prepare_batch(path, agency_code, dt.datetime.now(dt.UTC), ledger.known_refs(agency_code, refs))
    new_ids, _ = ledger.add_batch(prepared.batch, prepared.requests)
    accepted = {row["id"] for row in prepared.requests if row["state"] == RequestState.received.value}
    to_send = [request_id for request_id in new_ids if request_id in accepted]
    if to_send:
        actors = actors_for(wiring.redis_url(settings))
        for request_id in to_send:
            actors.validate.send(request_id)
    return {
        "batch_id": prepared.batch["id"],
        "accepted": prepared.batch["accepted"],
        "rejected": prepared.batch["rejected"],
        "duplicates": prepared.batch["duplicates"],
        "rows": [{"row": o.row, "request_ref": o.request_ref, "status": o.status,
                  "reasons": [r.model_dump() for r in o.reasons]} for o in prepared.outcomes],
    }


def activate(settings: Settings, request_ids: list[str]) -> list[str]:
    """The agency handed the devices over: activate the requests awaiting it and send
    them to publication. Returns the ids activated now (again: none, harmlessly)."""
    issuance = wiring.issuance(settings, "general")
    activated = [request_id for request_id in request_ids if issuance.activate(request_id)]
    if activated:
        actors = actors_for(wiring.redis_url(settings))
        for request_id in activated:
            actors.publish.send(request_id)
    issuance.ledger.close()
    return activated


def status(ledger: Ledger, batch_id: str | None) -> dict[str, Any]:
    """Counts per state, every state present."""
    counts = ledger.state_counts(batch_id)
    return {"batch_id": batch_id, "states": {state.value: count for state, count in counts.items()},
            "total": sum(counts.values())}
