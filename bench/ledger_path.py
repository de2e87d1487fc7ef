"""The ledger's share of one certificate: every ledger call the six stages make for one
request (reads, compare-and-set transitions, audit events, device, certificate and
outbox rows), in the stages' order, with no token, queue or repository work.

Processor time per request, one process, against a fresh SQLite file (default) or a
PostgreSQL database (``--database-url``, whose tables it leaves behind). Measures the
fixed cost a certificate pays to the system of record, before and after a ledger change.

    .venv/bin/python bench/ledger_path.py --requests 1000 --json bench/results/ledger_path.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert

from factory.ledger import Ledger, append_audit
from factory.tables import batches, requests
from schemas.status import RequestState as S


def _add_requests(ledger: Ledger, count: int) -> list[str]:
    now = dt.datetime.now(dt.UTC)
    batch_id = uuid.uuid4().hex
    # a PostgreSQL database keeps earlier runs' rows: an agency and people of this run's own
    agency, people = f"BENCH-{batch_id[:8]}", int(batch_id[:8], 16) * 10_000
    rows = [{"id": uuid.uuid4().hex, "batch_id": batch_id, "agency_code": agency, "request_ref": f"HS-{n:06d}",
             "citizen_id": f"{people + n:012d}"[-12:], "record": json.dumps({"full_name": "Nguyễn Văn A", "n": n}),
             "key_type": "ecdsa-p256", "state": S.received.value, "received_at": now, "updated_at": now}
            for n in range(count)]
    with ledger.transaction() as connection:
        connection.execute(insert(batches).values(id=batch_id, agency_code=agency, source="bench", submitted_at=now,
                                                  rows=count, accepted=count, rejected=0, duplicates=0))
        connection.execute(insert(requests), rows)
        append_audit(connection, [{"at": now, "request_id": row["id"], "batch_id": batch_id, "kind": "received",
                                   "from_state": None, "to_state": row["state"], "detail": None} for row in rows])
    return [row["id"] for row in rows]


def one_request(ledger: Ledger, request_id: str, station: str) -> None:
    """The ledger calls of validate → generate_key → sign → package → await_activation →
    activate → publish, as ``factory.issuance`` makes them."""
    row = ledger.get_request(request_id)  # validate
    assert row is not None
    ledger.earlier_live_request(row.citizen_id, request_id)
    ledger.transition(request_id, S.received, S.validated, ready_deadline=dt.date.today())
    ledger.get_request(request_id)  # generate_key
    ledger.device_for_request(request_id)
    device = ledger.claim_blank_device(station, request_id, "00" * 20)
    assert device is not None
    with ledger.transaction() as connection:
        ledger.transition(request_id, S.validated, S.key_generated, connection=connection,
                          detail={"device": device.serial, "key_type": "ecdsa-p256", "possession": "AAAA"})
        ledger.record_device_key(connection, device.serial, b"\x30" * 91)
    ledger.get_request(request_id)  # sign
    ledger.device_for_request(request_id)
    ledger.audit_trail(request_id)
    reserved = ledger.reserve_certificate(request_id, uuid.uuid4().hex)
    now = dt.datetime.now(dt.UTC)
    with ledger.transaction() as connection:
        ledger.store_certificate(reserved.serial, b"\x30" * 600, now, now, connection)
        ledger.transition(request_id, S.key_generated, S.signed, connection=connection,
                          detail={"serial": reserved.serial})
    ledger.get_request(request_id)  # package
    ledger.device_for_request(request_id)
    ledger.certificate_for_request(request_id)
    with ledger.transaction() as connection:
        ledger.set_device(device.serial, "personalised", "packaged", connection=connection)
        ledger.transition(request_id, S.signed, S.packaged, connection=connection, detail={"device": device.serial})
    ledger.get_request(request_id)  # await_activation
    with ledger.transaction() as connection:
        ledger.add_outbox(connection, request_id, "pickup_notice", {"device_serial": device.serial})
        ledger.transition(request_id, S.packaged, S.awaiting_activation, connection=connection)
    ledger.get_request(request_id)  # activate
    ledger.transition(request_id, S.awaiting_activation, S.activated, activation_requested_at=now)
    ledger.get_request(request_id)  # publish
    certificate = ledger.certificate_for_request(request_id)
    assert certificate is not None
    with ledger.transaction() as connection:
        ledger.mark_published(certificate.serial, now, connection)
        ledger.transition(request_id, S.activated, S.published, connection=connection, effective_at=now,
                          detail={"serial": certificate.serial})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{folder}/ledger.sqlite"
        ledger = Ledger.connect(url)
        station = f"bench-{uuid.uuid4().hex[:8]}"
        ids = _add_requests(ledger, args.requests)
        ledger.add_blank_devices(station, [(uuid.uuid4().hex[:16], f"t{n}") for n in range(args.requests)])
        warm = 20
        for request_id in ids[:warm]:
            one_request(ledger, request_id, station)
        per_request = []
        started_cpu, started = time.process_time(), time.perf_counter()
        for request_id in ids[warm:]:
            cpu = time.process_time()
            one_request(ledger, request_id, station)
            per_request.append((time.process_time() - cpu) * 1000)
        total_cpu, total = time.process_time() - started_cpu, time.perf_counter() - started
        ledger.close()
    result = {
        "database": ledger.engine.dialect.name, "requests": len(per_request),
        "processor_ms_per_request": round(total_cpu * 1000 / len(per_request), 3),
        "wall_ms_per_request": round(total * 1000 / len(per_request), 3),
        "processor_ms_p50": round(statistics.median(per_request), 3),
        "processor_ms_p95": round(statistics.quantiles(per_request, n=20)[18], 3),
        "first_100_ms": round(statistics.mean(per_request[:100]), 3),
        "last_100_ms": round(statistics.mean(per_request[-100:]), 3),
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
