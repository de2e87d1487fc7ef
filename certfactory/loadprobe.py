"""The load test's timing probe, loaded by its workers beside ``certfactory.workerapp``
(``dramatiq certfactory.workerapp certfactory.loadprobe …``): production workers never
load it.

Each worker process appends JSON lines to ``$CERTFACTORY_PROBE_DIR/<pid>.jsonl``:

- ``message``: one per stage message — its queue, request id, when it was sent (the
  message's ``message_timestamp``, or its ``eta`` when delayed), when the actor started
  and ended, the processor time its thread spent (``cpu``), whether it succeeded;
- ``keygen`` / ``sign``: one per key generation on a device (``tokens.generate_keypair``)
  and per CA signature (``ca.sign``), timed around the call. These two are wrapped in
  place, in this process only, because the hot path has no hook for timing and a probe
  must not change it.

A line costs a few microseconds (line-buffered append); the file is opened after the
fork, on first use.

With ``CERTFACTORY_PROBE_PROFILE=cpu`` (or ``wall``) each worker also runs cProfile,
timed by its thread's processor time (or the clock), around every message
and writes ``<pid>.pstats`` when it stops: where a stage's time goes, to measure a change
before and after (it slows Python code down, so not for the figures).
"""

from __future__ import annotations

import cProfile
import functools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
from dramatiq.middleware import Middleware

from factory import ca, tokens

PROBE_DIR_VARIABLE = "CERTFACTORY_PROBE_DIR"
PROFILE_VARIABLE = "CERTFACTORY_PROBE_PROFILE"
WORKERS_FOLDER = "workers"  # one empty file per worker process, named by its pid


def worker_pids(folder: Path) -> set[int]:
    """The pids of the worker processes that have booted with the probe."""
    return {int(p.name) for p in (folder / WORKERS_FOLDER).glob("*") if p.name.isdigit()}


class ProbeLog:
    """One process's probe file, shared by its worker threads."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()
        self._handle: Any = None
        self._pid = 0

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as a JSON line."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock:
            if self._handle is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self.folder.mkdir(parents=True, exist_ok=True)
                self._handle = open(self.folder / f"{self._pid}.jsonl", "a", buffering=1,  # noqa: SIM115
                                    encoding="utf-8")  # open for the process's life
            self._handle.write(line)


class StageTimer(Middleware):
    """Times every message a worker processes: sent → started → ended."""

    def __init__(self, log: ProbeLog) -> None:
        self.log = log
        self._started = threading.local()

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Mark this pid as a worker process: a pool's other children (dramatiq's fork
        processes, such as the Prometheus exporter) are not workers."""
        folder = self.log.folder / WORKERS_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(os.getpid())).touch()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self._started.at = time.time()
        self._started.cpu = time.thread_time()

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        end, cpu = time.time(), time.thread_time()
        eta = message.options.get("eta")
        self.log.write({
            "kind": "message", "queue": message.queue_name.removesuffix(".DQ"), "actor": message.actor_name,
            "request_id": message.args[0] if message.args else None,
            "sent": (eta if eta else message.message_timestamp) / 1000, "start": getattr(self._started, "at", end),
            "end": end, "cpu": cpu - getattr(self._started, "cpu", cpu), "ok": exception is None, "retries": message.options.get("retries", 0), "pid": os.getpid(),
        })

    def after_skip_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        self.after_process_message(broker, message, exception=RuntimeError("skipped"))


class StageProfiler(Middleware):
    """cProfile around every message of this process, written out every 50 messages of a
    thread and when the worker stops (a stop can be cut short by the pool's SIGKILL)."""

    def __init__(self, folder: Path, timer: str) -> None:
        self.folder = folder
        self.timer = timer
        self._lock = threading.Lock()
        self._profiles: list[cProfile.Profile] = []
        self._local = threading.local()

    def before_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        profile = getattr(self._local, "profile", None)
        if profile is None:
            timer = time.thread_time if self.timer == "cpu" else time.perf_counter
            profile = self._local.profile = cProfile.Profile(timer)
            with self._lock:
                self._profiles.append(profile)
        profile.enable()

    def after_process_message(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        profile = getattr(self._local, "profile", None)
        if profile is not None:
            profile.disable()
            self._local.count = getattr(self._local, "count", 0) + 1
            if self._local.count % 50 == 0:
                self.folder.mkdir(parents=True, exist_ok=True)
                profile.dump_stats(self.folder / f"{os.getpid()}-{id(profile)}.pstats")

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Write this process's profiles (one file per thread that ran messages)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for profile in self._profiles:
                profile.dump_stats(self.folder / f"{os.getpid()}-{id(profile)}.pstats")


def timed(function: Callable[..., Any], kind: str, log: ProbeLog) -> Callable[..., Any]:
    """``function``, writing a ``kind`` record with its start and end on every call."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start, cpu = time.time(), time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            log.write({"kind": kind, "start": start, "end": time.time(), "cpu": time.thread_time() - cpu,
                       "pid": os.getpid()})

    wrapper.__wrapped_by_probe__ = True  # type: ignore[attr-defined]
    return wrapper


def install(folder: Path) -> None:
    """Add the stage timer to the broker and time keygen and CA signatures (once)."""
    log = ProbeLog(folder)
    broker = dramatiq.get_broker()
    if not any(isinstance(m, StageTimer) for m in broker.middleware):
        broker.add_middleware(StageTimer(log))
    timer = os.environ.get(PROFILE_VARIABLE)
    if timer in ("cpu", "wall") and not any(isinstance(m, StageProfiler) for m in broker.middleware):
        broker.add_middleware(StageProfiler(folder, timer))
    if not getattr(tokens.generate_keypair, "__wrapped_by_probe__", False):
        tokens.generate_keypair = timed(tokens.generate_keypair, "keygen", log)  # type: ignore[assignment]
    if not getattr(ca.sign, "__wrapped_by_probe__", False):
        ca.sign = timed(ca.sign, "sign", log)  # type: ignore[assignment]


if os.environ.get(PROBE_DIR_VARIABLE):
    install(Path(os.environ[PROBE_DIR_VARIABLE]))
