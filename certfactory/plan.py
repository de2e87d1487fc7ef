"""`certfactory plan`: how long a batch takes on real stations and whether the deadline
holds (the model is ``factory.capacity``'s; this is its command line)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import click
from pydantic import ValidationError

from factory import capacity
from factory.calendar import WorkingCalendar
from factory.errors import CertFactoryError

RESULTS = Path("bench") / "results"
# Preferred calibration: a simulated-latency run is in the regime of real stations
# (keygen longer than the processor work), then the standard runs.
CALIBRATION_FILES = ("loadtest-simulated.json", "loadtest-rsa2048.json", "loadtest-ecdsa-p256.json")


def find_calibration() -> Path | None:
    """The first load-test report found under bench/results, here or beside the package."""
    for folder in (Path.cwd() / RESULTS, Path(__file__).resolve().parent.parent / RESULTS):
        for name in CALIBRATION_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def parse_start(text: str | None, calendar: WorkingCalendar) -> dt.datetime:
    """ISO 8601 start; without an offset it is read in the calendar's timezone; default now."""
    if text is None:
        return dt.datetime.now(calendar.timezone).replace(microsecond=0)
    try:
        start = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not an ISO 8601 time such as 2026-12-01T09:00+07:00",
                                 param_hint="--start") from None
    return start if start.tzinfo else start.replace(tzinfo=calendar.timezone)


def _text(result: capacity.PlanResult) -> str:
    i = result.inputs
    hours = "round the clock" if i.hours == "24" else "office hours (08:00–17:00, working days)"
    ca = f"{result.ca_rate_per_hour:,.0f}/h" if result.ca_rate_per_hour is not None else "unbounded"
    verdict = "holds" if result.holds else "is MISSED"
    lines = [
        (f"{i.requests:,} requests on {i.stations} station(s) × {i.ports} port(s), keygen {i.keygen_seconds} s, "
         f"sign {i.sign_seconds} s, stations working {hours}"),
        f"rates: stations {result.station_rate_per_hour:,.0f}/h, CA {ca} → bottleneck: {result.bottleneck}",
        (f"batch: {result.batch_seconds / 3600:,.2f} h of station time, from {i.start.isoformat()} "
         f"to {result.finish.isoformat(timespec='minutes')}"),
        (f"deadline ({i.deadline_days} working days): {result.deadline_at.isoformat(timespec='minutes')} — "
         f"{verdict} ({result.available_seconds / 3600:,.1f} h of station time available)"),
        "to hold it: " + (f"{result.stations_needed} station(s) of {i.ports} ports, or {result.ports_needed} ports "
                          f"on each of {i.stations} station(s)" if result.stations_needed else
                          "no number of stations suffices"),
        *result.notes,
    ]
    return "\n".join(lines)


@click.command("plan")
@click.option("--requests", required=True, type=click.IntRange(1), help="Requests in the batch.")
@click.option("--stations", default=1, show_default=True, type=click.IntRange(1), help="Personalisation stations.")
@click.option("--ports", default=8, show_default=True, type=click.IntRange(1),
              help="Ports per station working in parallel (for a load test: the station processes).")
@click.option("--keygen-seconds", default=8.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="One key generation on a device (a USB token: ~8 s for RSA-2048).")
@click.option("--sign-seconds", default=0.05, show_default=True, type=click.FloatRange(0),
              help="One CA signature.")
@click.option("--start", "start_text", help="When the batch is received (ISO 8601, e.g. 2026-12-01T09:00+07:00; "
              "without offset: Vietnam time) [default: now].")
@click.option("--hours", default="office", show_default=True, type=click.Choice(["office", "24"]),
              help="Stations work office hours on working days, or round the clock every day.")
@click.option("--overhead-seconds", type=click.FloatRange(0),
              help="Per-request station overhead besides keygen [default: the calibration's].")
@click.option("--deadline-days", default=capacity.DEFAULT_DEADLINE_DAYS, show_default=True,
              type=click.IntRange(0), help="Working days to have every device ready.")
@click.option("--calibration", "calibration_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A `certfactory loadtest --json` report [default: the first of bench/results/"
                   f"{{{','.join(CALIBRATION_FILES)}}}, else a built-in default].")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan_command(requests: int, stations: int, ports: int, keygen_seconds: float, sign_seconds: float,
                 start_text: str | None, hours: str, overhead_seconds: float | None, deadline_days: int,
                 calibration_file: Path | None, as_json: bool) -> None:
    """How long a batch takes, when it is done in working hours, and what holds the deadline."""
    calendar = WorkingCalendar()
    try:
        source = calibration_file or find_calibration()
        calibration = capacity.load_calibration(source) if source else capacity.DEFAULT_CALIBRATION
        if overhead_seconds is not None:
            calibration = calibration.model_copy(update={
                "station_overhead_seconds": overhead_seconds,
                "source": calibration.source + f", station overhead set to {overhead_seconds} s"})
        request = capacity.PlanInput(
            requests=requests, stations=stations, ports=ports, keygen_seconds=keygen_seconds,
            sign_seconds=sign_seconds, start=parse_start(start_text, calendar), hours=hours,  # type: ignore[arg-type]
            deadline_days=deadline_days, calibration=calibration)
        result = capacity.plan(request, calendar)
    except ValidationError as error:
        raise click.ClickException("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                             for e in error.errors())) from None
    except CertFactoryError as error:
        raise click.ClickException(error.diagnostics()) from None
    click.echo(json.dumps(result.model_dump(mode="json"), ensure_ascii=False) if as_json else _text(result))


if __name__ == "__main__":
    plan_command()
