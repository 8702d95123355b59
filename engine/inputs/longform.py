"""Long (flowsheet) exports: one row per measurement, gathered into one record per key (SPEC 8).
Each row's ``name`` column names the measurement its ``value`` column holds; the group's first row
gives the other columns and the record's line. A record is rejected, naming the lines, when one
name has two different values, a name is also a column of the export, a row has a value but no
name, or one of its rows could not be read (a row with a cell too many)."""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from engine.inputs.builder import RecordBuilder
from engine.inputs.files import BOM, open_input
from engine.inputs.maps import MapEntry
from engine.language.model import Record, Rejected


def _plain(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


class _Group:
    """One record being gathered: its first row (the other columns), its measurements by name with
    the line each came from, and the first problem that rejects it."""

    __slots__ = ("line", "first", "values", "problem")

    def __init__(self, line: int, first: tuple[Any, ...]) -> None:
        self.line, self.first = line, first
        self.values: dict[str, tuple[int, Any]] = {}
        self.problem = ""


class _Gatherer:
    """Stands in for a RecordBuilder under a row reader: keeps each row's measurement in its group.

    About 150 bytes a row (a flowsheet is gathered whole before its records are made): the first
    row of a group is kept as a tuple, each further row as its name (shared) and value only.
    """

    def __init__(self, path: str, entry: MapEntry, builder: RecordBuilder) -> None:
        assert entry.long is not None
        self.builder, self.long = builder, entry.long
        self.path, self.record_type = path, entry.type
        self.stats = builder.stats
        self.markers = frozenset(entry.missing)
        self.groups: dict[tuple[Any, ...], _Group] = {}
        self.columns: list[str] | None = None
        self.rows = 0

    def build(self, data: Mapping[str, Any], line: int) -> None:
        self.rows += 1
        group = self._group(data, line)
        name = _plain(data.get(self.long.name))
        value = data.get(self.long.value)
        present = _plain(value) not in (None, "") and _plain(value) not in self.markers
        if group.problem or not (name or present):
            return
        if not name:
            group.problem = f"line {line} has a value but no measurement name"
        elif name in data and name not in (self.long.name, self.long.value):
            group.problem = f'measurement "{name}" (line {line}) is also a column of the export'
        elif present:
            name = sys.intern(str(name))
            seen = group.values.get(name)
            if seen is None:
                group.values[name] = (line, value)
            elif _plain(seen[1]) != _plain(value):
                group.problem = f'measurement "{name}" has two different values (lines {seen[0]} and {line})'

    def _group(self, data: Mapping[str, Any], line: int) -> _Group:
        key = tuple([value.strip() if type(value) is str else value for value in map(data.get, self.long.key)])
        group = self.groups.get(key)
        if group is None:
            if self.columns is None:
                self.columns = list(data)
            group = self.groups[key] = _Group(line, tuple(data.values()))
        return group

    def reject(self, line: int, reason: str, type_name: str | None = None,
               data: Mapping[str, Any] | None = None) -> Rejected:
        """A row the reader could not read as a row: rejected itself, and, when its cells still name
        a record (a row with a cell too many), that record with it: judged without the row, it
        could fail for a measurement the export does have."""
        self.rows += 1
        if data is not None:
            group = self._group(data, line)
            group.problem = group.problem or f"line {line} of this record was rejected ({reason})"
        return self.builder.reject(line, reason, type_name)


def _rows(binding: Any, entry: MapEntry, gatherer: _Gatherer) -> Iterator[Any]:
    from engine.inputs.csv_reader import read_csv
    from engine.inputs.sources import read_xlsx

    if binding.format == "xlsx":
        return read_xlsx(binding.path, entry.sheet, gatherer)  # type: ignore[arg-type]
    return read_csv(open_input(binding.path), gatherer, entry.encoding, entry.delimiter)  # type: ignore[arg-type]


def measurement_names(binding: Any, entry: MapEntry) -> set[str]:
    """The measurement names a flowsheet's rows hold (its header, for the column check): one pass
    over the name column, keeping only the distinct names (the rows are read, and accounted for,
    when the records are)."""
    assert entry.long is not None
    if binding.format == "xlsx":
        from engine.inputs.xlsx_reader import open_sheet

        sheet = open_sheet(binding.path, entry.sheet)
        return _names(sheet.header, (cells for _, cells in sheet.rows()), entry.long.name)
    with open_input(binding.path) as handle:
        if handle.read(len(BOM)) != BOM:  # a UTF-8 mark, whatever the encoding (as the reader skips it)
            handle.seek(0)
        text = io.TextIOWrapper(handle, encoding=entry.encoding, errors="replace", newline="")
        reader = csv.reader(text, delimiter=entry.delimiter)
        header = next((row for row in reader if any(cell.strip() for cell in row)), [])
        return _names([cell.strip() for cell in header], reader, entry.long.name)


def _names(header: list[str], rows: Iterator[list[Any]], name: str) -> set[str]:
    if name not in header:
        return set()
    at = header.index(name)
    names: set[str] = set()
    try:
        for row in rows:
            if len(row) > at and row[at] is not None:
                names.add(str(row[at]).strip())
    except csv.Error:
        pass  # a broken row: the reader rejects it, and the rows it swallowed, when the records are read
    names.discard("")
    return names


def read_long(binding: Any, entry: MapEntry, builder: RecordBuilder) -> Iterator[Record | Rejected]:
    """The file's rows gathered by key, each group one record at its first row's line."""
    assert entry.long is not None
    gatherer = _Gatherer(binding.path, entry, builder)
    for item in _rows(binding, entry, gatherer):
        if item is not None:
            yield item  # a row the reader rejected (bad CSV, wrong number of cells)
    builder.stats.rows_read = gatherer.rows
    drop = (entry.long.name, entry.long.value)
    columns = gatherer.columns or []
    for group in gatherer.groups.values():
        if group.problem:
            yield builder.reject(group.line, group.problem)
            continue
        record = {column: value for column, value in zip(columns, group.first) if column not in drop}
        record.update((name, value) for name, (_, value) in group.values.items())
        yield builder.build(record, group.line)
