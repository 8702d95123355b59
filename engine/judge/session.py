"""The engine session of an audit: cases batched into durable_rules' worker, its answers taken in
order, and every answer checked: judged again in plain Python (a fail answered as a pass must stop
the audit, not vanish) and exactly one outcome per rule and record."""

from __future__ import annotations

from collections.abc import Callable

from engine.errors import EngineError
from engine.judge.compiler import OUTCOME_CODES
from engine.judge.context import PackContext
from engine.judge.durable import DEFAULT_TIMEOUT, DurableEvaluator, worker_main
from engine.judge.tally import Case, Tally
from engine.judge.verdicts import Signature, Verdicts
from engine.language.model import Outcome, Record, Rule

BATCH_SIZE = 500
# One record in this many of a signature the engine judged already is judged by it again and checked
# like any other: where the engine's reading of a value differs from the rule language's (a time
# in year 9000 that its floats cannot tell from one a microsecond apart), the atoms can agree while
# the engine does not, and a remembered verdict would hide it.
CHECK_EVERY = 64
_OUTCOMES = list(OUTCOME_CODES.values())
_PASS = _OUTCOMES.index(Outcome.PASS)
_NOT_APPLICABLE = _OUTCOMES.index(Outcome.NOT_APPLICABLE)


def _places(records: list[Record]) -> str:
    """Where a batch's records come from, for an error naming what was not judged: per file, the
    first and last line (a batch judged patient by patient is not in file order)."""
    lines: dict[str, list[int]] = {}
    for record in records:
        lines.setdefault(record.path, []).append(record.line)
    return "; ".join(f"{path} line {low}" if low == high else f"{path} lines {low}-{high}"
                     for path, numbers in lines.items() for low, high in [(min(numbers), max(numbers))])


class EngineSession:
    """Feeds cases to one durable_rules worker (started with the first batch) and tallies its answers."""

    def __init__(self, context: PackContext, tally: Tally, timeout: float = DEFAULT_TIMEOUT,
                 batch_size: int = BATCH_SIZE, worker: Callable[..., None] = worker_main,
                 remember: bool = True) -> None:
        self.context = context
        self.tally = tally
        self.timeout = timeout
        self.batch_size = batch_size
        self.worker = worker  # the engine process's entry point; tests substitute failing ones
        self.batch: list[Case] = []
        self.signatures: list[Signature | None] = []  # of the batch's cases: None, judged alone
        self.waited = 0  # records that came to wait for an answer since the last batch was sent
        self.remembered = 0  # records of a known signature
        self.sent = 0  # records the engine was given
        self.in_flight: dict[int, tuple[list[Case], list[Signature | None]]] = {}
        self.evaluator: DurableEvaluator | None = None
        # the engine's verdicts by signature (engine/judge/verdicts.py); not with an outcome hook,
        # which observes each record's outcomes as the engine gives them
        times = {name: [field for field, _, kind in fields if kind == "datetime"]
                 for name, fields in context.layout.per_type.items()}
        self.verdicts = Verdicts(context.rules_by_type, context.atoms, context.record_by_record, times) \
            if remember and tally.counts_in_bulk else None

    def add(self, case: Case) -> None:
        verdicts = self.verdicts
        signature = None
        if verdicts is not None:
            signature = verdicts.signature(case.record.type, case.values)
            if signature is None:
                pass  # judged by the engine on its own (verdicts.signature says when)
            elif signature in verdicts.known:
                self.remembered += 1
                if self.remembered % CHECK_EVERY:  # judged before: its outcomes, still tallied for this record
                    for index, outcome in verdicts.take(signature, case.stratum):
                        self.tally.outcome(index, case, outcome)
                    return
                signature = None  # one in CHECK_EVERY goes to the engine all the same, and is checked
            else:
                waiting = verdicts.waiting.get(signature)
                if waiting is not None:  # its first record is with the engine: it waits for the answer
                    waiting.append(case)
                    self.waited += 1
                    if self.waited >= self.batch_size:  # records read alike wait no longer than a batch:
                        self._flush()  # their answers are taken now
                        while self.in_flight:
                            self._collect()
                    return
                if verdicts.full:
                    signature = None
                else:
                    verdicts.waiting[signature] = []
        self.batch.append(case)
        self.signatures.append(signature)
        if len(self.batch) >= self.batch_size:
            self._flush()

    def drain(self) -> None:
        """Judge everything queued so far (and let go of the cases)."""
        self._flush()
        while self.in_flight:
            self._collect()
        if self.verdicts is not None:
            tally = self.tally
            for index, outcome, stratum, number in self.verdicts.counts():
                if outcome is Outcome.PASS:
                    tally.passed_many(index, stratum, number)
                else:
                    tally.not_applicable(index, number)

    def close(self) -> None:
        if self.evaluator is not None:
            self.evaluator.close()
            self.evaluator = None

    def _flush(self) -> None:
        self.waited = 0
        if not self.batch:
            return
        layout = self.context.layout
        if self.evaluator is None:
            keys = {code: layout.keys(name) for name, code in layout.type_codes.items()}
            self.evaluator = DurableEvaluator(self.context.ruleset, keys, self.timeout, self.worker)
        codes = layout.type_codes
        rows = [(codes[case.record.type], *layout.encode_row(case.record.type, case.values)) for case in self.batch]
        while self.evaluator.full:
            self._collect()
        records = [case.record for case in self.batch]
        self.sent += len(records)
        batch_id = self.evaluator.submit(rows, f"{len(records)} records ({_places(records)})")
        self.in_flight[batch_id] = (self.batch, self.signatures)
        self.batch, self.signatures = [], []

    def _collect(self) -> None:
        """Take one finished batch; check every answer and that every record got exactly one outcome
        per rule; tally."""
        assert self.evaluator is not None
        try:
            batch_id, segments = self.evaluator.receive()
        except EngineError as exc:  # what else is left unjudged: the records waiting for its answers
            waiting = [case.record for cases in (self.verdicts.waiting.values() if self.verdicts else ())
                       for case in cases]
            if not waiting:
                raise
            raise EngineError(f"{exc}, and {len(waiting)} records that read like them, waiting for the answers "
                              f"({_places(waiting)})") from None
        cases, signatures = self.in_flight.pop(batch_id)
        remembered: dict[int, dict[int, Outcome]] = {fact_id: {} for fact_id, s in enumerate(signatures) if s}
        rules, plain, tally = self.context.rules, self.context.plain, self.tally
        bulk = tally.counts_in_bulk
        one_by_one = self.context.record_by_record
        judged: dict[int, list[int]] = {}
        for rule_index, code, ids in segments:
            if ids and max(ids) >= len(cases):
                raise EngineError(f"the rule engine answered rule {rules[rule_index].id} for a record it was "
                                  f"not given (batch of {len(cases)} records: "
                                  f"{_places([case.record for case in cases])})")
            judged.setdefault(rule_index, []).extend(ids)
            judge, answer = plain[rule_index], _OUTCOMES[code]
            if remembered:
                for fact_id in ids:
                    if fact_id in remembered:
                        remembered[fact_id][rule_index] = answer
            wrong = [fact_id for fact_id in ids if judge(cases[fact_id].values) is not answer]
            if wrong:
                case = cases[wrong[0]]
                self._disagree(rules[rule_index], case.record, answer, judge(case.values))
            if code == _PASS and bulk and rule_index not in one_by_one:  # dated, per-unit: each record seen
                tally.passed(rule_index, cases, ids)
            elif code == _NOT_APPLICABLE and bulk and rule_index not in one_by_one:
                tally.not_applicable(rule_index, len(ids))
            else:
                for fact_id in ids:
                    tally.outcome(rule_index, cases[fact_id], answer)
        # Every record must have exactly one outcome per rule of its type: compared as sets,
        # which costs little next to the engine and turns a lost or doubled match into an error.
        of_type: dict[str, set[int]] = {}
        for fact_id, case in enumerate(cases):
            of_type.setdefault(case.record.type, set()).add(fact_id)
        for type_name, expected in of_type.items():
            for rule_index in self.context.rules_by_type[type_name]:
                got = judged.get(rule_index, [])
                if len(got) != len(expected) or set(got) != expected:
                    self._unmatched(rule_index, got, expected, cases)
        if self.verdicts is not None:  # each signature's outcomes, checked above; the records that waited
            for fact_id, outcomes in remembered.items():
                signature = signatures[fact_id]
                assert signature is not None
                for case in self.verdicts.remember(signature, outcomes):
                    for index, outcome in self.verdicts.take(signature, case.stratum):
                        tally.outcome(index, case, outcome)

    def _unmatched(self, rule_index: int, got: list[int], expected: set[int], cases: list[Case]) -> None:
        rule, where = self.context.rules[rule_index], self.context.where
        missing = sorted(expected - set(got))
        if missing:
            record = cases[missing[0]].record
            raise EngineError(f"the rule engine gave no outcome for rule {rule.id} on {where(record)}")
        extra = sorted(set(f for f in got if got.count(f) > 1 or f not in expected))
        case = cases[min(extra[0], len(cases) - 1)] if extra else cases[0]
        raise EngineError(f"the rule engine gave rule {rule.id} a second or misplaced outcome on "
                          f"{where(case.record)}")

    def _disagree(self, rule: Rule, record: Record, engine: Outcome, plain: Outcome) -> None:
        raise EngineError(f"the rule engine judged rule {rule.id} {engine.value} on {self.context.where(record)}, "
                          f"the plain-Python check {plain.value}")
