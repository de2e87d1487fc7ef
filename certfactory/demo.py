"""`certfactory demo`: one command that shows a batch going through all six stages on
the real parts, then stops everything it started."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from certfactory import operations, wiring
from certfactory.crlsigner import issue_crl
from certfactory.demo_agency import submit_endorsed
from certfactory.embedded import RedisServer, WorkerPools
from certfactory.settings import Settings
from factory.errors import CertFactoryError
from factory.ledger import Ledger
from factory.synthetic import generate_requests
from schemas.status import RequestState as S

DEMO_AGENCY = "DEMO-BTC"
STALL_SECONDS = 180.0
_BEFORE_ACTIVATION = (S.received, S.validated, S.key_generated, S.signed, S.packaged)


def write_batch(folder: Path, count: int, key_type: str, seed: int) -> Path:
    """Write ``count`` synthetic requests as a JSON-lines batch file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"batch-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}.jsonl"
    records = generate_requests(count, seed=seed, key_type=key_type)
    path.write_text("".join(record.model_dump_json() + "\n" for record in records), encoding="utf-8")
    return path


def _wait(ledger: Ledger, batch_id: str, pending: tuple[S, ...], goal: str, total: int, console: Console,
          pools: WorkerPools, quiet: bool) -> float:
    """Show progress until no request of the batch is in ``pending``; returns seconds."""
    started = time.monotonic()
    last_change, last_counts = started, None
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[states]}"), console=console, disable=quiet) as progress:
        task = progress.add_task(goal, total=total, states="")
        while True:
            counts = ledger.state_counts(batch_id)
            waiting = sum(counts[state] for state in pending)
            shown = "  ".join(f"{s.value}={n}" for s, n in counts.items() if n)
            progress.update(task, completed=total - waiting, states=shown)
            if waiting == 0:
                return time.monotonic() - started
            if counts != last_counts:
                last_change, last_counts = time.monotonic(), counts
            if time.monotonic() - last_change > STALL_SECONDS or not all(pools.alive().values()):
                raise CertFactoryError(f"the pipeline stopped moving ({shown}); see the logs in {pools.logs}")
            time.sleep(0.2)


def run_demo(settings: Settings, count: int, key_type: str, quiet: bool = False) -> dict[str, Any]:
    """Run the demo and return its summary."""
    console = Console(stderr=quiet, quiet=quiet)
    layout = wiring.home(settings)
    created = wiring.initialise(settings)
    console.print(f"[bold]certfactory demo[/]: {count} requests, {key_type}, home {layout.root}")
    console.print("initialised: " + ", ".join(created) if created else "CA and ledger already initialised")
    server = RedisServer(layout.run / "redis").start()
    layout.redis_url_file.write_text(server.url)
    demo_settings = settings.model_copy(update={"redis_url": server.url})
    pools = WorkerPools(demo_settings, server.url).start()
    console.print(f"redis-server at {server.url} (AOF on); worker pools: station ×{settings.station_processes}, "
                  f"CA signer ×1, general ×1")
    ledger = wiring.ledger(settings)
    try:
        batch_file = write_batch(layout.root / "demo", count, key_type, seed=int(time.time()))
        started = time.monotonic()
        report = submit_endorsed(demo_settings, ledger, batch_file, DEMO_AGENCY)  # signed by the agency's head
        batch_id = report["batch_id"]
        console.print(f"submitted {batch_file.name}, signed by the head of {DEMO_AGENCY}: batch {batch_id}, "
                      f"{report['accepted']} accepted, {report['rejected']} rejected")
        ready_seconds = _wait(ledger, batch_id, _BEFORE_ACTIVATION, "issuing (until ready for pick-up)",
                              report["accepted"], console, pools, quiet)
        waiting = ledger.request_ids(batch_id=batch_id, state=S.awaiting_activation)
        console.print(f"{len(waiting)} devices packaged under {layout.root / 'devices'}; PIN envelopes in "
                      f"{layout.root / 'pin-envelopes'}")
        console.print("[bold]the agency collects the devices, hands them over and asks for the effective "
                      "time[/]: activating the batch")
        operations.activate(demo_settings, waiting)
        publish_seconds = _wait(ledger, batch_id, (*_BEFORE_ACTIVATION, S.awaiting_activation, S.activated),
                                "publishing", report["accepted"], console, pools, quiet)
        wall = time.monotonic() - started
        wiring.issuance(settings, "general").refresh_index()  # the pools stop before their delayed refresh
        crl = issue_crl(demo_settings)  # likewise the CRL: holds released at publication
        console.print(f"CRL {crl.get('crl_number')} signed on the CA token → {layout.repository / 'crl'}")
    finally:
        pools.stop()
        layout.redis_url_file.unlink(missing_ok=True)
        server.stop()
    counts = ledger.state_counts(batch_id)
    published = counts[S.published]
    summary = {
        "batch_id": batch_id, "count": count, "key_type": key_type, "accepted": report["accepted"],
        "states": {s.value: n for s, n in counts.items()}, "wall_seconds": round(wall, 2),
        "ready_seconds": round(ready_seconds, 2), "publish_seconds": round(publish_seconds, 2),
        "certificates_per_second": round(published / wall, 2) if wall else 0.0,
        "repository": str(layout.repository),
    }
    console.print_json(json.dumps({k: v for k, v in summary.items() if k != "states"}))
    console.print("  ".join(f"{s}={n}" for s, n in summary["states"].items() if n))
    console.print(f"[bold]{published} of {count} certificates published[/] in {wall:.1f} s "
                  f"({summary['certificates_per_second']} certificates/s) → {layout.repository / 'certs'}")
    return summary
