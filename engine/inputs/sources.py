"""Inputs opened before anything is judged: each file bound to a record type (and to the source map
entry that reads it), its header known, and every field the rules read found in it (SPEC 8: a
column that is not there stops the run); then read as a stream of records or rejections."""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import fnmatch
import itertools
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from engine.errors import InputError, MissingColumns, UsageError
from engine.inputs.builder import DISPATCH_KEY, InputStats, MappedBuilder, RecordBuilder, Seen
from engine.inputs.cells import CellReader
from engine.inputs.csv_reader import csv_header
from engine.inputs.files import BOM, MAX_LINE, open_input
from engine.inputs.maps import MapEntry, SourceMap
from engine.inputs.records import FORMATS, bind_inputs, check_format, open_text, read_input
from engine.language.model import Record, RecordType, Rejected
from engine.language.values import timezone
from engine.privacy import REVEAL_ALL, Privacy

_EXTENSIONS = {**FORMATS, ".xlsx": "xlsx"}
_HEADER_LINES = 1000  # lines searched for a CSV header (a quoted line break may carry it over several)


@dataclass(frozen=True)
class Binding:
    """An input file, the record type it holds (None: a record_type column says, row by row) and the
    map entry that reads it (None: read as SPEC section 2 says)."""

    type: str | None
    path: str
    entry: MapEntry | None = None
    unread: bool = False  # FHIR resources no map entry reads (Patient.ndjson of a bulk export): counted, skipped

    @property
    def format(self) -> str:
        if self.entry is not None and self.entry.format is not None:
            return self.entry.format
        return _EXTENSIONS.get(PurePath(self.path).suffix.lower(), "")


def bind(args: list[str], types: Mapping[str, RecordType], maps: list[SourceMap]) -> list[Binding]:
    """Each argument's bindings: to the map entries whose ``files`` match its base name (of its
    ``TYPE=``'s type when given), else as ``bind_inputs`` binds it. A file may feed several entries;
    a map file among the arguments (``export/*`` with the map in the folder) is not an input."""
    entries = [entry for source in maps for entry in source.entries]
    map_files = {os.path.realpath(source.path) for source in maps}
    args = [arg for arg in args if os.path.realpath(arg) not in map_files]  # a glob of the export's folder
    plain = bind_inputs(args, types)
    bound: list[Binding] = []
    for arg, (type_name, path) in zip(args, plain):
        explicit = type_name if arg.partition("=")[0] == type_name and "=" in arg else None
        name = PurePath(path).name
        matching = [e for e in entries if e.files is not None and fnmatch.fnmatchcase(name, e.files)
                    and (explicit is None or e.type == explicit)]
        if not matching and explicit is not None:  # TYPE=FILE binds to the type's entry whatever its files:
            matching = [e for e in entries if e.type == explicit]
            if len(matching) > 1:
                raise UsageError(f"{arg}: {len(matching)} map entries read {explicit} records and none of their "
                                 f"files: matches {name}; rename the file or give the entries files: that tell "
                                 "them apart")
        if matching:
            bound.extend(Binding(e.type, path, e) for e in matching)
        elif type_name is None and any(e.format == "fhir" for e in entries) and \
                PurePath(path).suffix.lower() in (".ndjson", ".jsonl", ".json"):
            bound.append(Binding(None, path, unread=True))
        else:
            bound.append(Binding(type_name, path))
    return bound


def header_of(binding: Binding) -> list[str]:
    """The columns a file offers: a CSV's header row, the keys of a JSON or NDJSON file's objects,
    an XLSX sheet's first row, a FHIR view's columns; a long (flowsheet) entry adds the measurement
    names its rows hold."""
    entry, fmt = binding.entry, binding.format
    if binding.unread:
        return []
    if entry is not None and entry.long is not None and fmt not in ("csv", "xlsx"):
        raise InputError(f"{binding.path}: long: gathers the rows of a CSV or XLSX flowsheet, and this file is "
                         f"{fmt or 'of an unknown format'}")
    if fmt == "fhir":
        assert entry is not None and entry.view is not None
        return [column.name for column in entry.view.columns]
    if fmt == "xlsx":
        from engine.inputs.xlsx_reader import open_sheet

        header = list(open_sheet(binding.path, entry.sheet if entry else None).header)
    elif fmt in ("csv", "json", "ndjson"):
        if entry is None:
            check_format(binding.path)
        open_text(binding.path, fmt).close()  # a UTF-16 file or CR line ends: said as the reader says them
        header = _csv_header(binding) if fmt == "csv" else _json_keys(binding.path, fmt)
    else:
        check_format(binding.path)  # raises: the format is not known
        return []
    if entry is not None and entry.long is not None:
        header = header + sorted(_long_names(binding, entry))
    return header


def _csv_header(binding: Binding) -> list[str]:
    entry = binding.entry
    encoding, delimiter = (entry.encoding, entry.delimiter) if entry else ("utf-8", ",")
    with open_input(binding.path) as handle:
        head = handle.read(MAX_LINE * 4)
    text = head.removeprefix(BOM).decode(encoding, "replace")  # a UTF-8 mark, whatever the encoding
    try:
        for row in itertools.islice(csv.reader(text.splitlines(), delimiter=delimiter), _HEADER_LINES):
            if row and any(cell.strip() for cell in row):
                return csv_header(row, binding.path, binding.type)
    except csv.Error:
        pass  # the reader says what is wrong with the header row
    return []


def _json_keys(path: str, fmt: str) -> list[str]:
    """The union of the keys of a JSON or NDJSON file's objects, in order of first appearance (lines
    that do not parse are the reader's to reject)."""
    keys: dict[str, None] = {}
    with open_input(path) as handle:
        if fmt == "json":
            try:
                doc = json.loads(handle.read().decode("utf-8-sig"))
            except (ValueError, RecursionError):
                return []  # the reader says why, as before
            items = doc.get("records") if isinstance(doc, dict) else doc
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict):
                    keys.update(dict.fromkeys(item))
            return list(keys)
        for line in handle:
            if len(line) > MAX_LINE:
                continue
            try:
                item = json.loads(line)
            except (ValueError, RecursionError):
                continue
            if isinstance(item, dict):
                keys.update(dict.fromkeys(item))
    return list(keys)


def _long_names(binding: Binding, entry: MapEntry) -> set[str]:
    from engine.inputs.longform import measurement_names

    return measurement_names(binding, entry)


def check_columns(bindings: list[Binding], needed: Mapping[str, Mapping[str, str]],
                  headers: Mapping[int, list[str]]) -> None:
    """Raise InputError naming every field some rule reads that a file's header does not provide
    (and that its map entry does not list under ``absent``): a renamed column must never look like
    missing care (SPEC 8)."""
    problems: list[str] = []
    for index, binding in enumerate(bindings):
        header = headers.get(index)
        if not header or binding.type is None:
            continue  # a file whose rows name their types: each row is checked as it is read
        present = set(header)
        entry = binding.entry
        if entry is not None and entry.long is not None:  # the flowsheet's own columns, whatever the rules read
            long = entry.long
            for column, role in [*((c, "a key") for c in long.key), (long.name, "the name"), (long.value, "the value")]:
                if column not in present:
                    hint = _closest_hint(column, header)
                    problems.append(f'{binding.path}: long: {role} column "{column}" is not in the header{hint}')
        wanted = {name: looked_for(entry, name) for name in needed.get(binding.type, {})
                  if entry is None or name not in entry.absent}
        # No column the rules read in the first row: it may be a data row (no header), whose cells
        # must not be quoted back as "closest header names".
        named = any(column in present for columns in wanted.values() for column in columns)
        lines = len(problems)
        for name, columns in wanted.items():
            lacking = [column for column in columns if column not in present]
            if lacking:
                hint = _closest_hint(lacking[0], header) if named else ""
                why = needed[binding.type][name]
                problems.append(f'{binding.path}: field {name} ({why}) has no column "{lacking[0]}"{hint}')
        if not named and len(problems) > lines:
            problems.append(f"{binding.path}: its first row has none of the columns the rules read: if the file has "
                            "no header row, add one; `protocol-audit inspect` shows the header it has")
    if problems:
        count = f"{len(problems)} field{'s' if len(problems) != 1 else ''} the rules read"
        raise MissingColumns(problems, f"{count} not in the export; nothing was judged: name the columns in a "
                                       "source map (--map, columns: field: \"Header Name\"), or list a field the "
                                       "export does not have under absent:")


def looked_for(entry: MapEntry | None, name: str) -> tuple[str, ...]:
    """The columns field ``name`` is read from: its map entry's, else its own name."""
    spec = entry.spec(name) if entry is not None else None
    return spec.columns if spec is not None else (name,)


def _closest_hint(column: str, header: list[str]) -> str:
    close = closest_columns(column, header)
    return f"; closest header names: {', '.join(repr(c) for c in close)}" if close else ""


def closest_columns(name: str, header: list[str]) -> list[str]:
    """Up to three header names like ``name`` (as written in the file), case aside if need be."""
    close = difflib.get_close_matches(name, header, n=3, cutoff=0.6)
    if close:
        return close
    lowered = {column.lower(): column for column in reversed(header)}
    return [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)]


def read_binding(binding: Binding, types: Mapping[str, RecordType], tz: dt.tzinfo, seen: Seen,
                 stats: InputStats, privacy: Privacy = REVEAL_ALL) -> Iterator[Record | Rejected]:
    """Stream the records of one bound file (through its map entry when it has one)."""
    if binding.unread:
        return _skip_resources(binding.path, stats)
    if binding.entry is None:
        return read_input(binding.path, binding.type, types, tz, seen, stats, privacy)
    return read_with(binding, builder_for(binding, types, tz, seen, stats, privacy))


def _skip_resources(path: str, stats: InputStats) -> Iterator[Record | Rejected]:
    """A FHIR file of resource types no map entry reads: each resource counted as skipped."""
    from engine.inputs.fhir_reader import count_resources

    stats.skipped = count_resources(path, stats)
    return iter(())


def grouped(bindings: list[Binding]) -> list[list[Binding]]:
    """The bindings in order, those of map entries reading one FHIR file together (parsed once)."""
    groups: list[list[Binding]] = []
    for binding in bindings:
        last = groups[-1][-1] if groups else None
        if last is not None and binding.format == "fhir" and last.format == "fhir" and last.path == binding.path \
                and binding.entry is not None and binding.entry.long is None:
            groups[-1].append(binding)
        else:
            groups.append([binding])
    return groups


def read_group(group: list[Binding], types: Mapping[str, RecordType], tz: dt.tzinfo, seen: Seen,
               stats: list[InputStats], privacy: Privacy = REVEAL_ALL) -> Iterator[Record | Rejected]:
    """The records of a group of ``grouped``: one file read once for all its bindings."""
    if len(group) == 1:
        return read_binding(group[0], types, tz, seen, stats[0], privacy)
    from engine.inputs.fhir_reader import read_fhir_views

    readers = [(binding.entry.view, builder_for(binding, types, tz, seen, each, privacy))
               for binding, each in zip(group, stats) if binding.entry is not None]
    return read_fhir_views(group[0].path, readers)


def builder_for(binding: Binding, types: Mapping[str, RecordType], tz: dt.tzinfo, seen: Seen, stats: InputStats,
                privacy: Privacy = REVEAL_ALL) -> RecordBuilder:
    """The builder of a bound file's records: its map entry's cell readers, or the plain conversion."""
    entry = binding.entry
    if entry is None:
        return RecordBuilder(binding.path, binding.type, types, tz, seen, stats, privacy)
    stats.map_id, stats.entry, stats.absent = entry.map_id, entry.index, entry.absent
    return MappedBuilder(binding.path, cell_readers(binding, types[entry.type], tz), entry.type, types, tz, seen,
                         stats, privacy)


def cell_readers(binding: Binding, rtype: RecordType, tz: dt.tzinfo) -> dict[str, CellReader]:
    """How each field of the bound file's type is read (the fields its map lists as absent are not)."""
    entry = binding.entry or MapEntry("", 0, rtype.name)
    zone = timezone(entry.timezone) if entry.timezone else tz
    return {name: CellReader(entry, entry.spec(name), field, zone, serials=binding.format == "xlsx")
            for name, field in rtype.fields.items() if name not in entry.absent}


def read_with(binding: Binding, builder: RecordBuilder) -> Iterator[Record | Rejected]:
    """The bound file's records, made by ``builder``."""
    if binding.unread:
        return _skip_resources(binding.path, builder.stats)
    if binding.entry is None:
        return read_input(binding.path, binding.type, builder.types, builder.tz, builder.seen, builder.stats,
                          builder.privacy, builder)
    return _mapped(binding, binding.entry, binding.format, builder)


def _mapped(binding: Binding, entry: MapEntry, fmt: str, builder: RecordBuilder) -> Iterator[Record | Rejected]:
    path = binding.path
    if entry.long is not None:
        from engine.inputs.longform import read_long

        return read_long(binding, entry, builder)
    if fmt == "fhir":
        from engine.inputs.fhir_reader import read_fhir

        return read_fhir(path, entry.view, builder)
    if fmt == "xlsx":
        return read_xlsx(path, entry.sheet, builder)
    if fmt == "csv":
        from engine.inputs.csv_reader import read_csv

        return read_csv(open_input(path), builder, entry.encoding, entry.delimiter)
    if fmt in ("json", "ndjson"):
        from engine.inputs.json_reader import read_json, read_ndjson

        return (read_json if fmt == "json" else read_ndjson)(open_input(path), builder)
    raise InputError(f"{path}: unknown input format; say format: csv, json, ndjson, xlsx or fhir in the map entry")


def read_xlsx(path: str, sheet: str | None, builder: RecordBuilder) -> Iterator[Record | Rejected]:
    """An XLSX sheet's rows under its header, each at its Excel row number."""
    from engine.inputs.xlsx_reader import open_sheet

    opened = open_sheet(path, sheet)
    header = opened.header
    target = getattr(builder, "builder", builder)  # a flowsheet's rows are gathered first, then built
    for _, reader in getattr(target, "readers", ()):
        if isinstance(reader, CellReader):
            reader.date1904 = opened.date1904
    for number, cells in opened.rows():
        extra = [cell for cell in cells[len(header):] if cell is not None]
        if extra:
            yield builder.reject(number, f"row has {len(cells)} cells, header has {len(header)}",
                                 data=dict(zip(header, cells)))
            continue
        row: dict[str, Any] = dict(zip(header, cells))
        yield builder.build(row, number)
    builder.stats.sha256 = opened.sha256


__all__ = ["DISPATCH_KEY", "Binding", "bind", "builder_for", "check_columns", "header_of", "read_binding", "read_with"]
