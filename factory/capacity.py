"""Capacity planning: how long a batch takes on personalisation stations, when it is done
counting working hours, whether the ready-for-pick-up deadline holds, and what it would
take to hold it. Pure computation: the start and the calendar are whatever the caller
passes in.

The model, for N requests on S stations of K ports each::

    batch = head + max(ceil(N / (S·K)) · (keygen + overhead),  N · (sign + ca_overhead)) + tail

- a port holds one device at a time, for its key generation (``keygen``: ~8 s on a real
  USB token, milliseconds on SoftHSM2) plus the station's per-request ``overhead``
  (personalising the PINs, writing the certificate and chain, ejecting, the queue hops);
  the ports of all stations work in parallel;
- the CA signs one certificate at a time (``sign`` plus ``ca_overhead``: building the
  certificate, the ledger writes);
- ``head`` (submission and validation before the first key generation) and ``tail``
  (signing, packaging and publishing the last request after its key) are paid once.

Overheads, head and tail come from a load test (``certfactory loadtest``'s
``calibration``: measured stage work, see ``certfactory.loadstats``). The model assumes
the stations' processors are not the bottleneck — true for USB tokens, where a key
takes seconds and a request ~0.1 s of processor time; a SoftHSM2 host saturates its
cores instead, which the load test measures directly.

Stations work office hours (08:00–17:00 on Vietnamese working days, ``hours="office"``)
or round the clock every day (``hours="24"``). The deadline is office close on the
``deadline_days``-th working day after the day of receipt (Circular 185/2019's 3 working
days to ready), whatever the stations' hours.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from factory.calendar import WorkingCalendar
from factory.errors import ConfigurationError

OFFICE_OPEN = dt.time(8, 0)
DEFAULT_DEADLINE_DAYS = 3
MAX_DAYS = 366 * 30  # a plan that runs past this is a typo, not a plan
Hours = Literal["office", "24"]


class Calibration(BaseModel):
    """Measured costs the model adds to the keygen and signature times (seconds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    station_overhead_seconds: float = Field(ge=0, description="Per request, per port, besides keygen")
    ca_overhead_seconds: float = Field(ge=0, description="Per request on the CA, besides the signature")
    head_seconds: float = Field(ge=0, description="Submission → first key generation")
    tail_seconds: float = Field(ge=0, description="Last station work → last publication")
    source: str = Field(description="Where these figures were measured")


# Measured on the 2-core machine of PARTS.md (`certfactory loadtest --count 20 --key-type
# ecdsa-p256 --processes 2 --keygen-delay 0.4`); used when no load-test result is at hand.
DEFAULT_CALIBRATION = Calibration(station_overhead_seconds=0.23, ca_overhead_seconds=0.016, head_seconds=0.19,
                                  tail_seconds=0.09, source="built-in default (2-core SoftHSM2 simulated-latency "
                                                            "load test)")


def load_calibration(path: Path) -> Calibration:
    """The ``calibration`` of a ``certfactory loadtest --json`` report."""
    try:
        report = json.loads(path.read_text())
        figures = report["calibration"]
        return Calibration(station_overhead_seconds=figures["station_overhead_seconds"],
                           ca_overhead_seconds=figures["ca_overhead_seconds"], head_seconds=figures["head_seconds"],
                           tail_seconds=figures["tail_seconds"],
                           source=f"{path} ({report.get('count')} × {report.get('key_type')}, "
                                  f"{report.get('measured_at', 'undated')})")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(f"{path} is not a load-test report with a calibration: {error}") from None


class PlanInput(BaseModel):
    """What a plan is asked about."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests: int = Field(ge=1)
    stations: int = Field(ge=1)
    ports: int = Field(ge=1, description="Ports per station working in parallel")
    keygen_seconds: float = Field(gt=0, description="One key generation on a device")
    sign_seconds: float = Field(ge=0, description="One CA signature")
    start: dt.datetime
    hours: Hours = "office"
    deadline_days: int = Field(default=DEFAULT_DEADLINE_DAYS, ge=0)
    calibration: Calibration = DEFAULT_CALIBRATION

    @field_validator("start")
    @classmethod
    def _aware(cls, value: dt.datetime) -> dt.datetime:
        if value.tzinfo is None:
            raise ValueError("the start needs its UTC offset, e.g. 2026-12-01T09:00+07:00")
        return value


class PlanResult(BaseModel):
    """A plan's answer. Rates are per hour of station time; seconds are working seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: PlanInput
    station_rate_per_hour: float
    ca_rate_per_hour: float | None = Field(description="None: signing costs nothing in this model")
    bottleneck: Literal["stations", "ca"]
    batch_seconds: float
    finish: dt.datetime
    deadline: dt.date
    deadline_at: dt.datetime
    available_seconds: float
    holds: bool
    stations_needed: int | None = Field(description="With the same ports per station; None: no number suffices")
    ports_needed: int | None = Field(description="Per station, with the same stations; None: no number suffices")
    notes: list[str]


def batch_seconds(requests: int, stations: int, ports: int, keygen: float, sign: float,
                  calibration: Calibration) -> float:
    """Station working time the batch takes, in seconds (the model above)."""
    rounds = math.ceil(requests / (stations * ports))
    station = rounds * (keygen + calibration.station_overhead_seconds)
    ca = requests * (sign + calibration.ca_overhead_seconds)
    return calibration.head_seconds + max(station, ca) + calibration.tail_seconds


def _windows(start: dt.datetime, calendar: WorkingCalendar, hours: Hours):  # type: ignore[no-untyped-def]
    """The working windows (begin, end) from ``start`` on, in the calendar's timezone."""
    local = start.astimezone(calendar.timezone)
    if hours == "24":
        yield local, local + dt.timedelta(days=MAX_DAYS)
        return
    day = local.date()
    for _ in range(MAX_DAYS):
        if calendar.is_working_day(day):
            opens = dt.datetime.combine(day, OFFICE_OPEN, calendar.timezone)
            closes = dt.datetime.combine(day, calendar.office_close, calendar.timezone)
            if max(local, opens) < closes:
                yield max(local, opens), closes
        day += dt.timedelta(days=1)
    raise ConfigurationError(f"a plan longer than {MAX_DAYS // 366} years: check the figures")


def add_working_time(start: dt.datetime, seconds: float, calendar: WorkingCalendar, hours: Hours) -> dt.datetime:
    """When ``seconds`` of station working time, begun at ``start``, are done."""
    remaining = seconds
    for begin, end in _windows(start, calendar, hours):
        span = (end - begin).total_seconds()
        if remaining <= span:
            return begin + dt.timedelta(seconds=remaining)
        remaining -= span
    raise AssertionError("unreachable: _windows raises first")


def working_seconds(start: dt.datetime, end: dt.datetime, calendar: WorkingCalendar, hours: Hours) -> float:
    """Station working time between ``start`` and ``end`` (0 when ``end`` is earlier)."""
    total = 0.0
    for begin, close in _windows(start, calendar, hours):
        if begin >= end:
            break
        total += (min(close, end) - begin).total_seconds()
    return total


def _needed(requests: int, other: int, cycle: float, ca_seconds: float, budget: float) -> int | None:
    """Fewest of one factor (stations or ports) that, times ``other``, fits the budget."""
    if ca_seconds > budget:
        return None
    rounds = math.floor(budget / cycle)
    if rounds < 1:
        return None
    return max(1, math.ceil(requests / (rounds * other)))


def plan(request: PlanInput, calendar: WorkingCalendar | None = None) -> PlanResult:
    """How long the batch takes, when it is done, and what holding the deadline needs."""
    calendar = calendar or WorkingCalendar()
    c = request.calibration
    seconds = batch_seconds(request.requests, request.stations, request.ports, request.keygen_seconds,
                            request.sign_seconds, c)
    finish = add_working_time(request.start, seconds, calendar, request.hours)
    deadline = calendar.deadline(request.start, request.deadline_days)
    deadline_at = dt.datetime.combine(deadline, calendar.office_close, calendar.timezone)
    available = working_seconds(request.start, deadline_at, calendar, request.hours)
    cycle = request.keygen_seconds + c.station_overhead_seconds
    ca_cycle = request.sign_seconds + c.ca_overhead_seconds
    station_rate = 3600 * request.stations * request.ports / cycle
    ca_rate = 3600 / ca_cycle if ca_cycle else math.inf
    budget = available - c.head_seconds - c.tail_seconds
    ca_seconds = request.requests * ca_cycle
    notes = [f"calibration: {c.source}"]
    if ca_seconds > budget:
        notes.append(f"the CA alone needs {ca_seconds / 3600:.1f} h of signing for {available / 3600:.1f} h "
                     "available: more stations cannot help; sign faster or add signers")
    return PlanResult(
        inputs=request, station_rate_per_hour=round(station_rate, 1),
        ca_rate_per_hour=round(ca_rate, 1) if math.isfinite(ca_rate) else None,
        bottleneck="stations" if station_rate <= ca_rate else "ca", batch_seconds=round(seconds, 3),
        finish=finish, deadline=deadline, deadline_at=deadline_at, available_seconds=round(available, 1),
        holds=finish <= deadline_at,
        stations_needed=_needed(request.requests, request.ports, cycle, ca_seconds, budget),
        ports_needed=_needed(request.requests, request.stations, cycle, ca_seconds, budget),
        notes=notes)
