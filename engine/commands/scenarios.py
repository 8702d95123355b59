"""The scenario file format of ``protocol-audit test``: finding, loading and checking the files, and
the test cases they and a pack's rule examples make.

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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.commands.examples import build_record, example_records, in_force
from engine.errors import PackError, Problem, UsageError
from engine.language.grammar import Checker, suggest
from engine.language.loader import load_yaml, read_pack_text
from engine.language.model import Mark, Outcome, Pack, Record, Rule
from engine.language.schema import OUTCOMES, record_values
from engine.language.values import is_missing, timezone
from engine.packs import TESTS_STEM

FILE_KEYS = ("pack", "scenarios")
SCENARIO_KEYS = ("name", "rules", "records", "expect")
NO_FINDING = (Outcome.PASS.value, Outcome.NOT_APPLICABLE.value)


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
                elif rule_id in rules_by_id:  # with every version of it (effective dates)
                    rules.extend(rule for rule in pack.rules if rule.id == rule_id)
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


def load_pack_scenarios(pack: Pack, files: list[Path]) -> list[Scenario]:
    """The scenarios of all of a pack's test files, numbered across them; PackError lists the
    problems of every file, not only the first file's."""
    scenarios: list[Scenario] = []
    problems: list[Problem] = []
    for path in files:
        try:
            scenarios += load_scenarios(path, pack, first=len(scenarios) + 1)
        except PackError as exc:
            problems += exc.problems
    if problems:
        raise PackError(problems)
    return scenarios


def build_cases(pack: Pack, scenarios: list[Scenario]) -> tuple[list[Case], list[Record]]:
    """The cases of the pack's rule examples, then of its scenarios, and every record they judge."""
    cases: list[Case] = []
    records: list[Record] = []
    for rule in pack.rules:
        for number, example in enumerate(rule.examples, start=1):
            built = example_records(pack, rule, example, len(records))
            cases.append(Case(in_force(pack, rule, built[0]), built[0], built, example.expect, example.mark,
                              f"example {number}"))
            records.extend(built)
    for scenario in scenarios:
        patients: dict[str | None, list[Record]] = {}
        for record, _ in scenario.records:
            patients.setdefault(record.patient, []).append(record)
        for record, key in scenario.records:
            records.append(record)
            for rule in scenario.rules:
                if rule.for_type != record.type or in_force(pack, rule, record) is not rule:
                    continue  # a version of the rule not in force at the record's time
                expected = scenario.expect.get((key, rule.id))
                outcome, mark = expected if expected else (None, Mark(record.path, record.line, 1))
                cases.append(Case(rule, record, patients[record.patient], outcome, mark,
                                  f'scenario "{scenario.name}", {record.type} {key}'))
    return cases, records
