"""Every ``tests:`` example of every shipped pack, each its own case (id like DOSE-01-fail-1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.examples import ExampleResult, run_examples
from engine.packs import load_pack

ROOT = Path(__file__).resolve().parent.parent
PACKS = [load_pack(str(p)) for p in sorted((ROOT / "rules").glob("*.yaml")) if not p.stem.endswith(".tests")]
RESULTS = [result for pack in PACKS for result in run_examples(pack)]


def test_every_shipped_rule_has_a_passing_and_a_failing_example() -> None:
    for pack in PACKS:
        for rule in pack.rules:
            expects = {e.expect for e in rule.examples}
            assert {"pass", "fail"} <= expects, f"{pack.id} {rule.id} lacks a pass or a fail example"


@pytest.mark.parametrize("result", RESULTS, ids=[f"{r.rule.pack}-{r.name}" for r in RESULTS])
def test_example(result: ExampleResult) -> None:
    where = f"{result.example.mark.path}:{result.example.mark.line}"
    assert result.actual == result.example.expect, f"{where}: expected {result.example.expect}, got {result.actual}"
