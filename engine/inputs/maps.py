"""Source maps (SPEC section 8): how one system's export files become the packs' records. Loaded
like a pack (YAML with positions, every problem as ``path:line:column``) and checked against the
record types of the run's packs."""

from __future__ import annotations

import codecs
import datetime as dt
import difflib
import hashlib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import MapError, PackError, UsageError
from engine.inputs.files import special_file
from engine.language.grammar import Checker, suggest
from engine.language.loader import DuplicateKeys, Node, decode_pack, load_yaml, top_level_keys
from engine.language.model import RecordType
from engine.language.values import timezone

MAP_KEYS = ("map", "version", "title", "description", "inputs")
ENTRY_KEYS = ("type", "files", "format", "encoding", "delimiter", "sheet", "decimal", "thousands",
              "datetime_formats", "date_formats", "timezone", "true_values", "false_values", "missing",
              "absent", "columns", "long", "view")
COLUMN_KEYS = ("column", "unit", "split", "part", "values", "join")
LONG_KEYS = ("key", "name", "value")
FORMATS = ("csv", "json", "ndjson", "xlsx", "fhir")
_ENCODINGS = ("utf-8", "cp1252", "latin-1", "iso-8859-15", "ascii", "mac-roman", "cp850")
_SAMPLE = dt.datetime(2026, 3, 2, 21, 15, 7)  # every field distinct: a format that drops one shows


@dataclass(frozen=True)
class ColumnSpec:
    """How one field is read: a column (in long form, a measurement name) and its cell treatment,
    or several columns joined with "|"."""

    field: str
    column: str | None
    join: tuple[str, ...] = ()
    unit: str | None = None
    split: str | None = None
    part: int = 1
    values: tuple[tuple[str, str], ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.join or ((self.column,) if self.column is not None else ())


@dataclass(frozen=True)
class Long:
    """Flowsheet rows gathered into records: rows sharing ``key`` are one record, each row's ``name``
    column naming the measurement its ``value`` column holds."""

    key: tuple[str, ...]
    name: str
    value: str


@dataclass(frozen=True)
class MapEntry:
    """One entry of a map's ``inputs``: a record type, the files it reads and how."""

    map_id: str
    index: int  # 0-based position in the map's inputs, as the report names it
    type: str
    files: str | None = None
    format: str | None = None
    encoding: str = "utf-8"
    delimiter: str = ","
    sheet: str | None = None
    decimal: str = "."
    thousands: str | None = None
    datetime_formats: tuple[str, ...] = ()
    date_formats: tuple[str, ...] = ()
    timezone: str | None = None
    true_values: tuple[str, ...] = ()
    false_values: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    columns: Mapping[str, ColumnSpec] = field(default_factory=dict)
    long: Long | None = None
    view: Any = None  # a compiled SQL-on-FHIR view (engine.inputs.fhir_view.View) for format fhir

    def spec(self, name: str) -> ColumnSpec:
        """How field ``name`` is read: its ``columns:`` entry, or the column of its own name."""
        return self.columns.get(name) or ColumnSpec(name, name)


@dataclass(frozen=True)
class SourceMap:
    id: str
    version: str
    path: str
    sha256: str
    entries: tuple[MapEntry, ...]
    # entries for record types no pack of the run declares (a shared map used with some of its
    # packs): checked, not used, and named so the user sees what is not read
    unused: tuple[MapEntry, ...] = ()

    def notes(self) -> list[str]:
        return [f"{self.path}: inputs[{e.index}] reads {e.type} records, which no pack of this run declares: "
                f"its files are not read through it" for e in self.unused]


def shipped_maps() -> dict[str, Path]:
    """Maps shipped with the tool, by name: the source tree's maps/, or the installed copy."""
    found: dict[str, Path] = {}
    here = Path(__file__).resolve().parent.parent.parent / "maps"
    for folder in (here, Path(sys.prefix) / "share" / "protocol-audit" / "maps"):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return found


def resolve_map(ref: str) -> Path:
    path = Path(ref)
    if path.is_file():
        return path
    if path.is_dir():
        raise UsageError(f"{ref}: is a folder; --map takes one map file (repeat --map for several)")
    kind = special_file(ref)
    if kind is not None:
        raise UsageError(f"{ref}: not a regular file ({kind}); a map is a YAML file")
    shipped = shipped_maps()
    if ref in shipped:
        return shipped[ref]
    close = difflib.get_close_matches(ref, list(shipped), n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    raise UsageError(f"{ref}: no such map file or shipped map{hint}; shipped maps: {', '.join(shipped) or 'none'}")


def load_maps(refs: list[str], types: Mapping[str, RecordType] | None) -> list[SourceMap]:
    """Load every map; PackError lists the problems of all of them (fields and types checked
    against ``types``, the run's record types, when given)."""
    maps: list[SourceMap] = []
    problems = []
    given: dict[Path, str] = {}
    for ref in refs:
        path = resolve_map(ref)
        if path.resolve() in given:
            raise UsageError(f"{ref}: the same map is given twice (as {given[path.resolve()]} too)")
        given[path.resolve()] = ref
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"{ref}: cannot read map ({exc.strerror or exc})") from None
        try:
            maps.append(load_map_bytes(data, str(ref if Path(ref).is_file() else path), types))
        except PackError as exc:
            problems.extend(exc.problems)
    if problems:
        raise MapError(problems)
    ids: dict[str, str] = {}
    for loaded in maps:
        if loaded.id in ids:
            raise UsageError(f'{loaded.path}: map "{loaded.id}" is also the id of {ids[loaded.id]}: the report names '
                             "inputs by map id, so each map needs its own")
        ids[loaded.id] = loaded.path
    return maps


def is_map_ref(ref: str) -> bool:
    """Whether ``validate``'s argument names a map: a shipped map's name (and no pack's), or a YAML
    file whose top level says ``map:`` (and not ``pack:``)."""
    from engine.packs import shipped_packs

    path = Path(ref)
    if not path.is_file():
        return ref in shipped_maps() and ref not in shipped_packs()
    tops = top_level_keys(ref)
    return "map" in tops and "pack" not in tops


def either_types(before: list[Any], after: list[Any]) -> dict[str, RecordType]:
    """The record types of two versions of the packs (diff), each with the fields of both: a map
    may name a field that only one version declares."""
    from dataclasses import replace

    from engine.language.model import merged_types

    mine, _ = merged_types(before)
    theirs, _ = merged_types(after)
    types = {**mine, **theirs}
    for name in mine.keys() & theirs.keys():
        types[name] = replace(theirs[name], fields={**mine[name].fields, **theirs[name].fields})
    return types


def load_map_bytes(data: bytes, label: str, types: Mapping[str, RecordType] | None) -> SourceMap:
    try:
        tree = load_yaml(decode_pack(data, label, "map"), label, "map")
    except DuplicateKeys as duplicates:
        try:
            build_map(duplicates.tree, label, data, types)
        except PackError as exc:
            raise MapError(duplicates.problems + exc.problems) from None
        raise MapError(duplicates.problems) from None
    except PackError as exc:
        raise MapError(exc.problems) from None
    return build_map(tree, label, data, types)


def build_map(root: Node, path: str, raw: bytes, types: Mapping[str, RecordType] | None) -> SourceMap:
    check = Checker(path)
    if not check.mapping(root, "map", MAP_KEYS, ("map", "inputs")):
        raise MapError(check.problems)
    top: dict[str, Node] = root.value
    map_id = check.text(top.get("map"), "map")
    version = check.text(top.get("version"), "version")
    entries: list[MapEntry] = []
    unused: list[MapEntry] = []
    inputs = top.get("inputs")
    if inputs is None:
        pass  # "map is missing inputs" is said
    elif not isinstance(inputs.value, list) or not inputs.value:
        check.node(inputs, "inputs must be a non-empty list of entries")
    else:
        for index, node in enumerate(inputs.value):
            foreign = types is not None and _foreign_type(node, types)
            entry = _entry(check, node, map_id, index, None if foreign else types)
            if entry is not None:
                (unused if foreign else entries).append(entry)
    if check.problems:
        raise MapError(check.problems)
    return SourceMap(map_id, version, path, hashlib.sha256(raw).hexdigest(), tuple(entries), tuple(unused))


def _foreign_type(node: Node, types: Mapping[str, RecordType]) -> bool:
    """An entry for a record type no pack of the run declares, and not a misspelling of one (that is
    a problem, with did-you-mean): the map serves other packs too, and the entry is left unused."""
    if not isinstance(node.value, dict) or not isinstance(node.value.get("type"), Node):
        return False
    name = node.value["type"].value
    return isinstance(name, str) and name not in types and not difflib.get_close_matches(name, list(types), n=1)


def _items(node: Node | None) -> list[Node]:
    """A list's items (a single value is a list of one)."""
    if node is None:
        return []
    return node.value if isinstance(node.value, list) else [node]


def _texts(check: Checker, node: Node | None, what: str) -> tuple[str, ...]:
    return tuple(text for text, _ in _placed_texts(check, node, what))


def _placed_texts(check: Checker, node: Node | None, what: str) -> list[tuple[str, Node]]:
    """A list of text with each item's node."""
    found = []
    for item in _items(node):
        text = check.text(item, what)
        if text:
            found.append((text, item))
        elif isinstance(item.value, str):
            check.node(item, f"{what}: an empty text means nothing here")
    return found


_ASCII = bytes(range(32, 127)) + b"\t\r\n"
_SHIFTS = (b"\\u00e9", b"+AGE-", b"~{", b"\x1b$B", b"\x1b(B")  # escapes some codecs read as other text


def _keeps_ascii(codec: str) -> bool:
    """A text codec that reads every ASCII byte as itself, escapes and shift sequences included
    (raw_unicode_escape, utf-7, hz and iso2022 do not; rot_13 or zlib are no text codecs)."""
    try:
        return all(sample.decode(codec) == sample.decode("ascii") for sample in (_ASCII, *_SHIFTS))
    except (LookupError, UnicodeError, ValueError, TypeError):
        return False


def _one_char(check: Checker, node: Node | None, what: str, default: str | None) -> str | None:
    if node is None:
        return default
    text = check.text(node, what)
    if len(text) != 1 or text in "\r\n\"" or text.isalnum() or text in "+-":
        check.node(node, f"{what} must be one character, not a letter, a digit, a sign, a quote or a line break")
        return default
    return text


def _formats(check: Checker, node: Node | None, what: str, want_time: bool) -> tuple[str, ...]:
    """strptime formats, each tried on a sample time: one that cannot read back what it writes, or
    that leaves out the date (or a datetime's time of day), is a problem at its position."""
    placed = _placed_texts(check, node, what)
    for text, item in placed:
        if "%" not in text:
            check.node(item, f'{what}: "{text}" has no strptime directive (%Y, %m, %d, ...)')
            continue
        if "%p" in text and "%I" not in text:
            check.node(item, f'{what}: "{text}" has %p (AM/PM) without %I: strptime reads %H as 0-23 and '
                             "ignores AM/PM; write %I for a 12-hour clock")
            continue
        sample = _SAMPLE.replace(tzinfo=dt.timezone(dt.timedelta(hours=-5))) if "%z" in text else _SAMPLE
        try:
            back = dt.datetime.strptime(sample.strftime(text), text)
        except (ValueError, re.error) as exc:
            why = "a directive appears twice" if isinstance(exc, re.error) else str(exc)
            check.node(item, f'{what}: "{text}" cannot read what it writes ({why}); see strptime\'s directives')
            continue
        if back.date() != _SAMPLE.date():
            check.node(item, f'{what}: "{text}" does not give a whole date (year, month and day)')
        elif want_time and (back.hour, back.minute) != (_SAMPLE.hour, _SAMPLE.minute):
            check.node(item, f'{what}: "{text}" does not give the time of day (hours and minutes; %I needs %p)')
    _ambiguous(check, placed, what)
    return tuple(text for text, _ in placed)


def _ambiguous(check: Checker, placed: list[tuple[str, Node]], what: str) -> None:
    """Two formats that read one text as two different days (%m/%d and %d/%m): the first listed would
    win silently, so the map must say which its export writes."""
    sample = dt.datetime(2026, 3, 4, 9, 15, 7)
    for later, (text, item) in enumerate(placed):
        try:
            written = sample.strftime(text)
        except ValueError:
            continue
        for earlier, _ in placed[:later]:
            try:
                other = dt.datetime.strptime(written, earlier)
            except (ValueError, re.error):
                continue
            if other.date() != sample.date():
                check.node(item, f'{what}: "{text}" and "{earlier}" read {written!r} as different days; '
                                 "list only the one the export writes")


def _entry(check: Checker, node: Node, map_id: str, index: int,
           types: Mapping[str, RecordType] | None) -> MapEntry | None:
    if not check.mapping(node, f"inputs[{index}]", ENTRY_KEYS, ("type",)):
        return None
    keys: dict[str, Node] = node.value
    type_name = check.text(keys.get("type"), "type")
    rtype = None
    if types is not None and type_name and type_name not in types:
        check.node(keys["type"], f'record type "{type_name}" is not declared by any pack of the run'
                                 f"{suggest(type_name, types, 'types')}")
    elif types is not None:
        rtype = types.get(type_name)
    fmt = check.text(keys.get("format"), "format") or None
    if fmt is not None and fmt not in FORMATS:
        check.node(keys["format"], f'unknown format "{fmt}"{suggest(fmt, FORMATS, "formats")}')
    encoding = check.text(keys.get("encoding"), "encoding", "utf-8")
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        check.node(keys["encoding"], f'unknown encoding "{encoding}"{suggest(encoding.lower(), _ENCODINGS)}')
    else:
        if not _keeps_ascii(info.name):
            check.node(keys["encoding"], f'encoding "{encoding}" is not supported: files are read line by line, '
                                         "so the encoding must keep ASCII as is (utf-8, cp1252, latin-1, ...); "
                                         "save the export as UTF-8")
    tz_name = check.text(keys.get("timezone"), "timezone") or None
    if tz_name is not None:
        try:
            timezone(tz_name)
        except (KeyError, ValueError):
            check.node(keys["timezone"], f'unknown time zone "{tz_name}"')
    decimal = _one_char(check, keys.get("decimal"), "decimal", ".") or "."
    thousands = _one_char(check, keys.get("thousands"), "thousands", None)
    if thousands is not None and thousands == decimal:
        check.node(keys["thousands"], "thousands and decimal separators must differ")
    declared = set(rtype.fields) if rtype is not None else None
    placed_absent = _placed_texts(check, keys.get("absent"), "absent")
    absent = tuple(name for name, _ in placed_absent)
    for name, item in placed_absent:
        if declared is not None and name not in declared:
            check.node(item, f'absent: "{name}" is not a field of {type_name}{suggest(name, declared)}')
    long = _long(check, keys.get("long"))
    columns = _columns(check, keys.get("columns"), type_name, declared, absent)
    view = None
    if "view" in keys:
        view = _view(check, keys["view"])
        fed = {spec.columns[0] for spec in columns.values() if spec.columns}
        for column in view.columns if view is not None else []:
            if column.collection and (column.name in fed or (declared is not None and column.name in declared
                                                            and column.name not in columns)):
                check.at(*_at(keys["view"], view.place(column.name), False),
                         f'column "{column.name}" is collection: true, which no field type accepts: '
                         "a record with several values is rejected instead (\"2 values\")")
        if fmt not in (None, "fhir"):
            check.key(node, "view", f'a view reads FHIR resources: the entry\'s format must be "fhir", not "{fmt}"')
        fmt = "fhir"
    elif fmt == "fhir":
        check.node(node, "a fhir entry needs a view: (an SQL-on-FHIR ViewDefinition) saying what each column is")
    true_values = _placed_texts(check, keys.get("true_values"), "true_values")
    false_values = _placed_texts(check, keys.get("false_values"), "false_values")
    _spellings(check, true_values, false_values)
    if long is not None and fmt not in (None, "csv", "xlsx"):
        check.key(node, "long", f'long: gathers the rows of a CSV or XLSX flowsheet, not {fmt}')
    for key, formats in (("delimiter", ("csv",)), ("encoding", ("csv",)), ("sheet", ("xlsx",))):
        if key in keys and fmt is not None and fmt not in formats:
            check.key(node, key, f"{key}: applies to {' and '.join(formats)} files, and this entry reads {fmt}")
    files = check.text(keys.get("files"), "files") or None
    if files is not None and ("/" in files or "\\" in files):
        check.node(keys["files"], f'files: "{files}" is matched against a file\'s name alone, so a folder in it '
                                  "never matches: give the pattern of the name")
    return MapEntry(
        map_id=map_id, index=index, type=type_name, files=files,
        format=fmt, encoding=encoding, delimiter=_one_char(check, keys.get("delimiter"), "delimiter", ",") or ",",
        sheet=check.text(keys.get("sheet"), "sheet") or None, decimal=decimal, thousands=thousands,
        datetime_formats=_formats(check, keys.get("datetime_formats"), "datetime_formats", True),
        date_formats=_formats(check, keys.get("date_formats"), "date_formats", False),
        timezone=tz_name, true_values=tuple(text for text, _ in true_values),
        false_values=tuple(text for text, _ in false_values),
        missing=_texts(check, keys.get("missing"), "missing"), absent=absent, columns=columns, long=long, view=view)


_BUILT_IN_TRUE = ("true", "yes", "y", "1")
_BUILT_IN_FALSE = ("false", "no", "n", "0")


def _spellings(check: Checker, true_values: list[tuple[str, Node]], false_values: list[tuple[str, Node]]) -> None:
    """Extra boolean spellings that contradict each other or the built-in ones (a "no" meaning true
    would pass every escort check)."""
    true = {t.lower(): n for t, n in true_values}
    false = {t.lower(): n for t, n in false_values}
    for word, item in true.items():
        if word in false or word in _BUILT_IN_FALSE:
            where = "false_values" if word in false else "always"
            check.node(item, f'true_values: "{word}" also means false ({where})')
    for word, item in false.items():
        if word in _BUILT_IN_TRUE:
            check.node(item, f'false_values: "{word}" always means true')


def _long(check: Checker, node: Node | None) -> Long | None:
    if node is None or not check.mapping(node, "long", LONG_KEYS, LONG_KEYS):
        return None
    keys: dict[str, Node] = node.value
    key = _texts(check, keys.get("key"), "long key")
    if len(set(key)) != len(key):
        check.node(keys["key"], "long key names a column twice")
    name, value = check.text(keys.get("name"), "long name"), check.text(keys.get("value"), "long value")
    if name and name == value:
        check.node(keys["value"], "long name and value must be different columns")
    return Long(key, name, value)


def _columns(check: Checker, node: Node | None, type_name: str, declared: set[str] | None,
             absent: tuple[str, ...]) -> dict[str, ColumnSpec]:
    if node is None:
        return {}
    if not isinstance(node.value, dict):
        check.node(node, "columns must be a mapping of field: column")
        return {}
    found: dict[str, ColumnSpec] = {}
    for name, spec in node.value.items():
        if declared is not None and name not in declared:
            check.key(node, name, f'"{name}" is not a field of {type_name}{suggest(name, declared)}')
        if name in absent:
            check.key(node, name, f'"{name}" is listed under absent: and read from a column')
        made = _column(check, name, spec)
        if made is not None:
            found[name] = made
    return found


def _column(check: Checker, name: str, spec: Node) -> ColumnSpec | None:
    if isinstance(spec.value, str) or not isinstance(spec.value, dict):
        text = check.text(spec, f"column of {name}")
        return ColumnSpec(name, text) if text else None
    if not check.mapping(spec, f"column of {name}", COLUMN_KEYS):
        return None
    keys: dict[str, Node] = spec.value
    if ("column" in keys) == ("join" in keys):
        check.node(spec, f"{name}: give either column: or join:")
        return None
    join = _texts(check, keys.get("join"), "join")
    if "join" in keys and len(join) < 2:
        check.node(keys["join"], "join needs two or more columns")
    if len(set(join)) != len(join):
        check.node(keys["join"], "join names a column twice")
    split = check.text(keys.get("split"), "split") or None
    part = 1
    if "part" in keys:
        value = keys["part"].value
        if split is None:
            check.node(keys["part"], "part needs split:")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            check.node(keys["part"], "part must be a whole number from 1 (the first part)")
        else:
            part = value
    values: list[tuple[str, str]] = []
    if "values" in keys:
        if not isinstance(keys["values"].value, dict):
            check.node(keys["values"], "values must be a mapping of export label: value")
        else:
            for label, target in keys["values"].value.items():
                values.append((label, check.text(target, f"values of {name}")))
    return ColumnSpec(name, check.text(keys.get("column"), "column") or None, join,
                      check.text(keys.get("unit"), "unit") or None, split, part, tuple(values))


def _view(check: Checker, node: Node) -> Any:
    """The compiled view, or None with every problem of the ViewDefinition at its position."""
    from engine.inputs.fhir_view import ViewError, compile_view

    if not isinstance(node.value, dict):
        check.node(node, "view must be a mapping (an SQL-on-FHIR ViewDefinition)")
        return None
    try:
        return compile_view(node.plain())
    except ViewError as exc:
        for where, message in exc.problems:
            check.at(*_at(node, where, message.startswith("unknown key")), message)
    return None


def _at(node: Node, where: tuple[str | int, ...], at_key: bool) -> tuple[int, int]:
    """The position of a place inside the view (the deepest that exists): the key itself for a
    problem with a key (as elsewhere in a map), else its value."""
    for depth, step in enumerate(where):
        value = node.value
        if isinstance(value, dict) and step in value:
            if at_key and depth == len(where) - 1:
                return node.keys.get(str(step), (node.line, node.column))
            node = value[step]
        elif isinstance(value, list) and isinstance(step, int) and 0 <= step < len(value):
            node = value[step]
        else:
            break
    return node.line, node.column
