"""The stage actors bound to a broker, for processes that send messages (CLI, API)."""

from __future__ import annotations

from types import ModuleType

from workers import broker as broker_module


def actors_for(redis_url: str, poll_floor_ms: int = 0) -> ModuleType:
    """Connect to the broker and return the actors module, bound to it (``poll_floor_ms``:
    a worker's, see ``workers.broker.PacedRedisBroker``)."""
    broker = broker_module.connect(redis_url, poll_floor_ms)
    from workers import actors

    for actor in (*actors.STAGES.values(), actors.record_exhausted, actors.refresh_index, actors.refresh_crl):
        if actor.broker is not broker:  # a second broker in one process (tests, demo re-runs)
            actor.broker = broker
            broker.declare_actor(actor)
    return actors
