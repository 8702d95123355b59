"""Conditions -> durable ruleset JSON, checked without durable: shapes, exclusivity, three-valued outcomes."""

from __future__ import annotations

import random
from typing import Any

import pytest

from engine.errors import PackError
from engine.judge.compiler import (
    MAX_TERMS,
    OUTCOME_CODES,
    RuleCompiler,
    and_,
    compile_rules,
    exclusive_or,
    or_,
    parse_rule_name,
    terms,
    to_durable,
)
from engine.judge.facts import Layout
from engine.language.conditions import evaluate
from engine.language.model import All, AnyOf, Condition, Leaf, Not, Outcome
from tests.helpers import make_pack, record

RULE = "  - id: R\n    title: R\n    severity: major\n    for: session\n{body}\n"


def compiled(body: str) -> tuple[Any, dict[str, Any]]:
    pack = make_pack(RULE.format(body=body))
    layout = Layout(pack.records, list(pack.rules))
    return pack, compile_rules(list(pack.rules), layout)


def test_a_simple_rule_compiles_to_flat_guarded_patterns() -> None:
    _, ruleset = compiled("    when: {route: IV}\n    require: {dose_mg: {at_most: 100}}")
    assert ruleset == {
        "r0_p_0": {"all": [{"m": {"$and": [{"_a": 1}, {"_t": 0}, {"s0": 1}, {"v0": 0}, {"s1": 1},
                                           {"$lte": {"v1": 100.0}}]}}], "cap": 1000},
        "r0_f_0": {"all": [{"m": {"$and": [{"_a": 1}, {"_t": 0}, {"s0": 1}, {"v0": 0}, {"s1": 0}]}}], "cap": 1000},
        "r0_f_1": {"all": [{"m": {"$and": [{"_a": 1}, {"_t": 0}, {"s0": 1}, {"v0": 0}, {"s1": 1},
                                           {"$gt": {"v1": 100.0}}]}}], "cap": 1000},
        "r0_a_0": {"all": [{"m": {"$and": [{"_a": 1}, {"_t": 0}, {"s0": 1}, {"$neq": {"v0": 0}}]}}], "cap": 1000},
        "r0_e_0": {"all": [{"m": {"$and": [{"_a": 1}, {"_t": 0}, {"s0": 0}]}}], "cap": 1000},
        "zz_sentinel": {"all": [{"m": {"_s": 1}}]},
    }


def test_every_pattern_carries_the_guard_and_no_pattern_nests() -> None:
    _, ruleset = compiled("    when: {any: [{route: IV}, {not: {dose_mg: {between: [1, 2]}}}]}\n"
                          "    require: {all: [{escort_present: true}, {any: [{note: {matches: 'a.*'}},"
                          " {dose_mg: {at_most: {field: dose_max}}}]}]}")
    for name, rule in ruleset.items():
        if name == "zz_sentinel":
            continue
        test = rule["all"][0]["m"]["$and"]
        assert test[0] == {"_a": 1}  # durable's own state document never has _a: no rule can loop on it
        assert all("$and" not in atom and "$or" not in atom for atom in test)
        assert len(test) < 15  # far below durable's 32 expression entries per pattern


def test_exclusive_or_and_normal_form() -> None:
    a, b, c = ("eq", "a", 1), ("eq", "b", 1), ("eq", "c", 1)
    na, nb = ("eq", "a", 0), ("eq", "b", 0)
    formula = exclusive_or([(a, na), (b, nb), (c, ("eq", "c", 0))])
    assert terms(formula) == [(a,), (na, b), (na, nb, c)]
    assert terms(and_(or_(a, na), a)) == [(a,)]  # the contradictory term a=0 & a=1 is pruned
    assert to_durable(("lt", "v1", ("$m", "v2"))) == {"$lt": {"v1": {"$m": "v2"}}}
    assert parse_rule_name("r12_e_3") == (12, "e")


def test_a_rule_too_complex_for_the_engine_is_a_pack_problem() -> None:
    fields = ["dose_mg", "weight_kg", "devices", "dose_max"]
    parts = ", ".join(f"{{{name}: {{at_least: 1}}}}, {{{name}: {{at_most: 9}}}}" for name in fields)
    parts += ", {route: IV}, {clinician: x}, {note: y}, {escort_present: true}"
    with pytest.raises(PackError) as caught:
        compiled(f"    when: {{any: [{parts}]}}\n    require: {{all: [{parts}]}}")
    assert f"too complex for the rule engine (more than {MAX_TERMS} alternatives" in str(caught.value)


# -- exhaustive check of the three-valued compilation on random conditions and records ----------------

FIELDS = {"route": ["IV", "IN", "IM"], "dose_mg": [1.0, 5.0, 9.0], "escort_present": [True, False],
          "note": ["abc", "x1", ""]}


def random_leaf(rng: random.Random) -> Leaf:
    field = rng.choice(list(FIELDS))
    if field == "dose_mg":
        op = rng.choice(["equals", "not_equals", "less_than", "at_most", "greater_than", "at_least", "between",
                         "one_of", "none_of", "present", "ref"])
        if op == "between":
            return Leaf(field, op, (2.0, 8.0))
        if op in ("one_of", "none_of"):
            return Leaf(field, op, (1.0, 9.0))
        if op == "present":
            return Leaf(field, op, rng.random() < 0.5)
        if op == "ref":
            return Leaf(field, rng.choice(["at_most", "greater_than", "equals"]), None, ref="dose_max")
        return Leaf(field, op, 5.0)
    if field == "note":
        return Leaf(field, "matches", "[a-z]+") if rng.random() < 0.7 else Leaf(field, "present", True)
    if field == "route":
        return Leaf(field, rng.choice(["equals", "not_equals", "one_of"]), "IV" if rng.random() < 0.6 else ("IV", "IM"))
    return Leaf(field, "equals", rng.random() < 0.5)


def random_condition(rng: random.Random, depth: int = 0) -> Condition:
    roll = rng.random()
    if depth >= 2 or roll < 0.4:
        leaf = random_leaf(rng)
        if leaf.op == "one_of" and not isinstance(leaf.value, tuple):
            return Leaf(leaf.field, "equals", leaf.value)
        if leaf.op in ("equals", "not_equals") and isinstance(leaf.value, tuple):
            return Leaf(leaf.field, "one_of", leaf.value)
        return leaf
    if roll < 0.55:
        return Not(random_condition(rng, depth + 1))
    parts = tuple(random_condition(rng, depth + 1) for _ in range(rng.randint(2, 3)))
    return All(parts) if roll < 0.8 else AnyOf(parts)


def atom_holds(atom: tuple[str, str, Any], fact: dict[str, Any]) -> bool:
    op, key, operand = atom
    value = fact[key]
    other = fact[operand[1]] if isinstance(operand, tuple) else operand
    return {"eq": value == other, "neq": value != other, "lt": value < other, "lte": value <= other,
            "gt": value > other, "gte": value >= other}[op]


def expected_outcome(when: Condition, require: Condition, values: dict[str, Any]) -> Outcome:
    truth, _ = evaluate(when, values)
    if truth is None:
        return Outcome.NOT_EVALUABLE
    if truth is False:
        return Outcome.NOT_APPLICABLE
    return Outcome.PASS if evaluate(require, values)[0] is True else Outcome.FAIL


def test_every_record_matches_exactly_one_term_with_the_three_valued_outcome() -> None:
    rng = random.Random(7)
    pack = make_pack(RULE.format(body="    require: {dose_mg: {present: true}}"))
    checked = 0
    for _ in range(150):
        when, require = random_condition(rng), random_condition(rng)
        rule = pack.rules[0].__class__(**{**{f: getattr(pack.rules[0], f) for f in pack.rules[0].__slots__},
                                          "when": when, "require": require})
        layout = Layout(pack.records, [rule])
        compiler = RuleCompiler(layout, "session")
        outcomes = {code: terms(formula, 10_000) for code, formula in compiler.outcomes(rule).items()}
        for _ in range(12):
            raw = {name: rng.choice(values + [""]) for name, values in FIELDS.items()}
            raw["dose_max"] = rng.choice(["5", "", "1"])
            text = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in raw.items()}
            values = record(pack, text).values
            fact = layout.encode("session", values, 0)
            hits = [code for code, found in outcomes.items() for term in found
                    if all(atom_holds(atom, fact) for atom in term)]
            assert len(hits) == 1, (when, require, values, hits)
            assert OUTCOME_CODES[hits[0]] == expected_outcome(when, require, values), (when, require, values)
            checked += 1
    assert checked == 1800
