"""The command line as operators and scripts use it: exact outputs, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agency import endorsed
from tests.conftest import run_cli


@pytest.mark.parametrize(("received", "deadline"), [
    ("2026-02-13T10:00+07:00", "2026-02-25"),  # Friday before Tết 2026: 16–20/2 off
    ("2026-02-13T18:00+07:00", "2026-02-26"),  # after office hours: counts from Monday 23/2
    ("2026-02-23T10:00+07:00", "2026-02-26"),
])
def test_calendar_deadline_counts_vietnamese_working_days(tmp_path: Path, received: str, deadline: str) -> None:
    """`calendar deadline` prints the 3-working-day deadline an operator can check by hand."""
    assert run_cli(tmp_path / "var", "calendar", "deadline", "--received", received,
                   "--working-days", "3").stdout.strip() == deadline
    shown = json.loads(run_cli(tmp_path / "var", "calendar", "deadline", "--received", received, "--json").stdout)
    assert shown["deadline"] == deadline


def test_a_bad_time_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    """A malformed --received names the option and the expected form."""
    result = run_cli(tmp_path / "var", "calendar", "deadline", "--received", "13/02/2026", check=False)
    assert result.returncode == 2 and "--received" in result.stderr and "Traceback" not in result.stderr


def test_status_without_init_is_empty_with_every_state(tmp_path: Path) -> None:
    """`status --json` lists every state, zero or not, even on an empty ledger."""
    shown = json.loads(run_cli(tmp_path / "var", "status", "--json").stdout)
    assert set(shown["states"]) == {"received", "validated", "key_generated", "signed", "packaged",
                                    "awaiting_activation", "activated", "published", "rejected", "failed", "revoked"}
    assert sum(shown["states"].values()) == 0


def test_a_bad_setting_names_its_variable(tmp_path: Path) -> None:
    """A wrong CERTFACTORY_* value stops the command with the variable's name."""
    result = run_cli(tmp_path / "var", "status", check=False, CERTFACTORY_STATION_PORTS="many")
    assert result.returncode != 0 and "CERTFACTORY_STATION_PORTS" in result.stderr
    assert "Traceback" not in result.stderr


def test_submit_without_a_broker_says_how_to_get_one(tmp_path: Path) -> None:
    """Submitting with no broker running fails with what to do, not a traceback."""
    batch = tmp_path / "batch.jsonl"
    from factory.synthetic import generate_requests

    batch.write_text(generate_requests(1, seed=3)[0].model_dump_json() + "\n")
    result = run_cli(tmp_path / "var", "submit", str(batch), "--agency", "BTC", *endorsed(tmp_path / "var", batch),
                     check=False)
    assert result.returncode == 1 and "CERTFACTORY_REDIS_URL" in result.stderr and "Traceback" not in result.stderr


def test_the_calendar_override_table_comes_from_configuration(tmp_path: Path) -> None:
    """A swap day announced after the holidays package was released moves the deadline;
    a make-up Saturday brings it back; a bad date names its variable."""
    def deadline(**env: str) -> str:
        return run_cli(tmp_path / "var", "calendar", "deadline", "--received", "2026-03-10T10:00+07:00",
                       **env).stdout.strip()

    assert deadline() == "2026-03-13"
    assert deadline(CERTFACTORY_CALENDAR_EXTRA_HOLIDAYS="2026-03-12") == "2026-03-16"
    assert deadline(CERTFACTORY_CALENDAR_EXTRA_HOLIDAYS="2026-03-12",
                    CERTFACTORY_CALENDAR_EXTRA_WORKDAYS="2026-03-14") == "2026-03-14"
    bad = run_cli(tmp_path / "var", "calendar", "deadline", "--received", "2026-03-10T10:00+07:00", check=False,
                  CERTFACTORY_CALENDAR_EXTRA_HOLIDAYS="12/03/2026")
    assert bad.returncode != 0 and "CERTFACTORY_CALENDAR_EXTRA_HOLIDAYS" in bad.stderr and "Traceback" not in bad.stderr
