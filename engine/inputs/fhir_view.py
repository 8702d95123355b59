"""SQL-on-FHIR v2 views (FHIR R4): which resources a view reads and the rows it makes of each.

``compile_view`` checks a ViewDefinition and compiles each of its FHIRPaths once; ``View.matches``
applies its ``where`` and ``View.rows`` expands ``forEach`` / ``forEachOrNull`` / ``repeat`` /
``unionAll`` / nested selects into rows of column collections. FHIRPath is data for fhirpathpy
(plus getResourceKey, getReferenceKey and RE2 regexes); its common subset runs as compiled closures
(engine/inputs/fhir_view_direct.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from engine.inputs.fhir_view_paths import Path, PathError
from engine.inputs.fhir_view_schema import Column, Location, ResourceError, Select, ViewCompiler, ViewError

MAX_REPEAT_NODES = 100_000  # elements one repeat may visit in one resource

Row = dict[str, list[Any]]


MAX_COLUMNS = 2000  # every column is evaluated on every resource: a bound on what one map entry costs


def compile_view(view: Mapping[str, Any], *, fast_paths: bool = True) -> View:
    """Validate and compile a ViewDefinition given as plain data (parsed YAML or JSON).

    Raises ViewError listing every problem with its place in the view. ``fast_paths=False``
    evaluates every path with fhirpathpy (for measuring and cross-checking the compiled subset).
    """
    compiler = ViewCompiler(fast_paths)
    wheres, root = compiler.view(view)
    if root is not None and len(root.names) > MAX_COLUMNS:
        compiler.problem(("select",), f"the view has {len(root.names):,} columns; at most {MAX_COLUMNS:,} are read "
                                      "(a record type has a few dozen fields)")
    if root is not None:
        seen: set[str] = set()
        for name in root.names:
            if name in seen:
                compiler.problem(("select",), f'column "{name}" is defined twice')
            seen.add(name)
    if compiler.problems or root is None:
        raise ViewError(compiler.problems)
    return View(compiler.resource, root, wheres, compiler.constants)


class View:
    """A compiled view: ``resource`` type, ``columns`` in output order, ``matches`` and ``rows``."""

    def __init__(self, resource: str, root: Select, wheres: list[tuple[Path, Location]],
                 constants: dict[str, Any]) -> None:
        self.resource = resource
        self.columns: list[Column] = [c for c in _columns(root)]
        self._root = root
        self._wheres = wheres
        self._constants = constants
        self._locations = {c.column.name: c.location for c in _column_paths(root)}

    def place(self, name: str) -> tuple[str | int, ...]:
        """Where column ``name`` is written in the view (as ViewError problems place things)."""
        return tuple(self._locations.get(name, ()))

    def _env(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        return {**self._constants, "context": resource, "resource": resource, "rootResource": resource,
                "ucum": "http://unitsofmeasure.org", "sct": "http://snomed.info/sct", "loinc": "http://loinc.org",
                "rowIndex": 0}

    def matches(self, resource: Mapping[str, Any]) -> bool:
        """The resource is of the view's type and every ``where`` path gives true.

        A where path giving anything but one boolean (or nothing) raises ResourceError.
        """
        if resource.get("resourceType") != self.resource:
            return False
        if not self._wheres:
            return True
        env = self._env(resource)
        for path, location in self._wheres:
            try:
                found = path.values(resource, env)
            except PathError as exc:
                raise ResourceError([(location, f"{_name(resource)}: {exc}")]) from None
            if not found:
                return False
            if len(found) != 1 or not isinstance(found[0], bool):
                raise ResourceError([(location, f'{_name(resource)}: where path "{path.text}" gave '
                                                f"{found!r}, not true or false")])
            if not found[0]:
                return False
        return True

    def rows(self, resource: Mapping[str, Any]) -> list[Row]:
        """The rows of one matching resource: column name -> the collection its path gave ([] is null)."""
        try:
            return _rows(self._root, resource, self._env(resource))
        except PathError as exc:
            raise ResourceError([((), f"{_name(resource)}: {exc}")]) from None

    def table(self, resources: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """SQL-on-FHIR output of the view over ``resources``: a value or None per column, lists for collections.

        A non-collection column giving more than one value raises ResourceError, as the spec asks.
        """
        table = []
        for resource in resources:
            if not self.matches(resource):
                continue
            for row in self.rows(resource):
                table.append(self._flatten(row, resource))
        return table

    def _flatten(self, row: Row, resource: Mapping[str, Any]) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for column in self.columns:
            values = row[column.name]
            if column.collection:
                flat[column.name] = values
            elif len(values) > 1:
                raise ResourceError([((*self._locations[column.name], "path"),
                                      f'{_name(resource)}: column "{column.name}" gave {len(values)} values '
                                      f"and is not collection: true")])
            else:
                flat[column.name] = values[0] if values else None
        return flat


def _columns(select: Select) -> Iterable[Column]:
    yield from (c.column for c in select.columns)
    for nested in select.selects:
        yield from _columns(nested)
    if select.union_all:
        yield from _columns(select.union_all[0])


def _column_paths(select: Select) -> Iterable[Any]:
    yield from select.columns
    for nested in (*select.selects, *select.union_all):
        yield from _column_paths(nested)


def _name(resource: Mapping[str, Any]) -> str:
    return f'{resource.get("resourceType")}/{resource.get("id")}'


def _foci(select: Select, focus: Any, env: dict[str, Any]) -> list[Any] | None:
    """The elements a select iterates over (None: it does not iterate, its parent's focus stands)."""
    if select.for_each is not None:
        return select.for_each.nodes(focus, env)
    if not select.repeat:
        return None
    found: list[Any] = []
    stack = list(reversed([n for path in select.repeat for n in path.nodes(focus, env)]))
    while stack:  # depth first, each element before its children, as the spec's repeat orders them
        node = stack.pop()
        found.append(node)
        if len(found) > MAX_REPEAT_NODES:
            raise PathError(f"repeat visits more than {MAX_REPEAT_NODES} elements")
        stack.extend(reversed([n for path in select.repeat for n in path.nodes(node, env)]))
    return found


def _rows(select: Select, focus: Any, env: dict[str, Any]) -> list[Row]:
    foci = _foci(select, focus, env)
    if foci is None:
        return _focus_rows(select, focus, env)
    if not foci:
        return [_null_row(select, env)] if select.or_null else []
    rows: list[Row] = []
    for index, each in enumerate(foci):
        rows += _focus_rows(select, each, {**env, "rowIndex": index})
    return rows


def _null_row(select: Select, env: dict[str, Any]) -> Row:
    """forEachOrNull over nothing: one row of nulls, but %rowIndex is still 0 (as the spec's cases say)."""
    row: Row = {name: [] for name in select.names}
    for column in select.columns:
        if column.path.uses_row_index:
            row[column.column.name] = column.path.values([], {**env, "rowIndex": 0})
    return row


def _focus_rows(select: Select, focus: Any, env: dict[str, Any]) -> list[Row]:
    own: Row = {c.column.name: c.path.values(focus, env) for c in select.columns}
    if not select.selects and not select.union_all:
        return [own]
    parts = [[own]]
    for nested in select.selects:
        nested_rows = _rows(nested, focus, env)
        if not nested_rows:
            return []
        parts.append(nested_rows)
    if select.union_all:
        branches = [row for branch in select.union_all for row in _rows(branch, focus, env)]
        if not branches:
            return []
        parts.append(branches)
    if len(parts) == 2 and not own:
        return parts[1]
    return [{k: v for part in combination for k, v in part.items()} for combination in itertools.product(*parts)]


__all__ = ["Column", "ResourceError", "View", "ViewError", "compile_view"]
