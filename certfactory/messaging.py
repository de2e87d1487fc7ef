"""The stage actors bound to a broker, for processes that send messages (CLI, API)."""

from __future__ import annotations

from types import ModuleType

from workers import broker as broker_module


def actors_for(redis_url: str) -> ModuleType:
    """Connect to the broker and return the actors module, bound to it."""
    broker = broker_module.connect(redis_url)
    from workers import actors

    for actor in (*actors.STAGES.values(), actors.record_exhausted, actors.refresh_index, actors.refresh_crl):
        if actor.broker is not broker:  # a second broker in one process (tests, demo re-runs)
            actor.broker = broker
            broker.declare_actor(actor)
    return actors
