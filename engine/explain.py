"""Why one rule gave one record its outcome: every condition with the values it read and its truth."""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import Any

from . import conditions
from .audit import Auditor
from .errors import UsageError
from .evidence import display, render_message
from .model import All, Condition, History, Leaf, Not, Outcome, Pack, Record, Rejected, Rule
from .pipeline import judge
from .records import InputStats, Seen, bind_inputs, read_input
from .timeline import Timeline

_SYMBOLS = {"equals": "=", "not_equals": "≠", "less_than": "<", "at_most": "≤", "greater_than": ">",
            "at_least": "≥", "one_of": "one of", "none_of": "none of", "matches": "matches", "between": "between"}


def _truth(value: bool | None) -> str:
    return "unknown" if value is None else "true" if value else "false"


def _shown(value: Any) -> str:
    shown = display(value)
    if shown is None:
        return "missing"
    return f'"{shown}"' if isinstance(shown, str) else str(shown).lower() if isinstance(shown, bool) else str(shown)


class _Tracer:
    def __init__(self, auditor: Auditor, record: Record, timeline: Timeline) -> None:
        self.rtype = auditor.types[record.type]
        self.record = record
        self.timeline = timeline

    def trace(self, cond: Condition, depth: int) -> tuple[bool | None, list[str]]:
        pad = "  " * depth
        values = self.record.values
        truth, _ = conditions.evaluate(cond, values)
        if isinstance(cond, History):
            lines = [f"{pad}{conditions.describe_history(cond)} -> {_truth(truth)}"]
            for key, value in self.timeline.evidence(cond, self.record).items():
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
        values = self.record.values
        read = [leaf.field] + ([leaf.ref] if leaf.ref else [])
        if leaf.op == "present":
            test = f"{leaf.field} {'documented' if leaf.value else 'not documented'}"
        else:
            constant = list(leaf.value) if isinstance(leaf.value, tuple) else leaf.value
            operand = leaf.ref if leaf.ref else _shown(constant)
            test = f"{leaf.field} {_SYMBOLS[leaf.op]} {operand}"
        facts = []
        for name in read:
            text = f"{name} = {_shown(values.get(name))}"
            derived = self.rtype.derived.get(name)
            if derived is not None:
                inputs = ", ".join(f"{i} = {_shown(values.get(i))}" for i in derived.inputs)
                text += f" (derived: {derived.source}; {inputs})"
            facts.append(text)
        return f"{test}: {'; '.join(facts)}"


def _listed(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value) if value else "none"
    return str(value)


def _find_rule(auditor: Auditor, rule_id: str) -> Rule:
    for rule in auditor.rules:
        if rule.id == rule_id:
            return rule
    ids = [rule.id for rule in auditor.rules]
    close = difflib.get_close_matches(rule_id, ids, n=1)
    hint = f' (did you mean "{close[0]}"?)' if close else ""
    raise UsageError(f'no rule "{rule_id}" in the packs{hint}')


def _read(auditor: Auditor, files: list[str]) -> Iterator[Record | Rejected]:
    """Every input read as an audit reads it (the same rejections, duplicates included)."""
    seen = Seen()
    for type_name, path in bind_inputs(files, auditor.types):
        yield from read_input(path, type_name, auditor.types, auditor.tz, seen, InputStats(path, type_name))


def trace(auditor: Auditor, rule: Rule, record: Record, patient: list[Record]) -> tuple[Outcome, list[str]]:
    """The rule's outcome on a judged ``record`` in plain Python, and every condition traced.

    ``patient`` holds the patient's records as judged (derived values and history answers in
    place), the judged record among them; history conditions show their window and matches.
    """
    tracer = _Tracer(auditor, record, Timeline(patient, auditor.wheres))
    when, when_lines = (True, ["when: always"]) if rule.when is None else tracer.trace(rule.when, 1)
    require, require_lines = tracer.trace(rule.require, 1)
    outcome = conditions.outcome(when, require)
    lines = [f"when -> {_truth(when)}", *when_lines] if rule.when is not None else when_lines
    return outcome, [*lines, f"require -> {_truth(require)}", *require_lines]


def explain(packs: list[Pack], rule_id: str, record_key: str, files: list[str]) -> tuple[list[str], bool]:
    """The explanation as lines of text, and whether the rule engine gave the same outcome."""
    auditor = Auditor(packs)
    rule = _find_rule(auditor, rule_id)
    target: Record | None = None
    for item in _read(auditor, files):
        if isinstance(item, Record) and item.type == rule.for_type and item.key == record_key:
            target = item
            break
    if target is None:
        raise UsageError(f'no accepted {rule.for_type} record with key "{record_key}" in the inputs '
                         "(a rejected record cannot be judged: the audit report lists it with its reason)")
    patient: list[Record] = []
    for item in _read(auditor, files):
        if isinstance(item, Rejected) or item.patient != target.patient or item.type not in auditor.kept_types:
            continue
        patient.append(target if (item.type, item.key) == (target.type, target.key) else item)
    judged: dict[str, Outcome] = {}

    def keep(judged_rule: Rule, record: Record, outcome: Outcome) -> None:
        if judged_rule is rule and record is target:
            judged[record.key] = outcome

    judge(packs, patient, on_outcome=keep)  # derives, answers history and judges, as an audit does
    outcome, trace_lines = trace(auditor, rule, target, patient)
    engine = judged.get(target.key)
    lines = [f'rule {rule.id} "{rule.title}" ({rule.pack}, {rule.severity})',
             f"record {target.type} {target.key} at {target.path}:{target.line}, patient {target.patient}, "
             f"time {target.time.isoformat() if target.time else 'missing'}", *trace_lines]
    agrees = engine is outcome
    verdict = "the rule engine agrees" if agrees else f"the rule engine said {engine.value if engine else 'nothing'}"
    lines.append(f"outcome: {outcome.value} ({verdict})")
    if outcome is Outcome.FAIL:
        lines.append(f"message: {render_message(rule.message, target.values)}")
    return lines, agrees
