"""One scrape target per host: the workers' metrics and the exporter's gauges on /metrics.

``metrics_registry`` builds the registry (mountable in any WSGI/ASGI app through
``prometheus_client.make_wsgi_app``); ``serve_metrics`` serves it on its own address.
The workers' multiprocess files are read from a directory tree, one subdirectory per
worker pool, so that each pool can empty its own at start without wiping another's.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from monitoring.exporter import LedgerSource, PipelineExporter, RedisSource

DEFAULT_ADDRESS = "127.0.0.1:8080"
METRICS_PATH = "/metrics"


class MultiProcessFiles(Collector):
    """The merged multiprocess files (``*.db``) anywhere under a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def collect(self) -> Iterator[Metric]:
        """Read and merge every worker process's file, as MultiProcessCollector does for one directory."""
        files = sorted(str(path) for path in self.root.rglob("*.db"))
        return iter(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]


def metrics_registry(metrics_dir: Path, ledger: LedgerSource, redis_client: RedisSource) -> CollectorRegistry:
    """A registry holding every metric of the host: the worker processes' (the tree of
    multiprocess directories under ``metrics_dir``, ``$CERTFACTORY_HOME/run/metrics``)
    and the exporter's. ``ledger`` and ``redis_client`` may be callables giving them."""
    registry = CollectorRegistry()
    registry.register(MultiProcessFiles(metrics_dir))
    registry.register(PipelineExporter(ledger, redis_client))
    return registry


def redis_following(url_of: Callable[[], str]) -> Callable[[], redis.Redis]:
    """A Redis source for ``metrics_registry`` that follows ``url_of`` (e.g. the embedded
    server's URL file), with short timeouts so a scrape never hangs on a dead server."""
    clients: dict[str, redis.Redis] = {}
    lock = threading.Lock()

    def current() -> redis.Redis:
        url = url_of()
        with lock:
            if url not in clients:
                for old in clients.values():
                    old.close()
                clients.clear()
                clients[url] = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
            return clients[url]
    return current


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) as a (host, port) pair."""
    host, colon, port = address.rpartition(":")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics address must be host:port, e.g. {DEFAULT_ADDRESS}; got {address!r}")
    return host.strip("[]"), int(port)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        """Scrapes every few seconds are not news."""


def _only_metrics(app: Any) -> Any:
    def dispatch(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == METRICS_PATH:
            return app(environ, start_response)  # type: ignore[no-any-return]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: metrics are at /metrics\n"]
    return dispatch


@dataclass
class MetricsServer:
    """A running metrics server; ``stop()`` ends it."""

    server: ThreadingWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        """The URL of /metrics (with the port actually bound)."""
        host, port = self.server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://{f'[{name}]' if ':' in name else name}:{port}{METRICS_PATH}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def serve_metrics(registry: CollectorRegistry, address: str = DEFAULT_ADDRESS) -> MetricsServer:
    """Serve ``registry`` on http://``address``/metrics from a background thread."""
    host, port = parse_address(address)

    class Server(ThreadingWSGIServer):
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = make_server(host, port, _only_metrics(make_wsgi_app(registry)), Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread)
