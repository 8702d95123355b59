"""From a parsed row or object to a Record or a Rejected: conversion to the declared types,
duplicate keys, and the counts of each input."""

from __future__ import annotations

import datetime as dt
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.language.model import Field, Record, RecordType, Rejected
from engine.language.values import (
    ConversionError,
    OutOfRange,
    convert,
    is_missing,
    not_a,
    quote,
    record_time,
    text_converter,
)
from engine.privacy import REVEAL_ALL, Privacy

if TYPE_CHECKING:  # cells reads xlsx_reader, which reads this module
    from engine.inputs.cells import CellReader

DISPATCH_KEY = "record_type"


@dataclass
class InputStats:
    """What one input file gave: filled while it is read; sha256 is set once it is read to the end."""

    path: str
    record_type: str | None
    sha256: str = ""
    records_read: int = 0
    records_rejected: int = 0
    map_id: str | None = None  # the source map entry that read the file (SPEC 8)
    entry: int | None = None
    rows_read: int | None = None  # a long (flowsheet) input: rows, gathered into records
    skipped: int | None = None  # FHIR: resources of another type than the view's
    filtered: int | None = None  # FHIR: resources the view's where excluded
    absent: tuple[str, ...] = ()  # fields the map says this export does not have
    outside_period: int | None = None  # with --period: records read as history only (SPEC 9)

    @property
    def records_judged(self) -> int:
        return self.records_read - self.records_rejected - (self.outside_period or 0)

    def count_outside(self) -> None:
        self.outside_period = (self.outside_period or 0) + 1


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


class RecordBuilder:
    """Turns one parsed row or object into a Record or a Rejected, counting both."""

    def __init__(self, path: str, record_type: str | None, types: Mapping[str, RecordType], tz: dt.tzinfo,
                 seen: Seen, stats: InputStats, privacy: Privacy = REVEAL_ALL) -> None:
        self.path, self.record_type, self.types, self.tz = path, record_type, types, tz
        self.seen, self.stats, self.privacy = seen, stats, privacy
        self.plans: dict[str, list[tuple[str, Field, Any]]] = {}
        self.watch: Callable[[Mapping[str, Any], int], None] | None = None  # sees each row (inspect)

    def reject(self, line: int, reason: str, type_name: str | None = None,
               data: Mapping[str, Any] | None = None, values: Mapping[str, Any] | None = None) -> Rejected:
        """``line`` rejected for ``reason``; ``data``: what cells the row still had (a flowsheet
        rejects the record they name too); ``values``: what of it converted (its patient and time, if
        they did, let a finding near it say it may be a data-entry gap)."""
        self.stats.records_read += 1
        self.stats.records_rejected += 1
        name = type_name or self.record_type or "?"
        spec = self.types.get(name)
        if not values or spec is None:
            return Rejected(name, self.path, line, reason)
        patient = values.get(spec.patient)
        try:
            when = record_time(values.get(spec.time), self.tz) if values.get(spec.time) is not None else None
        except OutOfRange:
            when = None
        return Rejected(name, self.path, line, reason, None if patient is None else str(patient), when, dict(values))

    def build(self, data: Mapping[str, Any], line: int) -> Record | Rejected:
        if self.watch is not None:
            self.watch(data, line)
        name = self.record_type
        if name is None:
            raw = data.get(DISPATCH_KEY)
            if is_missing(raw):
                return self.reject(line, f"{DISPATCH_KEY}: missing record type")
            name = raw.strip() if isinstance(raw, str) else str(raw)
            if name not in self.types:
                return self.reject(line, f'{DISPATCH_KEY}: unknown record type "{name}"'
                                         f"{did_you_mean(name, self.types)}", "?")
        spec = self.types[name]
        values, problems = self.convert(name, spec, data)
        for needed, what in ((spec.key, "record key"), (spec.patient, "patient")):
            if not problems and needed and needed not in values:  # only when the pack did not declare it
                problems.append(f"{needed}: missing {what}")
        when = None
        if not problems:
            try:
                when = record_time(values.get(spec.time), self.tz)
            except OutOfRange as exc:
                problems.append(self._reason(name, ConversionError(spec.time, str(exc), data.get(spec.time))))
        if problems:
            return self.reject(line, "; ".join(problems), name, values=values)
        key = str(values[spec.key])
        first = self.seen.first(name, key)
        if first is not None:
            shown = self.privacy.quoted(name, spec.key, key, lambda text: f'"{text}"')
            # no values: its first copy is in the history, so it makes no finding a data-quality suspect
            return self.reject(line, f"duplicate {spec.key} {shown} (first at {first[0]}:{first[1]})", name)
        self.seen.add(name, key, self.path, line)
        self.stats.records_read += 1
        patient = str(values[spec.patient]) if spec.patient else None  # a reference table's: no patient
        return Record(name, key, patient, when, values, self.path, line)

    def convert(self, name: str, spec: RecordType, data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The record's typed values (missing ones left out), and the problems of those that do not convert."""
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
            self._missing(spec, field_name, problems)
        return values, problems

    @staticmethod
    def _missing(spec: RecordType, field_name: str, problems: list[str]) -> None:
        if field_name == spec.key:
            problems.append(f"{field_name}: missing record key")
        elif field_name == spec.patient:
            problems.append(f"{field_name}: missing patient")

    def _reason(self, type_name: str, exc: ConversionError) -> str:
        return exc.render(lambda raw: self.privacy.quoted(type_name, exc.field, raw, quote))


class MappedBuilder(RecordBuilder):
    """A RecordBuilder reading each field through a source map entry's cell readers (SPEC 8)."""

    def __init__(self, path: str, readers: Mapping[str, CellReader],
                 record_type: str, types: Mapping[str, RecordType], tz: dt.tzinfo, seen: Seen, stats: InputStats,
                 privacy: Privacy = REVEAL_ALL) -> None:
        super().__init__(path, record_type, types, tz, seen, stats, privacy)
        self.readers = list(readers.items())
        # (field, column, missing markers, converter, zone, reader): a plain cell that converts as the
        # canonical reader converts it is read here in one step, as RecordBuilder.convert reads it
        self.direct = [(name, read.column, read.markers, read.canonical, read.tz, read.field, read)
                       for name, read in self.readers]

    def convert(self, name: str, spec: RecordType, data: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        values: dict[str, Any] = {}
        problems: list[str] = []
        for field_name, column, markers, from_text, tz, field, read in self.direct:
            if from_text is not None and column is not None:
                raw = data.get(column)
                if type(raw) is list and len(raw) < 2:  # a FHIR column's one value, or none
                    if not raw:
                        self._missing(spec, field_name, problems)
                        continue
                    raw = raw[0]
                if type(raw) is str:
                    text = raw.strip()
                    if not text or text in markers:
                        self._missing(spec, field_name, problems)
                        continue
                    try:
                        values[field_name] = from_text(text, field, tz)
                        continue
                    except ConversionError as exc:
                        problems.append(self._reason(name, read._named(exc)))
                        continue
                    except (ValueError, TypeError, OverflowError):
                        problems.append(self._reason(name, read._named(not_a(field, text))))
                        continue
            try:
                value = read(data)
            except ConversionError as exc:
                problems.append(self._reason(name, exc))
                continue
            if value is None:
                self._missing(spec, field_name, problems)
            else:
                values[field_name] = value
        return values, problems


def did_you_mean(name: str, choices: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""
