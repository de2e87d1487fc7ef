"""The report an agency gets back for a batch: `<name>.report.xlsx` beside its input.

Sheet "Kết quả" has one line per reason (one line for an accepted row): row number,
request_ref, status (accepted | rejected | duplicate), reason code, field and message,
so a clerk can filter by status or field and fix the rows. "Cảnh báo" lists the
warnings (Treasury signatures per unit …), "Tổng hợp" the counts. Written streaming
(openpyxl write-only): a 100,000-row report stays in bounded memory. Anything the
agency typed is written as text, never as a formula.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.styles import Font
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

# status is accepted (đã nhận), rejected (bị từ chối) or duplicate (đã nộp trước đó).
RESULT_HEADERS = ("Dòng / row", "Mã hồ sơ / request_ref", "Trạng thái / status", "Mã lỗi / code",
                  "Trường / field", "Nội dung / message")
_SURROGATES = re.compile("[\ud800-\udfff]")


def report_path(source: Path) -> Path:
    """Where the report of ``source`` goes: ``batch.xlsx`` → ``batch.report.xlsx``."""
    return source.with_name(f"{source.stem}.report.xlsx")


def _cell(sheet: WriteOnlyWorksheet, value: object, bold: bool = False) -> WriteOnlyCell:
    if isinstance(value, str):
        # Control characters are illegal in XML, lone surrogates (from JSON) in UTF-8.
        value = _SURROGATES.sub("\ufffd", ILLEGAL_CHARACTERS_RE.sub("\ufffd", value))[:32767]  # Excel's cell limit
    cell = WriteOnlyCell(sheet, value=value)
    if isinstance(value, str):
        cell.data_type = "s"  # "=HYPERLINK(…)" typed by an agency stays text
    if bold:
        cell.font = Font(bold=True)
    return cell


def _plain(value: object) -> bool:
    """Written as it is: not text that openpyxl would take for a formula or refuse."""
    return not isinstance(value, str) or not value.startswith("=") and len(value) <= 32767 \
        and ILLEGAL_CHARACTERS_RE.search(value) is None and _SURROGATES.search(value) is None


def _append(sheet: WriteOnlyWorksheet, values: Iterable[object], bold: bool = False) -> None:
    # A cell object only where needed: 100,000 rows of them cost seconds.
    sheet.append([value if not bold and _plain(value) else _cell(sheet, value, bold) for value in values])


def _reason(reason: Any) -> tuple[object, object, object]:
    get = reason.get if isinstance(reason, Mapping) else lambda name: getattr(reason, name, None)
    return get("code"), get("field"), get("message")


def write_report(source: Path, report: Mapping[str, Any]) -> Path:
    """Write the agency's report of ``report`` (the submission result: ``batch_id``,
    ``accepted``, ``rejected``, ``duplicates``, ``rows`` with ``row``, ``request_ref``,
    ``status``, ``reasons`` as dicts or ``Rejection``s, and ``warnings``) beside
    ``source``; returns its path. Replaces an older report of the same file atomically."""
    workbook = Workbook(write_only=True)
    results = workbook.create_sheet("Kết quả")
    results.freeze_panes = "A2"
    for letter, width in zip("ABCDEF", (8, 22, 26, 26, 22, 90), strict=True):
        results.column_dimensions[letter].width = width
    _append(results, RESULT_HEADERS, bold=True)
    for row in report.get("rows", ()):
        first = (row.get("row"), row.get("request_ref"), row.get("status"))
        reasons = list(row.get("reasons") or ())
        if not reasons:
            _append(results, first)
        for reason in reasons:
            _append(results, (*first, *_reason(reason)))
    warnings = workbook.create_sheet("Cảnh báo")
    warnings.column_dimensions["A"].width = 140
    _append(warnings, ("Cảnh báo / warning",), bold=True)
    for warning in report.get("warnings") or ():
        _append(warnings, (warning if isinstance(warning, str) else str(warning),))
    summary = workbook.create_sheet("Tổng hợp")
    summary.column_dimensions["A"].width = 36
    summary.column_dimensions["B"].width = 40
    for label, key in (("Tệp / file", None), ("Mã lô / batch_id", "batch_id"), ("Đã nhận / accepted", "accepted"),
                       ("Bị từ chối / rejected", "rejected"), ("Đã nộp trước / duplicates", "duplicates")):
        _append(summary, (label, source.name if key is None else report.get(key)))
    target = report_path(source)
    partial = target.with_name(f".{target.name}.partial")
    workbook.save(partial)
    os.replace(partial, target)
    return target
