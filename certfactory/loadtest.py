"""`certfactory loadtest`: the real pipeline under a batch, then the raw ceiling on the same
cores, and how close the one comes to the other.

The run, in a fresh home (a temporary one unless ``--home``):

1. ``init``, blank devices onto the station's shelf (``Station.stock_blank``: before the
   timing, as the ceiling's blank devices are), a private redis-server, the worker pools
   as the demo starts them (station pool: key generation on P processes and packaging on
   P more, one token thread each; CA signer ×1; general ×1 with T threads), each worker
   also loading ``certfactory.loadprobe``.
2. Once every worker process has heartbeated, a warm-up batch (3 requests per station
   process, another agency) goes through: workers build their Issuance, load PKCS#11,
   log in to the CA token and plug in blank devices on their first message, once per
   process lifetime, and that is no part of the steady state.
3. N synthetic requests submitted as one batch; the agency is a loop here that activates
   every request as soon as it reaches awaiting_activation (polling every 100 ms).
4. The ceiling (``certfactory.ceiling``) with P processes, half its iterations before the
   pipeline (1) and half after the pools stop (4), so the host's drift in speed between
   the two weighs on both sides alike (``ceiling.combine``); with ``--device-work`` the
   device-work ceiling too, in the order plain, device work | pipeline | device work, plain.

The device tokens, the pipeline's and the ceiling's alike, live in RAM (a folder in
/dev/shm, ``--device-storage ram``, the default) or in the home, on disk (``disk``). SoftHSM2
rewrites a token's object file once per attribute (~20 times per object); on this
host's ext4 that made a P-256 key pair cost 16 ms of processor and 34 ms of wall time,
in RAM 4 ms (``bench/device_floor.py``), and a real token's own memory pays none of
it. The ledger, the PIN envelopes and the CA token stay in the home, on disk; the RAM
folder is removed when the command ends.

The report (``--json``): ``end_to_end_per_second`` = published ÷ (last publication's
ledger commit − the moment just before the batch was submitted); it includes the batch's
ledger write, the ramp-up and the drain, so it is the rate a user can count on for a
batch of this size (``middle_80_per_second`` leaves out the first and last 10% of
publications). ``ceiling_per_second`` and ``efficiency`` (their ratio); ``stages``: per
stage, in ms, p50/p95/p99 of the time between consecutive transitions (ledger), the
queue wait and the work (probe), see ``certfactory.loadstats``; ``keygen_ms`` /
``sign_ms`` in the ceiling and in the pipeline; ``peak_rss_mb`` per pool process and
``memory`` (RSS over time, growth after warm-up); ``processor_ms_per_certificate``
(processor time per certificate by pool, broker and agency, against the ceiling's per
iteration: where the time beyond the token work goes); ``calibration`` for
``certfactory plan``; ``throughput`` over time; ``machine`` and ``code`` (commit,
modified files).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import click
import redis
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from certfactory import embedded, host, loadprobe, loadreport, loadstats, wiring
from certfactory.ceiling import combine, run_ceiling
from certfactory.demo import write_batch
from certfactory.demo_agency import submit_endorsed
from certfactory.messaging import actors_for
from certfactory.settings import Settings
from factory.errors import CertFactoryError, ConfigurationError
from factory.ledger import Ledger
from schemas.status import RequestState as S

AGENCY = "LOADTEST"
WARM_UP_AGENCY = "LOADTEST-WARMUP"  # its own agency: request refs restart at HS-000001 in every batch
WARM_UP_PER_PROCESS = 3
STALL_SECONDS = 180.0
POLL_SECONDS = 0.1
COUNT_SECONDS = 1.0
FINAL = (S.published, S.rejected, S.failed, S.revoked)


class ProbedPools(embedded.WorkerPools):
    """The demo's worker pools, each worker also loading the timing probe, and the
    general pool (validate, await_activation, publish) with ``threads`` threads. Station
    and CA workers keep one thread per process: token calls are single-threaded."""

    def __init__(self, settings: Settings, redis_url: str, threads: int | None, extra_env: dict[str, str]) -> None:
        super().__init__(settings, redis_url, extra_env=extra_env)
        self.threads = threads

    def _sizes(self, pool: str) -> tuple[int, int]:
        processes, threads = super()._sizes(pool)
        return (processes, self.threads) if pool == "general" and self.threads else (processes, threads)

    def start(self) -> ProbedPools:
        """Start the pools with ``certfactory.loadprobe`` among the modules they import."""
        original = embedded.pool_command

        def probed(pool: str, processes: int, threads: int) -> list[str]:
            command = original(pool, processes, threads)
            at = command.index("certfactory.workerapp") + 1
            return [*command[:at], "certfactory.loadprobe", *command[at:]]

        embedded.pool_command = probed
        try:
            super().start()
        finally:
            embedded.pool_command = original
        return self


def _wait_for_workers(url: str, pools: ProbedPools, expected: int, timeout: float = 90.0) -> None:
    """Until every worker process has heartbeated (imported, connected, consuming)."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while client.zcard("dramatiq:__heartbeats__") < expected:
        if not all(pools.alive().values()) or time.monotonic() > deadline:
            raise CertFactoryError(f"the worker pools did not come up; see the logs in {pools.logs}")
        time.sleep(0.05)


def _drive(settings: Settings, ledger: Ledger, batch_id: str, total: int, pools: ProbedPools,
           console: Console, title: str) -> None:
    """Activate as the agency would, instantly, and show progress until every request of
    the batch is final."""
    issuance = wiring.issuance(settings, "general")
    actors = actors_for(wiring.redis_url(settings))
    last_change, last_counts = time.monotonic(), None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[states]}"))
    # the agency shares the cores with the pipeline: a calm bar (2 redraws a second, not 10)
    with Progress(*columns, console=console, transient=False, refresh_per_second=2) as progress:
        task = progress.add_task(f"{title} (published)", total=total, states="")
        counted = 0.0
        while True:
            for request_id in issuance.activate_many(ledger.request_ids(batch_id=batch_id,
                                                                        state=S.awaiting_activation)):
                actors.publish.send(request_id)
            if time.monotonic() - counted < COUNT_SECONDS:  # counting the batch costs more than the poll
                time.sleep(POLL_SECONDS)
                continue
            counted = time.monotonic()
            counts = ledger.state_counts(batch_id)
            shown = " ".join(f"{s.value}={n}" for s, n in counts.items() if n and s not in FINAL)
            progress.update(task, completed=sum(counts[s] for s in FINAL), states=shown)
            if sum(counts[s] for s in FINAL) >= total:
                break
            if counts != last_counts:
                last_change, last_counts = time.monotonic(), counts
            if time.monotonic() - last_change > STALL_SECONDS or not all(pools.alive().values()):
                raise CertFactoryError(f"the pipeline stopped moving ({shown}); see the logs in {pools.logs}")
            time.sleep(POLL_SECONDS)
    issuance.ledger.close()


def _ceiling(settings: Settings, key_type: str, count: int, keygen_delay: float, sign_delay: float,
             console: Console, device_work: bool, when: str) -> dict[str, Any]:
    """One run of the ceiling (``device_work``: with the device's own work), with a bar."""
    title = f"{'ceiling with the device work' if device_work else 'ceiling (keygen + sign)'}, {when} the pipeline"
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task(title, total=count)
        return run_ceiling(settings, key_type, count, settings.station_processes, keygen_delay, sign_delay,
                           lambda done: progress.update(task, completed=done), device_work=device_work)


def _stock_station(settings: Settings, count: int, console: Console) -> None:
    """Blank devices onto the station's shelf before the timing, as the ceiling makes its
    blank devices before its timing: a station is stocked from the vendor's shipment, and
    making SoftHSM2 tokens stands in for manufacturing, which is no part of issuance."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("blank devices onto the shelf", total=count)
        wiring.station(settings).stock_blank(count, lambda made: progress.update(task, completed=made))


def run_loadtest(count: int, key_type: str, processes: int, threads: int | None = None, home: Path | None = None,
                 keygen_delay: float = 0.0, sign_delay: float = 0.0, console: Console | None = None,
                 ceiling_count: int | None = None, device_work: bool = False,
                 device_storage: str = "ram") -> dict[str, Any]:
    """Run the pipeline and then the ceiling; returns the report (see the module doc).
    ``device_work``: then also the ceiling with the device's own work in its loop
    (``certfactory.ceiling``), reported as ``device_work_ceiling``."""
    console = console or Console(stderr=True)
    root = home or Path(tempfile.mkdtemp(prefix="certfactory-loadtest-"))
    storage = _ram_folder(console) if device_storage == "ram" else None
    if storage:  # RAM is given back, even after a failed run (and with --home too)
        atexit.register(shutil.rmtree, storage, True)
    settings = Settings(home=root, worker_processes=processes, device_storage=storage)
    layout = wiring.home(settings)
    if (layout.root / "ledger.sqlite").exists() and settings.database_url is None:
        raise ConfigurationError(f"{layout.root} already holds a ledger: a load test needs a fresh --home")
    wiring.initialise(settings)
    _stock_station(settings, count + (WARM_UP_PER_PROCESS + settings.station_ports) * settings.station_processes,
                   console)
    total = ceiling_count or count
    first = total // 2 if total >= 2 * settings.station_processes else 0  # each run: a device per process at least
    kinds = (False, True) if device_work else (False,)
    before = {kind: _ceiling(settings, key_type, first, keygen_delay, sign_delay, console, kind, "before")
              for kind in kinds} if first else {}
    server = embedded.RedisServer(layout.run / "redis").start()
    run_settings = settings.model_copy(update={"redis_url": server.url})
    probe_dir = layout.run / "probe"
    env = {"CERTFACTORY_PROBE_DIR": str(probe_dir), loadreport.KEYGEN_DELAY_VARIABLE: str(keygen_delay),
           loadreport.SIGN_DELAY_VARIABLE: str(sign_delay),
           **({"CERTFACTORY_DEVICE_STORAGE": str(storage)} if storage else {})}
    pools = ProbedPools(settings, server.url, threads, env).start()
    ledger = wiring.ledger(settings)
    sampler: host.MemorySampler | None = None
    machine = host.machine(server.url)
    cpu = host.CpuMeter()
    try:
        _wait_for_workers(server.url, pools, 2 * settings.station_processes + 2)
        assert server.process is not None
        sampler = host.MemorySampler({**{pool: p.pid for pool, p in pools.processes.items()},
                                      "redis": server.process.pid}, lambda: loadprobe.worker_pids(probe_dir),
                                     interval=1.0).start()  # peaks are the kernel's high-water marks anyway
        console.print(f"[bold]load test[/]: {count} × {key_type}, station ×{settings.station_processes} "
                      f"(packaging ×{settings.station_processes}), CA ×1, general ×1; home {layout.root}; "
                      f"device tokens in {storage or 'the home'}")
        warm_up = write_batch(layout.root / "warm-up", WARM_UP_PER_PROCESS * settings.station_processes, key_type,
                              seed=count + 1)
        warmed = submit_endorsed(run_settings, ledger, warm_up, WARM_UP_AGENCY)
        _drive(run_settings, ledger, warmed["batch_id"], warmed["accepted"], pools, console, "warm-up")
        batch_file = write_batch(layout.root / "batches", count, key_type, seed=count)
        cpu.mark("pipeline")
        sampler.mark("pipeline")
        agency_cpu = time.process_time()  # this process: the agency's polling and activations, the sampler
        submitted = time.time()
        report = submit_endorsed(run_settings, ledger, batch_file, AGENCY)
        _drive(run_settings, ledger, report["batch_id"], report["accepted"], pools, console, "pipeline")
        cpu.mark("pipeline done")
        sampler.mark("pipeline done")
        agency_cpu = time.process_time() - agency_cpu
        sampler.stop()
    finally:
        if sampler is not None:
            sampler.stop()
        pools.stop()
        server.stop()
    requests = loadstats.timeline(ledger, report["batch_id"])
    counts = {s.value: n for s, n in ledger.state_counts(report["batch_id"]).items() if n}
    ledger.close()
    probe = loadstats.of_batch(loadstats.read_probe(probe_dir), requests, submitted)
    cpu.mark("ceiling")
    after = {kind: _ceiling(settings, key_type, total - first, keygen_delay, sign_delay, console, kind, "after")
             for kind in reversed(kinds)}
    ceiling = combine([run for run in (before.get(False), after[False]) if run])
    floor = combine([run for run in (before.get(True), after[True]) if run]) if device_work else {}
    result = loadreport.build(count, key_type, settings.station_processes, submitted, requests, counts, probe,
                              ceiling, sampler, keygen_delay, sign_delay)
    assert sampler is not None
    result["processor_ms_per_certificate"] = loadreport.processor_per_certificate(
        sampler.processor_seconds("pipeline", "pipeline done"), agency_cpu, result["published"], ceiling)
    cpu.mark("ceiling done")
    result["machine"] = {**machine, "load_average_after": [round(x, 2) for x in os.getloadavg()],
                         "cores_busy": {"pipeline": cpu.between("pipeline", "pipeline done"),
                                 "ceiling": cpu.between("ceiling", "ceiling done")}}
    result["efficiency_load_adjusted"] = loadreport.load_adjusted(result)
    if device_work:
        result["device_work_ceiling"] = loadreport.device_work(result, floor)
    where = storage or root
    result["device_storage"] = {"where": "ram" if storage else "disk", "path": str(where),
                                "filesystem": host.filesystem(where)}
    if home is None:
        shutil.rmtree(root, ignore_errors=True)
    else:
        result["home"] = str(root)
    return result


def _ram_folder(console: Console) -> Path | None:
    """A fresh folder in /dev/shm for the device tokens, or None (the home) without one."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return Path(tempfile.mkdtemp(prefix="certfactory-devices-", dir=shm))
    console.print("[yellow]no writable /dev/shm: the device tokens stay in the home, on disk[/]")
    return None


@click.command("loadtest")
@click.option("--count", default=300, show_default=True, type=click.IntRange(1, 100_000), help="Requests to issue.")
@click.option("--key-type", default="rsa2048", show_default=True,
              type=click.Choice(["rsa2048", "rsa3072", "ecdsa-p256"]), help="Key type of every request.")
@click.option("--processes", type=click.IntRange(1, 64), help="Station worker processes, and ceiling processes "
              "[default: CERTFACTORY_WORKER_PROCESSES, else one per core].")
@click.option("--threads", type=click.IntRange(1, 64), help="Threads of the general pool [default: 1]; station "
              "and CA workers keep one thread per process.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path),
              help="Run in this (fresh) home and keep it [default: a temporary one, removed afterwards].")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Draw throughput over time, latency per stage and RSS over time to this PNG.")
@click.option("--ceiling-count", type=click.IntRange(1, 100_000),
              help="Iterations of the ceiling loop, over all its processes [default: --count].")
@click.option("--keygen-delay", default=0.0, show_default=True, type=click.FloatRange(0, 60),
              help="Simulated device latency added to each key generation (seconds).")
@click.option("--sign-delay", default=0.0, show_default=True, type=click.FloatRange(0, 60),
              help="Simulated latency added to each CA signature (seconds).")
@click.option("--device-storage", type=click.Choice(["ram", "disk"]), default="ram", show_default=True,
              help="Where SoftHSM2 keeps the device tokens, the pipeline's and the ceiling's: RAM (/dev/shm) "
              "stands in for a real token's own memory (removed at the end, --home or not); disk keeps them in "
              "the home.")
@click.option("--device-work", is_flag=True, help="Also run the ceiling with the device's own work in its loop "
              "(PINs, proof of possession, certificate and chain onto the device): how much of the gap is overhead.")
def loadtest_command(count: int, key_type: str, processes: int | None, threads: int | None, home: Path | None,
                     json_file: Path | None, plot_file: Path | None, ceiling_count: int | None, keygen_delay: float,
                     sign_delay: float, device_work: bool, device_storage: str) -> None:
    """Measure end-to-end throughput against the raw keygen + sign ceiling on this host."""
    console = Console(stderr=True)
    try:
        processes = processes or Settings().station_processes
        result = run_loadtest(count, key_type, processes, threads, home, keygen_delay, sign_delay, console,
                              ceiling_count, device_work, device_storage)
    except ValidationError as error:
        problems = "; ".join(f"CERTFACTORY_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        raise click.ClickException(f"bad setting: {problems}") from None
    except CertFactoryError as error:
        raise click.ClickException(error.diagnostics()) from None
    loadreport.print_summary(console, result)
    if json_file:
        json_file.parent.mkdir(parents=True, exist_ok=True)
        json_file.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
        console.print(f"report written to {json_file}")
    if plot_file:
        from certfactory.loadplot import plot

        plot(result, plot_file)
        console.print(f"plot written to {plot_file}")
    if result["published"] != count:
        raise click.ClickException(f"only {result['published']} of {count} requests were published: {result['states']}")


if __name__ == "__main__":
    loadtest_command()
