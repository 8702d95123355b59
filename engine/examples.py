"""The ``tests:`` examples of a pack's rules, judged by the same engine as an audit."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .audit import judge
from .model import Example, Outcome, Pack, Record, Rule
from .values import convert, is_missing, timezone


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


def example_record(pack: Pack, rule: Rule, example: Example, index: int) -> Record:
    """The example as a record of the rule's type, converted exactly as a reader would."""
    rtype = pack.records[rule.for_type]
    tz = timezone(pack.timezone)
    values = {name: convert(rtype.fields[name], raw, tz)
              for name, raw in example.record.items() if not is_missing(raw)}
    when = values.get(rtype.time)
    if isinstance(when, dt.date) and not isinstance(when, dt.datetime):
        when = dt.datetime(when.year, when.month, when.day, tzinfo=tz)
    key = str(values.get(rtype.key, f"example-{index}"))
    return Record(rule.for_type, f"{key}#{index}", str(values.get(rtype.patient, "example")), when, values,
                  example.mark.path, example.mark.line)


def run_examples(pack: Pack) -> list[ExampleResult]:
    """Judge every example of every rule of ``pack``; each result keeps expected and actual outcome."""
    cases: list[tuple[Rule, Example, int, Record]] = []
    for rule in pack.rules:
        for number, example in enumerate(rule.examples, start=1):
            cases.append((rule, example, number, example_record(pack, rule, example, len(cases))))
    actual: dict[tuple[str, str], Outcome] = {}

    def keep(rule: Rule, record: Record, outcome: Outcome) -> None:
        actual[(rule.id, record.key)] = outcome

    judge([pack], (case[3] for case in cases), on_outcome=keep)
    return [ExampleResult(rule, example, number, actual[(rule.id, record.key)].value)
            for rule, example, number, record in cases]
