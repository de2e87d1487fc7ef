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


def pool_command(pool: str, processes: int, threads: int) -> list[str]:
    """The ``dramatiq`` command line of one worker pool."""
    return [sys.executable, "-m", "dramatiq", "certfactory.workerapp", "--processes", str(processes),
            "--threads", str(threads), "--queues", *POOL_QUEUES[pool]]


class WorkerPools:
    """The three worker pools of one host: station, CA signer, general."""

    def __init__(self, settings: Settings, redis_url: str, pools: tuple[str, ...] = ("station", "ca", "general"),
                 extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.pools = pools
        self.extra_env = extra_env or {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = wiring.home(settings).run / "logs"

    def _sizes(self, pool: str) -> tuple[int, int]:
        if pool == "station":
            return self.settings.station_processes, 1  # one token thread per process (PARTS.md)
        if pool == "ca":
            return 1, 1
        return 1, 4

    def start(self) -> WorkerPools:
        """Start every pool as a child process group."""
        self.logs.mkdir(parents=True, exist_ok=True)
        for pool in self.pools:
            processes, threads = self._sizes(pool)
            metrics_dir = wiring.home(self.settings).metrics / pool
            shutil.rmtree(metrics_dir, ignore_errors=True)  # emptied at start (prometheus-client multiprocess)
            metrics_dir.mkdir(parents=True)
            prom_host, _, prom_port = self.settings.dramatiq_metrics_address.rpartition(":")
            env = {**os.environ, **wiring.softhsm_env(self.settings, pool), **self.extra_env,
                   "CERTFACTORY_POOL": pool, "CERTFACTORY_REDIS_URL": self.redis_url,
                   "CERTFACTORY_HOME": str(self.settings.resolved_home),
                   "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "dramatiq_prom_db": str(metrics_dir),
                   "dramatiq_prom_host": prom_host.strip("[]"),
                   "dramatiq_prom_port": str(int(prom_port) + list(POOL_QUEUES).index(pool)),
                   # idle polling backs off to 1 s per hop by default; 100 ms keeps latency low
                   "dramatiq_worker_timeout": "100", "dramatiq_queue_prefetch": str(max(2, threads * 4))}
            log = open(self.logs / f"{pool}.log", "ab")
            self.processes[pool] = subprocess.Popen(
                pool_command(pool, processes, threads), env=env, stdout=log, stderr=subprocess.STDOUT,
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
