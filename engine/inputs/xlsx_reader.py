"""XLSX reader: one sheet of a workbook as a header and typed data rows, hostile files bounded.

openpyxl reads the workbook (read-only, cached values of formulas); its worksheet parser is used
directly rather than ``iter_rows``, because iter_rows pads every row to the sheet's stated width
and yields every missing row up to the last one (a cell at XFD1048576 becomes a billion empty
cells), loses the error type of a cell (``#N/A`` the error and "#N/A" the text look the same) and
the Excel row number. python-calamine was measured 15 times faster (bench/xlsx_readers.py) but
reads error cells as empty text and aborts the whole process on such a far cell, allocating the
sheet's full rectangle in Rust.

Limits, checked on the zip directory before anything is parsed (Python's zipfile stops a member
at its declared size and fails its CRC, so a member cannot decompress past what the directory
says): a worksheet's XML at most MAX_SHEET_BYTES, the shared-strings table at most
MAX_SHARED_STRINGS_BYTES (it is held in memory), any other XML part at most MAX_PART_BYTES. A
cell beyond Excel's grid (row 1,048,576, column XFD), a row number that does not ascend, or a
cell longer than MAX_CELL_CHARS stops the file with an InputError naming the row, as does anything
the library raises. So a sheet has at most 1,048,576 rows, each read once; a row is held whole
while parsed, so one row of millions of tiny cells inside the byte limit costs memory.
"""

from __future__ import annotations

import datetime
import hashlib
import math
import warnings
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.errors import InputError
from engine.inputs.builder import did_you_mean

MAX_SHEET_BYTES = 512 * 2**20
MAX_SHARED_STRINGS_BYTES = 128 * 2**20
MAX_PART_BYTES = 32 * 2**20
MAX_CELL_CHARS = 2**20  # as the CSV reader's cells; Excel itself stops at 32,767 characters
MAX_ROW = 1_048_576  # Excel's grid
MAX_COLUMN = 16_384

_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # .xls and every password-encrypted workbook
_BATCH = 512  # rows parsed per step; warnings are silenced around each step, never across a yield
_SECOND = datetime.timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class CellError:
    """An Excel error cell (``#N/A``, ``#DIV/0!``...): never a value, so the caller can reject it."""

    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class _Source:
    """What parsing the sheet again needs: its zip member and the workbook's tables."""

    member: str
    shared_strings: Any
    epoch: Any
    date_styles: frozenset[int]
    date_only_styles: frozenset[int]
    timedelta_styles: frozenset[int]


@dataclass(frozen=True, slots=True)
class Sheet:
    """One worksheet: its header row and, through rows(), its data rows."""

    path: str
    name: str
    header: list[str]
    header_row: int
    sha256: str
    _source: _Source = field(repr=False)

    @property
    def date1904(self) -> bool:
        """Whether the workbook counts days in the 1904 date system (serial 0 = 1904-01-01), as
        workbooks from old Excel for Mac do; formatted dates are converted either way, a plain number
        read as a date must know it."""
        return bool(self._source.epoch == datetime.datetime(1904, 1, 1))

    def rows(self) -> Iterator[tuple[int, list[Any]]]:
        """Data rows after the header as (Excel row number, cells), rows with no value skipped.

        Cells are as read, up to the row's last value (trailing empty cells are not cells): None,
        str, int (an integral number), float, bool, datetime.datetime (naive, to the second),
        datetime.date (a date-only format at midnight), datetime.time, datetime.timedelta (a
        duration format such as [h]:mm) or CellError. Raises InputError if the sheet breaks.
        """
        for number, cells in _parsed_rows(self.path, self._source):
            if number > self.header_row:
                yield number, cells


def open_sheet(path: str, sheet: str | None) -> Sheet:
    """Open one sheet of an XLSX workbook (default: the first worksheet); InputError with a one-line reason."""
    digest = _sha256(path)
    _check_archive(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from openpyxl import load_workbook

            with open(path, "rb") as handle:  # a file object: openpyxl refuses a path not named .xlsx
                wb = load_workbook(handle, read_only=True, data_only=True, keep_links=False)
                try:
                    ws = _pick(path, wb, sheet)
                    source = _source(wb, ws)
                finally:
                    wb.close()
    except InputError:
        raise
    except Exception as exc:  # the library's own errors are many and undocumented
        raise InputError(f"{path}: not a readable XLSX workbook ({_reason(exc)})") from None
    for number, cells in _parsed_rows(path, source):
        header = [_header_text(value) for value in cells]
        _check_header(path, header)
        return Sheet(path, ws.title, header, number, digest, source)
    raise InputError(f'{path}: sheet "{ws.title}" is empty (no header row)')


def excel_serial(value: float, date1904: bool = False) -> datetime.datetime:
    """An Excel 1900-system serial (46084.385416) as a naive datetime, rounded to the second.

    Serial 1 is 1900-01-01 (with ``date1904``, the 1904 system: serial 0 is 1904-01-01).
    Excel counts a 1900-02-29 that never was (serial 60, kept from
    Lotus 1-2-3): serials below 60 are the dates Excel shows, 60 raises ValueError, and from 61
    (1900-03-01) on every serial is the real date. Below 1 (a time of day alone) and after
    9999-12-31 raise ValueError.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not an Excel serial number")
    if date1904:  # 0 = 1904-01-01, no missing leap day
        if not 0 <= value < 2_957_004:
            raise ValueError(f"{value!r} is outside Excel's 1904 calendar (0 = 1904-01-01 to 2957003 = 9999-12-31)")
        return datetime.datetime(1904, 1, 1) + datetime.timedelta(seconds=round(value * 86400))
    if not 1 <= value < 2_958_466:
        raise ValueError(f"{value!r} is outside Excel's calendar (1 = 1900-01-01 to 2958465 = 9999-12-31)")
    if 60 <= value < 61:
        raise ValueError(f"{value!r} is 1900-02-29, a day Excel counts that never was")
    base = datetime.datetime(1899, 12, 31) if value < 60 else datetime.datetime(1899, 12, 30)
    try:
        return base + datetime.timedelta(seconds=round(value * 86400))
    except OverflowError:
        raise ValueError(f"{value!r} is outside Excel's calendar") from None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            digest.update(head)
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise InputError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if head.startswith(_OLE_MAGIC):
        raise InputError(f"{path}: an encrypted (password-protected) workbook or an Excel 97-2003 .xls, "
                         "not an XLSX: save it from Excel as an .xlsx without a password")
    if not head:
        raise InputError(f"{path}: empty file, not an XLSX workbook")
    if not head.startswith(b"PK"):
        raise InputError(f"{path}: not an XLSX workbook (not a zip archive)")
    return digest.hexdigest()


def _check_archive(path: str) -> None:
    """Refuse XML parts larger than the limits, from the zip directory alone."""
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{path}: not a readable XLSX workbook (broken or truncated zip: {_reason(exc)})") from None
    for info in infos:
        name = info.filename.lower()
        if not name.endswith((".xml", ".rels")):
            continue  # images and other media are never read
        if name.startswith("xl/worksheets/"):
            limit, what = MAX_SHEET_BYTES, "worksheet"
        elif name == "xl/sharedstrings.xml":
            limit, what = MAX_SHARED_STRINGS_BYTES, "shared-strings table"
        else:
            limit, what = MAX_PART_BYTES, "part"
        if info.file_size > limit:
            raise InputError(f"{path}: {what} {info.filename} unpacks to {info.file_size:,} bytes, "
                             f"over the limit of {limit:,}")


def _pick(path: str, wb: Any, sheet: str | None) -> Any:
    worksheets = {ws.title: ws for ws in wb.worksheets}
    if sheet is None:
        if not worksheets:
            raise InputError(f"{path}: the workbook has no worksheet")
        return next(iter(worksheets.values()))
    if sheet in worksheets:
        return worksheets[sheet]
    folded = [ws for title, ws in worksheets.items() if title.casefold() == sheet.casefold()]
    if len(folded) == 1:  # Excel's sheet names are case-insensitive
        return folded[0]
    if sheet in wb.sheetnames:
        raise InputError(f'{path}: sheet "{sheet}" is a chart, not a worksheet')
    names = ", ".join(f'"{title}"' for title in worksheets)
    raise InputError(f'{path}: no sheet "{sheet}" (sheets: {names}){did_you_mean(sheet, worksheets)}')


def _source(wb: Any, ws: Any) -> _Source:
    from openpyxl.styles.numbers import BUILTIN_FORMATS, BUILTIN_FORMATS_MAX_SIZE, is_datetime

    date_only = set()
    for style_id in wb._date_formats:
        number_format = wb._cell_styles[style_id].numFmtId
        if number_format < BUILTIN_FORMATS_MAX_SIZE:
            text = BUILTIN_FORMATS.get(number_format, "General")
        else:
            text = wb._number_formats[number_format - BUILTIN_FORMATS_MAX_SIZE]
        if is_datetime(text) == "date":
            date_only.add(style_id)
    return _Source(ws._worksheet_path, ws._shared_strings, wb.epoch, frozenset(wb._date_formats),
                   frozenset(date_only), frozenset(wb._timedelta_formats))


def _parsed_rows(path: str, source: _Source) -> Iterator[tuple[int, list[Any]]]:
    """Every row holding a value, as (row number, cells), parsed _BATCH rows at a time."""
    from openpyxl.worksheet._reader import WorkSheetParser

    number = 0
    try:
        archive = zipfile.ZipFile(path)
    except Exception as exc:
        raise InputError(f"{path}: not a readable XLSX workbook ({_reason(exc)})") from None
    with archive, archive.open(source.member) as src:
        parser = WorkSheetParser(src, source.shared_strings, data_only=True, epoch=source.epoch,
                                 date_formats=source.date_styles, timedelta_formats=source.timedelta_styles)
        parsed = parser.parse()
        previous = 0
        while True:
            batch: list[tuple[int, list[Any]]] = []
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    for number, cells in parsed:
                        if number <= previous:  # rows ascend in a sheet; repeats would be endless
                            raise InputError(f"{path}: row {number:,} comes after row {previous:,}")
                        previous = number
                        row = _row(path, number, cells, source)
                        if row:
                            batch.append((number, row))
                        if len(batch) == _BATCH:
                            break
                    else:
                        number = -1
            except InputError:
                raise
            except Exception as exc:
                where = f"after row {number}" if number > 0 else "at its start"
                raise InputError(f"{path}: the sheet cannot be read {where} ({_reason(exc)})") from None
            yield from batch
            if number == -1:
                return


def _row(path: str, number: int, cells: list[dict[str, Any]], source: _Source) -> list[Any]:
    if number > MAX_ROW:
        raise InputError(f"{path}: row {number:,} is beyond Excel's last row ({MAX_ROW:,})")
    values: dict[int, Any] = {}
    for cell in cells:
        value = _value(cell, source.date_only_styles)
        if value is None:
            continue
        column = cell["column"]
        if column > MAX_COLUMN:
            raise InputError(f"{path}: row {number}: column {column:,} is beyond Excel's last column (XFD)")
        if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
            raise InputError(f"{path}: row {number}, column {_letter(column)}: "
                             f"a cell is longer than {MAX_CELL_CHARS:,} characters")
        values[column] = value
    if not values:
        return []
    row: list[Any] = [None] * max(values)
    for column, value in values.items():
        row[column - 1] = value
    return row


def _value(cell: dict[str, Any], date_only_styles: frozenset[int]) -> Any:
    value = cell["value"]
    if value is None or value == "":
        return None
    if cell["data_type"] == "e":
        return CellError(str(value))
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, datetime.datetime):
        value = _to_second(value)
        if cell["style_id"] in date_only_styles and value.time() == datetime.time(0):
            return value.date()
    elif isinstance(value, datetime.time) and value.microsecond:
        moment = _to_second(datetime.datetime.combine(datetime.date(2000, 1, 1), value))
        return moment.time() if moment.day == 1 else datetime.time(23, 59, 59)
    return value


def _to_second(value: datetime.datetime) -> datetime.datetime:
    """Excel stores floating days: 08:30 can come back as 08:29:59.999998."""
    if not value.microsecond:
        return value
    whole = value.replace(microsecond=0)
    if value.microsecond < 500_000:
        return whole
    try:
        return whole + _SECOND
    except OverflowError:
        return whole


def _header_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    return str(value).strip()


def _check_header(path: str, header: list[str]) -> None:
    if any("\x00" in name for name in header):
        raise InputError(f"{path}: header row contains a NUL character")
    names = [name for name in header if name]
    counts = Counter(names)
    twice = next((name for name in names if counts[name] > 1), None)
    if twice is not None:
        raise InputError(f'{path}: column "{twice}" appears twice in the header')


def _letter(column: int) -> str:
    from openpyxl.utils import get_column_letter

    return str(get_column_letter(column))


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
