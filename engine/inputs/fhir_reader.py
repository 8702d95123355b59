"""FHIR R4 exports read through a SQL-on-FHIR view (SPEC 8): a bulk-export NDJSON file (one resource
a line) or a Bundle. Resources of another type are counted as skipped, those the view's where
excludes as filtered; each row of the view is a record at the resource's line (or entry)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

from engine.errors import InputError
from engine.inputs.builder import InputStats, RecordBuilder
from engine.inputs.files import BOM, Lines, open_input
from engine.inputs.json_reader import _json_problem, _kind, _loads, _Objects, ndjson_objects
from engine.language.model import Record, Rejected

MAX_BUNDLE = 256 * 2**20  # bytes of a Bundle (JSON), parsed whole; bulk NDJSON is read a line at a time


def read_fhir(path: str, view: Any, builder: RecordBuilder) -> Iterator[Record | Rejected]:
    return read_fhir_views(path, [(view, builder)])


def read_fhir_views(path: str, readers: list[tuple[Any, RecordBuilder]]) -> Iterator[Record | Rejected]:
    """The records of every (view, builder) pair, the file parsed once: several record types read one
    file (vitals, screenings and assessments from Observation.ndjson). A line that is no resource is
    rejected once, by the first pair; each pair counts the resources it skips and filters."""
    first = readers[0][1]
    for _, builder in readers:
        builder.stats.skipped = builder.stats.filtered = 0
    resources = _bundle(path, first) if path.lower().endswith(".json") else _ndjson(path, first)
    for place, resource in resources:
        if isinstance(resource, Rejected):
            yield resource
            continue
        for view, builder in readers:
            yield from _view_rows(place, resource, view, builder)
    for _, builder in readers[1:]:
        builder.stats.sha256 = first.stats.sha256


def _view_rows(place: int, resource: dict[str, Any], view: Any, builder: RecordBuilder) -> Iterator[Record | Rejected]:
    stats = builder.stats
    assert stats.skipped is not None and stats.filtered is not None
    if resource.get("resourceType") != view.resource:
        stats.skipped += 1
        return
    try:
        if not view.matches(resource):
            stats.filtered += 1
            return
        rows = view.rows(resource)
    except RecursionError:
        yield builder.reject(place, "resource nested too deeply")
        return
    except Exception as exc:  # noqa: BLE001 - FHIRPath evaluation on data the view did not expect
        yield builder.reject(place, f"the view cannot read this {view.resource} ({_reason(exc)})")
        return
    if not rows:
        stats.filtered += 1
    for row in rows:
        yield builder.build(row, place)


def count_resources(path: str, stats: InputStats) -> int:
    """The resources of a FHIR file no entry of the maps reads (its sha256 noted in ``stats``)."""
    with open_input(path) as handle:
        lines = Lines(handle)
        count = 0
        for line in lines:
            count += bool(line.strip())
        stats.sha256 = lines.digest.hexdigest()
    if path.lower().endswith(".json"):
        return 1
    return count


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


def _ndjson(path: str, builder: RecordBuilder) -> Iterator[tuple[int, Any]]:
    return ndjson_objects(open_input(path), builder, "a FHIR resource")


def _bundle(path: str, builder: RecordBuilder) -> Iterator[tuple[int, Any]]:
    """A Bundle's entries, each at its 1-based position (a lone resource is a Bundle of one)."""
    with open_input(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_BUNDLE:
            raise InputError(f"{path}: a Bundle of {size / 2**20:,.0f} MiB is read whole, and the limit is "
                             f"{MAX_BUNDLE // 2**20} MiB; export the resources as bulk NDJSON (one a line)")
        data = handle.read()
    builder.stats.sha256 = hashlib.sha256(data).hexdigest()
    try:
        doc = _loads(data.removeprefix(BOM).decode("utf-8"), _Objects())
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (invalid byte at offset {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: {_json_problem(exc)}") from None
    if not isinstance(doc, dict) or "resourceType" not in doc:
        raise InputError(f"{path}: expected a FHIR Bundle or resource, got {_kind(doc)}")
    if doc.get("resourceType") != "Bundle":
        yield 1, doc
        return
    entries = doc.get("entry") or []
    if not isinstance(entries, list):
        raise InputError(f"{path}: the Bundle's entry is not a list")
    for position, entry in enumerate(entries, 1):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            yield position, builder.reject(position, "Bundle entry without a resource")
        else:
            yield position, resource
