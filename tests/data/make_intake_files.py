"""Write the intake test files: `python tests/data/make_intake_files.py` (idempotent).

Each file's name says what it carries; the one-line docstring of its writer says where
it comes from. The three reference rows (ROWS) are valid on 2026-03-02 and hold every
kind of value: diacritics needing combining marks in windows-1258 (Thủy), two
organisational units, an optional phone left empty, all three key types.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sys
import unicodedata
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from factory.spreadsheets import LABELS  # noqa: E402

ROWS: list[dict[str, object]] = [
    {"request_ref": "HS-000001", "full_name": "Nguyễn Văn An", "citizen_id": "038093015572",
     "date_of_birth": dt.date(1993, 5, 4), "sex": "Nam", "email": "annv@mof.gov.vn", "phone": "0912345678",
     "position": "Chuyên viên", "role": "staff", "unit_code": "1047665", "organization": "Bộ Tài chính",
     "organizational_units": "Vụ Kế hoạch - Tài chính", "province": "Hà Nội", "key_type": "rsa2048"},
    {"request_ref": "HS-000002", "full_name": "Trần Thị Thủy", "citizen_id": "001185004321",
     "date_of_birth": dt.date(1985, 11, 20), "sex": "Nữ", "email": "thuytt@mof.gov.vn", "phone": "0983456789",
     "position": "Kế toán trưởng", "role": "chief_accountant", "unit_code": "1047665", "organization": "Bộ Tài chính",
     "organizational_units": "Vụ Kế hoạch - Tài chính; Phòng Kế toán", "province": "Hà Nội", "key_type": "rsa3072"},
    {"request_ref": "HS-000003", "full_name": "Lê Hoàng Đức", "citizen_id": "079200012345",
     "date_of_birth": dt.date(2000, 1, 15), "sex": "Nam", "email": "duclh@hochiminh.gov.vn", "phone": None,
     "position": "Chuyên viên", "role": "account_holder", "unit_code": "2001234",
     "organization": "UBND thành phố Hồ Chí Minh", "organizational_units": "Sở Tài chính", "province": "Hồ Chí Minh",
     "key_type": "ecdsa-p256"},
]
FILES: dict[str, Callable[[Path], None]] = {}


def _file(name: str) -> Callable[[Callable[[Path], None]], Callable[[Path], None]]:
    def register(write: Callable[[Path], None]) -> Callable[[Path], None]:
        FILES[name] = write
        return write
    return register


def _text(value: object) -> str:
    return "" if value is None else value.isoformat() if isinstance(value, dt.date) else str(value)


def csv_text(header: list[str] | None = None, rows: list[dict[str, object]] = ROWS, separator: str = ",") -> str:
    """The rows as CSV text with CRLF line ends and minimal quoting, as Excel writes them."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter=separator)
    writer.writerow(header or LABELS.values())
    writer.writerows([_text(row.get(field)) for field in LABELS if field in row] for row in rows)
    return out.getvalue()


def windows_1258(text: str) -> bytes:
    """Text as Vietnamese Windows writes it: base letters precomposed, tone marks combining."""
    tones = "\u0300\u0301\u0303\u0309\u0323"
    out = []
    for char in text:
        parts = unicodedata.normalize("NFD", char)
        marks = "".join(c for c in parts if c in tones)
        out.append(unicodedata.normalize("NFC", "".join(c for c in parts if c not in tones)) + marks)
    return "".join(out).encode("cp1258")


@_file("intake-good.csv")
def _good_csv(path: Path) -> None:
    """The reference rows, UTF-8 without BOM (written by a script)."""
    path.write_bytes(csv_text().encode("utf-8"))


@_file("intake-good-bom.csv")
def _good_bom(path: Path) -> None:
    """The reference rows as Excel's "CSV UTF-8 (Comma delimited)": BOM, CRLF."""
    path.write_bytes(csv_text().encode("utf-8-sig"))


@_file("intake-good-semicolon-bom.csv")
def _good_semicolon(path: Path) -> None:
    """The reference rows as Excel writes CSV where the list separator is ";"."""
    path.write_bytes(csv_text(separator=";").encode("utf-8-sig"))


@_file("intake-good-english-headers.csv")
def _good_english(path: Path) -> None:
    """The reference rows under the English field names instead of the Vietnamese labels."""
    path.write_bytes(csv_text(header=list(LABELS)).encode("utf-8"))


@_file("intake-good.jsonl")
def _good_jsonl(path: Path) -> None:
    """The reference rows as JSON lines (organisational units as a list)."""
    lines = []
    for row in ROWS:
        data = {k: _text(v) for k, v in row.items() if v is not None}
        data["organizational_units"] = [u.strip() for u in str(row["organizational_units"]).split(";")]
        lines.append(json.dumps(data, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _workbook(path: Path, rows: list[list[object]]) -> None:
    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    for values in rows:
        sheet.append(values)
    workbook.save(path)


@_file("intake-good.xlsx")
def _good_xlsx(path: Path) -> None:
    """The reference rows in an xlsx: dates as date cells, IDs as text."""
    _workbook(path, [list(LABELS.values()), *[[row[f] for f in LABELS] for row in ROWS]])


@_file("intake-title-stt-blank-rows-numeric-cccd.xlsx")
def _messy_xlsx(path: Path) -> None:
    """As agencies send it: a title row, an STT column, blank rows; row 6's CCCD typed as a
    number (Excel drops the leading zero) and its date as dd/mm/yyyy text."""
    header = ["STT", *LABELS.values()]
    first, second = [1, *ROWS[0].values()], [2, *ROWS[1].values()]
    second[3], second[4] = 1185004321, "20/11/1985"
    _workbook(path, [["DANH SÁCH ĐỀ NGHỊ CẤP CHỨNG THƯ SỐ"], [], header, first, [], second])


@_file("intake-cell-outside-header.xlsx")
def _stray_cell(path: Path) -> None:
    """Row 3 holds a note in a column the header does not name."""
    _workbook(path, [list(LABELS.values()), list(ROWS[0].values()), [*ROWS[1].values(), "ghi chú lạc"]])


@_file("intake-damaged-not-a-zip.xlsx")
def _damaged(path: Path) -> None:
    """An .xlsx that is really a CSV renamed (a common mistake)."""
    path.write_bytes(csv_text().encode("utf-8"))


@_file("intake-cp1258-not-utf8.csv")
def _cp1258(path: Path) -> None:
    """The reference rows as "CSV (Comma delimited)" on Vietnamese Windows: windows-1258."""
    path.write_bytes(windows_1258(csv_text()))


@_file("intake-windows1252-not-utf8.csv")
def _cp1252(path: Path) -> None:
    """The reference rows as "CSV (Comma delimited)" on English Windows: letters lost as "?"."""
    path.write_bytes(csv_text().encode("cp1252", "replace"))


@_file("intake-utf16-unicode-text.csv")
def _utf16(path: Path) -> None:
    """The reference rows as Excel's "Unicode Text": UTF-16 LE with BOM, tab separated."""
    path.write_bytes(csv_text(separator="\t").encode("utf-16"))


@_file("intake-unknown-column.csv")
def _unknown_column(path: Path) -> None:
    """A header with a column the template does not have ("Quê quán", home town)."""
    path.write_bytes(csv_text(header=[*list(LABELS.values())[:-1], "Quê quán"]).encode("utf-8"))


@_file("intake-missing-required-column.csv")
def _missing_column(path: Path) -> None:
    """A header without "Thư điện tử" (email); the rows' email cells are dropped with it."""
    labels = [label for field, label in LABELS.items() if field != "email"]
    rows = [{k: v for k, v in row.items() if k != "email"} for row in ROWS]
    path.write_bytes(csv_text(header=labels, rows=rows).encode("utf-8"))


def main() -> None:
    """Write every file next to this script."""
    for name, write in FILES.items():
        write(HERE / name)
        print(name)


if __name__ == "__main__":
    main()
