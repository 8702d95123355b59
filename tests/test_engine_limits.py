"""Packs at durable_rules' limits: what validate accepts, the engine runs; what it cannot run,
validate refuses with a position (before, a fact of a type with ~64 rules failed with error 303,
one reading ~126 fields crashed the engine, and an over-complex rule passed validate)."""

from __future__ import annotations

import random

import pytest

from engine.errors import PackError
from engine.judge.pipeline import judge
from engine.language import conditions
from engine.language.model import Outcome, Pack, Record
from engine.packs import load_pack_bytes, load_packs


def wide_pack(fields: int, rules: list[str]) -> str:
    declared = "\n".join(f"      f{i}: number" for i in range(fields))
    body = "\n".join(f"  - id: W{n}\n    title: W{n}\n    severity: major\n    for: session\n    require: {req}"
                     for n, req in enumerate(rules))
    return (f'pack: wide\nversion: "1"\ntitle: wide\nrecords:\n  session:\n    key: session_id\n'
            f"    patient: patient_id\n    time: start\n    fields:\n      session_id: string\n"
            f"      patient_id: string\n      start: datetime\n{declared}\nrules:\n{body}\n")


def build(text: str) -> Pack:
    return load_pack_bytes(text.encode(), "wide.yaml")


def judged_against_plain_python(pack: Pack, records: list[Record]) -> dict[str, int]:
    """Judge every pair through the engine and check each outcome against the plain evaluator."""
    counts: dict[str, int] = {}

    def check(rule: object, record: Record, outcome: Outcome) -> None:
        truth, _ = conditions.evaluate(rule.require, record.values)  # type: ignore[attr-defined]
        assert outcome is conditions.outcome(True, truth), (rule, record.key)
        counts[outcome.value] = counts.get(outcome.value, 0) + 1

    judge([pack], records, on_outcome=check)
    return counts


def records_of(pack: Pack, fields: int, count: int, seed: int) -> list[Record]:
    chooser = random.Random(seed)
    out = []
    for n in range(count):
        values = {f"f{i}": float(chooser.randint(0, 400)) for i in range(fields) if chooser.random() < 0.8}
        out.append(Record("session", f"S{n}", f"P{n}", None, values, "mem", n + 2))
    return out


@pytest.mark.parametrize("count", [64, 65, 70, 120], ids=lambda n: f"{n}-rules")
def test_a_type_with_many_rules_is_judged(count: int) -> None:
    pack = build(wide_pack(count, [f"{{f{i}: {{at_most: 200}}}}" for i in range(count)]))
    counts = judged_against_plain_python(pack, records_of(pack, count, 40, seed=count))
    assert sum(counts.values()) == 40 * count


def test_hundreds_of_rules_with_alternatives_over_shared_fields_are_judged() -> None:
    rules = [f"{{any: [{{f{i % 100}: {{at_most: {i}}}}}, {{f{(i + 1) % 100}: {{greater_than: {i}}}}}, "
             f"{{f{(i + 2) % 100}: {{present: false}}}}]}}" for i in range(300)]
    pack = build(wide_pack(100, rules))
    counts = judged_against_plain_python(pack, records_of(pack, 100, 30, seed=7))
    assert sum(counts.values()) == 300 * 30 and counts["fail"] and counts["pass"]


def test_reading_more_fields_than_a_fact_holds_is_a_pack_problem(tmp_path: object) -> None:
    fields = 126
    text = wide_pack(fields, [f"{{f{i}: {{at_most: 5}}}}" for i in range(fields)])
    path = tmp_path / "wide.yaml"  # type: ignore[operator]
    path.write_text(text)
    with pytest.raises(PackError) as caught:
        load_packs([str(path)])
    assert [str(p) for p in caught.value.problems] == [
        f'{path}:{text.splitlines().index("  - id: W0") + 1}:5: the rules on record type "session" read too many '
        "fields for the rule engine (252 values per record; it holds 250, a field taking two and a pattern one): "
        "audit some of the rules in another run"]
    within = wide_pack(125, [f"{{f{i}: {{at_most: 5}}}}" for i in range(125)])
    path.write_text(within)
    (pack,) = load_packs([str(path)])
    assert len(pack.rules) == 125


def test_validate_refuses_a_rule_too_complex_for_the_engine(tmp_path: object) -> None:
    # thirty alternatives on fields that may be missing expand into more engine rules than one
    # outcome may have; the audit refused it, but validate passed it
    path = tmp_path / "complex.yaml"  # type: ignore[operator]
    path.write_text(wide_pack(30, ["{any: [" + ", ".join(f"{{f{i}: {{at_least: 1}}}}" for i in range(30)) + "]}"]))
    with pytest.raises(PackError) as caught:
        load_packs([str(path)])
    (problem,) = caught.value.problems
    assert "rule W0 is too complex for the rule engine" in problem.message


def test_a_failed_batch_names_its_lines_in_order_per_file() -> None:
    from engine.judge.session import _places
    batch = [Record("session", k, "P", None, {}, path, line)
             for k, path, line in (("A", "s.csv", 9), ("B", "s.csv", 2), ("C", "v.csv", 40), ("D", "s.csv", 6))]
    assert _places(batch) == "s.csv lines 2-9; v.csv line 40"


@pytest.mark.parametrize("leaves", [400, 800, 3000])
def test_a_rule_with_hundreds_of_conditions_is_refused_promptly(tmp_path: object, leaves: int) -> None:
    # the exclusive disjunction of n parts is n**2 atoms; checking it was n**3 (800 parts: minutes)
    body = "{all: [" + ", ".join(f"{{f0: {{not_equals: {i}}}}}" for i in range(leaves)) + "]}"
    path = tmp_path / "long.yaml"  # type: ignore[operator]
    path.write_text(wide_pack(1, [body]))
    with pytest.raises(PackError) as caught:
        load_packs([str(path)])
    (problem,) = caught.value.problems
    assert problem.message.startswith("rule W0 is too complex for the rule engine (more than 256 alternatives")


@pytest.mark.parametrize("op", ["one_of", "none_of"])
def test_a_long_code_list_is_judged(op: str) -> None:
    # 300 values were 300 alternatives: "too complex", with advice (split the rule) that cannot apply
    codes = ", ".join(str(100 + n) for n in range(300))
    pack = build(wide_pack(2, [f"{{f0: {{{op}: [{codes}]}}}}", f"{{any: [{{f0: {{{op}: [{codes}]}}}}, "
                                                                 "{f1: {at_most: 50}}]}"]))
    counts = judged_against_plain_python(pack, records_of(pack, 2, 60, seed=3))
    assert sum(counts.values()) == 120 and counts["pass"] and counts["fail"]
