"""``protocol-audit test``: a pack's examples and scenario files judged by the engine, with coverage.

Two kinds of case. A rule's ``tests:`` examples (one record, maybe its history) name the
outcome of that rule. A *scenario file* beside the pack (``<pack>.tests.yaml``, or any
``.yaml`` in a ``<pack>.tests/`` folder) holds several records of several types for one
patient and the outcome expected per record and rule, so history rules are tested on real
sequences::

    pack: ketamine-iv
    scenarios:
      - name: screen 100 days before the first IV session is too old
        rules: [ELIG-03]               # optional: the rules judged and checked (default: all)
        records:
          - {type: screening, record: {screening_id: SCR-1, patient_id: P-1, ...}}
          - {type: session, record: {session_id: S-1, patient_id: P-1, ...}}
        expect:
          S-1: {ELIG-03: fail}

Strict: in a scenario, every rule in scope judges every record of its type, and a pair
without an expectation must come out ``pass`` or ``not_applicable``: a finding or a
not-evaluable record nobody expected is a failure.

Coverage, per rule: a case that passes and a case that fails, and every *branch* (each
leaf condition and each history condition of ``when`` and ``require``) decisive in at least
one case: setting that branch alone to the other truth value would change the rule's outcome.
A branch never decisive is one the tests cannot tell from a constant.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.commands.examples import build_record, example_records
from engine.commands.explain import rule_values, trace
from engine.errors import PackError, Problem, UsageError
from engine.judge.audit import Auditor
from engine.judge.pipeline import judge
from engine.language import conditions
from engine.language.grammar import Checker, suggest
from engine.language.loader import load_yaml, read_pack_text
from engine.language.model import Condition, History, Leaf, Mark, Not, Outcome, Pack, Record, Rule
from engine.language.schema import OUTCOMES, record_values
from engine.language.values import is_missing, timezone
from engine.packs import TESTS_STEM

FILE_KEYS = ("pack", "scenarios")
SCENARIO_KEYS = ("name", "rules", "records", "expect")
NO_FINDING = (Outcome.PASS.value, Outcome.NOT_APPLICABLE.value)

Truth = bool | None


def test_files(pack: Pack) -> list[Path]:
    """The scenario files beside a pack: ``<stem>.tests.yaml`` / ``.yml`` and ``<stem>.tests/*.yaml``."""
    path = Path(pack.path)
    stem = path.parent / (path.stem + TESTS_STEM)
    found = [stem.with_name(stem.name + suffix) for suffix in (".yaml", ".yml")]
    files = [p for p in found if p.is_file()]
    if stem.is_dir():
        files += sorted(p for p in stem.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return files


# -- cases ---------------------------------------------------------------------------------

@dataclass(slots=True)
class Case:
    """One (rule, record) pair a test judges, and what it expects."""

    rule: Rule
    record: Record
    patient: list[Record]      # the patient's records (the judged one among them), for the trace
    expect: str | None         # None: not named in a scenario, so any finding is unexpected
    mark: Mark                 # where the example or the expectation is written
    label: str                 # "example 2" or 'scenario "name", session S-1'
    actual: str = ""

    @property
    def ok(self) -> bool:
        return self.actual == self.expect if self.expect is not None else self.actual in NO_FINDING

    @property
    def expected_text(self) -> str:
        return self.expect if self.expect is not None else "pass or not_applicable (no expectation given)"


@dataclass(slots=True)
class Scenario:
    name: str
    mark: Mark
    records: list[tuple[Record, str]]   # each record with the key it is known by in the file
    rules: list[Rule]                    # the rules in scope
    expect: dict[tuple[str, str], tuple[str, Mark]] = field(default_factory=dict)  # (key, rule) -> outcome


def _scenario(check: Checker, node: Any, pack: Pack, number: int) -> Scenario | None:
    if not check.mapping(node, "scenario", SCENARIO_KEYS, ("name", "records", "expect")):
        return None
    name = check.text(node.value.get("name"), "name", f"scenario {number}")
    rules_by_id = {rule.id: rule for rule in pack.rules}
    rules = list(pack.rules)
    scope_broken = False  # a misspelt id in rules: is reported once, not again at each expectation
    if "rules" in node.value:
        listed = node.value["rules"]
        if not isinstance(listed.value, list) or not listed.value:
            check.node(listed, "rules must be a non-empty list of rule ids")
        else:
            rules = []
            for item in listed.value:
                rule_id = check.text(item, "rule id")
                if rule_id in rules_by_id and rules_by_id[rule_id] in rules:
                    check.node(item, f'"{rule_id}" is listed twice')
                elif rule_id in rules_by_id:
                    rules.append(rules_by_id[rule_id])
                elif rule_id:
                    scope_broken = True
                    check.node(item, f'no rule "{rule_id}" in pack {pack.id}{suggest(rule_id, rules_by_id, "rules")}')
    scenario = Scenario(name, check.mark(node), [], rules)
    tz = timezone(pack.timezone)
    keys: dict[tuple[str, str], Any] = {}
    built: list[tuple[str, dict[str, Any], str, Mark]] = []
    records = node.value.get("records")
    if records is not None and (not isinstance(records.value, list) or not records.value):
        check.node(records, "records must be a non-empty list of {type: TYPE, record: {...}}")
    for index, item in enumerate(records.value if records is not None and isinstance(records.value, list) else []):
        if not check.mapping(item, "scenario record", ("type", "record"), ("type", "record")):
            continue
        type_name = check.text(item.value.get("type"), "type")
        rtype = pack.records.get(type_name)
        if rtype is None:
            hint = suggest(type_name, pack.records, "types")
            check.node(item.value["type"], f'unknown record type "{type_name}"{hint}')
            continue
        record_node = item.value["record"]
        if not check.mapping(record_node, "scenario record",
                             tuple(record_node.value) if isinstance(record_node.value, dict) else ()):
            continue
        known = len(check.problems)
        values = record_values(check, record_node, rtype, tz, "scenario record")
        key = str(values[rtype.key]) if not is_missing(values.get(rtype.key)) else f"{type_name}-{index + 1}"
        if (type_name, key) in keys:
            check.node(item, f'a second {type_name} with key "{key}" in this scenario')
            continue
        keys[(type_name, key)] = item
        if len(check.problems) > known:  # a value that does not convert: reported, the record not built
            continue
        built.append((type_name, values, key, Mark(check.path, item.line, item.column)))
    # A record without a patient belongs to the scenario's patient: the first one a record names.
    # Scenarios never share patients (each is prefixed with the scenario's number).
    named = [str(v[pack.records[t].patient]) for t, v, _, _ in built if not is_missing(v.get(pack.records[t].patient))]
    default = named[0] if named else "patient"
    for type_name, values, key, mark in built:
        own = values.get(pack.records[type_name].patient)
        patient = f"scenario-{number}/{own if not is_missing(own) else default}"
        scenario.records.append((build_record(pack, type_name, values, key, patient, mark.path, mark.line), key))
    types_by_key: dict[str, list[str]] = {}
    for type_name, key in keys:
        types_by_key.setdefault(key, []).append(type_name)
    in_scope = {rule.id: rule for rule in rules}
    expect = node.value.get("expect")
    if expect is not None and check.mapping(expect, "expect", tuple(expect.value) if isinstance(expect.value, dict)
                                            else ()):
        for key, per_rule in expect.value.items():
            if key not in types_by_key:
                check.key(expect, key, f'no record with key "{key}" in this scenario'
                                       f'{suggest(key, types_by_key, "keys")}')
                continue
            if not check.mapping(per_rule, f'expectations of "{key}"',
                                 tuple(per_rule.value) if isinstance(per_rule.value, dict) else ()):
                continue
            for rule_id, outcome_node in per_rule.value.items():
                rule = in_scope.get(rule_id)
                where = Mark(check.path, *per_rule.keys.get(rule_id, (per_rule.line, per_rule.column)))
                if rule is None:
                    if rule_id not in rules_by_id:
                        check.key(per_rule, rule_id, f'"{rule_id}" is not a rule of {pack.id}'
                                                     f'{suggest(rule_id, rules_by_id, "rules")}')
                    elif not scope_broken:
                        check.key(per_rule, rule_id, f'"{rule_id}" is not in this scenario\'s rules '
                                                     f'({", ".join(in_scope)}): add it there to check it')
                    continue
                if rule.for_type not in types_by_key[key]:
                    check.key(per_rule, rule_id, f'{rule_id} judges {rule.for_type} records; "{key}" is a '
                                                 f'{" and a ".join(types_by_key[key])}')
                    continue
                outcome = check.text(outcome_node, "outcome")
                if outcome not in OUTCOMES:
                    check.node(outcome_node, f'unknown outcome "{outcome}"{suggest(outcome, OUTCOMES, "outcomes")}')
                    continue
                scenario.expect[(key, rule_id)] = (outcome, where)
    return scenario


def load_scenarios(path: Path, pack: Pack, first: int = 1) -> list[Scenario]:
    """The scenarios of one test file, numbered from ``first`` (numbers name their patients, so
    they must not repeat across a pack's files); PackError lists every problem with its position."""
    try:
        text, _ = read_pack_text(str(path))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read test file ({exc.strerror or exc})") from None
    root = load_yaml(text, str(path))
    check = Checker(str(path))
    scenarios: list[Scenario] = []
    if check.mapping(root, "a test file", FILE_KEYS, FILE_KEYS):
        pack_id = check.text(root.value.get("pack"), "pack")
        if "pack" in root.value and pack_id != pack.id:
            check.node(root.value["pack"], f'this file tests pack "{pack_id}", but it is beside pack "{pack.id}"')
        items = root.value.get("scenarios")
        if items is not None and not isinstance(items.value, list):
            check.node(items, "scenarios must be a list")
        for number, item in enumerate(items.value if items is not None and isinstance(items.value, list) else [],
                                      start=first):
            found = _scenario(check, item, pack, number)
            if found is not None:
                scenarios.append(found)
    if check.problems:
        raise PackError(check.problems)
    return scenarios


def _cases(pack: Pack, scenarios: list[Scenario]) -> tuple[list[Case], list[Record]]:
    cases: list[Case] = []
    records: list[Record] = []
    for rule in pack.rules:
        for number, example in enumerate(rule.examples, start=1):
            built = example_records(pack, rule, example, len(records))
            cases.append(Case(rule, built[0], built, example.expect, example.mark, f"example {number}"))
            records.extend(built)
    for scenario in scenarios:
        patients: dict[str | None, list[Record]] = {}
        for record, _ in scenario.records:
            patients.setdefault(record.patient, []).append(record)
        for record, key in scenario.records:
            records.append(record)
            for rule in scenario.rules:
                if rule.for_type != record.type:
                    continue
                expected = scenario.expect.get((key, rule.id))
                outcome, mark = expected if expected else (None, Mark(record.path, record.line, 1))
                cases.append(Case(rule, record, patients[record.patient], outcome, mark,
                                  f'scenario "{scenario.name}", {record.type} {key}'))
    return cases, records


# -- coverage ------------------------------------------------------------------------------

Branch = Leaf | History


def branches(cond: Condition | None) -> list[Branch]:
    """The leaves and history conditions of a condition (not inside a history's ``where``)."""
    if cond is None:
        return []
    if isinstance(cond, (Leaf, History)):
        return [cond]
    if isinstance(cond, Not):
        return branches(cond.part)
    return [b for part in cond.parts for b in branches(part)]


def _outcome(rule: Rule, values: dict[str, Any], forced: dict[int, Truth]) -> Outcome:
    when = True if rule.when is None else conditions.evaluate(rule.when, values, forced)[0]
    return conditions.outcome(when, conditions.evaluate(rule.require, values, forced)[0])


def decisive(rule: Rule, values: dict[str, Any], branch: Branch) -> bool:
    """Whether ``branch`` was compared (its value known) and setting it alone to the other truth
    value changes the rule's outcome. A branch left unknown by a missing field was not tested."""
    actual = conditions.evaluate(branch, values)[0]
    if actual is None:
        return False
    return _outcome(rule, values, {id(branch): not actual}) is not _outcome(rule, values, {})


@dataclass(slots=True)
class Coverage:
    rule: Rule
    has_pass: bool
    has_fail: bool
    uncovered: list[tuple[Branch, str]]   # branches never decisive, with "when" or "require"
    total: int                             # coverage items: a pass case, a fail case, each branch

    @property
    def met(self) -> int:
        return self.total - len(self.uncovered) - (not self.has_pass) - (not self.has_fail)

    @property
    def percent(self) -> float:
        return 100.0 * self.met / self.total

    @property
    def full(self) -> bool:
        return self.met == self.total


def coverage(rule: Rule, cases: list[Case], auditor: Auditor) -> Coverage:
    mine = [case for case in cases if case.rule is rule]
    outcomes = {case.actual for case in mine}
    labelled = [(b, "when") for b in branches(rule.when)] + [(b, "require") for b in branches(rule.require)]
    seen = [rule_values(auditor, rule, case.record, case.patient) for case in mine]
    uncovered = [(b, part) for b, part in labelled if not any(decisive(rule, values, b) for values in seen)]
    return Coverage(rule, Outcome.PASS.value in outcomes, Outcome.FAIL.value in outcomes, uncovered,
                    2 + len(labelled))


# -- a pack's run --------------------------------------------------------------------------

@dataclass(slots=True)
class PackResult:
    pack: Pack
    files: list[Path]
    cases: list[Case]
    coverage: list[Coverage]
    examples: int
    scenarios: int

    @property
    def failed(self) -> list[Case]:
        return [case for case in self.cases if not case.ok]


def run_pack(pack: Pack) -> PackResult:
    """Judge every example and scenario of ``pack`` with the engine an audit uses."""
    files = test_files(pack)
    scenarios: list[Scenario] = []
    problems: list[Problem] = []
    for path in files:
        try:
            scenarios += load_scenarios(path, pack, first=len(scenarios) + 1)
        except PackError as exc:
            problems += exc.problems
    if problems:
        raise PackError(problems)
    cases, records = _cases(pack, scenarios)
    actual: dict[tuple[str, int], Outcome] = {}

    def keep(rule: Rule, record: Record, outcome: Outcome) -> None:
        actual[(rule.id, id(record))] = outcome

    judge([pack], records, on_outcome=keep)
    for case in cases:
        case.actual = actual[(case.rule.id, id(case.record))].value
    examples = sum(len(rule.examples) for rule in pack.rules)
    auditor = Auditor([pack])
    return PackResult(pack, files, cases, [coverage(rule, cases, auditor) for rule in pack.rules], examples,
                      len(scenarios))


def evidence(pack: Pack, case: Case) -> list[str]:
    """Why the case came out as it did: every condition traced, as ``explain`` shows it."""
    _, lines = trace(Auditor([pack]), case.rule, case.record, case.patient)
    return lines


def describe_branch(branch: Branch) -> str:
    return conditions.describe_history(branch) if isinstance(branch, History) else conditions.describe(branch)


def where(branch: Branch, rule: Rule) -> str:
    mark = branch.mark or rule.mark
    return f"{mark.path}:{mark.line}:{mark.column}"


def report_lines(result: PackResult, min_coverage: float | None) -> Iterator[str]:
    """The human report of one pack: failing cases with evidence, then coverage."""
    pack = result.pack
    extra = f", {result.scenarios} scenario{'s' if result.scenarios != 1 else ''} in " \
            f"{', '.join(str(p) for p in result.files)}" if result.files else ""
    yield (f"{pack.path}: {pack.id} {pack.version}, {len(pack.rules)} rules, {result.examples} examples"
           f"{extra}: {len(result.cases)} cases, {len(result.failed)} failed")
    for case in result.failed:
        yield (f"FAIL {case.mark.path}:{case.mark.line}: {case.rule.id} {case.label}: "
               f"expected {case.expected_text}, got {case.actual}")
        for line in evidence(pack, case):
            yield f"    {line}"
    full = sum(1 for c in result.coverage if c.full)
    total = len(result.coverage)
    items = sum(c.total for c in result.coverage)
    met = sum(c.met for c in result.coverage)
    yield (f"coverage: {full} of {total} rules fully covered; {met} of {items} items "
           f"({100.0 * met / items if items else 100.0:.1f}%: a pass case, a fail case and every branch "
           "decisive, per rule)")
    for cov in result.coverage:
        if cov.full:
            continue
        below = min_coverage is not None and cov.percent < min_coverage
        gaps = ([] if cov.has_pass else ["no passing case"]) + ([] if cov.has_fail else ["no failing case"])
        yield f"  {cov.rule.id}: {cov.percent:.0f}%{' (below --min-coverage)' if below else ''}" + \
              (f"; {', '.join(gaps)}" if gaps else "")
        for branch, part in cov.uncovered:
            yield f"    never decisive ({part}): {describe_branch(branch)} at {where(branch, cov.rule)}"


def below_minimum(result: PackResult, min_coverage: float | None) -> list[Coverage]:
    if min_coverage is None:
        return []
    return [cov for cov in result.coverage if cov.percent < min_coverage]

