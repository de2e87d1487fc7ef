"""Reading batches from .xlsx and .csv as agencies send them; refusing what cannot be read."""

from __future__ import annotations

import datetime as dt
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook, load_workbook

from factory.errors import PermanentError
from factory.intake import read_jsonl
from factory.spreadsheets import (
    EXAMPLE_ROW,
    LABELS,
    BatchFileError,
    HeaderError,
    NotUtf8,
    check_utf8,
    read_csv,
    read_table,
    write_template,
)
from factory.validation import parse_row, validate_record
from schemas import RequestRecord
from schemas.status import Rejection

DATA = Path(__file__).parent / "data"
TODAY = dt.date(2026, 3, 2)
GOOD_FILES = ["intake-good.xlsx", "intake-good.csv", "intake-good-bom.csv", "intake-good-semicolon-bom.csv",
              "intake-good-english-headers.csv"]


def records(path: Path) -> list[tuple[int, RequestRecord | list[Rejection]]]:
    """(row, record) of each row, or the reasons it is none."""
    rows = read_jsonl(path) if path.suffix == ".jsonl" else read_table(path)
    out: list[tuple[int, RequestRecord | list[Rejection]]] = []
    for number, raw in rows:
        if isinstance(raw, Rejection):
            out.append((number, [raw]))
            continue
        record, reasons = parse_row(raw)
        out.append((number, record if record is not None else reasons))
    return out


@pytest.mark.parametrize("name", GOOD_FILES)
def test_xlsx_and_csv_with_or_without_bom_read_the_same_records_as_json_lines(name: str) -> None:
    """Every format of the reference rows gives the same valid records, numbered as Excel shows them."""
    expected = [record for _, record in records(DATA / "intake-good.jsonl")]
    assert all(isinstance(record, RequestRecord) for record in expected)
    read = records(DATA / name)
    assert [number for number, _ in read] == [2, 3, 4]
    assert [record for _, record in read] == expected
    assert all(validate_record(r, today=TODAY, allowed_key_types=["rsa2048", "rsa3072", "ecdsa-p256"]) == []
               for r in expected if isinstance(r, RequestRecord))


@pytest.mark.parametrize(("name", "encoding"), [
    ("intake-cp1258-not-utf8.csv", "windows-1258"),
    ("intake-windows1252-not-utf8.csv", "windows-1252"),
    ("intake-utf16-unicode-text.csv", "UTF-16"),
])
def test_a_csv_in_another_encoding_is_refused_naming_the_encoding(name: str, encoding: str) -> None:
    """A non-UTF-8 CSV is refused whole, before any row, with the encoding it looks like and the fix."""
    rows = read_csv(DATA / name)
    with pytest.raises(NotUtf8) as refused:
        next(rows)
    assert refused.value.encoding.startswith(encoding)
    assert encoding in refused.value.diagnostics() and "CSV UTF-8" in refused.value.diagnostics()
    assert isinstance(refused.value, PermanentError)


def test_a_foreign_byte_deep_in_a_large_csv_refuses_it_before_the_first_row(tmp_path: Path) -> None:
    """The encoding check reads the whole file in chunks first: row 1 of 40,000 is never yielded."""
    good = (DATA / "intake-good.csv").read_bytes()
    header, body = good.split(b"\r\n", 1)
    path = tmp_path / "late-windows1258-byte.csv"
    path.write_bytes(header + b"\r\n" + body * 13_000 + "Đặng Thị Thủy".encode("cp1258", "replace") + b"\r\n")
    with pytest.raises(NotUtf8) as refused:
        next(read_csv(path))
    assert refused.value.offset > 1 << 20


@pytest.mark.parametrize(("name", "problem"), [
    ("intake-unknown-column.csv", "unknown column(s) 'Quê quán'"),
    ("intake-missing-required-column.csv", "required column(s) missing: email"),
])
def test_a_header_that_does_not_match_the_template_refuses_the_file(name: str, problem: str) -> None:
    """Unknown or missing columns refuse the whole file, naming them and the expected labels."""
    with pytest.raises(HeaderError) as refused:
        list(read_table(DATA / name))
    assert refused.value.problem == problem
    assert "Thư điện tử" in str(refused.value)


def test_title_rows_an_stt_column_and_blank_rows_are_read_as_excel_numbers_them() -> None:
    """A title above the header and an STT column are skipped; rows keep Excel's numbers;
    a CCCD typed as a number is rejected for its lost zero, a dd/mm/yyyy date by the ISO rule."""
    read = records(DATA / "intake-title-stt-blank-rows-numeric-cccd.xlsx")
    assert [number for number, _ in read] == [4, 6]
    assert isinstance(read[0][1], RequestRecord)
    reasons = read[1][1]
    assert isinstance(reasons, list)
    assert {(r.code, r.field) for r in reasons} == {("field.invalid", "date_of_birth")}
    record, _ = parse_row({**dict(zip(LABELS, EXAMPLE_ROW.values(), strict=True)), "citizen_id": 1185004321})
    assert record is not None
    codes = {r.code for r in validate_record(record, today=TODAY, allowed_key_types=["rsa2048"])}
    assert "citizen_id.format" in codes


def test_a_value_in_a_column_without_header_rejects_only_its_row() -> None:
    """A stray note beside the table rejects that row with a reason; the other row is read."""
    read = records(DATA / "intake-cell-outside-header.xlsx")
    assert isinstance(read[0][1], RequestRecord)
    assert read[1][0] == 3 and [r.code for r in read[1][1]] == ["row.unlabelled_cell"]  # type: ignore[union-attr]


def test_a_damaged_xlsx_is_refused_whole() -> None:
    """A CSV renamed .xlsx is a BatchFileError, not a zipfile traceback."""
    with pytest.raises(BatchFileError, match="not a readable .xlsx"):
        list(read_table(DATA / "intake-damaged-not-a-zip.xlsx"))


def test_an_unsupported_suffix_is_refused() -> None:
    """A .xls (old binary Excel) is refused with the formats that work."""
    with pytest.raises(BatchFileError, match=r"\.xlsx, \.csv or \.jsonl"):
        read_table(Path("old.xls"))


def test_the_template_has_vietnamese_headers_pick_lists_and_an_example_row(tmp_path: Path) -> None:
    """Headers are the §4a labels; sex, role and key type pick from lists; ID cells are text."""
    workbook = load_workbook(write_template(tmp_path / "mau.xlsx"))
    sheet = workbook.worksheets[0]
    assert [c.value for c in sheet[1]] == list(LABELS.values())
    letter = {field: cell.column_letter for field, cell in zip(LABELS, sheet[1], strict=True)}
    lists = {}
    for rule in sheet.data_validations.dataValidation:
        source = workbook["Danh mục"][rule.formula1.split("!")[1].replace("$", "")]
        lists[str(rule.sqref)] = [row[0].value for row in source]
    assert lists == {
        f"{letter['sex']}2:{letter['sex']}100001": ["Nam", "Nữ", "male", "female"],
        f"{letter['role']}2:{letter['role']}100001": ["account_holder", "account_holder_delegate",
                                                      "chief_accountant", "chief_accountant_delegate", "staff"],
        f"{letter['key_type']}2:{letter['key_type']}100001": ["rsa2048", "rsa3072", "ecdsa-p256"],
    }
    assert workbook["Danh mục"].sheet_state == "hidden"
    assert sheet[f"{letter['citizen_id']}2"].number_format == "@"
    assert sheet[f"{letter['citizen_id']}2"].value == "038093015572"


def test_the_template_example_row_is_refused_until_replaced(tmp_path: Path) -> None:
    """Left in, the example row is rejected (never issued); filled in, the template reads as a valid record."""
    path = write_template(tmp_path / "mau.xlsx")
    assert [(n, r.code) for n, r in read_table(path) if isinstance(r, Rejection)] == [(2, "row.example")]
    workbook = load_workbook(path)
    workbook.worksheets[0]["A2"] = "HS-000001"
    workbook.save(path)
    [(number, record)] = records(path)
    assert number == 2 and isinstance(record, RequestRecord)
    assert record.citizen_id == "038093015572" and record.date_of_birth == dt.date(1993, 5, 4)
    assert validate_record(record, today=TODAY, allowed_key_types=["rsa2048"]) == []


def test_a_large_xlsx_is_read_row_by_row_not_whole(tmp_path: Path) -> None:
    """The reader is a generator over openpyxl's read-only stream: the first row comes before the rest is parsed."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(list(LABELS.values()))
    for number in range(3_000):
        sheet.append([f"HS-{number}", *list(EXAMPLE_ROW.values())[1:]])
    workbook.save(tmp_path / "large.xlsx")
    rows = read_table(tmp_path / "large.xlsx")
    assert next(rows)[0] == 2
    assert sum(1 for _ in rows) == 2_999


# --- fuzzing: whatever the file holds, a reader yields rows or raises a PermanentError --------------------


def _drain(path: Path) -> None:
    """Read every row and parse it as intake would; only PermanentError may escape."""
    rows = read_jsonl(path) if path.suffix == ".jsonl" else read_table(path)
    try:
        for _, raw in rows:
            if isinstance(raw, dict):
                record, _ = parse_row(raw)
                if record is not None:
                    validate_record(record, today=TODAY, allowed_key_types=["rsa2048"])
    except PermanentError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2048), suffix=st.sampled_from([".csv", ".xlsx", ".jsonl"]),
       header=st.booleans())
def test_arbitrary_bytes_never_escape_the_readers_as_anything_but_a_refusal(data: bytes, suffix: str,
                                                                            header: bool) -> None:
    """Random bytes (after a real header or not) in a .csv, .xlsx or .jsonl file."""
    prefix = ",".join(LABELS.values()).encode() + b"\r\n" if header and suffix == ".csv" else b""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"fuzz{suffix}"
        path.write_bytes(prefix + data)
        _drain(path)


_TEMPLATE = io.BytesIO()
_book = Workbook()
_book.active.append(list(LABELS.values()))
_book.active.append(list(EXAMPLE_ROW.values()))
_book.save(_TEMPLATE)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, len(_TEMPLATE.getvalue()) - 1), st.integers(0, 255)),
                      min_size=1, max_size=8))
def test_a_corrupted_xlsx_is_refused_never_a_traceback(edits: list[tuple[int, int]]) -> None:
    """A real workbook with bytes overwritten (zip headers, XML, shared parts) is read or refused."""
    data = bytearray(_TEMPLATE.getvalue())
    for at, value in edits:
        data[at] = value
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "corrupted.xlsx"
        path.write_bytes(bytes(data))
        _drain(path)


_CELLS = st.one_of(st.none(), st.text(max_size=40), st.integers(-10**15, 10**15), st.floats(),
                   st.booleans(), st.datetimes(min_value=dt.datetime(1900, 3, 1), max_value=dt.datetime(2100, 1, 1)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.lists(_CELLS, max_size=len(LABELS) + 2), max_size=5))
def test_any_cell_values_in_a_valid_workbook_become_rows_or_reasons(rows: list[list[object]]) -> None:
    """Numbers, floats (NaN, inf), booleans, dates and odd text in every column reach parse_row safely."""
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    workbook = Workbook()
    workbook.active.append(list(LABELS.values()))
    for row in rows:
        workbook.active.append([ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else v for v in row])
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "cells.xlsx"
        workbook.save(path)
        _drain(path)


def test_json_lines_nested_too_deep_is_a_row_reason_not_a_crash(tmp_path: Path) -> None:
    """A line of 100,000 "[" is a rejected row, like any unreadable line."""
    path = tmp_path / "deep.jsonl"
    path.write_text("[" * 100_000 + "\n")
    _drain(path)


def test_check_utf8_accepts_a_letter_split_across_chunks(tmp_path: Path) -> None:
    """A multi-byte letter straddling two read chunks is still UTF-8."""
    path = tmp_path / "straddle.csv"
    path.write_bytes(b"a" * 3 + "Đ".encode())
    check_utf8(path, chunk=4)


def test_a_sheet_of_blank_rows_yields_no_row(tmp_path: Path) -> None:
    """10,000 rows of empty or blank cells under a header are skipped, not rejected."""
    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet()
    sheet.append(list(LABELS.values()))
    for _ in range(10_000):
        sheet.append([None, " "])
    workbook.save(tmp_path / "blank-rows.xlsx")
    assert list(read_table(tmp_path / "blank-rows.xlsx")) == []


def test_shared_strings_read_as_openpyxl_reads_them(tmp_path: Path) -> None:
    """The lean shared-strings reader gives openpyxl's texts: plain, rich-text runs without
    their phonetic hints, escapes, blanks, whitespace kept."""
    import zipfile

    from openpyxl.reader.excel import ExcelReader

    from factory.xlsx import LeanReader

    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    entries = ["<si><t>Nguyễn Văn An</t></si>", "<si><r><t>Trần </t></r><r><rPr><b/></rPr><t>Thị Thủy</t></r>"
               "<rPh sb=\"0\" eb=\"1\"><t>phonetic</t></rPh></si>", "<si><t>a_x005F_x000D_b</t></si>", "<si><t/></si>",
               '<si><t xml:space="preserve"> khoảng trắng </t></si>']
    with zipfile.ZipFile(tmp_path / "strings.xlsx", "w") as package:
        package.writestr("[Content_Types].xml", '<Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                         'content-types"><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.'
                         'openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>')
        package.writestr("xl/sharedStrings.xml", f'<sst xmlns="{main}">{"".join(entries)}</sst>')
    found = []
    for reader in (ExcelReader(tmp_path / "strings.xlsx", read_only=True), LeanReader(tmp_path / "strings.xlsx",
                                                                                    read_only=True)):
        reader.read_manifest()
        reader.read_strings()
        found.append(list(reader.shared_strings))
    assert found[1] == found[0] == ["Nguyễn Văn An", "Trần Thị Thủy", "a_x000D_b", "", " khoảng trắng "]


def _openpyxl_rows(path: Path) -> dict[int, tuple[object, ...]]:
    workbook = load_workbook(path, read_only=True, data_only=True)
    sheet = workbook.worksheets[0]
    sheet.reset_dimensions()
    rows = {number: _trimmed(cells) for number, cells in enumerate(sheet.iter_rows(values_only=True), start=1)}
    workbook.close()
    return {number: cells for number, cells in rows.items() if cells}


def _trimmed(cells: tuple[object, ...]) -> tuple[object, ...]:
    values = list(cells)
    while values and values[-1] is None:
        values.pop()
    return tuple(values)


def _lean_rows(path: Path) -> dict[int, tuple[object, ...]]:
    from factory.xlsx import LeanReader, sheet_rows

    reader = LeanReader(path, read_only=True, data_only=True)
    reader.read()
    rows = {number: _trimmed(cells) for number, cells in sheet_rows(reader)}
    reader.archive.close()
    return {number: cells for number, cells in rows.items() if cells}


def test_the_lean_row_reader_reads_what_openpyxl_reads(tmp_path: Path) -> None:
    """Every kind of cell an agency's sheet holds, as Excel saves it (shared strings) and
    as openpyxl writes it (inline strings): dates, times, numbers, booleans, formulas,
    gaps between cells and between rows."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
    from validate_rows import write_excel_like, write_openpyxl

    write_excel_like(tmp_path / "excel.xlsx", 300)
    write_openpyxl(tmp_path / "openpyxl.xlsx", 300)
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["Họ và tên", "Ngày sinh", "Số", "Thực", "Đúng", "Công thức", None, "Giờ"])
    sheet.append(["Nguyễn Thị Thủy", dt.date(1980, 2, 29), 12, 1.5, True, "=1+1", None, dt.datetime(2026, 2, 13, 10)])
    sheet.append([])
    sheet.append([None, None, "079123456789", 1e20, False, None, "lạc cột", dt.time(18, 30)])
    sheet.cell(row=9, column=12, value="xa")
    workbook.save(tmp_path / "kinds.xlsx")
    for name in ("excel.xlsx", "openpyxl.xlsx", "kinds.xlsx"):
        expected = _openpyxl_rows(tmp_path / name)
        assert len(expected) > 2
        assert _lean_rows(tmp_path / name) == expected, name
