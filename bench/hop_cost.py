"""What one queue hop costs in processor time, with nothing in the stage (issue 4).

Every certificate makes six hops (validate → … → publish). This sends N messages to an
actor that does nothing, through certfactory's broker (``workers.broker.connect``: its
heartbeat and maintenance settings, dramatiq's default middleware) on a private
redis-server, to one dramatiq worker process with one thread (``--poll-floor-ms`` between
two polls of its empty queue, 0 for dramatiq's own backoff alone), at a given rate, and
measures the processor time of the worker (with its fork), of redis-server and of the
sender, per message. ``--rate`` spaces the messages like a pipeline's stage queue
(RSA-2048 at 9 certificates a second feeds each queue every ~110 ms); between messages
the worker polls its empty queue with dramatiq's backoff, which is part of the cost.
A burst (``--rate 2000``) instead keeps the queue full: ``drained_per_second`` is then
how fast one worker thread with a prefetch of 4 empties a busy queue.

    .venv/bin/python bench/hop_cost.py --messages 600 --rate 9 --poll-floor-ms 0 \
        --json bench/results/hop_cost-floor0.json
    .venv/bin/python bench/hop_cost.py --messages 600 --rate 2000 --json bench/results/hop_cost-burst.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from certfactory import embedded, host, loadreport

ACTOR_MODULE = '''
import os
import dramatiq
from workers.broker import connect

connect(os.environ["HOP_REDIS_URL"], int(os.environ["HOP_POLL_FLOOR_MS"]))


@dramatiq.actor(queue_name="hop", max_retries=0)
def hop(index):
    """Nothing: the hop alone is measured."""
'''


def _wait_idle(client: redis.Redis, timeout: float = 60.0) -> None:
    """Until the queue is empty and no message is held unacknowledged."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = sum(client.scard(key) for key in client.scan_iter("dramatiq:__acks__.*.hop"))
        if client.llen("dramatiq:hop") == 0 and held == 0:
            return
        time.sleep(0.05)
    raise SystemExit("the worker did not drain the queue in time")


def run(messages: int, rate: float, folder: Path, poll_ms: int, floor_ms: int) -> dict[str, object]:
    (folder / "hopactor.py").write_text(ACTOR_MODULE)
    server = embedded.RedisServer(folder / "redis").start()
    env = {**os.environ, "HOP_REDIS_URL": server.url, "HOP_POLL_FLOOR_MS": str(floor_ms),
           "PYTHONPATH": f"{folder}:{Path.cwd()}",
           "dramatiq_worker_timeout": str(poll_ms), "dramatiq_queue_prefetch": "4"}
    worker = subprocess.Popen([sys.executable, "-m", "dramatiq", "hopactor", "--processes", "1", "--threads", "1"],
                              env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis.from_url(server.url)
        deadline = time.monotonic() + 60
        while client.zcard("dramatiq:__heartbeats__") < 1:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("the dramatiq worker did not start")
            time.sleep(0.05)
        os.environ["HOP_REDIS_URL"], os.environ["HOP_POLL_FLOOR_MS"] = server.url, "0"  # the sender's broker
        sys.path.insert(0, str(folder))
        import hopactor  # noqa: PLC0415 (the broker must exist before the actor is declared)

        for index in range(20):  # warm-up
            hopactor.hop.send(index)
        _wait_idle(client)
        assert server.process is not None
        before = (host.tree_processor_seconds(worker.pid), host.tree_processor_seconds(server.process.pid),
                  time.process_time())
        started = time.monotonic()
        for index in range(messages):
            hopactor.hop.send(index)
            time.sleep(max(0.0, started + (index + 1) / rate - time.monotonic()))
        _wait_idle(client)
        wall = time.monotonic() - started
        after = (host.tree_processor_seconds(worker.pid), host.tree_processor_seconds(server.process.pid),
                 time.process_time())
    finally:
        worker.terminate()
        worker.wait(30)
        server.stop()
    worker_ms, redis_ms, sender_ms = ((b - a) * 1000 / messages for a, b in zip(before, after, strict=True))
    return {"messages": messages, "rate_per_second": rate, "worker_poll_ms": poll_ms, "poll_floor_ms": floor_ms,
            "send_and_drain_seconds": round(wall, 2), "drained_per_second": round(messages / wall, 1),
            "processor_ms_per_hop": {"worker": round(worker_ms, 3), "redis": round(redis_ms, 3),
                                     "sender": round(sender_ms, 3),
                                     "total": round(worker_ms + redis_ms + sender_ms, 3)},
            "method": "processor time of the dramatiq worker (its processes), redis-server and the sending "
                      "process over the sending and draining, per message; the actor does nothing"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=600)
    parser.add_argument("--rate", type=float, default=9.0, help="messages sent per second")
    parser.add_argument("--worker-poll-ms", type=int, default=500, help="CERTFACTORY_WORKER_POLL_MS's default")
    parser.add_argument("--poll-floor-ms", type=int, default=100, help="CERTFACTORY_WORKER_POLL_FLOOR_MS's default")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="certfactory-hop-cost-") as folder:
        result = run(args.messages, args.rate, Path(folder), args.worker_poll_ms, args.poll_floor_ms)
    loadreport.write_benchmark("hop_cost", result, started, args.json)


if __name__ == "__main__":
    main()
