"""Stage metrics as a dramatiq middleware: the actors stay free of measurement.

Around each message of a stage actor it records the work duration, the time the
message waited after it was due, and the outcome of the delivery. The recorder is
injected (``monitoring.metrics.worker_metrics``) and resolved at the first message,
after process boot, when prometheus-client may be imported. Add it with ``install``:
dramatiq runs ``after_*`` hooks in reverse order, so the middleware must sit before
Retries for Retries to have marked an exhausted delivery failed when it looks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.common import current_millis
from dramatiq.middleware import Retries

from factory.errors import PermanentError, Rejected
from workers.broker import STAGE_QUEUES

DUE_OPTION = "certfactory_due_ms"
"""Message option: when the message became due (ms since the epoch), stamped at enqueue."""


class StageRecorder(Protocol):
    """Where the middleware records (``monitoring.metrics.WorkerMetrics``)."""

    def stage_done(self, stage: str, outcome: str, seconds: float) -> None:
        """One delivery finished with ``outcome`` after ``seconds`` of work."""

    def stage_waited(self, stage: str, seconds: float) -> None:
        """A message waited ``seconds`` after it was due."""


def outcome_of(exception: BaseException | None, message: MessageProxy) -> str:
    """ok; rejected / failed for a permanent error; failed when retries are exhausted
    (dramatiq's Retries marked the message failed); retried otherwise."""
    if exception is None:
        return "ok"
    if isinstance(exception, Rejected):
        return "rejected"
    if isinstance(exception, PermanentError) or message.failed:
        return "failed"
    return "retried"


class StageMetrics(dramatiq.Middleware):
    """Records duration, queue wait and outcome of every stage actor's message."""

    def __init__(self, recorder: Callable[[], StageRecorder], stages: Iterable[str] = STAGE_QUEUES) -> None:
        self._recorder = recorder
        self.stages = frozenset(stages)
        self._started = threading.local()  # before/after of one message run on one worker thread

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None) -> None:
        """Stamp when the message is due: a retry's backoff, a delayed send or the time a
        worker moves a delayed message back to its queue is not queue wait."""
        message.options[DUE_OPTION] = message.options.get("eta") or current_millis()

    def before_process_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        """Note the start and record how long the message waited."""
        if message.actor_name not in self.stages:
            return
        self._started.at = time.perf_counter()
        due = message.options.get(DUE_OPTION) or message.options.get("eta") or message.message_timestamp
        self._recorder().stage_waited(message.actor_name, (current_millis() - due) / 1000)

    def after_process_message(self, broker: dramatiq.Broker, message: MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        """Record the work duration and the outcome."""
        started = getattr(self._started, "at", None)
        if message.actor_name not in self.stages or started is None:
            return
        self._started.at = None
        self._recorder().stage_done(message.actor_name, outcome_of(exception, message),
                                    time.perf_counter() - started)

    def after_skip_message(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        """A skipped message did no work: forget its start."""
        self._started.at = None


def install(broker: dramatiq.Broker, recorder: Callable[[], StageRecorder],
            stages: Iterable[str] = STAGE_QUEUES) -> StageMetrics:
    """Add StageMetrics to ``broker`` before its Retries middleware (see the module docstring)."""
    metrics = StageMetrics(recorder, stages)
    has_retries = any(isinstance(existing, Retries) for existing in broker.middleware)
    broker.add_middleware(metrics, before=Retries if has_retries else None)
    return metrics
