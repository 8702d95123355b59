"""The data model: packs, rules, conditions, records and outcomes, as frozen dataclasses."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Union

from engine.errors import UsageError

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
    staff: bool = False  # identifies a staff member (a clinician's ID): pseudonymised like a patient


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

    @property
    def shared(self) -> bool:
        """A reference table (a staff roster, say): its records belong to no patient, and history
        conditions of every patient reach them through ``join``."""
        return not self.patient

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


HISTORY_PREFIX = "history@"  # the value slot of a history condition; no declared field can start so
# in a history condition's where, a field of the judged record ({judged: NAME}) is read from the
# values of the other record under this prefix
JUDGED_PREFIX = "judged@"


@dataclass(frozen=True, slots=True)
class History:
    """A question about the patient's other records: exists, count, since_previous or first.

    ``before``/``after`` bound the window around the judged record's time (None: unbounded on
    that side); ``gap`` is since_previous's at_least; ``time_field`` is the judged record's time,
    whose absence makes the condition unknown.
    """

    form: str
    of: str
    where: Condition | None
    before: dt.timedelta | None
    after: dt.timedelta | None
    join: str | None
    at_most: int | None
    at_least: int | None
    gap: dt.timedelta | None
    time_field: str
    mark: Mark
    # join: {this_field: their_field}: the other record's field when it is named differently
    joined_as: str | None = None
    # the judged record's fields the where compares with ({judged: NAME}), in order of first use
    judged: tuple[str, ...] = ()

    @property
    def their_join(self) -> str | None:
        """The field of the other records that must equal the judged record's ``join``."""
        return self.joined_as or self.join

    @property
    def name(self) -> str:
        """The key under which a record's values hold this condition's truth."""
        return f"{HISTORY_PREFIX}{self.mark.path}:{self.mark.line}:{self.mark.column}"

    @property
    def leaf(self) -> Leaf:
        """The condition as the rule engine sees it: a boolean computed from the timeline."""
        return Leaf(self.name, "equals", True, mark=self.mark)


Condition = Union[Leaf, All, AnyOf, Not, History]


def kind_of(rtype: RecordType, name: str) -> str | None:
    """The type of a field, derived field or history slot of ``rtype``."""
    return "boolean" if name.startswith(HISTORY_PREFIX) else rtype.type_of(name)


@dataclass(frozen=True, slots=True)
class Example:
    """One ``tests:`` example of a rule: a record and the expected outcome."""

    record: dict[str, Any]
    expect: str
    mark: Mark
    history: tuple[dict[str, Any], ...] = ()
    time: str | None = None  # the record's time as written (picks the version of a rule with effective dates)


EVIDENCE = ("primary", "secondary", "local")  # what a pack's source is: the document, a summary, the clinic's own


@dataclass(frozen=True, slots=True)
class Source:
    """One entry of a pack's bibliography (``sources:``): its full reference, where to read it, and
    what kind of evidence it is (the document itself, a secondary summary, or the clinic's own choice)."""

    id: str
    ref: str
    url: str | None = None
    evidence: str = "primary"


@dataclass(frozen=True, slots=True)
class Parameter:
    """A local choice written once at the top of a pack (``parameters:``) and used by rules as
    ``{param: NAME}``: a dose ceiling, a window, the credentials allowed to supervise."""

    name: str
    value: Any  # as written: a scalar or a list of scalars, converted at each use to its field's type
    means: str
    source: str | None  # the pack source the value rests on (LOCAL for the clinic's own choice)
    uses: tuple[str, ...]  # the rules that use it, in pack order
    mark: Mark


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
    # effective: {from, until} (days, inclusive, pack zone; None: open), already part of ``when``
    effective: tuple[dt.date | None, dt.date | None] | None = None
    # (source id, what the rule takes from that source): the pack's sources it rests on
    sources: tuple[tuple[str, str], ...] = ()
    # per: patient (counted once per patient) or a field (once per patient and value of that field,
    # a course say); None: once per record
    per: str | None = None

    @property
    def starts(self) -> dt.date:
        """The first day this version is in force (the calendar's first for a rule always in force)."""
        return (self.effective or (None, None))[0] or dt.date.min

    def in_force(self, day: dt.date) -> bool:
        """Whether ``day`` (in the pack's zone) lies in the rule's effective window."""
        start, end = self.effective or (None, None)
        return (start is None or start <= day) and (end is None or day <= end)


def window_text(start: object, end: object) -> str:
    """An effective window as the reports say it: "2026-02-01 to now", "from the start to 2026-01-31"."""
    return f"{start or 'from the start'} to {end or 'now'}"


def latest_version(versions: Iterable[Rule]) -> Rule:
    """Of the versions of one rule (effective dates), the one in force last: it names the rule."""
    return max(versions, key=lambda rule: rule.starts)


def version_at(versions: list[Rule], day: dt.date | None) -> Rule | None:
    """The version of a rule in force on ``day``; None when none is (or there is no day)."""
    return None if day is None else next((rule for rule in versions if rule.in_force(day)), None)


def count_rules(rules: Iterable[Rule]) -> str:
    """ "21 rules", or "2 rules (3 versions)" when rules have effective-dated versions."""
    rules = list(rules)
    ids = len({rule.id for rule in rules})
    said = f"{ids} rule{'s' if ids != 1 else ''}"
    return said if ids == len(rules) else f"{said} ({len(rules)} versions)"


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
    targets: dict[str, float] = field(default_factory=dict)  # severity -> compliance target (0..1)
    sources: dict[str, Source] = field(default_factory=dict)  # the bibliography, by id, in pack order
    parameters: dict[str, Parameter] = field(default_factory=dict)  # local choices, by name, in pack order


class Record(NamedTuple):
    """One record read from an input, its values converted to the declared types (and its derived
    fields added as it is read). Judging does not change it: history answers are kept beside it.

    A named tuple rather than a frozen dataclass: as immutable, and made four times faster (every
    record read, and every record spilled by patient, is made once more).
    """

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
    # what of the record could still be read: its patient, time and converted values, so a finding
    # whose history window it lies in can say it may be a data-entry gap (not in any report)
    patient: str | None = field(default=None, compare=False)
    time: dt.datetime | None = field(default=None, compare=False)
    values: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


def merged_types(packs: list[Pack]) -> tuple[dict[str, RecordType], str]:
    """One set of record types for several packs (they read the same files) and their time zone."""
    types: dict[str, RecordType] = {}
    zones = {pack.timezone for pack in packs}
    if len(zones) > 1:
        raise UsageError(f"packs disagree on the time zone: {', '.join(sorted(zones))}")
    for pack in packs:
        for name, rtype in pack.records.items():
            known = types.get(name)
            if known is None:
                types[name] = RecordType(name, rtype.key, rtype.patient, rtype.time,
                                         dict(rtype.fields), dict(rtype.derived))
                continue
            if (known.key, known.patient, known.time) != (rtype.key, rtype.patient, rtype.time):
                raise UsageError(f'packs declare record type "{name}" with different key, patient or time')
            for fname, spec in rtype.fields.items():
                if fname in known.fields and known.fields[fname] != spec:
                    raise UsageError(f'packs declare field "{name}.{fname}" differently')
                known.fields.setdefault(fname, spec)
            for dname, derived in rtype.derived.items():
                if dname in known.derived and known.derived[dname].source != derived.source:
                    raise UsageError(f'packs derive "{name}.{dname}" differently')
                known.derived.setdefault(dname, derived)
    return types, zones.pop() if zones else "UTC"
