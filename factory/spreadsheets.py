"""Batch files from spreadsheets: `.xlsx` and `.csv`, read streaming, row by row.

Readers yield ``(row number, field → value | Rejection)`` like ``factory.intake.read_jsonl``;
the row number is the one Excel shows (the header is a row too). A file that cannot be
read at all is refused whole, before or instead of any of its rows counting:

    PermanentError
    └── BatchFileError     damaged, not a spreadsheet, too odd to read
        ├── NotUtf8        a CSV in another encoding (names the encoding it looks like)
        └── HeaderError    unknown, duplicated or missing columns
"""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import unicodedata
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation

from factory import xlsx
from factory.errors import PermanentError
from factory.validation import LETTERS
from schemas import KeyType, RequestRecord, Role
from schemas.status import Rejection

Row = tuple[int, dict[str, Any] | Rejection]


class BatchFileError(PermanentError):
    """The file as a whole cannot be read; none of its rows count."""

    code = "batch_file"


class NotUtf8(BatchFileError):
    """A CSV that is not UTF-8; ``encoding`` is what it looks like instead."""

    def __init__(self, name: str, encoding: str, offset: int) -> None:
        super().__init__(f"{name}: not UTF-8 text; it looks like {encoding} (first foreign byte at offset {offset}); "
                         "in Excel use Save As “CSV UTF-8 (Comma delimited)” / Tệp không phải UTF-8 (có vẻ là "
                         f"{encoding}), hãy lưu lại bằng Excel dạng “CSV UTF-8”")
        self.encoding = encoding
        self.offset = offset


class HeaderError(BatchFileError):
    """The header row does not match the template's columns; ``problem`` says how."""

    def __init__(self, name: str, problem: str, expected: Iterable[str]) -> None:
        super().__init__(f"{name}: {problem}; expected columns: {', '.join(expected)} / Dòng tiêu đề không khớp mẫu")
        self.problem = problem


@dataclass(frozen=True)
class Columns:
    """What a table's header may say: field → accepted header texts (any case, NFC), the
    required fields, texts to ignore (row numbers, notes), the template's example reference."""

    labels: Mapping[str, tuple[str, ...]]
    required: frozenset[str]
    ignored: frozenset[str] = frozenset({"stt", "tt", "số tt", "số thứ tự", "ghi chú"})
    example_ref: str | None = None


# The Vietnamese labels of DESIGN.md §4a, in template order.
LABELS: dict[str, str] = {
    "request_ref": "Mã hồ sơ", "full_name": "Họ và tên", "citizen_id": "Số CCCD", "date_of_birth": "Ngày sinh",
    "sex": "Giới tính", "email": "Thư điện tử", "phone": "Số điện thoại", "position": "Chức vụ",
    "role": "Vai trò KBNN", "unit_code": "Mã ĐVQHNS", "organization": "Cơ quan", "organizational_units": "Đơn vị",
    "province": "Tỉnh/Thành phố", "key_type": "Loại khóa",
}
# The template's example row; a row still carrying its reference is refused, never issued.
EXAMPLE_ROW: dict[str, Any] = {
    "request_ref": "VÍ DỤ - XÓA DÒNG NÀY", "full_name": "Nguyễn Văn An", "citizen_id": "038093015572",
    "date_of_birth": dt.date(1993, 5, 4), "sex": "Nam", "email": "annv@mof.gov.vn", "phone": "0912345678",
    "position": "Chuyên viên", "role": "staff", "unit_code": "1047665", "organization": "Bộ Tài chính",
    "organizational_units": "Vụ Kế hoạch - Tài chính", "province": "Hà Nội", "key_type": "rsa2048",
}
REQUEST_COLUMNS = Columns(
    labels={field: (label, field) for field, label in LABELS.items()},
    required=frozenset(f for f, info in RequestRecord.model_fields.items() if info.is_required()),
    example_ref=EXAMPLE_ROW["request_ref"],
)
TITLE_ROWS = 10  # non-blank rows above the header (a form's title) skipped at most


def _key(header: object) -> str:
    return " ".join(unicodedata.normalize("NFC", str(header)).replace("\ufeff", "").casefold().split()).rstrip("* ")


def _cell(value: object) -> object:
    # Numbers become their digits: a CCCD that lost its leading zero fails the 12-digit
    # rule by name, and a date typed as a number fails the ISO rule (not a Unix timestamp).
    if isinstance(value, (int, float)):
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    return value


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _header(name: str, cells: tuple[object, ...], columns: Columns) -> dict[int, str | None] | None:
    """Column index → field (None: a column to ignore); None when no cell names a known column (a title row)."""
    keys = {_key(label): field for field, labels in columns.labels.items() for label in labels}
    found: dict[int, str | None] = {}
    unknown = []
    for index, cell in enumerate(cells):
        if not _blank(cell):
            if (key := _key(cell)) in keys or key in columns.ignored:
                found[index] = keys.get(key)
            else:
                unknown.append(repr(str(cell).strip()[:60]))
    if not (fields := [field for field in found.values() if field is not None]):
        return None
    expected = [labels[0] for labels in columns.labels.values()]
    if unknown:
        raise HeaderError(name, f"unknown column(s) {', '.join(unknown)}", expected)
    if twice := sorted({f for f in fields if fields.count(f) > 1}):
        raise HeaderError(name, f"column(s) given twice: {', '.join(twice)}", expected)
    if missing := sorted(columns.required - set(fields)):
        raise HeaderError(name, f"required column(s) missing: {', '.join(missing)}", expected)
    return found


def _records(name: str, rows: Iterable[tuple[int, tuple[object, ...]]], columns: Columns) -> Iterator[Row]:
    """Find the header, then turn every non-blank row into a field → value dict."""
    header: dict[int, str | None] | None = None
    skipped = 0
    for number, cells in rows:
        if all(_blank(cell) for cell in cells):
            continue
        if header is None:
            header, skipped = _header(name, cells, columns), skipped + 1
            if header is None and skipped > TITLE_ROWS:
                break
            continue
        if stray := [get_column_letter(i + 1) for i, cell in enumerate(cells) if i not in header and not _blank(cell)]:
            yield number, Rejection(code="row.unlabelled_cell", field=None, message=(
                f"row {number}: column(s) {', '.join(stray)} hold values but have no header / "
                "Ô có dữ liệu nằm ngoài các cột của mẫu"))
            continue
        record = {field: _cell(cells[i]) for i, field in header.items()
                  if field is not None and i < len(cells) and not _blank(cells[i])}
        if columns.example_ref is not None and str(record.get("request_ref", "")).strip() == columns.example_ref:
            yield number, Rejection(code="row.example", field="request_ref", message=(
                f"request_ref: row {number} is the template's example; delete it / Đây là dòng ví dụ của mẫu, hãy xóa"))
            continue
        yield number, record
    if header is None:
        raise HeaderError(name, "no header row found", [labels[0] for labels in columns.labels.values()])


def _sheet_rows(path: Path) -> Iterator[tuple[int, tuple[object, ...]]]:
    """(row number, cell values) of the first sheet; any failure to read it is the file's."""
    # On a damaged file openpyxl raises almost anything (zip, XML, KeyError, TypeError…);
    # the file is at fault and no retry can help, so each becomes one BatchFileError.
    number, reader = 0, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "no default style", unsupported extensions: harmless
            reader = xlsx.LeanReader(path, read_only=True, data_only=True)
            reader.read()
        for number, cells in xlsx.sheet_rows(reader):
            yield number, cells
    except Exception as error:  # see above; only the workbook's reading runs in this block
        raise BatchFileError(f"{path.name}: not a readable .xlsx workbook (at row {number + 1}: "
                             f"{type(error).__name__}) / Tệp .xlsx hỏng, không đọc được") from None
    finally:
        if reader is not None:
            reader.archive.close()


def read_xlsx(path: Path, columns: Columns = REQUEST_COLUMNS) -> Iterator[Row]:
    """Rows of the first sheet of an .xlsx workbook, read streaming (openpyxl read-only)."""
    return _records(path.name, _sheet_rows(path), columns)


def _looks_like(sample: bytes) -> str:
    """Which encoding a non-UTF-8 sample most likely is, for the refusal message."""
    if sample[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "UTF-32" if sample[2:4] == b"\x00\x00" else "UTF-16 (Excel's “Unicode Text”)"
    if b"\x00" in sample:
        return "UTF-16 without a byte-order mark" if sample.count(0) * 3 > len(sample) else "binary data, not text"
    high = [b for b in sample if b >= 0x80]
    # TCVN3 (ABC fonts) puts ă â ê ô ơ ư đ and the a-tones at 0xA1–0xBF: symbols in Windows code pages.
    if sum(0xA1 <= b <= 0xBF for b in high) * 2 > len(high):
        return "TCVN3 (ABC, .VnTime fonts)"

    def foreign(encoding: str) -> tuple[int, int]:  # (non-ASCII non-Vietnamese letters, length in NFC)
        text = unicodedata.normalize("NFC", sample.decode(encoding, "replace"))
        return sum(1 for c in text if ord(c) > 0x7F and c not in LETTERS), len(text)

    (foreign_1258, length), (foreign_1252, _) = foreign("cp1258"), foreign("cp1252")
    joined = len(sample.decode("cp1258", "replace")) - length  # windows-1258 tone marks joining their vowel
    return "windows-1258 (Vietnamese ANSI)" if (foreign_1258, -joined) < (foreign_1252, 0) \
        else "windows-1252 (Western ANSI)"


def check_utf8(path: Path, chunk: int = 1 << 20) -> None:
    """Refuse a file that is not UTF-8 text (NUL bytes included), naming the encoding it
    looks like. Reads in chunks: bounded memory whatever the size."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with path.open("rb") as handle:
        while data := handle.read(chunk):
            if (nul := data.find(b"\x00")) >= 0:
                raise NotUtf8(path.name, _looks_like(data), offset + nul)
            try:
                decoder.decode(data)
            except UnicodeDecodeError as error:
                raise NotUtf8(path.name, _looks_like(data), offset + error.start) from None
            offset += len(data)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise NotUtf8(path.name, "UTF-8 cut off in the middle of a letter", offset) from None


def read_csv(path: Path, columns: Columns = REQUEST_COLUMNS) -> Iterator[Row]:
    """Rows of a UTF-8 CSV (with or without BOM; comma, semicolon or tab separated, as
    Excel writes it by locale). A file in another encoding is refused whole, first."""
    check_utf8(path)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        first = handle.readline(1 << 16)
        delimiter = max(",;\t", key=first.count) if any(d in first for d in ",;\t") else ","
        handle.seek(0)
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            yield from _records(path.name, ((n, tuple(cells)) for n, cells in enumerate(reader, start=1)), columns)
        except (csv.Error, UnicodeDecodeError) as error:
            raise BatchFileError(f"{path.name}: not a readable CSV at line {reader.line_num} ({error}) / "
                                 "Tệp CSV không đọc được") from None


def read_table(path: Path, columns: Columns = REQUEST_COLUMNS) -> Iterator[Row]:
    """Rows of an .xlsx or .csv file, by its suffix."""
    if (reader := {".xlsx": read_xlsx, ".csv": read_csv}.get(path.suffix.lower())) is None:
        raise BatchFileError(f"{path.name}: unsupported format {path.suffix!r}; use .xlsx, .csv or .jsonl")
    return reader(path, columns)


TEMPLATE_ROWS = 100_000  # rows the pick lists cover
PICK_LISTS: dict[str, tuple[str, ...]] = {
    "sex": ("Nam", "Nữ", "male", "female"), "role": tuple(Role), "key_type": tuple(KeyType)}
_TEXT_COLUMNS = ("request_ref", "citizen_id", "phone", "unit_code")  # typed digits keep leading zeros


def write_template(path: Path) -> Path:
    """Write the xlsx template: the Vietnamese headers, pick lists for sex, role and key
    type (from a hidden sheet), text-formatted ID columns and one example row."""
    workbook = openpyxl.Workbook()
    sheet, lists = workbook.active, workbook.create_sheet("Danh mục")
    sheet.title, lists.sheet_state, sheet.freeze_panes = "Yêu cầu", "hidden", "A2"
    sheet.append(list(LABELS.values()))
    sheet.append(list(EXAMPLE_ROW.values()))
    for index, field in enumerate(LABELS, start=1):
        letter = get_column_letter(index)
        sheet.cell(1, index).font = Font(bold=True)
        sheet.column_dimensions[letter].width = max(14, len(str(EXAMPLE_ROW[field])) + 2)
        if number_format := "@" if field in _TEXT_COLUMNS else "yyyy-mm-dd" if field == "date_of_birth" else None:
            sheet.column_dimensions[letter].number_format = number_format
            sheet.cell(2, index).number_format = number_format
        if field in PICK_LISTS:
            values, source = [str(v) for v in PICK_LISTS[field]], get_column_letter(list(PICK_LISTS).index(field) + 1)
            for row, value in enumerate(values, start=1):
                lists[f"{source}{row}"] = value
            rule = DataValidation(type="list", formula1=f"'Danh mục'!${source}$1:${source}${len(values)}",
                                  allow_blank=True, showErrorMessage=True, showInputMessage=True,
                                  errorTitle=LABELS[field], error="Chọn một giá trị trong danh sách / pick one",
                                  promptTitle=LABELS[field], prompt=", ".join(values))
            rule.add(f"{letter}2:{letter}{TEMPLATE_ROWS + 1}")
            sheet.add_data_validation(rule)
    workbook.save(path)
    return path
