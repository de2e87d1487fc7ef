"""Bulk intake against a real ledger: duplicates, the Treasury warning, resubmission,
the submission report, and no traceback whatever a batch file holds."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from factory.errors import PermanentError
from factory.intake import check_batch, record_batch
from factory.ledger import Ledger
from factory.synthetic import generate_requests
from schemas.status import BatchSubmitted, RequestState

NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
KEY_TYPES = ("rsa2048", "ecdsa-p256")


@pytest.fixture()
def ledger(tmp_path: Path) -> Ledger:
    """A fresh SQLite ledger."""
    return Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")


def people(count: int, seed: int = 5) -> list[dict[str, Any]]:
    """Valid request records as JSON-ready dicts."""
    return [r.model_dump(mode="json") for r in generate_requests(count, seed=seed, key_type="ecdsa-p256")]


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` as a JSON-lines batch."""
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def submit(ledger: Ledger, path: Path, agency: str = "BTC") -> dict[str, Any]:
    """Check and record ``path``; the report."""
    checked = check_batch(ledger, path, agency, now=NOW, allowed_key_types=KEY_TYPES)
    try:
        record_batch(ledger, checked, {"kind": "test"})
    finally:
        checked.close()
    return checked.report()


def codes(report: dict[str, Any], ref: str) -> list[str]:
    """Reason codes of the row ``ref``."""
    return [reason["code"] for row in report["rows"] if row["request_ref"] == ref for reason in row["reasons"]]


def test_the_report_has_exactly_the_documented_shape(ledger: Ledger, tmp_path: Path) -> None:
    """Keys of the report and of each row and reason are the public contract of `submit --json`."""
    rows = people(2)
    rows[1]["email"] = "not-an-address"
    report = submit(ledger, jsonl(tmp_path / "b.jsonl", rows))
    assert set(report) == {"batch_id", "accepted", "rejected", "duplicates", "rows", "warnings"}
    assert BatchSubmitted.model_validate(report).model_dump(mode="json") == report
    assert (report["accepted"], report["rejected"], report["duplicates"]) == (1, 1, 0)
    bad = report["rows"][1]
    assert set(bad) == {"row", "request_ref", "status", "reasons"} and bad["status"] == "rejected"
    assert bad["reasons"] == [{"code": "email.format", "field": "email", "message": bad["reasons"][0]["message"]}]
    assert "email" in bad["reasons"][0]["message"] and "/" in bad["reasons"][0]["message"]  # English / Vietnamese


def test_a_person_twice_in_a_batch_is_rejected_the_second_time_only(ledger: Ledger, tmp_path: Path) -> None:
    """Same CCCD on two rows: the first is accepted, the second names the first row."""
    rows = people(2)
    twin = {**rows[0], "request_ref": "HS-TWIN"}
    report = submit(ledger, jsonl(tmp_path / "b.jsonl", [*rows, twin]))
    assert codes(report, rows[0]["request_ref"]) == []
    assert codes(report, "HS-TWIN") == ["citizen_id.duplicate_in_batch"]
    assert "row 1" in report["rows"][2]["reasons"][0]["message"]


def test_a_bad_first_row_does_not_hold_back_a_good_second_of_the_same_person(ledger: Ledger,
                                                                              tmp_path: Path) -> None:
    """The first row of a person has a wrong e-mail; the corrected row below it is accepted."""
    good = people(1)[0]
    bad = {**good, "request_ref": "HS-TYPO", "email": "x@"}
    report = submit(ledger, jsonl(tmp_path / "b.jsonl", [bad, good]))
    assert [row["status"] for row in report["rows"]] == ["rejected", "accepted"]


def test_the_same_reference_twice_in_a_batch_is_rejected(ledger: Ledger, tmp_path: Path) -> None:
    """Two rows with one request_ref: the second is rejected and never reaches the ledger."""
    rows = people(2)
    rows[1]["request_ref"] = rows[0]["request_ref"]
    report = submit(ledger, jsonl(tmp_path / "b.jsonl", rows))
    assert codes(report, rows[0]["request_ref"]) == ["request_ref.duplicate_in_batch"]
    assert sum(ledger.state_counts().values()) == 1


def test_the_same_batch_twice_issues_nothing_new(ledger: Ledger, tmp_path: Path) -> None:
    """The second submission reports every accepted row as a duplicate and records no request."""
    rows = people(3)
    rows[2]["citizen_id"] = "12345"
    path = jsonl(tmp_path / "b.jsonl", rows)
    first = submit(ledger, path)
    again = submit(ledger, path)
    assert (first["accepted"], first["rejected"]) == (2, 1)
    assert (again["accepted"], again["rejected"], again["duplicates"]) == (0, 1, 2)
    assert codes(again, rows[0]["request_ref"]) == ["request_ref.known"]
    assert sum(ledger.state_counts().values()) == 3


def test_a_rejected_row_filed_again_corrected_is_accepted(ledger: Ledger, tmp_path: Path) -> None:
    """The agency fixes a rejected row and sends it with the same request_ref: it replaces the rejection."""
    row = people(1)[0]
    submit(ledger, jsonl(tmp_path / "a.jsonl", [{**row, "phone": "12"}]))
    assert ledger.state_counts()[RequestState.rejected] == 1
    report = submit(ledger, jsonl(tmp_path / "b.jsonl", [row]))
    assert report["accepted"] == 1
    counts = ledger.state_counts()
    assert (counts[RequestState.rejected], counts[RequestState.received]) == (0, 1)


def test_a_person_in_flight_or_holding_a_certificate_is_rejected(ledger: Ledger, tmp_path: Path) -> None:
    """One certificate per person, counting the ledger; a tone-placement variant is the same name."""
    first, second = people(2)
    first["full_name"] = "Nguyễn Thị Hòa"  # old-style tone placement …
    submit(ledger, jsonl(tmp_path / "a.jsonl", [first, second]))
    published = next(i for i in ledger.request_ids() if ledger.get_request(i).request_ref == second["request_ref"])
    ledger.transition(published, RequestState.received, RequestState.published)
    variant = {**first, "request_ref": "HS-AGAIN-1", "full_name": "Nguyễn Thị Hoà"}  # … and new-style
    renamed = {**second, "request_ref": "HS-AGAIN-2", "full_name": "Trần Thị Khác"}
    report = submit(ledger, jsonl(tmp_path / "b.jsonl", [variant, renamed]))
    assert codes(report, "HS-AGAIN-1") == ["citizen_id.in_flight"]
    assert "under the name" not in report["rows"][0]["reasons"][0]["message"]
    assert codes(report, "HS-AGAIN-2") == ["citizen_id.live_certificate"]
    assert "under the name" in report["rows"][1]["reasons"][0]["message"]


def test_treasury_warnings_count_what_the_ledger_holds(ledger: Ledger, tmp_path: Path) -> None:
    """A unit whose account holder is already in the ledger is warned only about its chief accountant."""
    holder, accountant = people(2)
    unit = {"unit_code": "1047665"}
    submit(ledger, jsonl(tmp_path / "a.jsonl", [{**holder, **unit, "role": "account_holder"}]))
    report = submit(ledger, jsonl(tmp_path / "b.jsonl", [{**accountant, **unit, "role": "staff"}]))
    assert [w.split(" (")[0] for w in report["warnings"]] == ["unit 1047665: would have no live chief_accountant"]
    report = submit(ledger, jsonl(tmp_path / "c.jsonl", [
        {**people(1, seed=9)[0], **unit, "role": "chief_accountant", "request_ref": "HS-KTT"}]))
    assert report["warnings"] == []


def test_same_name_and_birth_date_under_two_citizen_ids_is_a_warning(ledger: Ledger, tmp_path: Path) -> None:
    """Possibly one person typed twice with a CCCD typo: both rows accepted, a warning names them."""
    one, two = people(2)
    one["full_name"] = "Lê Thị Thúy"
    two = {**two, "full_name": "Lê Thị Thuý", "date_of_birth": one["date_of_birth"]}
    two["citizen_id"] = one["citizen_id"][:4] + two["date_of_birth"][2:4] + two["citizen_id"][6:]
    two["sex"] = one["sex"]
    report = submit(ledger, jsonl(tmp_path / "b.jsonl", [one, two]))
    assert report["accepted"] == 2
    assert any("row 2" in w and "row 1" in w and "same name" in w for w in report["warnings"])


def test_a_stored_record_is_normalised(ledger: Ledger, tmp_path: Path) -> None:
    """The ledger keeps the name in NFC with single spaces and the phone as +84…"""
    import unicodedata

    row = people(1)[0]
    row["full_name"] = "  " + unicodedata.normalize("NFD", row["full_name"]).replace(" ", "   ") + " "
    row["phone"] = "091 234 5678"
    submit(ledger, jsonl(tmp_path / "b.jsonl", [row]))
    stored = json.loads(ledger.get_request(ledger.request_ids()[0]).record)
    assert stored["full_name"] == unicodedata.normalize("NFC", people(1)[0]["full_name"])
    assert stored["phone"] == "+84912345678"


def test_a_deeply_nested_line_is_a_rejected_row(ledger: Ledger, tmp_path: Path) -> None:
    """100,000 "[" on a line is an unreadable row, not a RecursionError."""
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "\n" + json.dumps(people(1)[0]) + "\n")
    report = submit(ledger, path)
    assert [row["status"] for row in report["rows"]] == ["rejected", "accepted"]
    assert report["rows"][0]["reasons"][0]["code"] == "row.unreadable"


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
                     lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children,
                                                                                        max_size=3), max_leaves=8)
_FIELDS = st.sampled_from(["request_ref", "full_name", "citizen_id", "date_of_birth", "sex", "email", "phone",
                           "position", "role", "unit_code", "organization", "organizational_units", "province",
                           "key_type", "other"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.one_of(
    st.builds(lambda base, changes: {**base, **changes}, st.sampled_from(people(3)),
              st.dictionaries(_FIELDS, _JSON, max_size=3)),
    st.dictionaries(_FIELDS, _JSON, max_size=6), _JSON), max_size=6))
def test_any_json_rows_are_accepted_or_rejected_never_a_traceback(tmp_path: Path, rows: list[Any]) -> None:
    """Whatever values a JSON-lines batch holds, intake yields an outcome per line and records it."""
    folder = Path(__import__("tempfile").mkdtemp(dir=tmp_path))
    ledger = Ledger.connect(f"sqlite:///{folder / 'ledger.db'}")
    path = folder / "fuzz.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    try:
        report = submit(ledger, path)
        submit(ledger, path)
    except PermanentError:
        return
    finally:
        ledger.close()
    assert len(report["rows"]) == len(rows)
    assert all(row["status"] in ("accepted", "rejected") for row in report["rows"])
    BatchSubmitted.model_validate(report)  # the public shape, whatever the rows held


def test_the_agency_report_lands_beside_the_batch(ledger: Ledger, tmp_path: Path) -> None:
    """`<name>.report.xlsx` lists each reason of each row (the submit path writes it through write_report)."""
    from factory.agency_report import write_report

    rows = people(2)
    rows[1]["unit_code"] = "12"
    path = jsonl(tmp_path / "đợt-1.jsonl", rows)
    write_report(path, submit(ledger, path))
    sheet = load_workbook(tmp_path / "đợt-1.report.xlsx", read_only=True)["Kết quả"]
    lines = [tuple(row) for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert lines[1][2:5] == ("rejected", "unit_code.format", "unit_code")


def test_the_demo_agency_is_registered_once_and_signs_what_it_submits(tmp_path: Path) -> None:
    """`submit_endorsed` registers the agency with a head key kept 0600 under the home, again
    without change, and its signature passes the real endorsement check (dry run)."""
    from certfactory.demo_agency import submit_endorsed
    from certfactory.settings import Settings
    from factory.agencies import list_agencies
    from factory.tables import audit_events

    settings = Settings(home=tmp_path / "var")
    ledger = Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}")
    batch = jsonl(tmp_path / "b.jsonl", people(2))
    for _ in range(2):
        assert submit_endorsed(settings, ledger, batch, "DEMO", dry_run=True)["accepted"] == 2
    assert [agency.agency_code for agency in list_agencies(ledger)] == ["DEMO"]
    with ledger.engine.connect() as connection:
        assert len(connection.execute(audit_events.select().where(audit_events.c.kind == "agency_registered")).all()) == 1
    key = tmp_path / "var" / "demo-agencies" / "DEMO" / "head-key.pem"
    assert key.stat().st_mode & 0o777 == 0o600
    assert sum(ledger.state_counts().values()) == 0
