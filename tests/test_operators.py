"""The operator table is the one description of each operator: every row is accepted by the
grammar, judged by the engine and the plain evaluator alike, and written with its symbol."""

from __future__ import annotations

import pytest

from engine.commands.explain import trace
from engine.judge.context import PackContext
from engine.judge.pipeline import judge
from engine.language import conditions
from engine.language.model import Outcome
from engine.language.operators import OPERATORS
from tests.helpers import make_pack, record

# operator -> (field, operand as a pack writes it, a passing value, a failing value)
CASES = {
    "equals": ("route", "IV", "IV", "IN"),
    "not_equals": ("route", "IV", "IN", "IV"),
    "less_than": ("dose_mg", "10", "9", "10"),
    "at_most": ("dose_mg", "10", "10", "11"),
    "greater_than": ("dose_mg", "10", "11", "10"),
    "at_least": ("dose_mg", "10", "10", "9"),
    "between": ("dose_mg", "[1, 10]", "10", "11"),
    "one_of": ("route", "[IV, IM]", "IM", "IN"),
    "none_of": ("route", "[IV, IM]", "IN", "IV"),
    "present": ("dose_mg", "true", "5", ""),
    "matches": ("note", '"ok.*"', "okay", "not ok"),
}


def test_every_operator_has_a_case() -> None:
    assert set(CASES) == set(OPERATORS)


@pytest.mark.parametrize("name", sorted(OPERATORS))
def test_each_operator_is_judged_alike_and_written_with_its_symbol(name: str) -> None:
    field, operand, good, bad = CASES[name]
    pack = make_pack(f"  - id: R\n    title: R\n    severity: major\n    for: session\n"
                     f"    require: {{{field}: {{{name}: {operand}}}}}\n")
    rule = pack.rules[0]
    records = [record(pack, {"session_id": key, "patient_id": "P", field: value}, line=n + 2)
               for n, (key, value) in enumerate((("GOOD", good), ("BAD", bad)))]
    got: dict[str, Outcome] = {}
    judge([pack], records, on_outcome=lambda r, rec, outcome: got.__setitem__(rec.key, outcome))
    assert got == {"GOOD": Outcome.PASS, "BAD": Outcome.FAIL}
    symbol = OPERATORS[name].symbol
    assert symbol in conditions.describe(rule.require)
    _, lines = trace(PackContext([pack]), rule, records[0], records[:1])
    assert symbol in lines[-1] and lines[-1].endswith("-> true")
