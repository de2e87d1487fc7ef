"""What a load test measured, turned into figures: percentiles, the per-request timeline
from the ledger's audit trail, per-stage queue wait and work from the workers' probe,
throughput over time, and the calibration ``factory.capacity`` plans with.

Two sources, because neither alone splits a stage's time:

- the ledger: every transition's audit event carries ``at`` (committed by the stage that
  made it), so the time between two consecutive transitions of one request is the
  whole of a stage as the outside sees it — the hop to the next queue, the wait in that
  queue behind other messages, and the stage's work up to its commit;
- the probe (``certfactory.loadprobe``): dramatiq's ``message_timestamp`` (when the
  message was sent) and the start and end of the actor in the worker give the queue
  wait (send → start: hop plus backlog) and the work (start → end) of every message.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select

from factory.ledger import Ledger
from factory.tables import audit_events

# The path a request takes, with the stage that makes each transition.
TRANSITIONS: tuple[tuple[str, str, str], ...] = (
    ("validate", "received", "validated"),
    ("generate_key", "validated", "key_generated"),
    ("sign", "key_generated", "signed"),
    ("package", "signed", "packaged"),
    ("await_activation", "packaged", "awaiting_activation"),
    ("activate", "awaiting_activation", "activated"),
    ("publish", "activated", "published"),
)
STATION_STAGES = ("generate_key", "package")
BETWEEN_TRANSITIONS = ("previous transition's commit → this stage's commit: sending the message, the hop, the "
                       "wait behind other messages in the queue (and the worker's prefetch buffer), the stage's work")
ACTIVATE_NOTE = ("not a queue: the load test's agency loop polls the ledger and activates what it finds, then "
                 "sends publish")


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) of sorted values, interpolated linearly."""
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Iterable[float], scale: float = 1.0, digits: int = 2) -> dict[str, float | int]:
    """count, mean, min, p50, p95, p99, max of ``values`` × ``scale`` (1000: seconds → ms)."""
    ordered = sorted(v * scale for v in values)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "mean": round(sum(ordered) / len(ordered), digits),
            "min": round(ordered[0], digits), "p50": round(percentile(ordered, 50), digits),
            "p95": round(percentile(ordered, 95), digits), "p99": round(percentile(ordered, 99), digits),
            "max": round(ordered[-1], digits)}


def _epoch(at: dt.datetime) -> float:
    # SQLite hands datetimes back naive (they are UTC), PostgreSQL aware.
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp()


def timeline(ledger: Ledger, batch_id: str) -> dict[str, dict[str, float]]:
    """request id → {state: epoch seconds it was entered}, from the audit trail."""
    query = (select(audit_events.c.request_id, audit_events.c.to_state, audit_events.c.at)
             .where(audit_events.c.batch_id == batch_id, audit_events.c.request_id.is_not(None),
                    audit_events.c.kind.in_(("received", "transition")))
             .order_by(audit_events.c.id))
    result: dict[str, dict[str, float]] = {}
    with ledger.engine.connect() as connection:
        for request_id, state, at in connection.execute(query):
            result.setdefault(request_id, {}).setdefault(state, _epoch(at))
    return result


def read_probe(folder: Path) -> list[dict[str, Any]]:
    """Every record the workers' probe wrote (one JSON object a line, a file per process)."""
    records: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def of_batch(probe: list[dict[str, Any]], requests: dict[str, dict[str, float]], since: float
             ) -> list[dict[str, Any]]:
    """The probe records of this batch: its requests' messages, and the keygen and sign
    records from ``since`` on (the warm-up batch ran before)."""
    return [r for r in probe if (r["request_id"] in requests if r.get("kind") == "message" else r["start"] >= since)]


def stage_table(requests: dict[str, dict[str, float]], probe: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage, in milliseconds: between consecutive transitions (ledger), queue wait
    and work (probe), each as count/mean/p50/p95/p99."""
    messages = [r for r in probe if r.get("kind") == "message" and r.get("ok")]
    stages: dict[str, Any] = {}
    for stage, before, after in TRANSITIONS:
        between = [times[after] - times[before] for times in requests.values() if before in times and after in times]
        ours = [m for m in messages if m["actor"] == stage]
        stages[stage] = {
            "between_transitions_ms": summary(between, 1000),
            "queue_wait_ms": summary((m["start"] - m["sent"] for m in ours), 1000),
            "work_ms": summary((m["end"] - m["start"] for m in ours), 1000),
            "work_cpu_ms": summary((m.get("cpu", 0.0) for m in ours), 1000),
            "contains": ACTIVATE_NOTE if stage == "activate" else BETWEEN_TRANSITIONS,
        }
    done = [t["published"] - t["received"] for t in requests.values() if "published" in t and "received" in t]
    stages["end_to_end"] = {"between_transitions_ms": summary(done, 1000),
                            "contains": "received (the batch's ledger write) → published, for each request"}
    return stages


def token_times(probe: list[dict[str, Any]], kind: str) -> list[float]:
    """Durations (seconds) of the probe's ``keygen`` or ``sign`` records."""
    return [r["end"] - r["start"] for r in probe if r.get("kind") == kind]


def throughput_series(requests: dict[str, dict[str, float]], started: float, bins: int = 100) -> dict[str, Any]:
    """Transitions per second into key_generated, signed and published, in about ``bins``
    bins of whole seconds from ``started``."""
    ends = [t for times in requests.values() for t in times.values()]
    duration = max(ends, default=started) - started
    bin_seconds = float(max(1, math.ceil(duration / bins)))
    bins = max(1, math.ceil(duration / bin_seconds))
    series: dict[str, Any] = {"bin_seconds": bin_seconds}
    for state in ("key_generated", "signed", "published"):
        counts = [0] * bins
        for times in requests.values():
            if state in times:
                counts[min(bins - 1, max(0, int((times[state] - started) / bin_seconds)))] += 1
        series[state] = [round(c / bin_seconds, 2) for c in counts]
    return series


def calibration(requests: dict[str, dict[str, float]], probe: list[dict[str, Any]], submitted: float,
                station_processes: int, keygen_delay: float) -> dict[str, float]:
    """The figures ``factory.capacity`` plans with, measured in this run (seconds).

    The batch is modelled as head + station period + tail: ``head`` from the submission
    to the first key generation starting, ``tail`` from the last station work ending to
    the last publication, and a station period in which each station process (a port)
    takes keygen + ``station_overhead`` per request (the overhead: personalising,
    packaging, hops, and the share of the cores the rest of the pipeline takes)."""
    station = [m for m in probe if m.get("kind") == "message" and m["actor"] in STATION_STAGES]
    signing = [m for m in probe if m.get("kind") == "message" and m["actor"] == "sign"]
    keygens, signs = token_times(probe, "keygen"), token_times(probe, "sign")
    published = [t["published"] for t in requests.values() if "published" in t]
    if not station or not published or not keygens:
        return {}
    first_start = min(m["start"] for m in station if m["actor"] == "generate_key")
    last_end = max(m["end"] for m in station)
    rounds = math.ceil(len(published) / station_processes)
    keygen = sum(keygens) / len(keygens)
    sign = sum(signs) / len(signs) if signs else 0.0
    work = sum(m["end"] - m["start"] for m in station) / len(published)
    sign_work = sum(m["end"] - m["start"] for m in signing) / max(1, len(signing))
    cycle = (last_end - first_start) / rounds
    return {
        "keygen_seconds": round(keygen, 5),
        "sign_seconds": round(sign, 5),
        "head_seconds": round(first_start - submitted, 4),
        "tail_seconds": round(max(published) - last_end, 4),
        "station_cycle_seconds": round(cycle, 5),
        "station_overhead_seconds": round(max(0.0, cycle - keygen - keygen_delay), 5),
        "station_work_overhead_seconds": round(max(0.0, work - keygen - keygen_delay), 5),
        "ca_overhead_seconds": round(max(0.0, sign_work - sign), 5),
    }
