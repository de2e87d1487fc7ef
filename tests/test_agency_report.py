"""The agency's report workbook: one line per reason, warnings apart, what the agency typed kept as text."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from factory.agency_report import RESULT_HEADERS, report_path, write_report
from schemas.status import Rejection

REPORT = {
    "batch_id": "b" * 32, "accepted": 1, "rejected": 1, "duplicates": 1,
    "rows": [
        {"row": 2, "request_ref": "HS-000001", "status": "accepted", "reasons": []},
        {"row": 3, "request_ref": "=HYPERLINK(\"http://x\")", "status": "rejected", "reasons": [
            {"code": "citizen_id.format", "field": "citizen_id", "message": "citizen_id: must be exactly 12 digits"},
            Rejection(code="email.format", field="email", message="email: 'a@@b' is not a valid e-mail address")]},
        {"row": 4, "request_ref": "HS-000003", "status": "duplicate", "reasons": []},
    ],
    "warnings": ["unit 1047665: no chief_accountant in this batch"],
}


def test_the_report_lists_every_row_and_reason_beside_the_input(tmp_path: Path) -> None:
    """batch.xlsx → batch.report.xlsx: status per row, one line per reason, formulas kept as text."""
    path = write_report(tmp_path / "batch.xlsx", REPORT)
    assert path == tmp_path / "batch.report.xlsx" == report_path(tmp_path / "batch.xlsx")
    workbook = load_workbook(path)
    results = [[c.value for c in row] for row in workbook["Kết quả"].iter_rows()]
    assert results == [
        list(RESULT_HEADERS),
        [2, "HS-000001", "accepted", None, None, None],
        [3, "=HYPERLINK(\"http://x\")", "rejected", "citizen_id.format", "citizen_id",
         "citizen_id: must be exactly 12 digits"],
        [3, "=HYPERLINK(\"http://x\")", "rejected", "email.format", "email",
         "email: 'a@@b' is not a valid e-mail address"],
        [4, "HS-000003", "duplicate", None, None, None],
    ]
    assert workbook["Kết quả"]["B3"].data_type == "s"
    assert [c.value for c in workbook["Cảnh báo"]["A"]] == ["Cảnh báo / warning", REPORT["warnings"][0]]
    summary = {row[0].value: row[1].value for row in workbook["Tổng hợp"].iter_rows()}
    assert summary["Mã lô / batch_id"] == "b" * 32 and summary["Đã nộp trước / duplicates"] == 1


def test_writing_the_report_again_replaces_it(tmp_path: Path) -> None:
    """A resubmission's report replaces the first; no partial file is left behind."""
    write_report(tmp_path / "batch.csv", REPORT)
    write_report(tmp_path / "batch.csv", {**REPORT, "rows": REPORT["rows"][:1], "warnings": []})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.report.xlsx"]
    assert load_workbook(tmp_path / "batch.report.xlsx")["Kết quả"].max_row == 2


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=st.text(st.characters(exclude_categories=()), max_size=300))
def test_any_text_from_the_agency_is_written_without_error(tmp_path: Path, text: str) -> None:
    """Control characters, lone surrogates and formulas in a reference or message never break the report."""
    report = {"batch_id": text, "rows": [{"row": 2, "request_ref": text, "status": "rejected",
                                          "reasons": [{"code": text, "field": text, "message": text}]}],
              "warnings": [text]}
    write_report(tmp_path / "fuzz.csv", report)
    assert load_workbook(tmp_path / "fuzz.report.xlsx")["Kết quả"].max_row == 2
