"""The dramatiq broker on Redis, one queue per stage."""

from __future__ import annotations

import dramatiq
from dramatiq.brokers.redis import RedisBroker

STAGE_QUEUES = ("validate", "generate_key", "sign", "package", "await_activation", "publish")
FAILURE_QUEUE = "failures"

# Which queues each kind of host serves (DESIGN.md §8): devices on the station, the CA
# key on the CA host, the rest anywhere.
POOL_QUEUES: dict[str, tuple[str, ...]] = {
    "station": ("generate_key", "package"),
    "ca": ("sign",),
    "general": ("validate", "await_activation", "publish", FAILURE_QUEUE),
}


def connect(redis_url: str) -> RedisBroker:
    """Create the Redis broker and make it dramatiq's global one (before actors are declared)."""
    broker = RedisBroker(url=redis_url)
    dramatiq.set_broker(broker)
    return broker
