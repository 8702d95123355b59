"""The ``tests:`` examples of a pack's rules, judged by the same engine as an audit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.judge.pipeline import judge
from engine.language.model import Example, Outcome, Pack, Record, Rule, latest_version, version_at
from engine.language.values import convert, is_missing, record_time, timezone


@dataclass(frozen=True, slots=True)
class ExampleResult:
    rule: Rule
    example: Example
    number: int       # 1-based position among the rule's examples
    actual: str

    @property
    def ok(self) -> bool:
        return self.actual == self.example.expect

    @property
    def name(self) -> str:
        return f"{self.rule.id}-{self.example.expect}-{self.number}"


def build_record(pack: Pack, type_name: str, raw: dict[str, Any], key: str, patient: str, path: str,
                 line: int) -> Record:
    """A record of ``type_name`` from values written in a pack or test file, converted exactly as a reader would."""
    rtype = pack.records[type_name]
    tz = timezone(pack.timezone)
    values = {name: convert(rtype.fields[name], value, tz) for name, value in raw.items() if not is_missing(value)}
    return Record(type_name, key, patient, record_time(values.get(rtype.time), tz), values, path, line)


def example_records(pack: Pack, rule: Rule, example: Example, index: int) -> list[Record]:
    """The example's record first, then its history; each example is a patient of its own.

    A rule with effective dates judges records of its window: an example without a time (``time:``
    or the record's time field) is placed on the window's first day (its last, when open before).
    """
    patient = f"example-{index}"
    mark = example.mark
    raw = dict(example.record)
    time_field = pack.records[rule.for_type].time
    if example.time is not None:
        raw[time_field] = example.time
    elif rule.effective is not None and time_field not in raw:  # an explicit null stays: no time
        day = rule.effective[0] or rule.effective[1]
        assert day is not None
        kind = pack.records[rule.for_type].fields[time_field].type
        raw[time_field] = day.isoformat() if kind == "date" else f"{day.isoformat()}T12:00:00"
    records = [build_record(pack, rule.for_type, raw, f"example-{index}", patient, mark.path, mark.line)]
    for number, entry in enumerate(example.history, start=1):
        records.append(build_record(pack, entry["type"], entry["record"], f"example-{index}-history-{number}",
                               patient, mark.path, entry.get("line", mark.line)))
    return records


def in_force(pack: Pack, rule: Rule, record: Record) -> Rule:
    """The version of ``rule`` (a rule of the same id in ``pack``) in force at the record's time: the
    one whose effective window holds its day, else the latest one."""
    versions = [r for r in pack.rules if r.id == rule.id]
    if len(versions) == 1:
        return rule
    day = record.time.astimezone(timezone(pack.timezone)).date() if record.time is not None else None
    return version_at(versions, day) or latest_version(versions)


def run_examples(pack: Pack) -> list[ExampleResult]:
    """Judge every example of every rule of ``pack``; each result keeps expected and actual outcome
    (of the version of the rule in force at the example's time)."""
    cases: list[tuple[Rule, Example, int, Record]] = []
    records: list[Record] = []
    for rule in pack.rules:
        for number, example in enumerate(rule.examples, start=1):
            built = example_records(pack, rule, example, len(cases))
            cases.append((rule, example, number, built[0]))
            records.extend(built)
    actual: dict[tuple[int, str], Outcome] = {}

    def keep(rule: Rule, record: Record, outcome: Outcome) -> None:
        actual[(id(rule), record.key)] = outcome

    judge([pack], records, on_outcome=keep)
    return [ExampleResult(rule, example, number, actual[(id(in_force(pack, rule, record)), record.key)].value)
            for rule, example, number, record in cases]
