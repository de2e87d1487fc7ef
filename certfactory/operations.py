"""What the CLI (and later the HTTP API) do, over the ledger and the broker."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from certfactory import wiring
from certfactory.messaging import actors_for
from certfactory.settings import Settings
from factory import reconciliation
from factory.calendar import WorkingCalendar
from factory.deadlines import standings
from factory.errors import CertFactoryError, NotFound
from factory.agency_report import report_path, write_report
from factory.endorsement import check_unchanged, endorse
from factory.intake import check_batch, record_batch
from factory.ledger import Ledger
from factory.reconciliation import Resumption
from schemas.status import RequestState
from workers.broker import FAILURE_QUEUE, STAGE_QUEUES, requests_in_broker

FAILED_SHOWN = 20
"""Failed requests `status` lists with their reasons (the rest: `status --request ID`)."""


def submit(settings: Settings, ledger: Ledger, path: Path, agency_code: str, *, signature: bytes | None = None,
           endorsement_letter: str | None = None, operator: str | None = None,
           dry_run: bool = False) -> dict[str, Any]:
    """Check a batch file's endorsement, then every row; record it and enqueue its good
    rows (``dry_run``: neither). Returns the submission report (rows, reasons, warnings)
    and writes the agency's copy beside the file as ``<name>.report.xlsx``.

    Raises ``EndorsementRefused`` (nothing recorded or enqueued) when the batch is not
    endorsed by its agency's registered head, and ``BatchFileError`` when the file
    cannot be read at all."""
    now = dt.datetime.now(dt.UTC)
    endorsed = endorse(ledger, agency_code, path, signature=signature, letter=endorsement_letter,
                       operator=operator, at=now)
    actors = None if dry_run else actors_for(wiring.redis_url(settings))  # no broker: refuse before recording
    checked = check_batch(ledger, path, agency_code, now=now, allowed_key_types=settings.allowed_key_types)
    try:
        check_unchanged(path, endorsed)  # the rows read are the bytes the head signed
        fresh = [] if dry_run else record_batch(ledger, checked, endorsed)
    finally:
        checked.close()
    for request_id in fresh:  # a send lost here is found again by `reconcile`
        actors.validate.send(request_id)  # type: ignore[union-attr]
    report = checked.report()
    try:
        write_report(path, report)
    except OSError as error:  # the batch is recorded: say so rather than fail
        report["warnings"].append(f"the report {report_path(path).name} could not be written: {error.strerror}")
    return report


def activate(settings: Settings, request_ids: list[str], effective_at: dt.datetime | None = None) -> list[str]:
    """The agency handed the devices over: activate the requests awaiting it and send
    them to publication, now or at ``effective_at``. Returns the ids activated now
    (asked again: none, harmlessly)."""
    issuance = wiring.issuance(settings, "general")
    activated = issuance.activate_many(request_ids, effective_at)
    if activated:
        actors = actors_for(wiring.redis_url(settings))
        delay_ms = 0
        if effective_at is not None:
            delay_ms = max(0, int((effective_at - dt.datetime.now(dt.UTC)).total_seconds() * 1000))
        for request_id in activated:
            actors.publish.send_with_options(args=(request_id,), delay=delay_ms or None)
    issuance.ledger.close()
    return activated


def _send(settings: Settings, resumptions: list[Resumption]) -> None:
    if resumptions:
        actors = actors_for(wiring.redis_url(settings))
        for item in resumptions:
            if item.stage is not None:
                actors.STAGES[item.stage].send(item.request_id)


def retry(settings: Settings, ledger: Ledger, request_ids: list[str]) -> list[Resumption]:
    """Send `failed` requests back in from where their durable facts say they got."""
    resumed = [r for r in (reconciliation.retry_failed(ledger, i) for i in request_ids) if r is not None]
    _send(settings, resumed)
    return resumed


def reconcile(settings: Settings, ledger: Ledger, older_than_seconds: float) -> list[Resumption]:
    """Resend the next message of every request in flight that has not moved for a while."""
    broker = actors_for(wiring.redis_url(settings)).validate.broker
    pending = requests_in_broker(broker.client)  # their message will run: not stalled
    stalled = reconciliation.stalled(ledger, older_than_seconds, pending)
    _send(settings, stalled)
    return stalled


def dead_letters(settings: Settings) -> dict[str, int] | None:
    """Dead-lettered messages per queue, or None when no broker is reachable."""
    import redis

    try:
        client = redis.Redis.from_url(wiring.redis_url(settings), socket_connect_timeout=1)
        return {queue: int(client.zcard(f"dramatiq:{queue}.XQ")) for queue in (*STAGE_QUEUES, FAILURE_QUEUE)}
    except (redis.RedisError, CertFactoryError):
        return None


def dead_letter_messages(settings: Settings, limit: int = FAILED_SHOWN) -> list[dict[str, Any]]:
    """The newest dead-lettered messages (queue, actor, request, when), [] without a broker."""
    import json

    import redis

    found: list[dict[str, Any]] = []
    try:
        client = redis.Redis.from_url(wiring.redis_url(settings), socket_connect_timeout=1)
        for queue in (*STAGE_QUEUES, FAILURE_QUEUE):
            newest = client.zrevrange(f"dramatiq:{queue}.XQ", 0, limit - 1, withscores=True)
            bodies = client.hmget(f"dramatiq:{queue}.XQ.msgs", [m for m, _ in newest]) if newest else []
            for (_, millis), body in zip(newest, bodies, strict=True):
                message = json.loads(body) if body else {}
                args = message.get("args") or []
                found.append({"queue": queue, "actor": message.get("actor_name", "?"),
                              "request_id": str(args[0]) if args and isinstance(args[0], str) else None,
                              "dead_at": dt.datetime.fromtimestamp(millis / 1000, dt.UTC).isoformat()})
    except (redis.RedisError, CertFactoryError):
        return []
    return sorted(found, key=lambda m: m["dead_at"], reverse=True)[:limit]


def status(ledger: Ledger, batch_id: str | None, settings: Settings | None = None,
           today: dt.date | None = None) -> dict[str, Any]:
    """Counts per state, every state present; where each deadline stands; the failed
    requests with their reasons; dead letters per queue when the broker answers."""
    counts = ledger.state_counts(batch_id)
    report: dict[str, Any] = {"batch_id": batch_id, "states": {state.value: count for state, count in counts.items()},
                              "total": sum(counts.values())}
    calendar = wiring.calendar(settings) if settings is not None else WorkingCalendar()
    today = today or dt.datetime.now(calendar.timezone).date()
    report["deadlines"] = {name: standing.as_dict()
                           for name, standing in standings(ledger, calendar, today, batch_id).items()}
    report["failed"] = [{"request_id": row.id, "request_ref": row.request_ref, "reason_code": row.reason_code,
                         "reason": row.reason} for row in ledger.requests_in(RequestState.failed, batch_id, FAILED_SHOWN)]
    if settings is not None:
        report["dead_letters"] = dead_letters(settings)
        report["dead_letter_messages"] = dead_letter_messages(settings)
    return report


def request_status(ledger: Ledger, request_id: str) -> dict[str, Any]:
    """One request: its state, deadlines, device, certificate and audit trail."""
    row = ledger.get_request(request_id)
    if row is None:
        raise NotFound(f"no request {request_id!r} in the ledger")
    certificate = ledger.certificate_for_request(request_id)
    return {
        "request_id": row.id, "batch_id": row.batch_id, "agency_code": row.agency_code,
        "request_ref": row.request_ref, "state": row.state, "key_type": row.key_type,
        "reason_code": row.reason_code, "reason": row.reason, "received_at": _iso(row.received_at),
        "deadlines": {"ready": _iso(row.ready_deadline), "publish": _iso(row.publish_deadline)},
        "activation_requested_at": _iso(row.activation_requested_at), "effective_at": _iso(row.effective_at),
        "device_serial": row.device_serial,
        "certificate_serial": certificate.serial if certificate is not None else None,
        "events": [{"at": _iso(event.at), "kind": event.kind, "from": event.from_state, "to": event.to_state}
                   for event in ledger.audit_trail(request_id)],
    }


def _iso(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None
