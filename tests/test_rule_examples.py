"""Every ``tests:`` example of every shipped pack, each its own case (id like DOSE-01-fail-1).

The cases are listed from the packs alone; the engine runs once per pack, when the first case of
that pack runs, never while the tests are collected.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.commands.examples import ExampleResult, run_examples
from engine.language.model import Pack
from engine.packs import load_pack

ROOT = Path(__file__).resolve().parent.parent
PACKS = [load_pack(str(p)) for p in sorted((ROOT / "rules").glob("*.yaml")) if not p.stem.endswith(".tests")]
CASES = [(pack, rule.id, number) for pack in PACKS for rule in pack.rules
         for number in range(1, len(rule.examples) + 1)]


_RESULTS: dict[str, dict[tuple[str, int], ExampleResult]] = {}


def _results(pack: Pack) -> dict[tuple[str, int], ExampleResult]:
    """The pack's example results, judged once (a Pack is not hashable: cached by its id)."""
    if pack.id not in _RESULTS:
        _RESULTS[pack.id] = {(result.rule.id, result.number): result for result in run_examples(pack)}
    return _RESULTS[pack.id]


def test_every_shipped_rule_has_a_passing_and_a_failing_example() -> None:
    for pack in PACKS:
        for rule in pack.rules:
            expects = {e.expect for e in rule.examples}
            assert {"pass", "fail"} <= expects, f"{pack.id} {rule.id} lacks a pass or a fail example"


@pytest.mark.parametrize("pack, rule_id, number", CASES, ids=[
    f"{pack.id}-{rule_id}-{next(r for r in pack.rules if r.id == rule_id).examples[number - 1].expect}-{number}"
    for pack, rule_id, number in CASES])
def test_example(pack: Pack, rule_id: str, number: int) -> None:
    result = _results(pack)[(rule_id, number)]
    where = f"{result.example.mark.path}:{result.example.mark.line}"
    assert result.actual == result.example.expect, f"{where}: expected {result.example.expect}, got {result.actual}"
