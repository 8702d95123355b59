"""``protocol-audit inspect``: how each input reads under the packs and maps, before a first audit
(SPEC 8). Per input: the column feeding each field (or that none does, with the closest header
names), the count of missing and of unconvertible values per field with the first examples and
their lines, and the first records as the rules will see them. Values pass the privacy gate."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.inputs.builder import InputStats, Seen
from engine.inputs.maps import MapEntry, SourceMap
from engine.inputs.sources import (
    Binding,
    bind,
    builder_for,
    cell_readers,
    closest_columns,
    header_of,
    looked_for,
    read_with,
)
from engine.judge.context import PackContext
from engine.language.model import Pack, Record, RecordType, Rejected
from engine.language.values import ConversionError, quote
from engine.privacy import Privacy, Pseudonymiser

EXAMPLES = 3  # problems shown per field


@dataclass
class _FieldCount:
    missing: int = 0
    bad: int = 0
    examples: list[str] = field(default_factory=list)


def inspect_inputs(packs: list[Pack], maps: list[SourceMap], files: list[str], rows: int,
                   pseudonymise: Pseudonymiser | None) -> list[str]:
    context = PackContext(packs, pseudonymise)
    lines: list[str] = []
    seen = Seen()
    for binding in bind(files, context.types, maps):
        lines += _inspect(binding, context, seen, rows)
        lines.append("")
    return lines[:-1]


def _inspect(binding: Binding, context: PackContext, seen: Seen, rows: int) -> list[str]:
    entry = binding.entry
    how = f"map {entry.map_id} entry {entry.index}" if entry else "no map"
    out = [f"{binding.path}: {binding.type or 'record types from its record_type column'} ({how}, "
           f"{binding.format or 'unknown format'})"]
    header = header_of(binding)
    if binding.unread:
        stats = InputStats(binding.path, None)
        read_with(binding, builder_for(binding, context.types, context.tz, seen, stats, context.privacy))
        out[0] = f"{binding.path}: FHIR resources no entry of the maps reads"
        out.append(f"  {_count(stats.skipped or 0, 'resource')} skipped: nothing is read from this file")
        return out
    if binding.type is None:
        out.append("  (a file of several record types: give it a type with TYPE=FILE or a map entry to inspect "
                   "its columns)")
        return out
    rtype = context.types[binding.type]
    needed = context.needed.get(binding.type, {})
    stats = InputStats(binding.path, binding.type)
    builder = builder_for(binding, context.types, context.tz, seen, stats, context.privacy)
    readers = cell_readers(binding, rtype, context.tz)
    counts = {name: _FieldCount() for name in readers}
    privacy = context.privacy

    def watch(data: Mapping[str, Any], line: int) -> None:
        for name, read in readers.items():
            count = counts[name]
            try:
                if read(data) is None:
                    count.missing += 1
            except ConversionError as exc:
                count.bad += 1
                if len(count.examples) < EXAMPLES:
                    count.examples.append(f"line {line}: {_reason(exc, rtype.name, privacy)}")

    builder.watch = watch
    shown: list[Record] = []
    rejected = 0
    for item in read_with(binding, builder):
        if isinstance(item, Rejected):
            rejected += 1
        elif len(shown) < rows:
            context.derive(item)
            shown.append(item)
    out += _columns(binding, rtype, header, needed, counts, entry)
    rows_note = f" from {_count(stats.rows_read, 'row')}" if stats.rows_read is not None else ""
    extra = "".join(f", {_count(n, what)}" for n, what in ((stats.skipped, "resource of other types skipped"),
                                                          (stats.filtered, "resource filtered out by the view")) if n)
    out.append(f"  {_count(stats.records_read, 'record')} read{rows_note}, {rejected:,} rejected{extra}")
    if shown:
        first = "the first record" if len(shown) == 1 else f"the first {len(shown)} records"
        out.append(f"  {first} as the rules see them:")
        out += [f"    line {record.line}: {_values(record, rtype, privacy)}" for record in shown]
    return out


def _columns(binding: Binding, rtype: RecordType, header: list[str], needed: Mapping[str, str],
             counts: Mapping[str, _FieldCount], entry: MapEntry | None) -> list[str]:
    present = set(header)
    width = max((len(name) for name in rtype.fields), default=5)
    out = [f"  {'field':<{width}}  {'column':<28}  {'missing':>7}  {'bad':>5}  read by"]
    for name, declared in rtype.fields.items():
        why = needed.get(name, "no rule")
        if entry is not None and name in entry.absent:
            out.append(f"  {name:<{width}}  {'(absent: listed in the map)':<28}  {'':>7}  {'':>5}  {why}")
            continue
        spec = entry.spec(name) if entry else None
        columns = looked_for(entry, name)
        lacking = [column for column in columns if column not in present]
        source = " + ".join(f'"{c}"' for c in columns) + _treatment(spec, declared.unit)
        count = counts.get(name, _FieldCount())
        if lacking and header:
            close = closest_columns(lacking[0], header)
            hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ""
            stop = " - STOPS AN AUDIT" if name in needed else ""
            out.append(f"  {name:<{width}}  NO COLUMN \"{lacking[0]}\"{hint}{stop}")
            continue
        out.append(f"  {name:<{width}}  {source:<28}  {count.missing:>7,}  {count.bad:>5,}  {why}")
        out += [f"  {'':<{width}}    {example}" for example in count.examples]
    return out


def _count(number: int, noun: str) -> str:
    """"1 record", "2 records", "2 resources of other types skipped" (the first word takes the s)."""
    head, _, rest = noun.partition(" ")
    return f"{number:,} {head}{'' if number == 1 else 's'}{' ' + rest if rest else ''}"


def _reason(exc: ConversionError, type_name: str, privacy: Privacy) -> str:
    return exc.render(lambda raw: privacy.quoted(type_name, exc.field, raw, quote))


def _treatment(spec: Any, unit: str | None) -> str:
    if spec is None:
        return ""
    labels = f"{len(spec.values)} label{'s' if len(spec.values) != 1 else ''}" if spec.values else ""
    parts = [f"part {spec.part} of {spec.split!r}" if spec.split else "", f"unit {spec.unit}" if spec.unit else "",
             labels]
    shown = ", ".join(p for p in parts if p)
    return f" ({shown})" if shown else ""


def _values(record: Record, rtype: RecordType, privacy: Privacy) -> str:
    parts = []
    for name, value in record.values.items():
        shown = privacy.value(rtype.name, name, value)
        if isinstance(shown, dt.datetime):
            shown = shown.isoformat()
        elif isinstance(shown, dt.date):
            shown = shown.isoformat()
        parts.append(f"{name}={shown}")
    return ", ".join(parts)
