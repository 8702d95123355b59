"""CSV, JSON and NDJSON readers: records converted to their declared types, bad ones rejected."""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import hashlib
import itertools
import json
import os
import re
import stat
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, BinaryIO, Self

from .errors import InputError, UsageError
from .loader import LONE_SURROGATE
from .model import Field, Record, RecordType, Rejected
from .privacy import REVEAL_ALL, Privacy
from .values import ConversionError, OutOfRange, convert, is_missing, not_a, quote, record_time, text_converter

MAX_LINE = 1024 * 1024  # bytes in one physical line (and one CSV cell); SPEC 5: no hang on huge input
# A CSV row may span lines only through a quoted cell holding line breaks; these bound how far one
# quote may carry it, so that a stray quote cannot swallow the rest of the file into one cell.
MAX_ROW_LINES = 1000
MAX_ROW = 4 * MAX_LINE  # characters (4 MiB of ASCII) in one CSV row spanning lines
_BOM = b"\xef\xbb\xbf"
# Byte-order marks of encodings read as UTF-8 only line by line, each line failing: refused as a file.
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
              (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_FORMATS = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
DISPATCH_KEY = "record_type"


@dataclass
class InputStats:
    """What one input file gave: filled while it is read; sha256 is set once it is read to the end."""

    path: str
    record_type: str | None
    sha256: str = ""
    records_read: int = 0
    records_rejected: int = 0

    @property
    def records_judged(self) -> int:
        return self.records_read - self.records_rejected


def bind_inputs(args: list[str], types: Mapping[str, RecordType]) -> list[tuple[str | None, str]]:
    """``TYPE=PATH`` binds explicitly; else the stem names the type (``sessions.csv``); else None."""
    bound: list[tuple[str | None, str]] = []
    for arg in args:
        prefix, sep, path = arg.partition("=")
        if sep and prefix in types:
            if not path:
                raise UsageError(f'no file after "{arg}"')
            bound.append((prefix, path))
        elif sep and _TYPE_NAME.fullmatch(prefix) and not os.path.isfile(arg):
            raise UsageError(f'unknown record type "{prefix}" in "{arg}"{_did_you_mean(prefix, types)}; '
                             f"known types: {', '.join(sorted(types)) or 'none'}")
        else:
            bound.append((_type_of_stem(arg, types), arg))
    return bound


def _type_of_stem(path: str, types: Mapping[str, RecordType]) -> str | None:
    stem = PurePath(path).stem
    if stem in types:
        return stem
    if stem.endswith("s") and stem[:-1] in types:
        return stem[:-1]
    return None


def _did_you_mean(name: str, choices: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


class Seen:
    """Where each record key was first seen in a run, per record type, to reject duplicates.

    The one piece of reading state that grows with the input: an entry per key, the key string
    and one int packing the file and line (about 100 bytes a record).
    """

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.keys: dict[str, dict[str, int]] = {}

    def first(self, type_name: str, key: str) -> tuple[str, int] | None:
        place = self.keys.get(type_name, {}).get(key)
        return None if place is None else (self.paths[place >> 40], place & ((1 << 40) - 1))

    def add(self, type_name: str, key: str, path: str, line: int) -> None:
        if not self.paths or self.paths[-1] != path:
            self.paths.append(path)
        self.keys.setdefault(type_name, {})[key] = ((len(self.paths) - 1) << 40) | line


def read_input(path: str, record_type: str | None, types: Mapping[str, RecordType], tz: dt.tzinfo,
               seen: Seen, stats: InputStats, privacy: Privacy = REVEAL_ALL) -> Iterator[Record | Rejected]:
    """Stream the records of one file; raises InputError (eagerly for a missing file or format).

    Rejection reasons quote identifying values through ``privacy``.
    """
    _regular_file(path)
    suffix = PurePath(path).suffix.lower()
    if suffix not in _FORMATS:
        shown = f'"{suffix}"' if suffix else "no extension"
        raise InputError(f"{path}: unknown input format ({shown}; expected .csv, .json, .ndjson or .jsonl)")
    if record_type is not None and record_type not in types:
        raise UsageError(f'unknown record type "{record_type}"{_did_you_mean(record_type, types)}')
    handle = _open(path)
    wide = _wide_encoding(handle.read(64))
    if wide:
        handle.close()
        raise InputError(f"{path}: {wide} text; save the export as UTF-8")
    handle.seek(0)
    if _FORMATS[suffix] != "json" and b"\r" in handle.readline(MAX_LINE).rstrip(b"\r\n"):
        # lines ended by CR alone (classic Mac OS) would read as one line: one row, or one bad record
        handle.close()
        raise InputError(f"{path}: lines end in a carriage return alone; save the export with LF or CRLF "
                         "line endings")
    handle.seek(0)
    builder = _Builder(path, record_type, types, tz, seen, stats, privacy)
    readers = {"csv": _read_csv, "json": _read_json, "ndjson": _read_ndjson}
    return readers[_FORMATS[suffix]](handle, builder)


def check_input(path: str) -> tuple[int, int]:
    """Raise InputError unless ``path`` is a regular file this process may read; return the file's
    identity (device, inode), which tells two spellings of one file apart from two files.

    Missing, a directory, a named pipe, a device or a socket, or not readable: each is named. A pipe
    is refused rather than read: reading it could wait for a writer forever, or never end.
    """
    with _open(path) as handle:
        found = os.fstat(handle.fileno())
    return found.st_dev, found.st_ino


def _regular_file(path: str) -> None:
    """Raise InputError unless ``path`` names a regular file (it is not opened: opening a device can act)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _unreadable(path, exc) from None
    _check_mode(path, mode)


def _unreadable(path: str, exc: OSError) -> InputError:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return InputError(f"{path}: no such file")
    if isinstance(exc, PermissionError):
        return InputError(f"{path}: permission denied")
    return InputError(f"{path}: cannot be read ({exc.strerror or exc})")


def _check_mode(path: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "an unknown kind of file")
        raise InputError(f"{path}: not a regular file ({kind})")


def _open(path: str) -> BinaryIO:
    _regular_file(path)
    try:
        # without blocking: a file swapped for a pipe since the check must not hang the open
        fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    handle = os.fdopen(fd, "rb")
    try:
        _check_mode(path, os.fstat(fd).st_mode)  # what was opened: the path may have changed since the check
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        handle.close()
        raise
    return handle


def _wide_encoding(head: bytes) -> str | None:
    """The encoding, UTF-16 or UTF-32, of a file whose first bytes are its byte-order mark, or have
    the NUL bytes ASCII text has between its characters in it; None for any other file."""
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            return name
    sample = head[:len(head) // 4 * 4]
    if not sample:
        return None
    nul = [sample[k::4].count(0) / len(sample[k::4]) for k in range(4)]  # NUL share per position mod 4
    for name, high in (("UTF-32", (1, 2, 3)), ("UTF-32", (0, 1, 2)), ("UTF-16", (1, 3)), ("UTF-16", (0, 2))):
        if all(nul[k] >= 0.75 if k in high else nul[k] <= 0.25 for k in range(4)):
            return name
    return None


class _Builder:
    """Turns one parsed row or object into a Record or a Rejected, counting both."""

    def __init__(self, path: str, record_type: str | None, types: Mapping[str, RecordType], tz: dt.tzinfo,
                 seen: Seen, stats: InputStats, privacy: Privacy = REVEAL_ALL) -> None:
        self.path, self.record_type, self.types, self.tz = path, record_type, types, tz
        self.seen, self.stats, self.privacy = seen, stats, privacy
        self.plans: dict[str, list[tuple[str, Field, Any]]] = {}

    def reject(self, line: int, reason: str, type_name: str | None = None) -> Rejected:
        self.stats.records_read += 1
        self.stats.records_rejected += 1
        return Rejected(type_name or self.record_type or "?", self.path, line, reason)

    def build(self, data: Mapping[str, Any], line: int) -> Record | Rejected:
        name = self.record_type
        if name is None:
            raw = data.get(DISPATCH_KEY)
            if is_missing(raw):
                return self.reject(line, f"{DISPATCH_KEY}: missing record type")
            name = raw.strip() if isinstance(raw, str) else str(raw)
            if name not in self.types:
                return self.reject(line, f'{DISPATCH_KEY}: unknown record type "{name}"'
                                         f"{_did_you_mean(name, self.types)}", "?")
        spec = self.types[name]
        values: dict[str, Any] = {}
        problems: list[str] = []
        tz = self.tz
        plan = self.plans.get(name)
        if plan is None:
            plan = self.plans[name] = [(f.name, f, text_converter(f.type)) for f in spec.fields.values()]
        for field_name, field, from_text in plan:
            raw = data.get(field_name)
            if type(raw) is str:
                text = raw.strip()
                if text:
                    try:
                        values[field_name] = from_text(text, field, tz)
                        continue
                    except ConversionError as exc:
                        problems.append(self._reason(name, exc))
                        continue
                    except (ValueError, TypeError, OverflowError):
                        problems.append(self._reason(name, not_a(field, raw)))
                        continue
            elif raw is not None:
                try:
                    values[field_name] = convert(field, raw, tz)
                except ConversionError as exc:
                    problems.append(self._reason(name, exc))
                continue
            if field_name == spec.key:
                problems.append(f"{field_name}: missing record key")
            elif field_name == spec.patient:
                problems.append(f"{field_name}: missing patient")
        for needed, what in ((spec.key, "record key"), (spec.patient, "patient")):
            if not problems and needed not in values:  # only when the pack did not declare it
                problems.append(f"{needed}: missing {what}")
        when = None
        if not problems:
            try:
                when = record_time(values.get(spec.time), tz)
            except OutOfRange as exc:
                problems.append(self._reason(name, ConversionError(spec.time, str(exc), data.get(spec.time))))
        if problems:
            return self.reject(line, "; ".join(problems), name)
        key = str(values[spec.key])
        first = self.seen.first(name, key)
        if first is not None:
            shown = self.privacy.quoted(name, spec.key, key, lambda text: f'"{text}"')
            return self.reject(line, f"duplicate {spec.key} {shown} (first at {first[0]}:{first[1]})", name)
        self.seen.add(name, key, self.path, line)
        self.stats.records_read += 1
        return Record(name, key, str(values[spec.patient]), when, values, self.path, line)

    def _reason(self, type_name: str, exc: ConversionError) -> str:
        return exc.render(lambda raw: self.privacy.quoted(type_name, exc.field, raw, quote))



class _LineTooLong(Exception):
    """A physical line over MAX_LINE: ``head`` is its first MAX_LINE + 1 bytes, the rest is unread."""

    def __init__(self, head: bytes) -> None:
        super().__init__("line is longer than 1 MiB")
        self.head = head


class _RowTooLong(Exception):
    """A CSV row whose open quote carried it over MAX_ROW_LINES lines or MAX_ROW characters."""


class _Lines:
    """Physical lines of a binary file, bounded in length and hashed as they are read."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.number = 0
        self.digest = hashlib.sha256()
        self.unfinished = False  # the last line was too long, and the rest of it is unread

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        if self.unfinished:
            for _ in self.rest():  # skip the rest without holding it
                pass
        line = self.handle.readline(MAX_LINE + 1)
        if not line:
            raise StopIteration
        self.digest.update(line)
        self.number += 1
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            self.unfinished = True
            raise _LineTooLong(line)
        return line[3:] if self.number == 1 and line.startswith(_BOM) else line

    def rest(self) -> Iterator[bytes]:
        """The rest of a line too long to return, in pieces of at most MAX_LINE bytes; the last ends it."""
        while self.unfinished:
            piece = self.handle.readline(MAX_LINE)
            self.digest.update(piece)
            self.unfinished = bool(piece) and not piece.endswith(b"\n")
            yield piece


class _TextLines(_Lines):
    """Decoded per line so a bad byte is reported at its physical line."""

    def __init__(self, handle: BinaryIO, path: str) -> None:
        super().__init__(handle)
        self.path = path

    def __next__(self) -> str:  # type: ignore[override]
        line = super().__next__()
        try:
            return line.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{self.path}: not UTF-8 (invalid byte at line {self.number})") from None


class _RowLines(_TextLines):
    """The lines csv.reader pulls, kept for the row being read (one line but for a quoted line break),
    and bounded: a row may not span over MAX_ROW_LINES lines or MAX_ROW characters."""

    def __init__(self, handle: BinaryIO, path: str) -> None:
        super().__init__(handle, path)
        self.row: list[str] = []
        self.size = 0
        self.ended = False  # csv.reader asked for a line past the last: a quote was open at the end

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
                text = _TextLines.__next__(self)
            except StopIteration:
                return
            except _LineTooLong as long:
                yield from self.pieces(long)
                continue
            yield self.number, text, True

    def pieces(self, long: _LineTooLong) -> Iterator[tuple[int, str, bool]]:
        yield self.number, long.head.decode("utf-8", "ignore"), False
        for piece in self.rest():
            yield self.number, piece.decode("utf-8", "ignore"), not self.unfinished


# States of _QuoteScan, after those of the C parser of the csv module (Modules/_csv.c).
_START, _IN_FIELD, _IN_QUOTES, _AFTER_QUOTE, _EAT_CRNL = range(5)
_FIELD_END = re.compile(r"[,\r\n]")


class _QuoteScan:
    """Follows csv.reader's reading of one row (the default dialect, not strict) to its end, keeping
    no cell: where a row csv.reader gave up on really ends, and which line opened a quote."""

    def __init__(self) -> None:
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
                found = _FIELD_END.search(text, pos)
                if found is None:
                    break
                pos = found.end()
                state = _START if found.group() == "," else _EAT_CRNL
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
                elif char == ",":
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


def _scan(lines: list[str], start: int) -> _QuoteScan:
    scan = _QuoteScan()
    for number, text in enumerate(lines, start):
        scan.feed(text, number, True)
    return scan


def _read_csv(handle: BinaryIO, builder: _Builder) -> Iterator[Record | Rejected]:
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
        lines = _RowLines(handle, path)
        reader = csv.reader(lines)
        header: list[str] | None = None
        while True:
            start = lines.start_row()
            try:
                row = next(reader)
            except StopIteration:
                break
            except (csv.Error, _LineTooLong, _RowTooLong) as exc:
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
                header = _header(row, path, builder.record_type)
            elif len(row) != len(header):
                yield builder.reject(start, f"row has {len(row)} cells, header has {len(header)}")
            elif "\x00" in "".join(row):
                yield builder.reject(start, "row contains a NUL byte")
            else:
                yield builder.build(dict(zip(header, row)), start)
        builder.stats.sha256 = lines.digest.hexdigest()


def _spanning_problem(row: list[str], header: list[str] | None, lines: _RowLines, start: int) -> str:
    """Why a row read over several lines is not one record ("" if it is one)."""
    scan = _scan(lines.row, start)
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
        return _still_open(_scan(lines.row, start).opened, lines.number)
    if isinstance(exc, _LineTooLong) and lines.number != start:
        return f"line {lines.number} is longer than 1 MiB"
    return _csv_reason(exc)


def _still_open(opened: int, line: int) -> str:
    return (f"a quote opened at line {opened} is still open at line {line} "
            f"(a row may span {MAX_ROW_LINES:,} lines and 4 MiB)")


def _reject_broken_row(exc: Exception, lines: _RowLines, start: int, builder: _Builder) -> Iterator[Rejected]:
    """A row csv.reader gave up on (a cell over 1 MiB, a line over 1 MiB, a row spanning too much, bad
    CSV), followed to where the file's quoting ends it: csv.reader would go on from the next line
    as if it started a row, inside the cell.

    A row that ends is one rejected record. A quote never closed, or open past the bounds, gets
    each of its physical lines rejected (blank ones aside): rows it swallowed are counted, not lost.
    """
    reason = _broken_reason(exc, lines, start)
    scan = _QuoteScan()
    held: list[int] = []  # the row's lines with something on them, until it is known how to reject them
    counted = 0  # the last of them: a long line comes in pieces
    size = 0
    streaming = ""  # past the bounds: the reason each further line is rejected with, as it is read
    pieces: Iterator[tuple[int, str, bool]] = ((n, text, True) for n, text in enumerate(lines.row, start))
    if isinstance(exc, _LineTooLong):
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
    return text if isinstance(exc, _LineTooLong) else f"not valid CSV ({text.split(' - ')[0]})"


def _header(row: list[str], path: str, record_type: str | None) -> list[str]:
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


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class _Duplicated(dict[str, Any]):
    """A JSON object in which ``key`` appears more than once (json keeps the last value, silently)."""

    __slots__ = ("key",)

    def __init__(self, pairs: list[tuple[str, Any]], key: str) -> None:
        super().__init__(pairs)
        self.key = key


class _Objects:
    """The object_pairs_hook of a reader: builds each JSON object, and notes the first key seen twice
    in one object (None if none was) since ``_loads`` began. Holds the reader's decoder: json.loads
    with any option builds a new one per call, which cost more than the hook does."""

    def __init__(self) -> None:
        self.duplicated: str | None = None
        self.decode = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=self).decode

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(pairs)
        if len(made) == len(pairs):
            return made
        keys: set[str] = set()
        for key, _ in pairs:
            if key in keys:
                break
            keys.add(key)
        if self.duplicated is None:
            self.duplicated = key
        return _Duplicated(pairs, key)


def _duplicated_key(value: Any) -> str | None:
    """The duplicated key of the first object in ``value`` (at any depth) that has one."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Duplicated):
            return item.key
        if isinstance(item, dict):
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return None


def _loads(text: str, objects: _Objects) -> Any:
    if text.startswith("\ufeff"):  # as json.loads says it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    objects.duplicated = None
    value = objects.decode(text)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):  # rare: only then walk the value
        raise ValueError("a lone surrogate escape (\\ud800-\\udfff) is not a character")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a string with a lone surrogate (a pair decodes to one character)."""
    if isinstance(value, str):
        return LONE_SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _json_problem(exc: Exception, one_line: bool = False) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        where = f"column {exc.colno}" if one_line else f"line {exc.lineno} column {exc.colno}"
        return f"not valid JSON ({exc.msg} at {where})"
    return f"not valid JSON ({str(exc).split(':')[0]})"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number")


def _read_json(handle: BinaryIO, builder: _Builder) -> Iterator[Record | Rejected]:
    path = builder.path
    with handle:
        data = handle.read()
    digest = hashlib.sha256(data).hexdigest()
    data = data[3:] if data.startswith(_BOM) else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}: not UTF-8 (invalid byte at line {line})") from None
    objects = _Objects()
    try:
        doc = _loads(text, objects)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: {_json_problem(exc)}") from None
    del text, data
    duplicates = objects.duplicated is not None  # rare: only then look for the objects that have them
    if isinstance(doc, _Duplicated):
        raise InputError(f"{path}: duplicate key {quote(doc.key)} in the top-level object")
    if isinstance(doc, dict) and isinstance(doc.get("records"), list):
        doc = doc["records"]
    if not isinstance(doc, list):
        raise InputError(f'{path}: expected an array of objects or {{"records": [...]}}, got {_kind(doc)}')
    for position, item in enumerate(doc, 1):
        if not isinstance(item, dict):
            yield builder.reject(position, f"expected a JSON object, got {_kind(item)}")
        elif duplicates and (key := _duplicated_key(item)) is not None:
            yield builder.reject(position, f"duplicate key {quote(key)}")
        else:
            yield builder.build(item, position)
    builder.stats.sha256 = digest


def _read_ndjson(handle: BinaryIO, builder: _Builder) -> Iterator[Record | Rejected]:
    objects = _Objects()
    with handle:
        lines = _Lines(handle)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except _LineTooLong as exc:
                yield builder.reject(lines.number, str(exc))
                continue
            if not line.strip():
                continue
            if b"\x00" in line:
                yield builder.reject(lines.number, "line contains a NUL byte")
                continue
            try:
                item = _loads(line.decode("utf-8").rstrip("\r\n"), objects)
            except UnicodeDecodeError as exc:
                yield builder.reject(lines.number, f"not UTF-8 (invalid byte at column {exc.start + 1})")
                continue
            except (ValueError, RecursionError) as exc:
                yield builder.reject(lines.number, _json_problem(exc, one_line=True))
                continue
            if not isinstance(item, dict):
                yield builder.reject(lines.number, f"expected a JSON object, got {_kind(item)}")
            elif objects.duplicated is not None:
                yield builder.reject(lines.number, f"duplicate key {quote(objects.duplicated)}")
            else:
                yield builder.build(item, lines.number)
        builder.stats.sha256 = lines.digest.hexdigest()
