"""The children an embedded run starts: a private redis-server and the worker pools.

Each is started on loopback under ``$CERTFACTORY_HOME`` and stopped by its owner; port
6379 may belong to somebody else's Redis, so the embedded one takes a free port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from certfactory import wiring
from certfactory.settings import Settings
from factory.errors import ConfigurationError
from workers.broker import POOL_QUEUES


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A private redis-server with AOF on (``appendfsync everysec``)."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """redis:// URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start and wait until it answers PING."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigurationError("redis-server not found: install Debian's redis-server package (make demo does)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise ConfigurationError(f"redis-server did not start on port {self.port}; "
                                             f"see {self.folder / 'redis.log'}") from None
                time.sleep(0.02)

    def stop(self) -> None:
        """Stop it (SIGTERM lets it flush its AOF)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


# The process groups a pool runs as: (the pool whose parts they hold, their queues). The
# station's packaging has processes of its own: writing the certificate and chain is
# mostly waiting for the disk (SoftHSM2 rewrites an object's file once per attribute),
# so in its own processes it overlaps the key generation instead of queueing behind it
# on the same one-thread token worker.
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "station": ("station", ("generate_key",)),
    "ca": ("ca", POOL_QUEUES["ca"]),
    "general": ("general", POOL_QUEUES["general"]),
    "packager": ("station", ("package",)),  # dramatiq's exporter: port +3 (station, ca, general: +0, +1, +2)
}
POOL_GROUPS: dict[str, tuple[str, ...]] = {"station": ("station", "packager"), "ca": ("ca",), "general": ("general",)}
assert {q for pool in POOL_GROUPS for g in POOL_GROUPS[pool] for q in GROUPS[g][1] if GROUPS[g][0] == pool} == {
    q for queues in POOL_QUEUES.values() for q in queues}


def pool_command(group: str, processes: int, threads: int) -> list[str]:
    """The ``dramatiq`` command line of one process group (see GROUPS)."""
    return [sys.executable, "-m", "dramatiq", "certfactory.workerapp", "--processes", str(processes),
            "--threads", str(threads), "--queues", *GROUPS[group][1]]


class WorkerPools:
    """The worker pools of one host: station (key generation and packaging), CA signer,
    general; ``processes`` holds one dramatiq parent per process group (GROUPS)."""

    def __init__(self, settings: Settings, redis_url: str, pools: tuple[str, ...] = ("station", "ca", "general"),
                 extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.pools = pools
        self.extra_env = extra_env or {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = wiring.home(settings).run / "logs"

    def _sizes(self, group: str) -> tuple[int, int]:
        if group in ("station", "packager"):
            return self.settings.station_processes, 1  # one token thread per process (PARTS.md)
        if group == "ca":
            return 1, 1
        # One thread: its work is Python under one GIL, so more threads bought no throughput
        # and cost processor and memory (1,500 P-256 certificates: 16 → 10 ms of the general
        # pool's processor per certificate, RSS growth 27.5 → 5.3 MB: per-thread malloc
        # arenas). Scale it with processes, on this host or others.
        return 1, 1

    def start(self) -> WorkerPools:
        """Start every pool as a child process group."""
        self.logs.mkdir(parents=True, exist_ok=True)
        for group in (group for pool in self.pools for group in POOL_GROUPS[pool]):
            pool = GROUPS[group][0]
            processes, threads = self._sizes(group)
            metrics_dir = wiring.home(self.settings).metrics / group
            shutil.rmtree(metrics_dir, ignore_errors=True)  # emptied at start (prometheus-client multiprocess)
            metrics_dir.mkdir(parents=True)
            prom_host, _, prom_port = self.settings.dramatiq_metrics_address.rpartition(":")
            env = {**os.environ, **wiring.softhsm_env(self.settings, pool), **self.extra_env,
                   "CERTFACTORY_POOL": pool, "CERTFACTORY_REDIS_URL": self.redis_url,
                   "CERTFACTORY_HOME": str(self.settings.resolved_home),
                   "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "dramatiq_prom_db": str(metrics_dir),
                   "dramatiq_prom_host": prom_host.strip("[]"),
                   "dramatiq_prom_port": str(int(prom_port) + list(GROUPS).index(group)),
                   # an idle consumer polls its empty queue backing off up to this: 100 ms took 13% of a
                   # core with nothing to do (6 ms of processor per RSA certificate under load), 500 ms 4%
                   "dramatiq_worker_timeout": str(self.settings.worker_poll_ms), "dramatiq_queue_prefetch": str(max(2, threads * 4))}
            log = open(self.logs / f"{group}.log", "ab")
            self.processes[group] = subprocess.Popen(
                pool_command(group, processes, threads), env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        return self

    def alive(self) -> dict[str, bool]:
        """Whether each pool's parent process still runs."""
        return {pool: process.poll() is None for pool, process in self.processes.items()}

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every pool (dramatiq finishes the message in hand), then SIGKILL stragglers."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
