"""The ``certfactory`` command line (DESIGN.md §4b). Errors are messages, not tracebacks;
every command that prints a result has ``--json``; exit 0 only when all asked for succeeded."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import threading
from typing import Any

import click
import redis
import sqlalchemy.exc
from pydantic import ValidationError

from certfactory import operations, wiring
from certfactory.settings import Settings
from factory.errors import CertFactoryError


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as error:
        problems = "; ".join(f"CERTFACTORY_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        raise click.ClickException(f"bad setting: {problems}") from None


def _print(data: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, default=str) if as_json else text)


class _Group(click.Group):
    """Turns certfactory's errors into one-line messages."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CertFactoryError as error:
            raise click.ClickException(error.diagnostics()) from None
        except sqlalchemy.exc.OperationalError as error:  # the servers are away: say which, no traceback
            reason = str(error.orig or error).strip().splitlines()[0]
            raise click.ClickException(f"cannot reach the ledger (CERTFACTORY_DATABASE_URL): {reason}") from None
        except redis.RedisError as error:
            raise click.ClickException(f"cannot reach the broker (CERTFACTORY_REDIS_URL): {error}") from None


@click.group(cls=_Group)
def main() -> None:
    """certfactory: bulk issuance of signing certificates on hardware tokens."""


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(as_json: bool) -> None:
    """Create $CERTFACTORY_HOME: the ledger, the CA token with its keys, the CA certificates."""
    settings = _settings()
    created = wiring.initialise(settings)
    text = ("created: " + ", ".join(created)) if created else \
        f"nothing to do: {settings.resolved_home} is already initialised"
    _print({"home": str(settings.resolved_home), "created": created}, as_json, text)


@main.command()
@click.option("--batch", "batch_id", help="Only this batch.")
@click.option("--request", "request_id", help="One request: state, deadlines, device, certificate, audit trail.")
@click.option("--watch", is_flag=True, help="Keep a live view on screen until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(0.2, 3600),
              help="Seconds between refreshes with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def status(batch_id: str | None, request_id: str | None, watch: bool, interval: float, as_json: bool) -> None:
    """Requests per state, deadlines at risk or breached, failures and dead letters."""
    from certfactory import statusview

    settings = _settings()
    ledger = wiring.ledger(settings)
    if request_id is not None:
        detail = operations.request_status(ledger, request_id)
        _print(detail, as_json, statusview.request_text(detail))
        return
    if watch:
        if as_json:
            raise click.UsageError("--watch draws on the terminal; use --json without it")
        statusview.watch(lambda: operations.status(ledger, batch_id, settings), interval)
        return
    report = operations.status(ledger, batch_id, settings)
    _print(report, as_json, statusview.status_text(report))


@main.command()
@click.option("--request", "request_id", help="Retry one failed request.")
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed request.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def retry(request_id: str | None, all_failed: bool, as_json: bool) -> None:
    """Send failed requests back in, from where they got."""
    if bool(request_id) == all_failed:
        raise click.UsageError("give exactly one of --request ID or --failed")
    from schemas.status import RequestState

    settings = _settings()
    ledger = wiring.ledger(settings)
    ids = [request_id] if request_id else ledger.request_ids(state=RequestState.failed)
    resumed = operations.retry(settings, ledger, ids)
    _print({"retried": [{"request_id": r.request_id, "state": r.state.value, "stage": r.stage} for r in resumed]},
           as_json, f"retried {len(resumed)} request(s)")
    if request_id and not resumed:
        raise click.ClickException(f"request {request_id} is not failed")


@main.command()
@click.option("--older-than", default=60.0, show_default=True, type=click.FloatRange(0, 315_360_000),
              help="Seconds a request must have stood still.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def reconcile(older_than: float, as_json: bool) -> None:
    """Resume every request whose next step a crash or a lost message left undone."""
    settings = _settings()
    resumed = operations.reconcile(settings, wiring.ledger(settings), older_than)
    _print({"resumed": [{"request_id": r.request_id, "state": r.state.value, "stage": r.stage} for r in resumed]},
           as_json, f"resumed {len(resumed)} request(s)")


@main.command()
@click.option("--request", "request_id", help="Activate one request.")
@click.option("--batch", "batch_id", help="Activate every request of the batch awaiting activation.")
@click.option("--effective-at", type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%dT%H:%M:%S"]),
              help="When the certificate takes effect (ISO time, default now; without offset: UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def activate(request_id: str | None, batch_id: str | None, effective_at: dt.datetime | None, as_json: bool) -> None:
    """The agency handed the device over: publish the certificate, effective from now."""
    if bool(request_id) == bool(batch_id):
        raise click.UsageError("give exactly one of --request ID or --batch ID")
    settings = _settings()
    ledger = wiring.ledger(settings)
    from schemas.status import RequestState

    if request_id:
        row = ledger.get_request(request_id)
        if row is None:
            raise click.ClickException(f"no request {request_id}")
        ids = [request_id]
    else:
        ids = ledger.request_ids(batch_id=batch_id, state=RequestState.awaiting_activation)
    if effective_at is not None and effective_at.tzinfo is None:
        effective_at = effective_at.replace(tzinfo=dt.UTC)
    activated = operations.activate(settings, ids, effective_at)
    _print({"activated": activated}, as_json, f"activated {len(activated)} request(s); publication queued")
    if request_id and not activated:
        state = ledger.get_request(request_id).state  # type: ignore[union-attr]
        if state not in ("activated", "published"):
            raise click.ClickException(f"request {request_id} is {state}, not awaiting activation")


@main.group()
def calendar() -> None:
    """Vietnamese working days and the legal deadlines."""


@calendar.command("deadline")
@click.option("--received", required=True, help="When the dossier arrived, ISO time, e.g. 2026-02-13T10:00+07:00.")
@click.option("--working-days", default=3, show_default=True, type=click.IntRange(0, 365),
              help="3 for a ready device, 1 for publication after activation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def calendar_deadline(received: str, working_days: int, as_json: bool) -> None:
    """The deadline date: the day of receipt does not count; after office hours or on a
    day off counts from the next working day; weekends and public holidays are skipped."""
    try:
        at = dt.datetime.fromisoformat(received)
    except ValueError:
        raise click.BadParameter(f"{received!r} is not an ISO date-time such as 2026-02-13T10:00+07:00",
                                 param_hint="--received") from None
    working = wiring.calendar(_settings())
    deadline = working.deadline(at, working_days)
    _print({"received": at.isoformat(), "counted_from": working.receipt_day(at).isoformat(),
            "working_days": working_days, "deadline": deadline.isoformat()}, as_json, deadline.isoformat())


@main.group()
def audit() -> None:
    """The tamper-evident audit trail."""


@audit.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def audit_verify(as_json: bool) -> None:
    """Check the audit trail's hash chain; exit 1 at the first row changed, deleted or reordered."""
    from factory.audit import verify_chain

    checked, broken = verify_chain(wiring.ledger(_settings()))
    _print({"checked": checked, "ok": broken is None, "first_break": broken.__dict__ if broken else None}, as_json,
           f"audit trail intact: {checked} rows" if broken is None else broken.describe())
    if broken is not None:
        sys.exit(1)


@main.command()
@click.option("--pool", type=click.Choice(["all", "station", "ca", "general"]), default="all",
              help="Which queues this host serves (station: generate_key, package; ca: sign; general: the rest).")
def worker(pool: str) -> None:
    """Run the worker pools until stopped (an embedded redis-server without CERTFACTORY_REDIS_URL)."""
    from certfactory.embedded import RedisServer, WorkerPools

    settings = _settings()
    layout = wiring.home(settings)
    server = None
    if not settings.redis_url:
        server = RedisServer(layout.run / "redis").start()
        layout.redis_url_file.write_text(server.url)
        click.echo(f"embedded redis-server at {server.url}")
    pools = WorkerPools(settings, wiring.redis_url(settings),
                        ("station", "ca", "general") if pool == "all" else (pool,)).start()
    click.echo(f"workers running ({', '.join(pools.pools)}); logs in {pools.logs}; Ctrl-C stops them")
    resumed = operations.reconcile(settings.model_copy(update={"redis_url": pools.redis_url}),
                                   wiring.ledger(settings), 60.0)
    if resumed:
        click.echo(f"reconciled: resumed {len(resumed)} request(s) left unfinished")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(1.0):
        if not all(pools.alive().values()):
            click.echo(f"a worker pool exited; see {pools.logs}", err=True)
            break
    pools.stop()
    if server:
        layout.redis_url_file.unlink(missing_ok=True)
        server.stop()


@main.command()
@click.option("--count", default=50, show_default=True, type=click.IntRange(1, 100_000), help="Requests to issue.")
@click.option("--key-type", default="rsa2048", show_default=True,
              type=click.Choice(["rsa2048", "rsa3072", "ecdsa-p256"]), help="Key type of every request.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(count: int, key_type: str, as_json: bool) -> None:
    """Issue COUNT synthetic requests through every stage on the real parts, then stop."""
    from certfactory.demo import run_demo

    summary = run_demo(_settings(), count, key_type, as_json)
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False, default=str))
    if summary["states"]["published"] != summary["accepted"] or summary["accepted"] != count:
        sys.exit(1)


@main.group()
def agencies() -> None:
    """The agency registry and the agencies' API keys."""


def _register_commands() -> None:
    """Commands owned by other modules of this package; imported here so `certfactory --help`
    lists them all, and late so those modules may import the helpers above."""
    from certfactory import cli_http, cli_intake, cli_load

    for module in (cli_intake, cli_http, cli_load):
        module.register(main, agencies)


_register_commands()

if __name__ == "__main__":
    main()
