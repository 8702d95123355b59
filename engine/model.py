"""The data model: packs, rules, conditions, records and outcomes, as frozen dataclasses."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from typing import Any, Union

FIELD_TYPES = ("string", "integer", "number", "boolean", "date", "datetime", "enum", "duration")
SEVERITIES = ("critical", "major", "minor", "info")  # most severe first
# Types that order (less_than, between...); strings, enums and booleans compare for equality only.
ORDERED_TYPES = frozenset({"integer", "number", "date", "datetime", "duration"})
# Types that compare with each other: integer and number are both numeric.
TYPE_KIND = {"integer": "number", "number": "number", "date": "date", "datetime": "datetime",
             "duration": "duration", "string": "string", "enum": "string", "boolean": "boolean"}


class Outcome(str, enum.Enum):
    """The outcome of one rule on one record (SPEC section 4)."""

    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not_applicable"
    NOT_EVALUABLE = "not_evaluable"
    WAIVED = "waived"


@dataclass(frozen=True, slots=True)
class Mark:
    """A position in a pack file, 1-based."""

    path: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Field:
    """A declared field of a record type."""

    name: str
    type: str
    values: tuple[str, ...] = ()
    unit: str | None = None
    phi: bool = False


@dataclass(frozen=True, slots=True)
class Derived:
    """A computed field (``derive:``); ``expr`` is a parsed expression tree."""

    name: str
    type: str
    expr: Any
    inputs: tuple[str, ...]
    source: str


@dataclass(frozen=True, slots=True)
class RecordType:
    """A record type a pack reads: its key, patient link, time and typed fields."""

    name: str
    key: str
    patient: str
    time: str
    fields: dict[str, Field]
    derived: dict[str, Derived] = field(default_factory=dict)

    def type_of(self, name: str) -> str | None:
        if name in self.fields:
            return self.fields[name].type
        if name in self.derived:
            return self.derived[name].type
        return None


@dataclass(frozen=True, slots=True)
class Leaf:
    """A condition on one field: ``op`` with a constant ``value`` or another field ``ref``."""

    field: str
    op: str
    value: Any = None
    ref: str | None = None
    mark: Mark | None = None


@dataclass(frozen=True, slots=True)
class All:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    part: Condition


Condition = Union[Leaf, All, AnyOf, Not]


@dataclass(frozen=True, slots=True)
class Example:
    """One ``tests:`` example of a rule: a record and the expected outcome."""

    record: dict[str, Any]
    expect: str
    mark: Mark
    history: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    title: str
    severity: str
    for_type: str
    when: Condition | None
    require: Condition
    message: str
    rationale: str
    cite: str
    pack: str
    mark: Mark
    examples: tuple[Example, ...] = ()


@dataclass(frozen=True, slots=True)
class Pack:
    id: str
    version: str
    title: str
    source: str
    timezone: str
    records: dict[str, RecordType]
    rules: tuple[Rule, ...]
    path: str
    sha256: str


@dataclass(slots=True)
class Record:
    """One record read from an input, its values converted to the declared types."""

    type: str
    key: str
    patient: str | None
    time: dt.datetime | None
    values: dict[str, Any]
    path: str
    line: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record the reader could not accept, with where it was and why."""

    type: str
    path: str
    line: int
    reason: str
