"""Bad input at the doors, generated: any request row and any command line gets a clear
message naming the field or option at fault, never a traceback. (The intake parsers'
file fuzzing lives with the intake tests.)"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certfactory.cli import main
from factory.synthetic import generate_requests
from factory.validation import parse_row, validate_record
from schemas.request import RequestRecord

FIELDS = tuple(RequestRecord.model_fields)
TODAY = dt.date(2026, 11, 25)
KEY_TYPES = ("rsa2048", "rsa3072", "ecdsa-p256")
# Rules that compare two fields may name the other one (the CCCD encodes sex and birth year).
LINKED = {"date_of_birth": {"citizen_id"}, "sex": {"citizen_id"}, "citizen_id": {"date_of_birth", "sex"}}

junk = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=80),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300), st.dates().map(dt.date.isoformat),
    st.lists(st.text(max_size=20), max_size=6), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["", " ", "\x00", "\u202e", "Nguyễn\u0301", "2000-02-30", "1e9", "male", "ecdsa-p384"]),
)


def _good_row(seed: int) -> dict[str, Any]:
    return generate_requests(1, seed=seed)[0].model_dump(mode="json")


def _outcome(row: Any) -> list[Any]:
    record, rejections = parse_row(row)
    if record is not None:
        rejections = validate_record(record, today=TODAY, allowed_key_types=KEY_TYPES)
    return rejections


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)), junk, max_size=20))
def test_any_row_is_accepted_or_rejected_with_the_fields_named(row: dict[str, Any]) -> None:
    """Whatever a row holds, parsing and the rules return reasons (never raise), and each
    reason names a field of the record or a column the row actually has."""
    named = {str(key).strip().lstrip("\ufeff").strip() for key in row}
    for rejection in _outcome(row):
        assert rejection.field in set(FIELDS) | named, rejection
        assert rejection.message.strip() and rejection.code


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(FIELDS), junk)
def test_one_bad_field_is_the_field_named(seed: int, field: str, value: Any) -> None:
    """A good row with one field replaced by anything is accepted or rejected for that
    field (or the field a cross-field rule ties it to), never for another."""
    row = _good_row(seed)
    row[field] = value
    for rejection in _outcome(row):
        assert rejection.field in {field} | LINKED.get(field, set()), (field, value, rejection)


@settings(max_examples=50, deadline=None)
@given(st.one_of(st.text(max_size=40), st.integers(), st.lists(st.integers(), max_size=3), st.none()))
def test_a_row_that_is_not_a_mapping_is_rejected_as_a_row(row: Any) -> None:
    """A line that is not an object at all gets one row-level reason, not an exception."""
    record, rejections = parse_row(row)
    assert record is None and [r.code for r in rejections] == ["row.invalid"]


# -- the command line -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """An empty $CERTFACTORY_HOME: no broker, no CA; an SQLite ledger appears on first use."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder) / "var"


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


# Commands that answer from the ledger alone; `init`, `demo`, `worker`, `serve` and the
# load test start servers or tokens and have their own tests.
SAFE = [("status",), ("retry",), ("reconcile",), ("activate",), ("calendar", "deadline"), ("audit", "verify"),
        ("submit",)]
INTERACTIVE = {"watch"}  # `status --watch` runs until Ctrl-C

# A real command line cannot hold a NUL: execve's arguments are C strings.
argv_text = st.characters(blacklist_characters="\x00")
option_value = st.one_of(st.text(argv_text, max_size=30), st.integers(-10**6, 10**6).map(str),
                         st.floats(allow_nan=True).map(str), st.datetimes().map(dt.datetime.isoformat),
                         st.sampled_from(["", "-1", "nan", "--json", "2026-02-30T10:00", "0"]))


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    path = draw(st.sampled_from(SAFE))
    command = _command(path)
    argv = list(path)
    for param in command.params:
        if param.name in INTERACTIVE or not draw(st.booleans()):
            continue
        if isinstance(param, click.Option):
            name = param.opts[0]
            argv += [name] if param.is_flag else [name, draw(option_value)]
        else:
            argv.append(draw(st.one_of(st.text(argv_text, max_size=20), st.just("/nonexistent/batch.jsonl"))))
    if draw(st.booleans()):
        argv.append(draw(st.sampled_from(["--bogus", "extra", "-x"])))
    return argv


def _invoke(home: Path, argv: list[str], **env: str) -> click.testing.Result:
    return CliRunner().invoke(main, argv, env={"CERTFACTORY_HOME": str(home), "CERTFACTORY_REDIS_URL": None,
                                               "CERTFACTORY_DATABASE_URL": None, **env})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(command_lines())
def test_any_command_line_gets_a_message_not_a_traceback(home: Path, argv: list[str]) -> None:
    """Random options and values for the ledger-only commands: exit 0, 1 (a message) or
    2 (a usage error naming the option or argument), never an uncaught exception."""
    result = _invoke(home, argv)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"{argv}: {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1, 2), (argv, result.exit_code, result.output)
    if result.exit_code == 2:
        assert "Error:" in result.output and ("option" in result.output.lower() or "argument" in
                                              result.output.lower() or "Usage:" in result.output), result.output


SETTINGS = ["CERTFACTORY_STATION_PORTS", "CERTFACTORY_CERTIFICATE_DAYS", "CERTFACTORY_WORKER_PROCESSES",
            "CERTFACTORY_OFFICE_CLOSE", "CERTFACTORY_CALENDAR_EXTRA_HOLIDAYS", "CERTFACTORY_HOME"]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(SETTINGS[:-1]), st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
                                              max_size=20))
def test_a_bad_setting_is_named_by_its_variable(home: Path, variable: str, value: str) -> None:
    """Any value of a typed setting either works or stops the command with a message
    naming that environment variable."""
    result = _invoke(home, ["status"], **{variable: value})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:
        assert result.exit_code == 1 and variable in result.output, result.output


def test_an_unreachable_ledger_is_a_message(home: Path) -> None:
    """A PostgreSQL server that is not there: one line naming the setting, exit 1."""
    result = _invoke(home, ["status"], CERTFACTORY_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert result.exit_code == 1 and "cannot reach the ledger (CERTFACTORY_DATABASE_URL)" in result.output
    assert "Traceback" not in result.output
