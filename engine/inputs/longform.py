"""Long (flowsheet) exports: one row per measurement, gathered into one record per key (SPEC 8).
Each row's ``name`` column names the measurement its ``value`` column holds; the group's first row
gives the other columns and the record's line; one name with two different values rejects it."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping
from typing import Any

from engine.inputs.builder import InputStats, RecordBuilder
from engine.inputs.files import open_input
from engine.inputs.maps import MapEntry
from engine.language.model import Record, Rejected


class _Gatherer:
    """Stands in for a RecordBuilder under a row reader: keeps each row for its group."""

    def __init__(self, path: str, entry: MapEntry, builder: RecordBuilder | None) -> None:
        assert entry.long is not None
        self.builder, self.long = builder, entry.long
        self.path, self.record_type = path, entry.type
        self.stats = builder.stats if builder is not None else InputStats(path, entry.type)
        self.groups: dict[tuple[Any, ...], list[tuple[int, Mapping[str, Any]]]] = {}
        self.rows = 0

    def build(self, data: Mapping[str, Any], line: int) -> None:
        self.rows += 1
        key = tuple([value.strip() if type(value) is str else value for value in map(data.get, self.long.key)])
        group = self.groups.get(key)
        if group is None:
            self.groups[key] = [(line, data)]
        else:
            group.append((line, data))

    def reject(self, line: int, reason: str, type_name: str | None = None) -> Rejected:
        self.rows += 1
        if self.builder is None:  # only looking for the measurement names
            return Rejected(self.record_type, self.path, line, reason)
        return self.builder.reject(line, reason, type_name)


def _plain(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _rows(binding: Any, entry: MapEntry, gatherer: _Gatherer) -> Iterator[Any]:
    from engine.inputs.csv_reader import read_csv
    from engine.inputs.files import open_input
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
        text = io.TextIOWrapper(handle, encoding=entry.encoding, errors="replace", newline="")
        reader = csv.reader(text, delimiter=entry.delimiter)
        header = next((row for row in reader if any(cell.strip() for cell in row)), [])
        return _names([cell.strip().lstrip("\ufeff") for cell in header], reader, entry.long.name)


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
    name_column, value_column = entry.long.name, entry.long.value
    for rows in gatherer.groups.values():
        first_line, first = rows[0]
        record = {column: value for column, value in first.items() if column not in (name_column, value_column)}
        where: dict[str, int] = {}
        conflict = ""
        for line, data in rows:
            name = _plain(data.get(name_column))
            if name in (None, ""):
                continue
            value = data.get(value_column)
            name = str(name)
            if name in where and _plain(record[name]) != _plain(value):
                conflict = (f'measurement "{name}" has two different values (lines {where[name]} and {line})')
                break
            if name not in where:
                where[name], record[name] = line, value
        if conflict:
            yield builder.reject(first_line, conflict)
        else:
            yield builder.build(record, first_line)
