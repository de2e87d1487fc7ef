"""Chaos harness (`make chaos`): N requests through the real pipeline while it breaks things.

The parts are the real ones an embedded run uses: a private redis-server with AOF, the
three worker pools as ``certfactory.embedded`` starts them, SoftHSM2 device and CA
tokens, and a ledger on PostgreSQL (a private cluster, or ``--database-url``) or SQLite.
While the requests flow it

* SIGKILLs a random worker process every few seconds; its pool then exits and is
  restarted, reconciling as ``certfactory worker`` does at start-up;
* SIGKILLs redis-server once and starts it again on its AOF;
* drops the ledger's connections (PostgreSQL: ``pg_terminate_backend`` of every other
  session; SQLite: an exclusive lock held for a few seconds);
* pulls a device token out of the station while its key is being generated.

The agency activates each request as soon as it awaits activation. At the end it checks
that every accepted request was published exactly once, serials are unique, each device
holds exactly one key and one certificate (opened through PKCS#11), no device is left
unaccounted for, every request's audit trail is complete and the hash chain verifies,
and that the pipeline drained within ``--drain-limit`` seconds of the last fault. Results
go to bench/results/chaos.json; the exit status is 1 when any check fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import faulthandler
import glob
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import redis  # noqa: E402
import sqlalchemy  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from certfactory import demo_agency, operations, wiring  # noqa: E402
from certfactory.demo import write_batch  # noqa: E402
from certfactory.embedded import RedisServer, WorkerPools, free_port  # noqa: E402
from certfactory.settings import Settings  # noqa: E402
from factory.errors import CertFactoryError  # noqa: E402
from factory.ledger import Ledger  # noqa: E402
from schemas.status import RequestState as S  # noqa: E402

from chaos_checks import PATH, Faults, run_checks  # noqa: E402  (bench/, beside this script)

AGENCY = "CHAOS-BTC"
POOLS = ("station", "ca", "general")


class ChaosError(Exception):
    """The harness could not run (a missing tool, a server that would not start)."""


# -- the ledger's server --------------------------------------------------------------------


class PrivatePostgres:
    """A throw-away PostgreSQL cluster from Debian's postgresql package (as tests/conftest.py)."""

    def __init__(self, base: Path) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not binaries:
            raise ChaosError("no PostgreSQL server binaries: install Debian's postgresql package, pass "
                             "--database-url, or run with --database sqlite")
        self.bindir = Path(binaries[-1]).parent
        self.base = base
        self.data = base / "pgdata"
        self.port = free_port()
        self.runas = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root

    def start(self) -> str:
        """Create and start the cluster; returns the SQLAlchemy URL of a fresh database."""
        self.base.mkdir(parents=True, exist_ok=True)
        if self.runas:
            shutil.chown(self.base, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.base / "pg.log"), "-o",
                  f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
        admin = sqlalchemy.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql('CREATE DATABASE "certfactory"')
        admin.dispose()
        return self.url("certfactory")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run([*self.runas, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"],
                       capture_output=True, check=False)

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self.runas, str(self.bindir / tool), *args], capture_output=True, text=True)
        if result.returncode != 0:
            raise ChaosError(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")


def drop_connections(ledger_url: str, outage_seconds: float) -> str:
    """Cut the pipeline off its ledger; returns what was done."""
    if ledger_url.startswith("sqlite"):
        path = ledger_url.removeprefix("sqlite:///")
        connection = sqlite3.connect(path, timeout=30, isolation_level=None)
        connection.execute("BEGIN EXCLUSIVE")  # every writer waits, then fails with "database is locked"
        time.sleep(outage_seconds)
        connection.execute("ROLLBACK")
        connection.close()
        return f"SQLite locked exclusively for {outage_seconds:.0f} s"
    admin = sqlalchemy.create_engine(ledger_url, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.NullPool)
    with admin.connect() as connection:
        killed = connection.exec_driver_sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").scalar()
    admin.dispose()
    return f"terminated {killed} PostgreSQL backends"


# -- the run --------------------------------------------------------------------------------


class Chaos:
    """One chaos run over a fresh $CERTFACTORY_HOME."""

    def __init__(self, args: argparse.Namespace, console: Console) -> None:
        self.args = args
        self.console = console
        self.random = random.Random(args.seed)
        self.home = Path(args.home or ROOT / "bench" / "out" / f"chaos-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}")
        self.faults = Faults()
        self.postgres: PrivatePostgres | None = None
        self.server: RedisServer | None = None
        self.pools: dict[str, WorkerPools] = {}
        self.started = 0.0
        self.next_kill = 0.0
        self.pulled: tuple[Any, Path, Path, float] | None = None

    # -- set-up and tear-down --

    def start(self) -> Settings:
        if self.home.exists() and any(self.home.iterdir()):
            raise ChaosError(f"{self.home} is not empty: chaos needs a fresh home")
        self.home.mkdir(parents=True, exist_ok=True)
        database_url = self.args.database_url
        if database_url is None and self.args.database == "postgresql":
            self.postgres = PrivatePostgres(Path("/tmp") / f"cf-chaos-pg-{os.getpid()}")
            database_url = self.postgres.start()
        settings = Settings(home=self.home, database_url=database_url, worker_processes=self.args.station_processes)
        wiring.initialise(settings)
        self.server = RedisServer(wiring.home(settings).run / "redis").start()
        wiring.home(settings).redis_url_file.write_text(self.server.url)
        settings = settings.model_copy(update={"redis_url": self.server.url})
        for pool in POOLS:
            self.pools[pool] = self._pool(settings, pool).start()
        return settings

    def _pool(self, settings: Settings, pool: str) -> WorkerPools:
        # the workers read their settings from the environment: the ledger too
        ledger_env = {"CERTFACTORY_DATABASE_URL": settings.database_url} if settings.database_url else {}
        return WorkerPools(settings, settings.redis_url or "", (pool,), extra_env=ledger_env)

    def stop_pipeline(self) -> None:
        """Stop the worker pools and redis-server (again: harmless)."""
        for pools in self.pools.values():
            pools.stop(timeout=10)
        if self.server is not None:
            self.server.stop()

    # -- faults --

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _fault_done(self, at: float | None = None) -> None:
        self.faults.last_at = max(self.faults.last_at, self._elapsed() if at is None else at)

    def kill_worker(self) -> None:
        """SIGKILL one worker process (a child of a pool's dramatiq parent)."""
        victims = []
        for pool, pools in self.pools.items():
            for process in pools.processes.values():
                try:
                    children = sorted(psutil.Process(process.pid).children(), key=lambda c: c.create_time())
                except psutil.NoSuchProcess:
                    continue
                workers = children[:self.args.station_processes if pool == "station" else 1]
                victims += [(pool, child.pid) for child in workers]
        if not victims:
            return
        pool, pid = self.random.choice(victims)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        self.faults.kills.append({"at": round(self._elapsed(), 2), "pool": pool, "pid": pid})
        self._fault_done()

    def restart_dead_pools(self, settings: Settings, ledger: Ledger) -> None:
        """A pool whose worker died exits (dramatiq stops the rest): start it again, and
        reconcile as `certfactory worker` does at start-up."""
        for pool, pools in list(self.pools.items()):
            if all(pools.alive().values()):
                continue
            pools.stop(timeout=5)
            self.pools[pool] = self._pool(settings, pool).start()
            self.faults.pool_restarts += 1
            try:
                operations.reconcile(settings, ledger, self.args.reconcile_after)
            except Exception as error:  # noqa: BLE001 - the broker or ledger may be down right now
                self.console.log(f"reconcile at start-up failed ({type(error).__name__}); the next start retries")

    def restart_redis(self) -> None:
        """SIGKILL redis-server, then start it again on the same port and AOF."""
        assert self.server is not None and self.server.process is not None
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait()
        time.sleep(self.args.redis_down)
        began = time.monotonic()
        self.server = RedisServer(self.server.folder, self.server.port).start()
        self.faults.redis_restart = {"at": round(self._elapsed(), 2), "down_seconds": self.args.redis_down,
                                     "start_seconds": round(time.monotonic() - began, 2)}
        self._fault_done()

    def drop_database(self, settings: Settings) -> None:
        at = self._elapsed()
        done = drop_connections(settings.ledger_url, self.args.db_outage)
        self.faults.database_drop = {"at": round(at, 2), "what": done}
        self._fault_done()

    def remove_token(self, settings: Settings, ledger: Ledger) -> None:
        """Pull out a device whose key is being generated (claimed, no key recorded yet),
        else the blank device next in line to be claimed: with P-256's millisecond keys a
        claimed device is seldom caught, and a device pulled just before its claim meets
        the same recovery (claimed, not present: removed, another claimed)."""
        from factory.tables import devices

        station = wiring.station(settings)
        columns = (devices.c.serial, devices.c.token_dir, devices.c.request_id)
        with ledger.engine.connect() as connection:
            claimed = connection.execute(sqlalchemy.select(*columns).where(devices.c.state == "claimed")).all()
            blank = connection.execute(sqlalchemy.select(*columns).where(devices.c.state == "blank")
                                       .order_by(devices.c.created_at, devices.c.serial).limit(2)).all()
        for device in [*claimed, *blank]:
            source = station.tokendir / device.token_dir
            pulled = self.home / "pulled" / device.token_dir
            pulled.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.move(str(source), str(pulled))
            except (FileNotFoundError, shutil.Error):
                continue
            self.pulled = (device, source, pulled, time.monotonic())
            return

    def confirm_pull(self, ledger: Ledger) -> None:
        """A pulled device whose key is recorded within a few seconds was pulled a moment
        after its key was generated, not during: plug it back and pull another later."""
        assert self.pulled is not None
        device, source, pulled, at = self.pulled
        row = ledger.get_device(device.serial)
        waited = time.monotonic() - at
        if row is not None and (row.state not in ("claimed", "removed", "blank") or
                                (row.state == "blank" and waited > 5.0)):  # too late, or never claimed
            shutil.move(str(pulled), str(source))
            self.pulled = None
        elif row is not None and row.state != "blank" and waited > 3.0:
            self.faults.token_removal = {"at": round(at - self.started, 2), "device": device.serial,
                                         "request_id": device.request_id}
            self.pulled = None
            self._fault_done(at - self.started)

    def inject(self, settings: Settings, ledger: Ledger, progress: float) -> None:
        """Faults by progress (fraction of requests past key generation), so each lands
        while work is in flight whatever the key type and machine."""
        if progress >= self.args.faults_until and self.faults.token_removal is not None:
            return
        now = self._elapsed()
        if self.pulled is not None:
            self.confirm_pull(ledger)
        elif self.faults.token_removal is None and progress >= 0.02:
            self.remove_token(settings, ledger)
        if progress >= 0.1 and now >= self.next_kill and progress < self.args.faults_until \
                and (self.args.max_kills is None or len(self.faults.kills) < self.args.max_kills):
            self.kill_worker()
            self.next_kill = now + self.random.uniform(0.5, 1.5) * self.args.kill_every
        if self.faults.database_drop is None and progress >= 0.2:
            self.drop_database(settings)
        if self.faults.redis_restart is None and progress >= 0.35:
            self.restart_redis()

    # -- the agency --

    def activate_waiting(self, settings: Settings, ledger: Ledger, batch_id: str) -> None:
        """The agency collects each ready device at once and asks for it to take effect."""
        waiting = ledger.request_ids(batch_id=batch_id, state=S.awaiting_activation)
        if waiting:
            try:
                operations.activate(settings, waiting)
            except Exception as error:  # noqa: BLE001 - the broker or ledger may be down: the agency asks again
                self.console.log(f"activation failed ({type(error).__name__}): asking again")

    # -- main loop --

    def run(self) -> dict[str, Any]:
        try:
            return self._run()
        finally:
            self.stop_pipeline()
            if self.postgres is not None:
                self.postgres.stop()

    def _run(self) -> dict[str, Any]:
        settings = self.start()
        ledger = wiring.ledger(settings)
        batch = write_batch(self.home / "batches", self.args.count, self.args.key_type, self.args.seed)
        self.started = time.monotonic()
        report = demo_agency.submit_endorsed(settings, ledger, batch, AGENCY)
        batch_id, accepted = report["batch_id"], report["accepted"]
        self.console.print(f"submitted {accepted} requests ({self.args.key_type}); ledger "
                           f"{'SQLite' if settings.ledger_url.startswith('sqlite') else 'PostgreSQL'}; "
                           f"home {self.home}")
        drained_at = self._drive(settings, ledger, batch_id, accepted)
        wall = self._elapsed()
        self.stop_pipeline()  # nothing touches a device or the ledger while it is checked
        wiring.issuance(settings, "general").refresh_index()  # the pools stop before their delayed refresh
        result = {"count": self.args.count, "accepted": accepted, "key_type": self.args.key_type,
                  "ledger": "sqlite" if settings.ledger_url.startswith("sqlite") else "postgresql",
                  "station_processes": self.args.station_processes, "wall_seconds": round(wall, 2),
                  "drained": drained_at is not None,
                  "drain_seconds_after_last_fault": round(drained_at - self.faults.last_at, 2)
                  if drained_at is not None else None,
                  "drain_limit_seconds": self.args.drain_limit, "faults": self.faults.as_dict(),
                  "states": {s.value: n for s, n in ledger.state_counts(batch_id).items()}, "home": str(self.home)}
        result["checks"] = run_checks(settings, ledger, batch_id, result, self.faults)
        ledger.close()
        return result

    def _drive(self, settings: Settings, ledger: Ledger, batch_id: str, accepted: int) -> float | None:
        """Inject faults, activate, restart what died; returns when all are published
        (seconds since submission), or None at the time limit."""
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[states]}"))
        with Progress(*columns, console=self.console, disable=self.args.quiet) as bar:
            task = bar.add_task("published", total=accepted, states="")
            last_counts, moved_at = None, time.monotonic()
            while self._elapsed() < self.args.timeout and time.monotonic() - moved_at < self.args.stall:
                try:
                    counts = ledger.state_counts(batch_id)
                except sqlalchemy.exc.OperationalError:
                    time.sleep(0.2)
                    continue
                if counts != last_counts:
                    last_counts, moved_at = counts, time.monotonic()
                shown = " ".join(f"{s.value}={n}" for s, n in counts.items() if n)
                kills = len(self.faults.kills)
                bar.update(task, completed=counts[S.published], states=f"{shown} | kills={kills}")
                if counts[S.published] + counts[S.rejected] + counts[S.failed] >= accepted:
                    return self._elapsed()  # nothing in flight (all published, unless a check fails)
                past_keygen = sum(counts[s] for s in PATH[2:]) / max(1, accepted)
                self.inject(settings, ledger, past_keygen)
                self.restart_dead_pools(settings, ledger)
                self.activate_waiting(settings, ledger, batch_id)
                time.sleep(0.2)
        return None


# -- the checks -----------------------------------------------------------------------------


# -- command line ---------------------------------------------------------------------------


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="requests in the batch (default 500)")
    parser.add_argument("--key-type", default="rsa2048", choices=["rsa2048", "rsa3072", "ecdsa-p256"])
    parser.add_argument("--database", default="postgresql", choices=["postgresql", "sqlite"],
                        help="ledger: a private PostgreSQL cluster (default) or SQLite")
    parser.add_argument("--database-url", help="use this PostgreSQL database instead of a private cluster")
    parser.add_argument("--station-processes", type=int, default=2, help="station worker processes (default 2)")
    parser.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between worker kills")
    parser.add_argument("--max-kills", type=int, default=None, help="stop killing after this many")
    parser.add_argument("--faults-until", type=float, default=0.95,
                        help="inject faults until this fraction of requests is past key generation")
    parser.add_argument("--redis-down", type=float, default=1.0, help="seconds redis-server stays down")
    parser.add_argument("--db-outage", type=float, default=8.0, help="seconds SQLite stays locked (SQLite only)")
    parser.add_argument("--reconcile-after", type=float, default=30.0,
                        help="a restarted pool resumes requests unmoved this long (as `certfactory worker`)")
    parser.add_argument("--drain-limit", type=float, default=120.0, help="seconds allowed after the last fault")
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument("--stall", type=float, default=180.0, help="give up when no request moved for this long")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--home", type=Path, help="fresh $CERTFACTORY_HOME (default bench/out/chaos-<time>)")
    parser.add_argument("--json-out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.count < 10:
        parser.error("--count: at least 10 requests, so that every fault lands while work is in flight")
    if not 0 < args.faults_until <= 1:
        parser.error("--faults-until: a fraction in (0, 1]")
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM (make, CI): stop every child on the way out


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    faulthandler.register(signal.SIGUSR1)  # `kill -USR1 <pid>` shows where a run is stuck
    signal.signal(signal.SIGTERM, _interrupt)
    console = Console(stderr=True)
    chaos = Chaos(args, console)
    try:
        result = chaos.run()
    except (ChaosError, CertFactoryError) as error:
        console.print(f"[red]chaos: {error}[/]")
        return 2
    except (sqlalchemy.exc.SQLAlchemyError, redis.RedisError, OSError) as error:
        console.print(f"[red]chaos: the harness lost a server it needs ({type(error).__name__}: "
                      f"{str(error).splitlines()[0]}); see the logs under {chaos.home / 'run' / 'logs'}[/]")
        return 2
    except KeyboardInterrupt:
        console.print("[red]chaos: interrupted[/]")
        return 130
    result["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    for check in result["checks"]:
        mark = "[green]ok  [/]" if check["ok"] else "[red]FAIL[/]"
        console.print(f"{mark} {check['check']}: {check['detail']}")
    console.print(f"{result['states']['published']} of {result['accepted']} published in {result['wall_seconds']} s; "
                  f"drained {result['drain_seconds_after_last_fault']} s after the last fault; "
                  f"{len(result['faults']['worker_kills'])} worker kills, {result['faults']['pool_restarts']} pool "
                  f"restarts → {args.json_out}")
    return 0 if all(check["ok"] for check in result["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
