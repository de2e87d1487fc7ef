"""Cell values of an .xlsx sheet, row by row, on top of openpyxl's workbook reading.

openpyxl reads the package, the styles (which number formats are dates) and the
workbook; the rows of a batch — tens of thousands of them, every cell a value — are
read here with a plain iterparse, because openpyxl's read-only cell parser builds a
dict and, for inline strings, descriptor objects per cell: most of the time of
validating an .xlsx batch went there. Values are those openpyxl gives with
``data_only=True`` (the cached result of a formula, dates from styled serials); a test
holds the two readers to the same output.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from openpyxl.reader.excel import ExcelReader
from openpyxl.styles.stylesheet import apply_stylesheet
from openpyxl.utils import column_index_from_string
from openpyxl.utils.datetime import from_excel, from_ISO8601
from openpyxl.xml.constants import SHARED_STRINGS
from openpyxl.xml.functions import iterparse

_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_ROW, _CELL, _VALUE, _INLINE = f"{_MAIN}row", f"{_MAIN}c", f"{_MAIN}v", f"{_MAIN}is"
_PLAIN, _RUN_TEXT = f"{_MAIN}t", f"{_MAIN}r/{_MAIN}t"
_DIGITS = "0123456789"


def string_item(node: Any) -> str:
    """The text of a shared or inline string: the plain text or its runs' texts, phonetic
    hints left out, ``_x005F_`` escapes undone (as openpyxl reads it)."""
    plain = node.find(_PLAIN)
    texts = [plain] if plain is not None else node.findall(_RUN_TEXT)
    return "".join(t.text or "" for t in texts).replace("x005F_", "")


class LeanReader(ExcelReader):
    """openpyxl's reader with a leaner shared-strings table: Excel keeps every distinct
    text there (names, e-mails, IDs: about five per row), and openpyxl builds a descriptor
    object per entry. Same content."""

    first_sheet: str = ""

    def read(self) -> None:
        """What a batch's cells need: the strings, the workbook (its date epoch), the
        styles (which number formats are dates) and where the first worksheet is. Not
        openpyxl's read-only sheet: it scans a sheet without a <dimension> whole, to size it."""
        self.read_manifest()
        self.read_strings()
        self.read_workbook()
        apply_stylesheet(self.archive, self.wb)
        self.first_sheet = next((rel.target for _, rel in self.parser.find_sheets()
                                 if rel.target in self.valid_files and "chartsheet" not in rel.Type), "")
        if not self.first_sheet:
            raise ValueError("the workbook has no worksheet")

    def read_strings(self) -> None:
        part = self.package.find(SHARED_STRINGS)
        if part is None:
            return
        strings: list[str] = []
        with self.archive.open(part.PartName[1:]) as source:
            for _, node in iterparse(source):
                if node.tag == f"{_MAIN}si":
                    strings.append(string_item(node))
                    node.clear()
        self.shared_strings = strings


def _number(text: str) -> int | float:
    return float(text) if "." in text or "E" in text or "e" in text else int(text)


class _Sheet:
    """What turning one sheet's cells into values needs from its workbook."""

    def __init__(self, reader: LeanReader) -> None:
        workbook = reader.wb
        self.strings: list[str] = reader.shared_strings
        self.dates: set[int] = set(workbook._date_formats)  # style ids, set by apply_stylesheet
        self.durations: set[int] = set(workbook._timedelta_formats)
        self.epoch = workbook.epoch
        self.columns: dict[str, int] = {}

    def column(self, reference: str) -> int:
        letters = reference.rstrip(_DIGITS)
        if (index := self.columns.get(letters)) is None:
            index = self.columns[letters] = column_index_from_string(letters)
        return index

    def value(self, cell: Any) -> object:
        kind = cell.get("t", "n")
        if kind == "inlineStr":
            inline = cell.find(_INLINE)
            return string_item(inline) if inline is not None else None
        text = cell.findtext(_VALUE)
        if not text:
            return None
        if kind == "n":
            number = _number(text)
            style = cell.get("s")
            if style and int(style) in self.dates:
                try:
                    return from_excel(number, self.epoch, timedelta=int(style) in self.durations)
                except (OverflowError, ValueError):
                    return "#VALUE!"  # as openpyxl: a date serial out of range is an error value
            return number
        if kind == "s":
            return self.strings[int(text)]
        if kind == "b":
            return bool(int(text))
        if kind == "d":
            return from_ISO8601(text)
        return text  # "str" (a formula's text), "e" (an error such as #N/A)


def sheet_rows(reader: LeanReader) -> Iterator[tuple[int, tuple[object, ...]]]:
    """(row number as Excel shows it, cell values from column A) of each row the first
    sheet stores; ``reader`` has read the workbook."""
    sheet = _Sheet(reader)
    with reader.archive.open(reader.first_sheet) as source:
        yield from _rows(sheet, source)


def _rows(sheet: _Sheet, source: IO[bytes]) -> Iterator[tuple[int, tuple[object, ...]]]:
    number = 0
    for _, node in iterparse(source):
        if node.tag != _ROW:
            continue
        reference = node.get("r")
        number = int(float(reference)) if reference else number + 1
        values: list[object] = []
        for cell in node.iterfind(_CELL):
            reference = cell.get("r")
            column = sheet.column(reference) if reference else len(values) + 1
            if column > len(values) + 1:
                values.extend([None] * (column - len(values) - 1))
            value = sheet.value(cell)
            if column <= len(values):
                values[column - 1] = value
            else:
                values.append(value)
        node.clear()
        yield number, tuple(values)
