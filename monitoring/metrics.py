"""The metrics the worker processes record, created after process boot.

prometheus-client decides at its first import whether it runs in multiprocess mode
(``PROMETHEUS_MULTIPROC_DIR`` set): this module imports it only inside
``WorkerMetrics.create``, so merely importing ``monitoring.metrics`` commits nothing.
Workers hold counters and histograms only (multiprocess gauges need a mode and a
``mark_process_dead``); every gauge comes from the single-process exporter
(``monitoring.exporter``).

Names are ``certfactory_<noun>_<unit>``; every label comes from a closed set, so a
value outside its set is recorded as ``other`` rather than growing a new series.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas.request import KeyType

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Histogram

STAGES = ("validate", "generate_key", "sign", "package", "await_activation", "publish")
"""The pipeline stages, one dramatiq queue and actor each (``workers.broker.STAGE_QUEUES``)."""

OUTCOMES = ("ok", "rejected", "failed", "retried")
"""What became of one delivery of a stage message."""

KEY_TYPES = tuple(key_type.value for key_type in KeyType)
"""Key types a request may ask for."""

TOKEN_OPERATIONS = ("keygen", "sign")
"""Timed token operations: key pair generation on a device, the CA signature."""

OTHER = "other"

# Token work runs from ~1 ms (P-256 signature) to seconds (RSA keygen on a USB token).
WORK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# A message may wait from milliseconds (idle pipeline) to hours (a large batch queued
# behind RSA keygen); the 3-day deadline makes anything beyond a day one bucket.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
                86400.0)
KEYGEN_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIGN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


def _closed(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


@dataclass(frozen=True)
class WorkerMetrics:
    """The metric objects of one worker process, and the only ways to record into them."""

    messages: Counter
    duration: Histogram
    queue_wait: Histogram
    keygen: Histogram
    sign: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> WorkerMetrics:
        """Define the metrics on ``registry`` (prometheus-client's global one by default).

        Imports prometheus_client here, not at module import: call it only once
        ``PROMETHEUS_MULTIPROC_DIR`` is in the environment (after process boot)."""
        from prometheus_client import REGISTRY, Counter, Histogram

        target = REGISTRY if registry is None else registry
        return cls(
            messages=Counter("certfactory_stage_messages", "Stage message deliveries processed, by outcome "
                             "(ok, rejected, failed, retried).", ["stage", "outcome"], registry=target),
            duration=Histogram("certfactory_stage_duration_seconds", "Time a stage actor worked on one message.",
                               ["stage"], buckets=WORK_BUCKETS, registry=target),
            queue_wait=Histogram("certfactory_stage_queue_wait_seconds", "Time a stage message waited in its "
                                 "queue after it was due, until a worker started it.", ["stage"],
                                 buckets=WAIT_BUCKETS, registry=target),
            keygen=Histogram("certfactory_keygen_duration_seconds", "Time to generate a key pair on a device "
                             "token.", ["key_type"], buckets=KEYGEN_BUCKETS, registry=target),
            sign=Histogram("certfactory_sign_duration_seconds", "Time the CA token took to sign a certificate, "
                           "by the subscriber's key type.", ["key_type"], buckets=SIGN_BUCKETS, registry=target),
        )

    def stage_done(self, stage: str, outcome: str, seconds: float) -> None:
        """One delivery of a stage message finished with ``outcome`` after ``seconds`` of work."""
        stage = _closed(stage, STAGES)
        self.messages.labels(stage=stage, outcome=_closed(outcome, OUTCOMES)).inc()
        self.duration.labels(stage=stage).observe(max(0.0, seconds))

    def stage_waited(self, stage: str, seconds: float) -> None:
        """A stage message waited ``seconds`` in its queue before a worker started it."""
        self.queue_wait.labels(stage=_closed(stage, STAGES)).observe(max(0.0, seconds))

    def token_operation(self, operation: str, key_type: str, seconds: float) -> None:
        """A token operation (``keygen`` or ``sign``) for a request of ``key_type`` took ``seconds``.

        Shaped as a plain callable so the domain core can take it injected (it imports
        no Prometheus)."""
        histogram = {"keygen": self.keygen, "sign": self.sign}.get(operation)
        if histogram is None:
            raise ValueError(f"operation must be one of {TOKEN_OPERATIONS}, not {operation!r}")
        histogram.labels(key_type=_closed(key_type, KEY_TYPES)).observe(max(0.0, seconds))


@functools.cache
def worker_metrics() -> WorkerMetrics:
    """This process's worker metrics, created on first call (after boot) and cached."""
    return WorkerMetrics.create()
