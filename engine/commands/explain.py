"""Why one rule gave one record its outcome: every condition with the values it read and its truth."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from engine.errors import UsageError
from engine.inputs.builder import InputStats, Seen
from engine.inputs.maps import SourceMap
from engine.inputs.sources import read_binding
from engine.judge.context import PackContext
from engine.judge.evidence import display, render_message
from engine.judge.pipeline import judge, open_inputs
from engine.judge.tally import rejected_near
from engine.judge.timeline import Timeline
from engine.language import conditions, operators
from engine.language.model import (
    All,
    Condition,
    History,
    Leaf,
    Not,
    Outcome,
    Pack,
    Record,
    Rejected,
    Rule,
    latest_version,
    version_at,
)
from engine.privacy import Pseudonymiser


def _truth(value: bool | None) -> str:
    return "unknown" if value is None else "true" if value else "false"


def _shown(value: Any) -> str:
    shown = display(value)
    if shown is None:
        return "missing"
    return f'"{shown}"' if isinstance(shown, str) else str(shown).lower() if isinstance(shown, bool) else str(shown)


class _Tracer:
    def __init__(self, context: PackContext, record: Record, timeline: Timeline, values: dict[str, Any]) -> None:
        self.rtype = context.types[record.type]
        self.record = record
        self.timeline = timeline
        self.values = values  # the record's values and its history answers
        self.privacy = context.privacy

    def _value(self, name: str) -> str:
        """A value the record holds, as the privacy gate lets it be shown."""
        return _shown(self.privacy.value(self.record.type, name, display(self.values.get(name))))

    def trace(self, cond: Condition, depth: int) -> tuple[bool | None, list[str]]:
        pad = "  " * depth
        truth, _ = conditions.evaluate(cond, self.values)
        if isinstance(cond, History):
            lines = [f"{pad}{conditions.describe_history(cond)} -> {_truth(truth)}"]
            for key, value in self.timeline.evidence(cond, self.record, self.privacy).items():
                if key != "result":
                    shown = " to ".join(value) if key == "window" else _listed(value)
                    lines.append(f"{pad}  {key}: {shown}")
            return truth, lines
        if isinstance(cond, Leaf):
            return truth, [f"{pad}{self._leaf(cond)} -> {_truth(truth)}"]
        if isinstance(cond, Not):
            inner, lines = self.trace(cond.part, depth + 1)
            return truth, [f"{pad}not -> {_truth(truth)}", *lines]
        word = "all of" if isinstance(cond, All) else "any of"
        lines = [f"{pad}{word} -> {_truth(truth)}"]
        for part in cond.parts:
            lines += self.trace(part, depth + 1)[1]
        return truth, lines

    def _leaf(self, leaf: Leaf) -> str:
        read = [leaf.field] + ([leaf.ref] if leaf.ref else [])
        if leaf.op == "present":
            test = f"{leaf.field} {'documented' if leaf.value else 'not documented'}"
        else:
            constant = list(leaf.value) if isinstance(leaf.value, tuple) else leaf.value
            operand = leaf.ref if leaf.ref else _shown(constant)
            test = f"{leaf.field} {operators.get(leaf.op).symbol} {operand}"
        facts = []
        for name in read:
            text = f"{name} = {self._value(name)}"
            derived = self.rtype.derived.get(name)
            if derived is not None:
                inputs = ", ".join(f"{i} = {self._value(i)}" for i in derived.inputs)
                text += f" (derived: {derived.source}; {inputs})"
            facts.append(text)
        return f"{test}: {'; '.join(facts)}"


def _whose(patient: str | None) -> str:
    """The judged record's patient as explain names it; a reference table's row has none."""
    return f"patient {patient}" if patient is not None else "no patient (a reference table's row)"


def _listed(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value) if value else "none"
    return str(value)


def _find_rule(context: PackContext, rule_id: str) -> Rule:
    for rule in context.rules:
        if rule.id == rule_id:
            return rule
    ids = [rule.id for rule in context.rules]
    close = difflib.get_close_matches(rule_id, ids, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    raise UsageError(f'no rule "{rule_id}" in the packs{hint}')


def _read(context: PackContext, files: list[str], maps: list[SourceMap]) -> Iterator[Record | Rejected]:
    """Every input read as an audit reads it (the same rejections, duplicates included)."""
    seen = Seen()
    for binding in open_inputs(files, context.types, maps, context.needed):
        yield from read_binding(binding, context.types, context.tz, seen, InputStats(binding.path, binding.type),
                                context.privacy)


def rule_values(context: PackContext, rule: Rule, record: Record, patient: list[Record],
                  timeline: Timeline | None = None) -> dict[str, Any]:
    """What ``rule`` reads of ``record``: its values (derived ones included) and the answers of the
    rule's history conditions from ``patient``'s records, the record among them. Needs no audit to
    have run first; deriving again gives the same values."""
    for other in patient:
        context.derive(other)
    timeline = timeline or Timeline(patient, context.wheres)
    histories = conditions.histories_of(rule.when) + conditions.histories_of(rule.require)
    return {**record.values, **timeline.answers(histories, record)}


def trace(context: PackContext, rule: Rule, record: Record, patient: list[Record]) -> tuple[Outcome, list[str]]:
    """The rule's outcome on ``record`` in plain Python, and every condition traced.

    ``patient`` holds the patient's records, the judged one among them; history conditions show
    their window and matches.
    """
    timeline = Timeline(patient, context.wheres)
    tracer = _Tracer(context, record, timeline, rule_values(context, rule, record, patient, timeline))
    when, when_lines = (True, ["when: always"]) if rule.when is None else tracer.trace(rule.when, 1)
    require, require_lines = tracer.trace(rule.require, 1)
    outcome = conditions.outcome(when, require)
    lines = [f"when -> {_truth(when)}", *when_lines] if rule.when is not None else when_lines
    return outcome, [*lines, f"require -> {_truth(require)}", *require_lines]


def explain(packs: list[Pack], rule_id: str, record_key: str, files: list[str],
            pseudonymise: Pseudonymiser | None = None, maps: list[SourceMap] | None = None) -> tuple[list[str], bool]:
    """The explanation as lines of text, and whether the rule engine gave the same outcome.

    With ``pseudonymise``, identifying values are shown as the audit report shows them, and
    ``record_key`` may be the key or its pseudonym from a report.
    """
    context = PackContext(packs, pseudonymise)
    privacy = context.privacy
    rule = _find_rule(context, rule_id)
    target: Record | None = None
    for item in _read(context, files, maps or []):
        if isinstance(item, Record) and item.type == rule.for_type and \
                record_key in (item.key, privacy.key(item.type, item.key)):
            target = item
            break
    if target is None:
        raise UsageError(f'no accepted {rule.for_type} record with key "{record_key}" in the inputs '
                         "(a rejected record cannot be judged: the audit report lists it with its reason)")
    versions = [r for r in context.rules if (r.pack, r.id) == (rule.pack, rule.id)]
    no_version = ""
    if len(versions) > 1:  # effective dates: the version in force at the record's time explains it
        day = target.time.astimezone(context.tz).date() if target.time is not None else None
        in_force = version_at(versions, day)
        rule = in_force or latest_version(versions)
        if in_force is None:
            no_version = ("no version of the rule is in force at the record's time (or it has none): "
                          "the latest version is shown")
    patient: list[Record] = []
    rejected: dict[tuple[str, str], list[Rejected]] = {}
    for item in _read(context, files, maps or []):
        owner = context.history_owner(item)  # a roster row's is "": anyone's
        if owner is None or owner not in (target.patient, ""):
            continue
        if isinstance(item, Rejected):
            rejected.setdefault((item.type, owner), []).append(item)
            continue
        if item.type not in context.kept_types:
            continue
        patient.append(target if (item.type, item.key) == (target.type, target.key) else item)
    judged: dict[str, Outcome] = {}

    def keep(judged_rule: Rule, record: Record, outcome: Outcome) -> None:
        if judged_rule is rule and record is target:
            judged[record.key] = outcome

    judge(packs, patient, on_outcome=keep)  # derives, answers history and judges, as an audit does
    outcome, trace_lines = trace(context, rule, target, patient)
    engine = judged.get(target.key)
    start, end = rule.effective or (None, None)
    version = f", the version in force from {start or 'the start'} until {end or 'now'}" if rule.effective else ""
    if no_version:
        version = f", the version from {start or 'the start'} until {end or 'now'}; {no_version}"
    lines = [f'rule {rule.id} "{rule.title}" ({rule.pack}, {rule.severity}{version})',
             f"record {target.type} {privacy.key(target.type, target.key)} at {target.path}:{target.line}, "
             f"{_whose(privacy.patient(target.patient))}, "
             f"time {target.time.isoformat() if target.time else 'missing'}", *trace_lines]
    agrees = engine is outcome
    verdict = "the rule engine agrees" if agrees else f"the rule engine said {engine.value if engine else 'nothing'}"
    lines.append(f"outcome: {outcome.value} ({verdict})")
    if outcome is Outcome.FAIL:
        kind = target.type
        message = render_message(rule.message, target.values, lambda name, value: privacy.value(kind, name, value))
        lines.append(f"message: {message}")
    index = next(number for number, known in enumerate(context.rules) if known is rule)
    near = rejected_near(context.histories[index], rejected, target, context.shared_types)
    if near:  # what the history could not see: a finding here may be a data-entry gap
        lines.append("data-quality suspect: rejected records the rule's history would have looked at:")
        lines += [f"  {item.type} at {item.path}:{item.line}: {item.reason}" for item in near]
    return lines, agrees
