"""A SQL-on-FHIR v2 ViewDefinition checked and compiled: every problem found, with its place in the view."""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from fhirpathpy.engine.nodes import FP_DateTime, FP_Time

from engine.errors import AuditError
from engine.inputs.fhir_view_paths import (
    R4,
    Path,
    PathError,
    check_fhirpath,
    parse_fhirpath,
    plain_segments,
    static_type,
)

Location = tuple[str | int, ...]

MAX_SELECT_DEPTH = 32
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
_RESOURCE_KEYS = ("resourceType", "id", "meta", "implicitRules", "language", "text", "contained", "extension",
                  "modifierExtension")
VIEW_KEYS = frozenset({*_RESOURCE_KEYS, "url", "identifier", "version", "name", "title", "status", "experimental",
                       "date", "publisher", "contact", "description", "useContext", "copyright", "purpose",
                       "resource", "resourceVersion", "fhirVersion", "profile", "constant", "select", "where"})
SELECT_KEYS = frozenset({"id", "extension", "column", "select", "forEach", "forEachOrNull", "repeat", "unionAll"})
COLUMN_KEYS = frozenset({"id", "extension", "name", "path", "description", "collection", "type", "tag"})
WHERE_KEYS = frozenset({"id", "extension", "path", "description"})
CONSTANT_TYPES = frozenset({"Base64Binary", "Boolean", "Canonical", "Code", "Date", "DateTime", "Decimal", "Id",
                            "Instant", "Integer", "Integer64", "Oid", "String", "PositiveInt", "Time", "UnsignedInt",
                            "Uri", "Url", "Uuid"})
_RESOURCE_TYPES = frozenset(p for p in R4["path2Type"] if "." not in p) | frozenset(
    p.split(".", 1)[0] for p in R4["path2Type"])


class ViewError(AuditError):
    """A view that does not validate: every problem as (place in the view, message)."""

    def __init__(self, problems: list[tuple[Location, str]]) -> None:
        self.problems = problems
        super().__init__("\n".join(f"{_dotted(where)}: {message}" for where, message in problems))


class ResourceError(ViewError):
    """A valid view that cannot be evaluated on one resource (the record is rejected, not the view)."""


def _dotted(location: Location) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in location)
    return text.lstrip(".") or "view"


@dataclass(frozen=True)
class Column:
    """One output column of a view."""

    name: str
    collection: bool
    type: str | None


@dataclass(frozen=True, slots=True)
class ColumnPath:
    column: Column
    path: Path
    location: Location


@dataclass(frozen=True, slots=True)
class Select:
    """One select of a view, compiled: its own columns, then nested selects', then its unionAll's."""

    columns: tuple[ColumnPath, ...]
    selects: tuple[Select, ...]
    union_all: tuple[Select, ...]
    for_each: Path | None
    or_null: bool
    repeat: tuple[Path, ...]
    names: tuple[str, ...]


class ViewCompiler:
    """Walks a view once, compiling what is right and collecting what is wrong."""

    def __init__(self, fast_paths: bool) -> None:
        self.fast_paths = fast_paths
        self.problems: list[tuple[Location, str]] = []
        self.constants: dict[str, Any] = {}
        self.resource = ""

    def problem(self, where: Location, message: str) -> None:
        self.problems.append((where, message))

    def keys(self, node: Mapping[str, Any], allowed: frozenset[str], where: Location, what: str) -> None:
        for key in node:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), sorted(allowed), n=1)
                hint = f' (did you mean "{close[0]}"?)' if close else ""
                self.problem((*where, str(key)), f'unknown key "{key}" in {what}{hint}')

    def mapping(self, node: Any, where: Location, what: str) -> Mapping[str, Any] | None:
        if isinstance(node, Mapping):
            return node
        self.problem(where, f"{what} must be a mapping, not {_kind(node)}")
        return None

    def sequence(self, node: Any, where: Location, what: str, *, required: bool = False) -> Sequence[Any]:
        if node is None:
            if required:
                self.problem(where, f"{what} is required")
            return ()
        if isinstance(node, list | tuple):
            if required and not node:
                self.problem(where, f"{what} must not be empty")
            return node
        self.problem(where, f"{what} must be a list, not {_kind(node)}")
        return ()

    def path(self, text: Any, where: Location) -> Path | None:
        if not isinstance(text, str):
            self.problem(where, f"a FHIRPath must be text, not {_kind(text)}")
            return None
        try:
            ast = parse_fhirpath(text)
        except PathError as exc:
            self.problem(where, str(exc))
            return None
        found = check_fhirpath(ast, self.constants)
        for message in found:
            self.problem(where, message)
        return None if found else Path(text, ast, self.fast_paths)

    def view(self, view: Any) -> tuple[list[tuple[Path, Location]], Select | None]:
        node = self.mapping(view, (), "a view")
        if node is None:
            return [], None
        self.keys(node, VIEW_KEYS, (), "the view")
        if "resourceType" in node and node["resourceType"] != "ViewDefinition":
            self.problem(("resourceType",), f'resourceType must be "ViewDefinition", not "{node["resourceType"]}"')
        resource = node.get("resource")
        if resource is None:
            self.problem(("resource",), "resource is required (the FHIR resource type the view reads)")
        elif not isinstance(resource, str) or resource not in _RESOURCE_TYPES:
            close = difflib.get_close_matches(str(resource), sorted(_RESOURCE_TYPES), n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            self.problem(("resource",), f'unknown FHIR R4 resource type "{resource}"{hint}')
        else:
            self.resource = resource
        for i, constant in enumerate(self.sequence(node.get("constant"), ("constant",), "constant")):
            self.constant(constant, ("constant", i))
        wheres: list[tuple[Path, Location]] = []
        for i, item in enumerate(self.sequence(node.get("where"), ("where",), "where")):
            compiled = self.where(item, ("where", i))
            if compiled is not None:
                wheres.append((compiled, ("where", i, "path")))
        selects = self.selects(node.get("select"), ("select",), 1, required=True)
        root = _select((), selects, (), None, False, ())
        return wheres, root

    def constant(self, item: Any, where: Location) -> None:
        node = self.mapping(item, where, "a constant")
        if node is None:
            return
        name = node.get("name")
        values = [k for k in node if isinstance(k, str) and k.startswith("value")]
        self.keys(node, frozenset({"id", "extension", "name", *(f"value{t}" for t in CONSTANT_TYPES)}), where,
                  "a constant")
        if not isinstance(name, str) or not _NAME.match(name):
            self.problem((*where, "name"), f'a constant needs a name of letters, digits and "_", not {name!r}')
            return
        if name in self.constants:
            self.problem((*where, "name"), f'constant "{name}" is defined twice')
        if len(values) != 1:
            self.problem(where, f'constant "{name}" needs exactly one value[x] (valueString, valueInteger...)')
            return
        try:
            self.constants[name] = constant_value(values[0][5:], node[values[0]])
        except ValueError as exc:
            self.problem((*where, values[0]), f'constant "{name}": {exc}')

    def where(self, item: Any, where: Location) -> Path | None:
        node = self.mapping(item, where, "a where item")
        if node is None:
            return None
        self.keys(node, WHERE_KEYS, where, "a where item")
        if "path" not in node:
            self.problem(where, "a where item needs a path")
            return None
        compiled = self.path(node["path"], (*where, "path"))
        segments = plain_segments(node["path"]) if compiled is not None and self.resource else None
        kind = static_type(self.resource, segments) if segments else None
        if kind is not None and kind not in ("boolean", "System.Boolean"):
            self.problem((*where, "path"), f'a where path must give a boolean; "{node["path"]}" gives {kind}')
        return compiled

    def selects(self, items: Any, where: Location, depth: int, *, required: bool = False) -> tuple[Select, ...]:
        found = []
        for i, item in enumerate(self.sequence(items, where, str(where[-1]), required=required)):
            compiled = self.select(item, (*where, i), depth)
            if compiled is not None:
                found.append(compiled)
        return tuple(found)

    def select(self, item: Any, where: Location, depth: int) -> Select | None:
        node = self.mapping(item, where, "a select")
        if node is None:
            return None
        if depth > MAX_SELECT_DEPTH:
            self.problem(where, f"selects are nested more than {MAX_SELECT_DEPTH} deep")
            return None
        self.keys(node, SELECT_KEYS, where, "a select")
        iterators = [k for k in ("forEach", "forEachOrNull", "repeat") if k in node]
        if len(iterators) > 1:
            self.problem(where, f"a select takes one of forEach, forEachOrNull and repeat, not "
                                f"{' and '.join(iterators)}")
        for_each = None
        for key in ("forEach", "forEachOrNull"):
            if key in node:
                for_each = self.path(node[key], (*where, key))
        repeat = tuple(p for i, text in enumerate(self.sequence(node.get("repeat"), (*where, "repeat"), "repeat"))
                       if (p := self.path(text, (*where, "repeat", i))) is not None)
        if "repeat" in node and not node["repeat"]:
            self.problem((*where, "repeat"), "repeat needs at least one path")
        columns = tuple(c for i, item in enumerate(self.sequence(node.get("column"), (*where, "column"), "column"))
                        if (c := self.column(item, (*where, "column", i))) is not None)
        selects = self.selects(node.get("select"), (*where, "select"), depth + 1)
        union_all = self.selects(node.get("unionAll"), (*where, "unionAll"), depth + 1, required="unionAll" in node)
        for i, branch in enumerate(union_all[1:], start=1):
            if branch.names != union_all[0].names:
                self.problem((*where, "unionAll", i), f"unionAll branches must have the same columns in the same "
                             f"order: {list(branch.names)} differs from {list(union_all[0].names)}")
        return _select(columns, selects, union_all, for_each, "forEachOrNull" in node, repeat)

    def column(self, item: Any, where: Location) -> ColumnPath | None:
        node = self.mapping(item, where, "a column")
        if node is None:
            return None
        self.keys(node, COLUMN_KEYS, where, "a column")
        name, collection, kind = node.get("name"), node.get("collection", False), node.get("type")
        ok = True
        if not isinstance(name, str) or not _NAME.match(name):
            said = "a column needs a name" if name is None else f"column name {name!r} must be letters, digits and _"
            self.problem((*where, "name"), said)
            ok = False
        if "path" not in node:
            self.problem(where, f'column "{name}" needs a path')
            return None
        if not isinstance(collection, bool):
            self.problem((*where, "collection"), f"collection must be true or false, not {collection!r}")
            ok = False
        if kind is not None and not isinstance(kind, str):
            self.problem((*where, "type"), f"type must be a FHIR type name, not {kind!r}")
            ok = False
        path = self.path(node["path"], (*where, "path"))
        if path is None or not ok:
            return None
        return ColumnPath(Column(str(name), collection, kind), path, where)


def _select(columns: tuple[ColumnPath, ...], selects: tuple[Select, ...], union_all: tuple[Select, ...],
            for_each: Path | None, or_null: bool, repeat: tuple[Path, ...]) -> Select:
    names = tuple(c.column.name for c in columns) + tuple(n for s in selects for n in s.names)
    if union_all:
        names += union_all[0].names
    return Select(columns, selects, union_all, for_each, or_null, repeat, names)


def constant_value(kind: str, value: Any) -> Any:
    """A constant's value[x] as fhirpathpy compares it (dates and times typed, decimals exact)."""
    if kind not in CONSTANT_TYPES:
        raise ValueError(f'unknown constant type "value{kind}"')
    if kind == "Boolean":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if kind in ("Integer", "Integer64", "PositiveInt", "UnsignedInt"):
        if not isinstance(value, int) or isinstance(value, bool) or value < {"PositiveInt": 1}.get(
                kind, 0 if kind == "UnsignedInt" else -(2**63)):
            raise ValueError(f"expected {kind[0].lower() + kind[1:]}, got {value!r}")
        return value
    if kind == "Decimal":
        if not isinstance(value, int | float | str) or isinstance(value, bool):
            raise ValueError(f"expected a decimal, got {value!r}")
        try:
            return Decimal(str(value))
        except ArithmeticError:
            raise ValueError(f"expected a decimal, got {value!r}") from None
    if isinstance(value, datetime.date | datetime.time):  # YAML reads an unquoted 2024-01-02 as a date
        value = value.isoformat()
    if not isinstance(value, str):
        raise ValueError(f"expected text, got {value!r}")
    if kind in ("Date", "DateTime", "Instant", "Time"):
        parsed = cast(Any, FP_Time if kind == "Time" else FP_DateTime)(value)
        if parsed is None:  # fhirpathpy's constructors answer None to text that is no date or time
            raise ValueError(f'"{value}" is not a FHIR {kind[0].lower() + kind[1:]}')
        return parsed
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", int: "a number", float: "a number",
            type(None): "nothing"}.get(type(value), type(value).__name__)
