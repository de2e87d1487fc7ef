"""Capacity planning (factory.capacity and `certfactory plan`): the batch model, working
time over Vietnamese working days and office hours, the deadline, what holding it needs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from certfactory.plan import plan_command
from factory import capacity
from factory.calendar import WorkingCalendar
from factory.errors import ConfigurationError

VN = ZoneInfo("Asia/Ho_Chi_Minh")
CALENDAR = WorkingCalendar()
NO_OVERHEAD = capacity.Calibration(station_overhead_seconds=0, ca_overhead_seconds=0, head_seconds=0,
                                   tail_seconds=0, source="test: none")


def at(text: str) -> dt.datetime:
    """A Vietnam-time instant from 'YYYY-MM-DD HH:MM'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=VN)


def ask(**fields: object) -> capacity.PlanInput:
    """A plan input with the brief's figures unless told otherwise."""
    defaults: dict[str, object] = {"requests": 50_000, "stations": 1, "ports": 8, "keygen_seconds": 8.0,
                                   "sign_seconds": 0.05, "start": at("2026-12-01 09:00"), "calibration": NO_OVERHEAD}
    return capacity.PlanInput(**{**defaults, **fields})  # type: ignore[arg-type]


def test_batch_time_is_rounds_of_ports_plus_head_and_tail_when_stations_bind() -> None:
    """12 requests on 2 ports are 6 rounds of keygen + overhead, plus head and tail once."""
    calibration = NO_OVERHEAD.model_copy(update={"station_overhead_seconds": 0.05, "head_seconds": 0.2,
                                                 "tail_seconds": 0.3})
    assert capacity.batch_seconds(12, 1, 2, 0.5, 0.001, calibration) == pytest.approx(0.2 + 6 * 0.55 + 0.3)
    assert capacity.batch_seconds(13, 1, 2, 0.5, 0.001, calibration) == pytest.approx(0.2 + 7 * 0.55 + 0.3)


def test_batch_time_is_the_serial_signer_when_the_ca_binds() -> None:
    """With many ports, N signatures one after another take longer than the key generation."""
    calibration = NO_OVERHEAD.model_copy(update={"ca_overhead_seconds": 0.01})
    assert capacity.batch_seconds(1000, 100, 10, 8.0, 0.5, calibration) == pytest.approx(1000 * 0.51)


def test_working_time_spills_into_the_next_working_day_at_office_open() -> None:
    """Ten hours from Tuesday 09:00: eight that day, two from Wednesday 08:00."""
    finish = capacity.add_working_time(at("2026-12-01 09:00"), 10 * 3600, CALENDAR, "office")
    assert finish == at("2026-12-02 10:00")


def test_working_time_skips_weekends_and_public_holidays() -> None:
    """From Wednesday 29 April 2026 16:00, two hours end on Monday 4 May: 30 April and
    1 May are holidays, then a weekend."""
    finish = capacity.add_working_time(at("2026-04-29 16:00"), 2 * 3600, CALENDAR, "office")
    assert finish == at("2026-05-04 09:00")


def test_a_batch_received_after_office_close_starts_at_the_next_office_open() -> None:
    """Received on Friday evening, work starts on Monday at 08:00."""
    finish = capacity.add_working_time(at("2026-12-04 18:30"), 1800, CALENDAR, "office")
    assert finish == at("2026-12-07 08:30")


def test_round_the_clock_stations_ignore_office_hours_and_days_off() -> None:
    """With hours='24', working time is wall time."""
    start = at("2026-04-29 16:00")
    assert capacity.add_working_time(start, 86_400 * 3, CALENDAR, "24") == start + dt.timedelta(days=3)


def test_working_seconds_between_two_instants_inverts_adding_working_time() -> None:
    """Counting the station time between start and finish gives back what was added."""
    start = at("2026-04-28 11:15")
    for seconds in (60.0, 5 * 3600, 40 * 3600 + 17):
        finish = capacity.add_working_time(start, seconds, CALENDAR, "office")
        assert capacity.working_seconds(start, finish, CALENDAR, "office") == pytest.approx(seconds)


def test_fifty_thousand_requests_on_one_eight_port_station_hold_the_three_day_deadline() -> None:
    """The brief's batch: 50,000 × 8 s on 8 ports is 13.9 h, done on day 2; the deadline is
    Friday 4 December at office close."""
    result = capacity.plan(ask(), CALENDAR)
    assert result.bottleneck == "stations"
    assert result.batch_seconds == pytest.approx(50_000 / 8 * 8.0)
    assert result.deadline == dt.date(2026, 12, 4)
    assert result.deadline_at == at("2026-12-04 17:00")
    assert result.finish == at("2026-12-02 13:53:20")
    assert result.holds
    assert result.available_seconds == pytest.approx((8 + 3 * 9) * 3600)


def test_stations_and_ports_needed_are_the_fewest_that_hold_the_deadline() -> None:
    """500,000 requests miss with 2 stations; the plan's station and port counts hold it,
    one fewer does not."""
    result = capacity.plan(ask(requests=500_000, stations=2), CALENDAR)
    assert not result.holds
    assert result.stations_needed is not None and result.ports_needed is not None
    assert capacity.plan(ask(requests=500_000, stations=result.stations_needed), CALENDAR).holds
    assert not capacity.plan(ask(requests=500_000, stations=result.stations_needed - 1), CALENDAR).holds
    assert capacity.plan(ask(requests=500_000, stations=2, ports=result.ports_needed), CALENDAR).holds
    assert not capacity.plan(ask(requests=500_000, stations=2, ports=result.ports_needed - 1), CALENDAR).holds


def test_no_number_of_stations_helps_when_the_ca_cannot_sign_in_time() -> None:
    """At 10 s a signature, 50,000 signatures take 139 h: the plan says so."""
    result = capacity.plan(ask(sign_seconds=10.0), CALENDAR)
    assert result.bottleneck == "ca" and not result.holds
    assert result.stations_needed is None and result.ports_needed is None
    assert any("more stations cannot help" in note for note in result.notes)


def test_a_start_without_its_utc_offset_is_refused_with_the_rule() -> None:
    """A naive start would be read in whatever timezone the host has: refused."""
    with pytest.raises(ValidationError, match="UTC offset"):
        ask(start=dt.datetime(2026, 12, 1, 9, 0))


def test_calibration_comes_from_a_load_test_report(tmp_path: Path) -> None:
    """The report's calibration section feeds the model; a file without one is refused."""
    report = tmp_path / "loadtest.json"
    report.write_text(json.dumps({"count": 20, "key_type": "ecdsa-p256", "calibration": {
        "station_overhead_seconds": 0.07, "ca_overhead_seconds": 0.02, "head_seconds": 0.4, "tail_seconds": 0.2}}))
    calibration = capacity.load_calibration(report)
    assert calibration.station_overhead_seconds == 0.07 and calibration.tail_seconds == 0.2
    assert "20 × ecdsa-p256" in calibration.source
    broken = tmp_path / "broken.json"
    broken.write_text("{}")
    with pytest.raises(ConfigurationError, match="calibration"):
        capacity.load_calibration(broken)


def test_plan_command_prints_the_plan_as_json_for_a_load_test_shape(tmp_path: Path) -> None:
    """`plan --ports P --hours 24 --json`: station processes as ports, round the clock."""
    report = tmp_path / "loadtest.json"
    report.write_text(json.dumps({"calibration": {"station_overhead_seconds": 0.05, "ca_overhead_seconds": 0.0,
                                                  "head_seconds": 0.2, "tail_seconds": 0.3}}))
    result = CliRunner().invoke(plan_command, [
        "--requests", "12", "--stations", "1", "--ports", "2", "--keygen-seconds", "0.5", "--sign-seconds", "0.001",
        "--hours", "24", "--start", "2026-12-01T09:00+07:00", "--calibration", str(report), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["batch_seconds"] == pytest.approx(0.2 + 6 * 0.55 + 0.3)
    assert plan["holds"] is True and plan["deadline"] == "2026-12-04"


def test_plan_command_says_what_is_wrong_with_a_bad_start() -> None:
    """A start that is not ISO 8601 is a usage error naming the option, not a traceback."""
    result = CliRunner().invoke(plan_command, ["--requests", "10", "--start", "tomorrow"])
    assert result.exit_code == 2
    assert "--start" in result.output and "ISO 8601" in result.output
