"""The single-process exporter: gauges read at scrape time from Redis and the ledger.

Multiprocess mode allows no custom collectors, so queue state and ledger counts come
from here, served beside the workers' metrics by ``monitoring.http``. A source that
cannot be read costs its own families only; ``certfactory_exporter_source_up`` says
which.

Queue state follows dramatiq's RedisBroker (``brokers/redis/dispatch.lua``), per queue
``q`` under the ``dramatiq`` namespace: ``dramatiq:q`` is the list of ready message
ids; ``dramatiq:q.msgs`` holds the bodies of every message not yet acknowledged
(ready, prefetched or running); a delayed message (retry backoff, later effective
time) lives in the queue ``q.DQ`` whose bodies stay in ``dramatiq:q.DQ.msgs`` while a
worker holds it until its eta; dead letters of both are the sorted set ``dramatiq:q.XQ``
(scored by the time they died, expired after dramatiq's ``dead_message_ttl``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.exc import SQLAlchemyError

from factory.calendar import DEFAULT_TIMEZONE, WorkingCalendar
from factory.deadlines import standings
from factory.errors import CertFactoryError
from factory.ledger import Ledger
from factory.tables import certificates, requests
from monitoring.metrics import KEY_TYPES, STAGES
from schemas.status import RequestState as S

log = logging.getLogger(__name__)

RedisSource = redis.Redis | Callable[[], redis.Redis]
"""A Redis client, or a callable giving the one to use now (the embedded server's port
is known only while it runs)."""

LedgerSource = Ledger | Callable[[], Ledger]
"""The ledger, or a callable opening it at first use (as the HTTP API does)."""

QUEUES = (*STAGES, "failures")
"""Every queue of the pipeline: one per stage, and the queue of exhausted retries."""

DEVICE_STATES = ("blank", "claimed", "personalised", "packaged")
"""A device's lifecycle states in the ledger."""

DUE_OPTION = "certfactory_due_ms"  # stamped by workers.middleware.StageMetrics.before_enqueue

NOT_YET_READY = (S.received, S.validated, S.key_generated, S.signed)
"""States a request is in before the ready deadline is met (the device is packaged)."""

FINISHED = (S.published, S.rejected, S.failed, S.revoked)
"""States a request never leaves on the path: its batch is done with it."""

# One round trip, atomic: the counts and the body of the message at the head of each
# ready list (the next to be fetched, so the one that has waited longest in order).
_QUEUE_SCRIPT = """
local out = {}
for i, q in ipairs(KEYS) do
  local head = redis.call("lindex", q, 0)
  local body = false
  if head then body = redis.call("hget", q .. ".msgs", head) end
  out[i] = {redis.call("llen", q), redis.call("hlen", q .. ".msgs"), redis.call("hlen", q .. ".DQ.msgs"),
            redis.call("zcard", q .. ".XQ"), body}
end
return out
"""


@dataclass(frozen=True)
class QueueState:
    """One queue as Redis holds it."""

    ready: int
    in_flight: int
    delayed: int
    dead: int
    oldest_age_seconds: float


def _due_ms(body: bytes | None) -> int | None:
    if not body:
        return None
    message = json.loads(body)
    options = message.get("options") or {}
    return int(options.get(DUE_OPTION) or options.get("eta") or message["message_timestamp"])


def queue_states(client: redis.Redis, queues: tuple[str, ...] = QUEUES, *, now_ms: int | None = None,
                 namespace: str = "dramatiq") -> dict[str, QueueState]:
    """Ready, in-flight, delayed and dead-letter counts and the age of the oldest ready
    message (0 when none) of each queue."""
    rows = client.eval(_QUEUE_SCRIPT, len(queues), *(f"{namespace}:{queue}" for queue in queues))
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    states = {}
    for queue, row in zip(queues, rows, strict=True):
        ready, unacked, delayed, dead = (int(value) for value in row[:4])
        due = _due_ms(row[4] if len(row) > 4 else None)
        states[queue] = QueueState(ready=ready, in_flight=max(0, unacked - ready), delayed=delayed, dead=dead,
                                   oldest_age_seconds=max(0.0, (now_ms - due) / 1000) if due else 0.0)
    return states


def deadline_counts(ledger: Ledger, today: dt.date,
                    calendar: WorkingCalendar | None = None) -> dict[str, tuple[int, int]]:
    """Per deadline (``ready``, ``publish``), the open requests (at risk, breached); see
    factory.deadlines."""
    return {name: (standing.at_risk, standing.breached)
            for name, standing in standings(ledger, calendar or WorkingCalendar(), today).items()}


def published_counts(ledger: Ledger) -> dict[str, int]:
    """Certificates ever published, per key type (every key type present): a counter that
    counts each certificate exactly once, however often its messages were delivered."""
    query = (select(requests.c.key_type, func.count())
             .select_from(certificates.join(requests, requests.c.id == certificates.c.request_id))
             .where(certificates.c.published_at.is_not(None)).group_by(requests.c.key_type))
    counts = dict.fromkeys(KEY_TYPES, 0)
    with ledger.engine.connect() as connection:
        counts.update({key_type: int(count) for key_type, count in connection.execute(query)})
    return counts


def batch_progress(ledger: Ledger) -> tuple[int, float]:
    """Open batches (some request still on the path) and the share of their requests that
    are finished (published, rejected, failed or revoked); 1.0 when no batch is open."""
    finished = [state.value for state in FINISHED]
    open_ids = select(requests.c.batch_id).where(requests.c.state.not_in(finished)).distinct().scalar_subquery()
    query = select(func.count(func.distinct(requests.c.batch_id)), func.count(),
                   func.coalesce(func.sum(case((requests.c.state.in_(finished), 1), else_=0)), 0)
                   ).where(requests.c.batch_id.in_(open_ids))
    with ledger.engine.connect() as connection:
        open_batches, total, done = connection.execute(query).one()
    return int(open_batches), (int(done) / int(total)) if total else 1.0


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(labels))


Family = GaugeMetricFamily | CounterMetricFamily


def metric_families() -> dict[str, Family]:
    """Every family the exporter exposes, by name, without samples."""
    return {family.name: family for family in (
        _gauge("certfactory_queue_messages", "Messages ready in a queue, not yet fetched by a worker.", ("queue",)),
        _gauge("certfactory_queue_in_flight_messages", "Messages fetched by workers (prefetched or running), "
               "not yet acknowledged.", ("queue",)),
        _gauge("certfactory_queue_delayed_messages", "Messages waiting for their eta (retry backoff, later "
               "effective time).", ("queue",)),
        _gauge("certfactory_queue_dead_letters", "Dead-lettered messages kept by the broker.", ("queue",)),
        _gauge("certfactory_queue_oldest_message_age_seconds", "How long the next ready message has been due; "
               "0 when the queue is empty.", ("queue",)),
        _gauge("certfactory_requests", "Requests in the ledger per state.", ("state",)),
        _gauge("certfactory_devices", "Devices in the ledger per lifecycle state.", ("state",)),
        _gauge("certfactory_deadline_at_risk_requests", "Open requests whose deadline (ready: 3 working days; "
               "publish: 1 working day) is today or tomorrow.", ("deadline",)),
        _gauge("certfactory_deadline_breached_requests", "Open requests whose deadline has passed.", ("deadline",)),
        CounterMetricFamily("certfactory_certificates_published", "Certificates published, from the ledger.",
                            labels=["key_type"]),
        _gauge("certfactory_batches_open", "Batches with a request still on the path."),
        _gauge("certfactory_batch_progress_ratio", "Finished share of the requests of the open batches."),
        _gauge("certfactory_exporter_source_up", "Whether the exporter could read a source (redis, ledger) at "
               "this scrape.", ("source",)),
    )}


class PipelineExporter(Collector):
    """Queue state from Redis and counts from the ledger, read at every scrape."""

    def __init__(self, ledger: LedgerSource, redis_client: RedisSource, *, queues: tuple[str, ...] = QUEUES,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.ledger = ledger
        self.redis = redis_client
        self.queues = queues
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        """The families, without samples (so registering reads neither source)."""
        return iter(metric_families().values())

    def collect(self) -> Iterator[Metric]:
        """Read both sources and yield every family."""
        families = metric_families()
        up = families["certfactory_exporter_source_up"]
        up.add_metric(["redis"], self._guarded("redis", self._collect_redis, families))
        up.add_metric(["ledger"], self._guarded("ledger", self._collect_ledger, families))
        return iter(families.values())

    @staticmethod
    def _guarded(source: str, read: Callable[[dict[str, Family]], None], families: dict[str, Family]) -> float:
        try:
            read(families)
        except (redis.RedisError, SQLAlchemyError, CertFactoryError) as error:
            log.warning("metrics: cannot read %s: %s", source, error)
            return 0.0
        return 1.0

    def _collect_redis(self, families: dict[str, Family]) -> None:
        client = self.redis if isinstance(self.redis, redis.Redis) else self.redis()
        now_ms = int(self.clock().timestamp() * 1000)
        for queue, state in queue_states(client, self.queues, now_ms=now_ms).items():
            for suffix, value in (("messages", state.ready), ("in_flight_messages", state.in_flight),
                                  ("delayed_messages", state.delayed), ("dead_letters", state.dead),
                                  ("oldest_message_age_seconds", state.oldest_age_seconds)):
                families[f"certfactory_queue_{suffix}"].add_metric([queue], value)

    def _collect_ledger(self, families: dict[str, Family]) -> None:
        ledger = self.ledger if isinstance(self.ledger, Ledger) else self.ledger()
        for request_state, count in ledger.state_counts().items():
            families["certfactory_requests"].add_metric([request_state.value], count)
        devices: dict[str, Any] = {**dict.fromkeys(DEVICE_STATES, 0), **ledger.device_counts()}
        for device_state, count in devices.items():
            families["certfactory_devices"].add_metric([device_state], count)
        today = self.clock().astimezone(DEFAULT_TIMEZONE).date()
        for deadline, (at_risk, breached) in deadline_counts(ledger, today).items():
            families["certfactory_deadline_at_risk_requests"].add_metric([deadline], at_risk)
            families["certfactory_deadline_breached_requests"].add_metric([deadline], breached)
        # every key type from the start: a series first seen at 60 shows no increase to rate()
        for key_type, count in {**dict.fromkeys(KEY_TYPES, 0), **published_counts(ledger)}.items():
            families["certfactory_certificates_published"].add_metric([key_type], count)
        open_batches, ratio = batch_progress(ledger)
        families["certfactory_batches_open"].add_metric([], open_batches)
        families["certfactory_batch_progress_ratio"].add_metric([], ratio)
