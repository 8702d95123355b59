"""An audit run: records stream in, the rule engine judges them in batches, outcomes are tallied."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import EngineError
from engine.judge.compiler import OUTCOME_CODES, compile_rules
from engine.judge.durable import DEFAULT_TIMEOUT, DurableEvaluator, worker_main
from engine.judge.evidence import display, evidence_fields, render_message
from engine.judge.facts import Layout
from engine.judge.timeline import Timeline
from engine.language import conditions, expressions
from engine.language.model import History, Outcome, Pack, Record, Rejected, Rule, merged_types
from engine.language.values import timezone
from engine.privacy import Privacy, Pseudonymiser

BATCH_SIZE = 500
_OUTCOMES = list(OUTCOME_CODES.values())
_PASS = _OUTCOMES.index(Outcome.PASS)
_NOT_APPLICABLE = _OUTCOMES.index(Outcome.NOT_APPLICABLE)
OutcomeHook = Callable[[Rule, Record, Outcome], None]


@dataclass
class Tally:
    passed: int = 0
    failed: int = 0
    waived: int = 0
    not_evaluable: int = 0
    not_applicable: int = 0


@dataclass
class Result:
    """Everything an audit found, before it is rendered into the report dict."""

    rules: list[Rule]
    tallies: list[Tally]
    findings: list[dict[str, Any]] = field(default_factory=list)
    not_evaluable: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    group_by: list[str] = field(default_factory=list)
    # (rule index, stratum) -> [passed, failed, not evaluable]; a stratum is (month, group-by values...)
    strata: dict[tuple[int, tuple[str, ...]], list[int]] = field(default_factory=dict)
    first: dt.datetime | None = None  # the audit period: earliest and latest judged record time
    last: dt.datetime | None = None
    pseudonymised: str | None = None  # where the pseudonym key came from; None: identifiers as given


def _places(records: list[Record]) -> str:
    """Where a batch's records come from, for an error naming what was not judged: per file, the
    first and last line (a batch judged patient by patient is not in file order)."""
    lines: dict[str, list[int]] = {}
    for record in records:
        lines.setdefault(record.path, []).append(record.line)
    return "; ".join(f"{path} line {low}" if low == high else f"{path} lines {low}-{high}"
                     for path, numbers in lines.items() for low, high in [(min(numbers), max(numbers))])


class Auditor:
    """Judges every rule on every record of its type through durable_rules."""

    def __init__(self, packs: list[Pack], on_outcome: OutcomeHook | None = None,
                 timeout: float = DEFAULT_TIMEOUT, batch_size: int = BATCH_SIZE,
                 worker: Callable[..., None] = worker_main, group_by: list[str] | None = None,
                 pseudonymise: Pseudonymiser | None = None, reveal: bool = False) -> None:
        self.packs = packs
        self.types, zone = merged_types(packs)
        self.tz = timezone(zone)
        self.rules = [rule for pack in packs for rule in pack.rules]
        self.layout = Layout(self.types, self.rules)
        # compiled before any record is read: a pack the engine cannot hold stops the run here
        self.ruleset = compile_rules(self.rules, self.layout)
        self.rules_by_type: dict[str, list[int]] = {}
        for index, rule in enumerate(self.rules):
            self.rules_by_type.setdefault(rule.for_type, []).append(index)
        self.result = Result(self.rules, [Tally() for _ in self.rules], group_by=list(group_by or []))
        # the one gate identifying values pass on their way into the report
        self.privacy = Privacy(self.types, None if reveal else pseudonymise)
        self.result.pseudonymised = None if self.privacy.pseudonymise is None else self.privacy.pseudonymise.source
        self.derivers = {name: [(d.name, expressions.compile_expression(d.expr)) for d in rtype.derived.values()]
                         for name, rtype in self.types.items()}
        # identifying fields stay out of the evidence (the finding names the patient by pseudonym)
        self.evidence_fields = [[name for name in evidence_fields(rule, self.types[rule.for_type])
                                 if not self.privacy.hides(rule.for_type, name)] for rule in self.rules]
        self.histories = [conditions.histories_of(rule.when) + conditions.histories_of(rule.require)
                          for rule in self.rules]
        self.histories_by_type: dict[str, list[History]] = {}
        for rule, found in zip(self.rules, self.histories):
            known = self.histories_by_type.setdefault(rule.for_type, [])
            known.extend(h for h in found if h not in known)
        # the plain-Python judgement of each rule, that every answer of the engine is checked against
        self.plain = [conditions.compile_outcome(rule.when, rule.require) for rule in self.rules]
        self.wheres = {id(h): conditions.compile_condition(h.where)
                       for hs in self.histories for h in hs if h.where is not None}
        # record types an audit must keep: those judged and those history conditions look at
        self.kept_types = set(self.rules_by_type) | {h.of for hs in self.histories for h in hs}
        self.on_outcome = on_outcome
        self.timeout = timeout
        self.batch_size = batch_size
        self.batch: list[Record] = []
        self.in_flight: dict[int, list[Record]] = {}
        self.evaluator: DurableEvaluator | None = None
        self.worker = worker  # the engine process's entry point; tests substitute failing ones

    def _group_value(self, record: Record, name: str) -> str:
        value = self.privacy.value(record.type, name, display(record.values.get(name)))
        return "missing" if value is None else str(value)

    @property
    def needs_history(self) -> bool:
        return any(self.histories)

    # -- feeding -----------------------------------------------------------------------------
    def derive(self, record: Record) -> None:
        """Add the record's derived fields (a derived value is missing when an input is)."""
        values = record.values
        for name, compute in self.derivers[record.type]:
            value = compute(values)
            if value is not None:
                values[name] = value

    def add(self, record: Record) -> None:
        """Judge one record (derived fields added, history conditions answered if there are any)."""
        if record.type not in self.rules_by_type:
            return
        when = record.time
        if when is not None:
            result = self.result
            if result.first is None or when < result.first:
                result.first = when
            if result.last is None or when > result.last:
                result.last = when
        month = when.astimezone(self.tz).strftime("%Y-%m") if when else "no time"
        record.stratum = (month, *(month if name == "month" else self._group_value(record, name)
                                   for name in self.result.group_by))
        self.batch.append(record)
        if len(self.batch) >= self.batch_size:
            self._flush()

    def add_patient(self, records: list[Record]) -> None:
        """Judge all the records of one patient: history conditions are answered from their timeline."""
        timeline = Timeline(records, self.wheres)
        for record in records:
            histories = self.histories_by_type.get(record.type)
            if histories:
                record.answers = timeline.answers(histories, record)
                record.timeline = timeline
            self.add(record)

    def drain(self) -> None:
        """Judge everything queued so far (and let go of the records)."""
        self._flush()
        while self.in_flight:
            self._collect()

    def where(self, record: Record) -> str:
        """A record as an error message names it: type, key (through the privacy gate), file and line."""
        return f"{record.type} {self.privacy.key(record.type, record.key)} ({record.path}:{record.line})"

    def reject(self, item: Rejected) -> None:
        self.result.rejected.append({"source": {"path": item.path, "line": item.line},
                                     "record_type": item.type, "reason": item.reason})

    def finish(self) -> Result:
        self.drain()
        return self.result

    def close(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None

    # -- engine ------------------------------------------------------------------------------
    def _flush(self) -> None:
        if not self.batch:
            return
        layout = self.layout
        if self.evaluator is None:
            keys = {code: layout.keys(name) for name, code in layout.type_codes.items()}
            self.evaluator = DurableEvaluator(self.ruleset, keys, self.timeout, self.worker)
        codes = layout.type_codes
        rows = [(codes[r.type], *layout.encode_row(r.type, r.judged_values())) for r in self.batch]
        where = _places(self.batch)
        while self.evaluator.full:
            self._collect()
        batch_id = self.evaluator.submit(rows, f"{len(self.batch)} records ({where})")
        self.in_flight[batch_id] = self.batch
        self.batch = []

    def _collect(self) -> None:
        """Take one finished batch; check every record got exactly one outcome per rule; tally."""
        assert self.evaluator is not None
        batch_id, segments = self.evaluator.receive()
        records = self.in_flight.pop(batch_id)
        judged: dict[int, list[int]] = {}
        tallies = self.result.tallies
        hook = self.on_outcome
        strata = self.result.strata
        views = [record.judged_values() for record in records]
        for rule_index, code, ids in segments:
            if ids and max(ids) >= len(records):
                raise EngineError(f"the rule engine answered rule {self.rules[rule_index].id} for a record it was "
                                  f"not given (batch of {len(records)} records: {_places(records)})")
            judged.setdefault(rule_index, []).extend(ids)
            # Every answer is judged again in plain Python, passes and not-applicables included: a
            # finding the engine lost (a fail answered as a pass) must stop the audit, not vanish.
            plain, answer = self.plain[rule_index], _OUTCOMES[code]
            wrong = [fact_id for fact_id in ids if plain(views[fact_id]) is not answer]
            if wrong:
                self._disagree(self.rules[rule_index], records[wrong[0]], answer, plain(views[wrong[0]]))
            if code == _PASS and hook is None:
                tallies[rule_index].passed += len(ids)
                for fact_id in ids:
                    counts = strata.get((rule_index, records[fact_id].stratum))
                    if counts is None:
                        counts = strata[(rule_index, records[fact_id].stratum)] = [0, 0, 0]
                    counts[0] += 1
            elif code == _NOT_APPLICABLE and hook is None:
                tallies[rule_index].not_applicable += len(ids)
            else:
                rule, outcome = self.rules[rule_index], _OUTCOMES[code]
                for fact_id in ids:
                    self._record_outcome(rule, rule_index, records[fact_id], outcome)
        for record in records:
            record.timeline = None  # judged: let go of the patient's timeline (they refer to each other)
        # Every record must have exactly one outcome per rule of its type: compared as sets,
        # which costs little next to the engine and turns a lost or doubled match into an error.
        of_type: dict[str, set[int]] = {}
        for fact_id, record in enumerate(records):
            of_type.setdefault(record.type, set()).add(fact_id)
        for type_name, expected in of_type.items():
            for rule_index in self.rules_by_type[type_name]:
                got = judged.get(rule_index, [])
                if len(got) != len(expected) or set(got) != expected:
                    self._unmatched(rule_index, got, expected, records)

    def _unmatched(self, rule_index: int, got: list[int], expected: set[int], records: list[Record]) -> None:
        rule = self.rules[rule_index]
        missing = sorted(expected - set(got))
        if missing:
            record = records[missing[0]]
            raise EngineError(f"the rule engine gave no outcome for rule {rule.id} on {self.where(record)}")
        extra = sorted(set(f for f in got if got.count(f) > 1 or f not in expected))
        record = records[min(extra[0], len(records) - 1)] if extra else records[0]
        raise EngineError(f"the rule engine gave rule {rule.id} a second or misplaced outcome on "
                          f"{self.where(record)}")

    # -- outcomes ----------------------------------------------------------------------------
    def _record_outcome(self, rule: Rule, index: int, record: Record, outcome: Outcome) -> None:
        tally = self.result.tallies[index]
        column = {Outcome.PASS: 0, Outcome.FAIL: 1, Outcome.NOT_EVALUABLE: 2}.get(outcome)
        if column is not None:
            self.result.strata.setdefault((index, record.stratum), [0, 0, 0])[column] += 1
        if outcome is Outcome.PASS:
            tally.passed += 1
        elif outcome is Outcome.NOT_APPLICABLE:
            tally.not_applicable += 1
        elif outcome is Outcome.NOT_EVALUABLE:
            tally.not_evaluable += 1
            self.result.not_evaluable.append(self._not_evaluable(rule, record))
        else:
            tally.failed += 1
            self.result.findings.append(self._finding(rule, index, record))
        if self.on_outcome is not None:
            self.on_outcome(rule, record, outcome)

    def _missing(self, rule: Rule, record: Record, outcome: Outcome) -> list[str]:
        """The missing fields that made a fail or a not-evaluable (the outcome is checked already)."""
        if outcome is Outcome.NOT_EVALUABLE:
            assert rule.when is not None
            return conditions.evaluate(rule.when, record.judged_values())[1]
        return conditions.evaluate(rule.require, record.judged_values())[1]

    def _disagree(self, rule: Rule, record: Record, engine: Outcome, plain: Outcome) -> None:
        raise EngineError(f"the rule engine judged rule {rule.id} {engine.value} on {self.where(record)}, "
                          f"the plain-Python check {plain.value}")

    def _finding(self, rule: Rule, index: int, record: Record) -> dict[str, Any]:
        missing = self._missing(rule, record, Outcome.FAIL)
        finding: dict[str, Any] = {
            "rule": rule.id, "pack": rule.pack, "severity": rule.severity, "outcome": Outcome.FAIL.value,
            "record_type": record.type, "record_key": self.privacy.key(record.type, record.key),
            "patient": self.privacy.patient(record.patient),
            "time": record.time.isoformat() if record.time else None,
            "source": {"path": record.path, "line": record.line},
            "message": render_message(rule.message, record.values,
                                      lambda name, value: self.privacy.value(record.type, name, value)),
            "evidence": self._evidence(index, record),
        }
        if missing:
            finding["missing"] = missing
        return finding

    def _evidence(self, index: int, record: Record) -> dict[str, Any]:
        shown = {name: display(record.values.get(name)) for name in self.evidence_fields[index]}
        for cond in self.histories[index]:
            shown[conditions.describe_history(cond)] = \
                record.timeline.evidence(cond, record, self.privacy) if record.timeline is not None else None
        return shown

    def _not_evaluable(self, rule: Rule, record: Record) -> dict[str, Any]:
        return {"rule": rule.id, "pack": rule.pack, "record_type": record.type,
                "record_key": self.privacy.key(record.type, record.key),
                "missing": self._missing(rule, record, Outcome.NOT_EVALUABLE),
                "source": {"path": record.path, "line": record.line}}
