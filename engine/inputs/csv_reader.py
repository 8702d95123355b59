"""CSV exports, read row by row with every physical line accounted for: a quote left open rejects
each row it swallowed at its own line, never loses it."""

from __future__ import annotations

import csv
import itertools
import re
from collections import Counter
from collections.abc import Iterator
from typing import BinaryIO

from engine.errors import InputError
from engine.inputs.builder import DISPATCH_KEY, RecordBuilder
from engine.inputs.files import MAX_LINE, LineTooLong, TextLines
from engine.language.model import Record, Rejected

# A CSV row may span lines only through a quoted cell holding line breaks; these bound how far one
# quote may carry it, so that a stray quote cannot swallow the rest of the file into one cell.
MAX_ROW_LINES = 1000
MAX_ROW = 4 * MAX_LINE  # characters (4 MiB of ASCII) in one CSV row spanning lines


class _RowTooLong(Exception):
    """A CSV row whose open quote carried it over MAX_ROW_LINES lines or MAX_ROW characters."""


class _RowLines(TextLines):
    """The lines csv.reader pulls, kept for the row being read (one line but for a quoted line break),
    and bounded: a row may not span over MAX_ROW_LINES lines or MAX_ROW characters."""

    def __init__(self, handle: BinaryIO, path: str, encoding: str = "utf-8") -> None:
        super().__init__(handle, path, encoding)
        self.row: list[str] = []
        self.size = 0
        self.ended = False  # csv.reader asked for a line past the last: a quote was open at the end
        self.delimiter = ","

    def start_row(self) -> int:
        """Start keeping the next row's lines; the number of its first line."""
        self.row = []
        self.size = 0
        return self.number + 1

    def __next__(self) -> str:  # type: ignore[override]
        if len(self.row) >= MAX_ROW_LINES or self.size > MAX_ROW:
            raise _RowTooLong
        try:
            line = super().__next__()
        except StopIteration:
            self.ended = True
            raise
        self.row.append(line)
        self.size += len(line)
        return line

    def following(self) -> Iterator[tuple[int, str, bool]]:
        """The lines after those csv.reader pulled, unbounded, as (line number, text, ends the line):
        a line too long to hold comes in pieces, decoded only to be scanned for quotes and commas."""
        while True:
            try:
                text = TextLines.__next__(self)
            except StopIteration:
                return
            except LineTooLong as long:
                yield from self.pieces(long)
                continue
            yield self.number, text, True

    def pieces(self, long: LineTooLong) -> Iterator[tuple[int, str, bool]]:
        yield self.number, long.head.decode("utf-8", "ignore"), False
        for piece in self.rest():
            yield self.number, piece.decode("utf-8", "ignore"), not self.unfinished


# States of _QuoteScan, after those of the C parser of the csv module (Modules/_csv.c).
_START, _IN_FIELD, _IN_QUOTES, _AFTER_QUOTE, _EAT_CRNL = range(5)


class _QuoteScan:
    """Follows csv.reader's reading of one row (the default dialect, not strict) to its end, keeping
    no cell: where a row csv.reader gave up on really ends, and which line opened a quote."""

    def __init__(self, delimiter: str = ",") -> None:
        self.delimiter = delimiter
        self.field_end = re.compile(f"[{re.escape(delimiter)}\r\n]")
        self.state = _START
        self.opened = 0    # the line of the quote that opened the last quoted cell
        self.spanning = 0  # the line of the first quote left open at the end of a line

    def feed(self, text: str, line: int, end_of_line: bool) -> bool:
        """Read a physical line (or a piece of a long one); whether the row ends in it."""
        state, pos, size = self.state, 0, len(text)
        while pos < size:
            if state == _IN_QUOTES:
                pos = text.find('"', pos) + 1
                if not pos:
                    break
                state = _AFTER_QUOTE
            elif state == _IN_FIELD:
                found = self.field_end.search(text, pos)
                if found is None:
                    break
                pos = found.end()
                state = _START if found.group() == self.delimiter else _EAT_CRNL
            else:
                char = text[pos]
                pos += 1
                if state == _EAT_CRNL:
                    if char not in "\r\n":  # csv.Error "new-line character seen in unquoted field"
                        self.state = _START  # ends the row; the rest of the line is dropped
                        return True
                elif char == '"':  # after a quote, "" is a quote inside the cell
                    if state == _START:
                        self.opened = line
                    state = _IN_QUOTES
                elif char == self.delimiter:
                    state = _START
                elif char in "\r\n":
                    state = _EAT_CRNL
                else:  # after a closing quote the cell goes on unquoted, as csv does when not strict
                    state = _IN_FIELD
        if end_of_line and state != _IN_QUOTES:
            self.state = _START
            return True
        if end_of_line and not self.spanning:
            self.spanning = self.opened
        self.state = state
        return False


def _scan(lines: list[str], start: int, delimiter: str) -> _QuoteScan:
    scan = _QuoteScan(delimiter)
    for number, text in enumerate(lines, start):
        scan.feed(text, number, True)
    return scan


def read_csv(handle: BinaryIO, builder: RecordBuilder, encoding: str = "utf-8",
             delimiter: str = ",") -> Iterator[Record | Rejected]:
    """CSV rows, each at the physical line it starts on.

    A row spans lines only through a quoted cell holding a line break, and that is accepted when
    the quote closes within MAX_ROW_LINES lines and the row has the header's cells. A quote that is
    never closed, closes too far, or leaves a row of the wrong shape is most likely a stray one that
    swallowed the rows after it: each of its physical lines is rejected, with its own number, so
    records read stays the count of rows in the file and nothing vanishes into a cell.
    """
    csv.field_size_limit(MAX_LINE)
    path = builder.path
    with handle:
        lines = _RowLines(handle, path, encoding)
        lines.delimiter = delimiter
        reader = csv.reader(lines, delimiter=delimiter)
        header: list[str] | None = None
        while True:
            start = lines.start_row()
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, LineTooLong, _RowTooLong) as exc:
                if header is None:
                    raise InputError(f"{path}: header row: {_broken_reason(exc, lines, start)}") from None
                yield from _reject_broken_row(exc, lines, start, builder)
                continue
            if len(lines.row) > 1 or lines.ended:  # a quoted cell with a line break, or a quote left open
                reason = _spanning_problem(row, header, lines, start)
                if reason and header is None:
                    raise InputError(f"{path}: header row: {reason}")
                if reason:
                    for number, text in enumerate(lines.row, start):
                        if text.strip():
                            yield builder.reject(number, reason)
                    continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                header = csv_header(row, path, builder.record_type)
            elif len(row) != len(header):
                yield builder.reject(start, f"row has {len(row)} cells, header has {len(header)}",
                                     data=dict(zip(header, row)))
            elif "\x00" in "".join(row):
                yield builder.reject(start, "row contains a NUL byte")
            else:
                yield builder.build(dict(zip(header, row)), start)
        builder.stats.sha256 = lines.digest.hexdigest()


def _spanning_problem(row: list[str], header: list[str] | None, lines: _RowLines, start: int) -> str:
    """Why a row read over several lines is not one record ("" if it is one)."""
    scan = _scan(lines.row, start, lines.delimiter)
    if lines.ended:
        return f"an opening quote at line {scan.opened} is never closed"
    if header is None:
        return (f"a quote opened at line {scan.spanning} closes at line {lines.number}; "
                f"a column name cannot hold a line break")
    if len(row) != len(header):
        return (f"a quote opened at line {scan.spanning} closes at line {lines.number}: "
                f"the row has {len(row)} cells, header has {len(header)}")
    return ""


def _broken_reason(exc: Exception, lines: _RowLines, start: int) -> str:
    if isinstance(exc, _RowTooLong):
        return _still_open(_scan(lines.row, start, lines.delimiter).opened, lines.number)
    if isinstance(exc, LineTooLong) and lines.number != start:
        return f"line {lines.number} is longer than 1 MiB"
    return _csv_reason(exc)


def _still_open(opened: int, line: int) -> str:
    return (f"a quote opened at line {opened} is still open at line {line} "
            f"(a row may span {MAX_ROW_LINES:,} lines and 4 MiB)")


def _reject_broken_row(exc: Exception, lines: _RowLines, start: int, builder: RecordBuilder) -> Iterator[Rejected]:
    """A row csv.reader gave up on (a cell over 1 MiB, a line over 1 MiB, a row spanning too much, bad
    CSV), followed to where the file's quoting ends it: csv.reader would go on from the next line
    as if it started a row, inside the cell.

    A row that ends is one rejected record. A quote never closed, or open past the bounds, gets
    each of its physical lines rejected (blank ones aside): rows it swallowed are counted, not lost.
    """
    reason = _broken_reason(exc, lines, start)
    scan = _QuoteScan(lines.delimiter)
    held: list[int] = []  # the row's lines with something on them, until it is known how to reject them
    counted = 0  # the last of them: a long line comes in pieces
    size = 0
    streaming = ""  # past the bounds: the reason each further line is rejected with, as it is read
    pieces: Iterator[tuple[int, str, bool]] = ((n, text, True) for n, text in enumerate(lines.row, start))
    if isinstance(exc, LineTooLong):
        pieces = itertools.chain(pieces, lines.pieces(exc))
    for number, text, end_of_line in itertools.chain(pieces, lines.following()):
        if number != counted and text.strip():
            counted = number
            if streaming:
                yield builder.reject(number, streaming)
            else:
                held.append(number)
        if scan.feed(text, number, end_of_line):
            break
        size += len(text)
        if not streaming and ((end_of_line and number - start + 1 >= MAX_ROW_LINES) or size > MAX_ROW):
            streaming = _still_open(scan.opened, number)
            for line in held:
                yield builder.reject(line, streaming)
            held = []
    else:  # the end of the file, inside a quoted cell
        for line in held:
            yield builder.reject(line, f"an opening quote at line {scan.opened} is never closed")
        return
    if not streaming:
        yield builder.reject(start, reason)


def _csv_reason(exc: Exception) -> str:
    text = str(exc)
    if "field limit" in text:
        return "a cell is longer than 1 MiB"
    return text if isinstance(exc, LineTooLong) else f"not valid CSV ({text.split(' - ')[0]})"


def csv_header(row: list[str], path: str, record_type: str | None) -> list[str]:
    header = [cell.strip() for cell in row]
    if any("\x00" in cell for cell in header):
        raise InputError(f"{path}: header row contains a NUL byte")
    names = [name for name in header if name]
    counts = Counter(names)  # one pass: a header may have 100,000 columns
    twice = next((name for name in names if counts[name] > 1), None)
    if twice is not None:
        raise InputError(f'{path}: column "{twice}" appears twice in the header')
    if record_type is None and DISPATCH_KEY not in names:
        raise InputError(f"{path}: no record type: name the file after a type (sessions.csv), "
                         f"bind it as TYPE={path}, or add a {DISPATCH_KEY} column")
    return header
