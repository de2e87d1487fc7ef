"""The broker's consumers keep a floor between two polls of an empty queue
(``workers.broker.PacedRedisBroker``), never beyond the worker timeout and never while
the worker holds a full prefetch of a busy queue, on a real redis-server."""

from __future__ import annotations

import time

import dramatiq
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


def test_a_full_prefetch_does_not_wait_the_floor(redis_server: RedisServer) -> None:
    """A busy queue whose prefetch is full (the worker holds every message it may) is no
    empty queue: once the worker acks, the next message comes after dramatiq's short
    backoff, not after the floor. With a 1 s floor, four messages through a prefetch of 1
    take well under the 4 s the floor would add."""
    broker = PacedRedisBroker(client=redis.Redis.from_url(redis_server.url), poll_floor_ms=1000)
    broker.declare_queue("busy-check")
    for number in range(4):
        broker.enqueue(dramatiq.Message(queue_name="busy-check", actor_name="noop", args=(number,),
                                        kwargs={}, options={}))
    consumer = broker.consume("busy-check", prefetch=1, timeout=5000)
    started, received, held = time.monotonic(), [], None
    while len(received) < 4 and time.monotonic() - started < 10:
        message = next(consumer)  # as dramatiq's consumer thread: next(), then the acks
        if message is not None:
            received.append(message.args[0])
            held = message  # handed to the worker: the prefetch is full
        elif held is not None:  # the poll found the prefetch full; the worker is done now
            consumer.ack(held)
            held = None
    elapsed = time.monotonic() - started
    consumer.close()
    assert received == [0, 1, 2, 3]
    assert elapsed < 1.0
