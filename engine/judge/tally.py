"""Outcomes counted per rule and per stratum, and the entries of the report made from them: a
typed Finding for each fail, a NotEvaluable for each record a rule could not judge, every rejected
record; identifying values pass the privacy gate on their way in."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.judge.context import PackContext
from engine.judge.evidence import display, render_message
from engine.judge.timeline import Timeline, micros, window
from engine.language import conditions
from engine.language.model import JUDGED_PREFIX, History, Outcome, Record, Rejected, Rule
from engine.privacy import Pseudonymiser
from engine.results import Finding, NotEvaluable, Source, finding_order, not_evaluable_order
from engine.spool import Spool
from engine.waivers import Waiver, Waivers

OutcomeHook = Callable[[Rule, Record, Outcome], None]
_STRATUM_COLUMN = {Outcome.PASS: 0, Outcome.FAIL: 1, Outcome.NOT_EVALUABLE: 2}
_WAIVED_COLUMN = 3  # a stratum's counts: passed, failed, not evaluable, waived


@dataclass(slots=True)
class Case:
    """A record on its way through the engine: what the rules read of it (its values and, beside
    them, its history answers), its stratum, and the patient's timeline its evidence comes from.
    The record itself is not changed by being judged."""

    record: Record
    values: dict[str, Any]
    stratum: tuple[str, ...]
    timeline: Timeline | None = None


@dataclass(slots=True)
class Unit:
    """What the records of one patient (or one patient's course) gave a rule counted per patient
    or course: its fails and waived fails as findings, whether any passed, its first not-evaluable
    record; each kept with its stratum."""

    # (order: untimed last, time, raw key; stratum; finding) of each fail and waived fail
    failed: list[tuple[tuple[Any, ...], tuple[str, ...], Finding]] = field(default_factory=list)
    waived: list[tuple[tuple[Any, ...], tuple[str, ...], Finding]] = field(default_factory=list)
    # the earliest passing record's order and stratum; the earliest not-evaluable one's, with its entry
    # (earliest, not first judged: the order records are judged in is not the report's)
    passed: tuple[tuple[Any, ...], tuple[str, ...]] | None = None
    not_evaluable: tuple[tuple[Any, ...], tuple[str, ...], NotEvaluable] | None = None


@dataclass
class RuleCounts:
    passed: int = 0
    failed: int = 0
    waived: int = 0
    not_evaluable: int = 0
    not_applicable: int = 0
    patients: set[str] = field(default_factory=set)  # patients with an unwaived fail (raw identifiers)


@dataclass
class Result:
    """Everything an audit found, before the report is built from it."""

    rules: list[Rule]
    tallies: list[RuleCounts]  # per rule, in the order of rules
    # spooled: beyond a batch they wait on disk, sorted as the report lists them (engine/spool.py)
    findings: Spool[Finding] = field(default_factory=lambda: Spool(finding_order))
    not_evaluable: Spool[NotEvaluable] = field(default_factory=lambda: Spool(not_evaluable_order))
    rejected: list[Rejected] = field(default_factory=list)
    group_by: list[str] = field(default_factory=list)
    # (rule index, stratum) -> [passed, failed, not evaluable, waived]; a stratum is (month, group-by values...)
    strata: dict[tuple[int, tuple[str, ...]], list[int]] = field(default_factory=dict)
    first: dt.datetime | None = None  # the audit period: earliest and latest judged record time
    last: dt.datetime | None = None
    pseudonymised: str | None = None  # where the pseudonym key came from; None: identifiers as given


def rejected_near(histories: list[History], rejected: Mapping[tuple[str, str], list[Rejected]],
                  record: Record, shared: Collection[str] = ()) -> list[Rejected]:
    """The rejected records (by record type and patient) that one of a rule's history conditions
    would have looked at for ``record``: of the patient and the condition's type, inside its window
    (or with no readable time), and sharing the joined field (or with it unreadable). A finding near
    one may be a data-entry gap rather than a gap in care. A condition on a reference table (a type in
    ``shared``, such as a staff roster) looks at its rejected records of no patient."""
    found: list[Rejected] = []
    for cond in histories:
        owner = "" if cond.of in shared else record.patient or ""
        judged = {JUDGED_PREFIX + name: record.values.get(name) for name in cond.judged}
        for item in rejected.get((cond.of, owner), ()):
            values = {**(item.values or {}), **judged}
            if cond.join is not None:
                theirs = values.get(cond.their_join or cond.join)
                if theirs is not None and theirs != record.values.get(cond.join):
                    continue
            # what could be read of it says it is not a record the condition looks for: its where is
            # false with the unreadable values unknown (three-valued, so false whatever they were), and
            # every field a "present" test reads was read (an unreadable value is present, but absent
            # from what was read, and would make that test false for the wrong reason)
            if cond.where is not None and conditions.evaluate(cond.where, values)[0] is False \
                    and all(leaf.field in values for leaf in conditions.leaves_of(cond.where) if leaf.op == "present"):
                continue
            if item.time is None or record.time is None:
                near = True
            elif cond.form == "since_previous":  # between the gap's start and this record
                near = record.time - (cond.gap or dt.timedelta(0)) <= item.time <= record.time
            elif cond.form == "first":  # an earlier one would have been the first
                near = item.time <= record.time
            else:  # the window the timeline searches
                low, high = window(cond, micros(record.time))
                near = low <= micros(item.time) <= high
            if near and item not in found:
                found.append(item)
    return found


def unit_key(per: str, record: Record) -> tuple[Any, ...]:
    """The unit a record counts in for a rule counted ``per`` patient or field: the patient, and the
    field's value; a record without that value is a unit of its own (it belongs to no known course)."""
    if per == "patient":
        return (record.patient or "",)
    value = record.values.get(per)
    return (record.patient or "", value) if value is not None else (record.patient or "", None, record.key)


class Tally:
    """Counts outcomes and makes the report's entries of one audit."""

    def __init__(self, context: PackContext, group_by: list[str] | None = None,
                 on_outcome: OutcomeHook | None = None, waivers: Waivers | None = None,
                 fingerprints: Pseudonymiser | None = None) -> None:
        self.context = context
        self.fingerprints = fingerprints  # with an archive: each finding's fingerprint, from the raw key
        self._months: dict[tuple[Any, ...], str] = {}
        self.on_outcome = on_outcome
        self.waivers = waivers
        privacy = context.privacy
        self.result = Result(context.rules, [RuleCounts() for _ in context.rules], group_by=list(group_by or []),
                             pseudonymised=None if privacy.pseudonymise is None else privacy.pseudonymise.source)
        # rules counted per patient or course: rule index -> unit (patient, and the field's value) -> Unit
        self.units: dict[int, dict[tuple[str, ...], Unit]] = {}
        # rejected records whose patient could be read, by (record type, patient): near a finding's
        # history window they make it a data-quality suspect
        self.rejected_by_patient: dict[tuple[str, str], list[Rejected]] = {}

    def case(self, record: Record, values: dict[str, Any], timeline: Timeline | None = None) -> Case:
        """The record as judged, its time counted into the audit period and its stratum worked out."""
        when = record.time
        result = self.result
        if when is not None:
            if result.first is None or when < result.first:
                result.first = when
            if result.last is None or when > result.last:
                result.last = when
        month = self._month(when) if when else "no time"
        stratum = (month, *(month if name == "month" else self._group_value(record, name)
                            for name in result.group_by))
        return Case(record, values, stratum, timeline)

    def _month(self, when: dt.datetime) -> str:
        """The month of ``when`` in the pack's zone ("2026-03"), worked out once per hour and offset
        of the record's time (an hour in which the pack's month changes, at an offset that is not a
        whole hour from the pack's, is worked out each time)."""
        key = (when.year, when.month, when.day, when.hour, when.tzinfo)
        month = self._months.get(key)
        if month is not None:
            return month
        tz = self.context.tz
        month = when.astimezone(tz).strftime("%Y-%m")
        start = when.replace(minute=0, second=0, microsecond=0).astimezone(tz)
        end = (when.replace(minute=0, second=0, microsecond=0) + dt.timedelta(minutes=59, seconds=59,
                                                                              microseconds=999999)).astimezone(tz)
        # one month at both ends and one offset of the pack's zone (a clock put back within the hour,
        # as St. John's did at 00:01, can take a month's end there and back)
        if start.strftime("%Y-%m") == month == end.strftime("%Y-%m") and start.utcoffset() == end.utcoffset():
            if len(self._months) >= 100_000:
                self._months.clear()
            self._months[key] = month
        return month

    def _group_value(self, record: Record, name: str) -> str:
        value = self.context.privacy.value(record.type, name, display(record.values.get(name)))
        return "missing" if value is None else str(value)

    def reject(self, item: Rejected) -> None:
        self.result.rejected.append(item)
        owner = self.context.history_owner(item)
        if owner is not None:  # a roster row's is "": any patient's history may need it
            self.rejected_by_patient.setdefault((item.type, owner), []).append(item)

    def _suspect(self, index: int, record: Record) -> tuple[str, ...]:
        """The rejected records (path:line) near the record's history windows (rejected_near); they are
        all known by then: history rules are judged once every input has been read."""
        if not self.rejected_by_patient or self.context.history_owner(record) is None:
            return ()
        return tuple(f"{item.path}:{item.line}"
                     for item in rejected_near(self.context.histories[index], self.rejected_by_patient, record,
                                               self.context.shared_types))

    # -- outcomes ----------------------------------------------------------------------------
    @property
    def counts_in_bulk(self) -> bool:
        """Passes and not-applicables may be counted without looking at each record (no hook)."""
        return self.on_outcome is None

    def passed(self, index: int, cases: list[Case], ids: Any) -> None:
        """Count passes of rule ``index`` on ``cases[i] for i in ids`` (bulk: no hook is called)."""
        self.result.tallies[index].passed += len(ids)
        strata = self.result.strata
        for fact_id in ids:
            key = (index, cases[fact_id].stratum)
            counts = strata.get(key)
            if counts is None:
                counts = strata[key] = [0, 0, 0, 0]
            counts[0] += 1

    def passed_many(self, index: int, stratum: tuple[str, ...], number: int) -> None:
        """Count ``number`` passes of rule ``index`` in one stratum (bulk: no hook is called)."""
        self.result.tallies[index].passed += number
        counts = self.result.strata.get((index, stratum))
        if counts is None:
            counts = self.result.strata[(index, stratum)] = [0, 0, 0, 0]
        counts[0] += number

    def not_applicable(self, index: int, number: int) -> None:
        self.result.tallies[index].not_applicable += number

    def outcome(self, index: int, case: Case, outcome: Outcome) -> None:
        """One outcome of rule ``index`` on one record, with its finding or not-evaluable entry."""
        rule, record = self.context.rules[index], case.record
        if record.time is None and rule.effective is not None:
            # a dated rule cannot know whether it was in force: not evaluable (SPEC 9), whatever
            # else its when says, counted once, by the rule's latest version
            if self.on_outcome is not None:
                self.on_outcome(rule, record, outcome)
            if index in self.context.latest_dated:
                self.result.tallies[index].not_evaluable += 1
                self.result.strata.setdefault((index, case.stratum), [0, 0, 0, 0])[2] += 1
                missing = (self.context.types[rule.for_type].time,)
                self.result.not_evaluable.append(self._not_evaluable(rule, case, missing))
            return
        counts = self.result.tallies[index]
        waiver = None
        if outcome is Outcome.FAIL and self.waivers is not None:
            waiver = self.waivers.covering(rule, record)  # a waived fail is neither a pass nor a fail
        if rule.per is not None:
            self._unit_outcome(index, case, outcome, waiver)
            if self.on_outcome is not None:
                self.on_outcome(rule, record, outcome)
            return
        column = _WAIVED_COLUMN if waiver is not None else _STRATUM_COLUMN.get(outcome)
        if column is not None:
            self.result.strata.setdefault((index, case.stratum), [0, 0, 0, 0])[column] += 1
        if outcome is Outcome.PASS:
            counts.passed += 1
        elif outcome is Outcome.NOT_APPLICABLE:
            counts.not_applicable += 1
        elif outcome is Outcome.NOT_EVALUABLE:
            counts.not_evaluable += 1
            self.result.not_evaluable.append(self._not_evaluable(rule, case))
        elif waiver is not None:
            counts.waived += 1
            self.result.findings.append(self._finding(rule, index, case, waiver))
        else:
            counts.failed += 1
            if record.patient is not None:
                counts.patients.add(record.patient)
            self.result.findings.append(self._finding(rule, index, case))
        if self.on_outcome is not None:
            self.on_outcome(rule, record, outcome)

    def _unit_outcome(self, index: int, case: Case, outcome: Outcome, waiver: Waiver | None) -> None:
        """One record's outcome of a rule counted per patient or course, kept in its unit."""
        rule, record = self.context.rules[index], case.record
        key = unit_key(rule.per or "patient", record)
        unit = self.units.setdefault(index, {}).setdefault(key, Unit())
        order = (record.time is None, record.time.timestamp() if record.time else 0.0, record.key)
        if outcome is Outcome.PASS:
            if unit.passed is None or order < unit.passed[0]:
                unit.passed = (order, case.stratum)
        elif outcome is Outcome.NOT_EVALUABLE:
            if unit.not_evaluable is None or order < unit.not_evaluable[0]:
                unit.not_evaluable = (order, case.stratum, self._not_evaluable(rule, case))
        elif outcome is Outcome.FAIL:
            finding = self._finding(rule, index, case, waiver)
            (unit.waived if waiver is not None else unit.failed).append((order, case.stratum, finding))
            if waiver is None and record.patient is not None:
                self.result.tallies[index].patients.add(record.patient)

    def count_units(self) -> None:
        """Count each unit of the rules counted per patient or course once: failed when any of its
        records failed (one finding, on its earliest failing record, listing every failing one),
        else waived when its fails were all waived, else passed when any record passed, else not
        evaluable when any was, else not applicable."""
        result = self.result
        for index, units in self.units.items():
            counts, rule = result.tallies[index], self.context.rules[index]
            for unit in units.values():
                if unit.failed or unit.waived:
                    column = 1 if unit.failed else _WAIVED_COLUMN
                    if unit.failed:
                        counts.failed += 1
                    else:
                        counts.waived += 1
                    stratum, finding = self._unit_finding(rule, unit.failed or unit.waived)
                elif unit.passed is not None:
                    counts.passed += 1
                    column, stratum = 0, unit.passed[1]
                elif unit.not_evaluable is not None:
                    counts.not_evaluable += 1
                    _, stratum, entry = unit.not_evaluable
                    result.not_evaluable.append(entry)
                    column = 2
                else:
                    counts.not_applicable += 1
                    continue
                result.strata.setdefault((index, stratum), [0, 0, 0, 0])[column] += 1
                if column in (1, _WAIVED_COLUMN):
                    result.findings.append(finding)
        self.units.clear()

    def _unit_finding(self, rule: Rule, failing: list[tuple[tuple[Any, ...], tuple[str, ...], Finding]]
                      ) -> tuple[tuple[str, ...], Finding]:
        """A unit's one finding: its earliest failing record's (by time, then raw key: the same in
        every run whatever the pseudonyms), with every failing record listed."""
        ordered = sorted(failing, key=lambda item: item[0])
        _, stratum, first = ordered[0]
        if len(ordered) == 1:
            return stratum, first
        what = "this patient" if rule.per == "patient" else f"this patient's {rule.per}"
        listed = [f"{f.record_key} at {f.time or 'no time'} ({f.source.path}:{f.source.line})" for _, _, f in ordered]
        evidence = {**first.evidence, f"failing {first.record_type} records of {what}": listed}
        message = f"{first.message} ({len(ordered)} {first.record_type} records of {what} fail it)"
        return stratum, dataclasses.replace(first, message=message, evidence=evidence)

    def _missing(self, rule: Rule, case: Case, outcome: Outcome) -> tuple[str, ...]:
        """The missing fields that made a fail or a not-evaluable (the outcome is checked already)."""
        condition = rule.when if outcome is Outcome.NOT_EVALUABLE else rule.require
        assert condition is not None
        return tuple(conditions.evaluate(condition, case.values)[1])

    def _finding(self, rule: Rule, index: int, case: Case, waiver: Waiver | None = None) -> Finding:
        record, privacy = case.record, self.context.privacy
        return Finding(
            rule=rule.id, pack=rule.pack, severity=rule.severity,
            outcome=Outcome.FAIL.value if waiver is None else "waived",
            waiver=None if waiver is None else waiver.shown(),
            record_type=record.type, record_key=privacy.key(record.type, record.key),
            patient=privacy.patient(record.patient), time=record.time.isoformat() if record.time else None,
            source=Source(record.path, record.line),
            message=render_message(rule.message, record.values,
                                   lambda name, value: privacy.value(record.type, name, value)),
            evidence=self._evidence(index, case), missing=self._missing(rule, case, Outcome.FAIL),
            fingerprint=None if self.fingerprints is None
            else self.fingerprints.fingerprint(rule.pack, rule.id, record.type, record.key),
            suspect=self._suspect(index, record))

    def _evidence(self, index: int, case: Case) -> dict[str, Any]:
        record = case.record
        shown = {name: display(record.values.get(name)) for name in self.context.evidence_fields[index]}
        for cond in self.context.histories[index]:
            shown[conditions.describe_history(cond)] = \
                case.timeline.evidence(cond, record, self.context.privacy) if case.timeline is not None else None
        return shown

    def _not_evaluable(self, rule: Rule, case: Case, missing: tuple[str, ...] | None = None) -> NotEvaluable:
        record = case.record
        return NotEvaluable(rule.id, rule.pack, record.type, self.context.privacy.key(record.type, record.key),
                            missing if missing is not None else self._missing(rule, case, Outcome.NOT_EVALUABLE),
                            Source(record.path, record.line))
