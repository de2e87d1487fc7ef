"""The host a load test runs on: the memory and processor time of the worker processes
over the run, and the machine itself (cores, load, versions), read from /proc and the installed tools."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

PROC = Path("/proc")


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a process, empty when it is gone."""
    values: dict[str, int] = {}
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return values


def _cpu_ticks(pid: int) -> int | None:
    """Clock ticks a process spent on a processor (utime stime cutime cstime: reaped
    children such as ``softhsm2-util`` included), None when it is gone."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15])
    except (OSError, IndexError, ValueError):
        return None


def _parents() -> dict[int, int]:
    """pid → parent pid of every process (from /proc/<pid>/stat: the kernel here may lack
    /proc/<pid>/task/<tid>/children)."""
    parents: dict[int, int] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                # the command name may hold spaces and parentheses: the fields follow the last ")"
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    return parents


def tree_processor_seconds(pid: int) -> float:
    """Processor seconds of a process and every live descendant of it."""
    parents, family, ticks = _parents(), {pid}, 0
    grew = True
    while grew:
        children = {child for child, parent in parents.items() if parent in family} - family
        family |= children
        grew = bool(children)
    for member in family:
        ticks += _cpu_ticks(member) or 0
    return ticks / os.sysconf("SC_CLK_TCK")


class MemorySampler:
    """Samples the resident memory of each worker pool's processes in a thread.

    A pool is its dramatiq main process and that process's children (the worker
    processes); grandchildren, such as the ``softhsm2-util`` a station runs to plug in
    blank devices, are not workers and are left out. A child that ``workers()`` does not
    name is one of dramatiq's fork processes (the Prometheus exporter): labelled
    ``<pool>-fork-N``, sampled but no worker. Peak RSS is the kernel's VmHWM,
    the high-water mark since the process started, so nothing between samples escapes."""

    def __init__(self, pools: dict[str, int], workers: Callable[[], set[int]], interval: float = 0.5) -> None:
        self.pools = pools
        self.workers = workers
        self.interval = interval
        self.labels: dict[int, str] = {}
        self.peak_kb: dict[str, int] = {}
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.ticks: dict[str, int] = {}  # processor ticks of each process at the last sample
        self.marks: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def _label(self, pool: str, pid: int, role: str) -> str:
        if pid not in self.labels:
            index = sum(1 for label in self.labels.values() if label.startswith(f"{pool}-{role}"))
            self.labels[pid] = f"{pool}-{role}" if role == "main" else f"{pool}-{role}-{index + 1}"
        return self.labels[pid]

    def sample(self) -> None:
        """Take one sample of every pool process now."""
        with self._lock:
            self._sample()

    def mark(self, name: str) -> None:
        """Sample now and keep every process's processor ticks under ``name``."""
        with self._lock:
            self._sample()
            self.marks[name] = dict(self.ticks)

    def processor_seconds(self, start: str, end: str) -> dict[str, float]:
        """Processor seconds each process spent between two marks."""
        tick = os.sysconf("SC_CLK_TCK")
        first, last = self.marks.get(start, {}), self.marks.get(end, {})
        return {label: round((ticks - first.get(label, ticks)) / tick, 2) for label, ticks in sorted(last.items())}

    def _sample(self) -> None:
        now = time.time()
        parents = _parents()
        workers = self.workers()
        for pool, root in self.pools.items():
            children = sorted(pid for pid, parent in parents.items() if parent == root)
            roles = ((child, "worker" if child in workers else "fork") for child in children)
            for pid, role in ((root, "main"), *roles):
                values = _status(pid)
                if "VmRSS" not in values:
                    continue
                label = self._label(pool, pid, role)
                self.peak_kb[label] = max(self.peak_kb.get(label, 0), values.get("VmHWM", values["VmRSS"]))
                self.series.setdefault(label, []).append((now, values["VmRSS"] / 1024))
                ticks = _cpu_ticks(pid)
                if ticks is not None:
                    self.ticks[label] = ticks

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> MemorySampler:
        """Start sampling (one sample at once)."""
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        """Take a last sample and stop (again: nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.sample()

    def report(self, started: float, points: int = 120) -> dict[str, Any]:
        """Peak RSS (MB) per process and RSS over time (seconds from ``started``, at most
        ``points`` per process), with each worker's growth from 20% into the run to its end."""
        series: dict[str, list[list[float]]] = {}
        growth: dict[str, float] = {}
        for label, samples in self.series.items():
            step = max(1, len(samples) // points)
            series[label] = [[round(t - started, 2), round(mb, 1)] for t, mb in samples[::step]]
            if len(samples) >= 5:
                warm = samples[len(samples) // 5][1]
                growth[label] = round(samples[-1][1] - warm, 1)
        return {"peak_rss_mb": {label: round(kb / 1024, 1) for label, kb in sorted(self.peak_kb.items())},
                "memory": {"interval_seconds": self.interval, "rss_mb_over_time": series,
                           "growth_after_warmup_mb": growth}}


def _busy_ticks() -> int:
    """Clock ticks all cores spent busy since boot (/proc/stat's first line, idle and iowait left out)."""
    fields = [int(x) for x in (PROC / "stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return user + nice + system + irq + softirq + steal


def _own_ticks() -> int:
    """Clock ticks spent by this process and every descendant (reaped ones included)."""
    parents = _parents()
    ours, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in ours:
                ours.add(pid)
                frontier.append(pid)
    return sum(_cpu_ticks(pid) or 0 for pid in ours)


class CpuMeter:
    """How many cores this run used, and how many everything else on the machine took
    meanwhile: other people's tests make a 2-core machine's figures noisy, and this says
    by how much."""

    def __init__(self) -> None:
        self._marks: dict[str, tuple[float, int, int]] = {}

    def mark(self, name: str) -> None:
        """Remember the time and the tick counters under ``name``."""
        self._marks[name] = (time.monotonic(), _busy_ticks(), _own_ticks())

    def between(self, first: str, second: str) -> dict[str, float]:
        """Cores used by this run and by the rest of the machine between two marks."""
        (t0, busy0, own0), (t1, busy1, own1) = self._marks[first], self._marks[second]
        ticks = os.sysconf("SC_CLK_TCK") * max(t1 - t0, 1e-9)
        ours = (own1 - own0) / ticks
        return {"seconds": round(t1 - t0, 2), "cores_used_by_run": round(ours, 2),
                "cores_used_by_others": round(max(0.0, (busy1 - busy0) / ticks - ours), 2)}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version(command: list[str]) -> str | None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (result.stdout or result.stderr).strip().splitlines()[0] if (result.stdout or result.stderr) else None


def filesystem(path: Path) -> str | None:
    """The type of the filesystem holding ``path`` (``tmpfs``, ``ext4`` …), from /proc/mounts."""
    try:
        mounts = [line.split()[1:3] for line in (PROC / "mounts").read_text().splitlines()]
    except OSError:
        return None
    resolved = str(path.resolve())
    best = max((m for m in mounts if resolved == m[0] or resolved.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best[1] if best else None


def _cpu_model() -> str | None:
    try:
        for line in (PROC / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine(redis_url: str | None = None) -> dict[str, Any]:
    """Cores, CPU, load average and the versions of every part a run depends on."""
    info: dict[str, Any] = {
        "cores": os.cpu_count(), "cpu": _cpu_model(), "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(), "python": platform.python_version(),
        "softhsm2": _tool_version(["softhsm2-util", "--version"]),
        "redis_server": _tool_version(["redis-server", "--version"]),
        **{name: _version(name) for name in ("cryptography", "dramatiq", "redis", "python-pkcs11", "SQLAlchemy")},
    }
    if redis_url:
        try:
            info["redis_server"] = redis.Redis.from_url(redis_url).info("server")["redis_version"]
        except redis.RedisError:
            pass
    return info
