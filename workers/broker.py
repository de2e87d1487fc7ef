"""The dramatiq broker on Redis, one queue per stage."""

from __future__ import annotations

import json
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker, _RedisConsumer
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

STAGE_QUEUES = ("validate", "generate_key", "sign", "package", "await_activation", "publish")
FAILURE_QUEUE = "failures"

# Which queues each kind of host serves (DESIGN.md §8): devices on the station, the CA
# key on the CA host, the rest anywhere.
POOL_QUEUES: dict[str, tuple[str, ...]] = {
    "station": ("generate_key", "package"),
    "ca": ("sign",),
    "general": ("validate", "await_activation", "publish", FAILURE_QUEUE),
}


# A message held by a worker that died (SIGKILL, power loss) comes back only when a
# maintenance pass finds that worker's heartbeat older than the timeout. dramatiq's
# defaults (60 s, a pass on 1 command in 1,000) measured ~560 s; these bring it under
# 60 s. A live worker heartbeats on every fetch from each of its consumer threads, which
# keep polling while a worker thread waits on a slow token (seconds on a USB token), so
# 20 s never mistakes a busy worker for a dead one; and every stage is idempotent anyway.
HEARTBEAT_TIMEOUT_MS = 20_000
MAINTENANCE_CHANCE_PER_MILLION = 100_000  # with 100 ms idle polling: a pass every few seconds


# Every Redis command waits out a restart of redis-server (about 35 s of retries) rather
# than failing: a stage whose next message cannot be sent, or whose retry cannot be
# scheduled, would otherwise be dead-lettered with its request left half-way.
REDIS_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=40)


class _PacedConsumer(_RedisConsumer):
    """dramatiq's Redis consumer keeping its broker's floor between two empty polls.

    Only a poll that found the queue empty waits the floor. With its prefetch full the
    consumer does not poll at all: it sleeps dramatiq's short backoff and returns, and the
    acks that free a place are handled only then. The floor there held a busy queue to
    ``prefetch`` messages per floor (4 per 100 ms: P-256 validation stuck at ~37/s)."""

    def __next__(self):  # type: ignore[no-untyped-def]
        started = time.monotonic()
        full = not self.message_cache and self.outstanding_message_count >= self.prefetch
        message = super().__next__()
        if message is None and not full:  # never beyond the idle backoff's own cap (the worker timeout)
            floor = min(self.broker.poll_floor_ms, self.timeout) / 1000
            time.sleep(max(0.0, floor - (time.monotonic() - started)))
        return message


class PacedRedisBroker(RedisBroker):
    """dramatiq's Redis broker whose consumers wait at least ``poll_floor_ms`` between two
    polls of an empty queue. dramatiq polls again 5, 10, 20, 40 … ms after the last
    message, each poll a Lua script in Redis: a stage queue fed every ~110 ms (RSA-2048 at
    9 certificates a second) cost 4.4–5.7 ms of processor per message with nothing in the
    stage, 2.5–3.2 ms with a 100 ms floor (``bench/hop_cost.py``), for at most the floor
    in latency per hop."""

    def __init__(self, *args: object, poll_floor_ms: int = 0, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.poll_floor_ms = poll_floor_ms

    @property
    def consumer_class(self) -> type[_RedisConsumer]:
        return _PacedConsumer


def connect(redis_url: str, poll_floor_ms: int = 0) -> RedisBroker:
    """Create the Redis broker and make it dramatiq's global one (before actors are declared).
    ``poll_floor_ms``: see :class:`PacedRedisBroker` (workers pass their setting; senders 0)."""
    client = redis.Redis.from_url(redis_url, retry=REDIS_RETRY,
                                  retry_on_error=[redis.ConnectionError, redis.TimeoutError])
    broker = PacedRedisBroker(client=client, heartbeat_timeout=HEARTBEAT_TIMEOUT_MS,
                              maintenance_chance=MAINTENANCE_CHANCE_PER_MILLION, poll_floor_ms=poll_floor_ms)
    dramatiq.set_broker(broker)
    return broker


def requests_in_broker(client: redis.Redis, queues: tuple[str, ...] = STAGE_QUEUES) -> set[str]:
    """Request ids that have a stage message queued, delayed or held by a worker (alive,
    or dead and due for redelivery) in dramatiq's Redis layout: reconciliation leaves
    those alone, since their message will run; only a request with none is stalled."""
    found: set[str] = set()
    for queue in queues:
        for name in (queue, f"{queue}.DQ"):
            ids = set(client.lrange(f"dramatiq:{name}", 0, -1))
            for acks in client.scan_iter(f"dramatiq:__acks__.*.{name}"):
                ids |= client.smembers(acks)
            for body in client.hmget(f"dramatiq:{name}.msgs", list(ids)) if ids else ():
                args = json.loads(body).get("args") if body else None
                if args:
                    found.add(str(args[0]))
    return found
