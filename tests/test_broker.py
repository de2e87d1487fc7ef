"""The broker's consumers keep a floor between two polls of an empty queue
(``workers.broker.PacedRedisBroker``), never beyond the worker timeout, on a real
redis-server."""

from __future__ import annotations

import time

import pytest
import redis

from certfactory.embedded import RedisServer
from workers.broker import PacedRedisBroker

pytestmark = pytest.mark.integration


def _empty_polls(server: RedisServer, floor_ms: int, timeout_ms: int, polls: int) -> float:
    """Seconds ``polls`` polls of an empty queue take, and check each found nothing."""
    broker = PacedRedisBroker(client=redis.Redis.from_url(server.url), poll_floor_ms=floor_ms)
    broker.declare_queue("floor-check")
    consumer = broker.consume("floor-check", prefetch=1, timeout=timeout_ms)
    started = time.monotonic()
    for _ in range(polls):
        assert next(consumer) is None
    elapsed = time.monotonic() - started
    consumer.close()
    return elapsed


def test_an_empty_queue_is_polled_at_most_once_per_floor(redis_server: RedisServer) -> None:
    """dramatiq alone polls an empty queue again after 5, 10, 20, 40 ms (75 ms for four);
    with a 100 ms floor four polls take at least 0.4 s."""
    assert _empty_polls(redis_server, floor_ms=100, timeout_ms=500, polls=4) >= 0.4


def test_the_floor_never_exceeds_the_worker_timeout(redis_server: RedisServer) -> None:
    """A floor above the worker timeout (the idle backoff's cap) waits the timeout: four
    polls with a 1 s floor and a 50 ms timeout take well under the 4 s the floor would."""
    assert _empty_polls(redis_server, floor_ms=1000, timeout_ms=50, polls=4) < 1.5
