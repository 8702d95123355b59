"""The durable engine against the independent reference judge, rule by rule, on the shipped samples."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from engine import pipeline
from engine.packs import load_pack, merged_types
from engine.values import timezone
from tests.reference import Reference

ROOT = Path(__file__).resolve().parent.parent
PACKS = sorted((ROOT / "rules").glob("*.yaml"))
SAMPLES = sorted(p for p in (ROOT / "samples").iterdir() if p.suffix in (".csv", ".ndjson", ".json"))


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("pack_path", PACKS, ids=lambda p: p.stem)
def test_engine_agrees_with_reference_on_every_pair(pack_path: Path, sample: Path) -> None:
    pack = load_pack(str(pack_path))
    types, zone = merged_types([pack])
    reference = Reference(str(pack_path), types, timezone(zone))
    by_id = {rule["id"]: rule for rule in reference.rules()}
    engine_outcomes: dict[tuple[str, str], str] = {}
    expected: dict[tuple[str, str], str] = {}

    def hook(rule, record, outcome):  # type: ignore[no-untyped-def]
        key = (rule.id, record.key)
        assert key not in engine_outcomes, f"two outcomes for {key}"
        engine_outcomes[key] = outcome.value
        expected[key] = reference.outcome(by_id[rule.id], record.values)

    result, stats = pipeline.run([pack], [str(sample)], on_outcome=hook)
    judged = sum(s.records_judged for s in stats)
    assert judged > 1000
    for rule in pack.rules:
        assert sum(1 for (rid, _) in engine_outcomes if rid == rule.id) == judged
    mismatches = [(k, engine_outcomes[k], expected[k]) for k in engine_outcomes if engine_outcomes[k] != expected[k]]
    assert mismatches == []
    # the engine's report counts are the same pairs, counted
    counts = Counter((rid, outcome) for (rid, _), outcome in engine_outcomes.items())
    for rule, tally in zip(result.rules, result.tallies):
        assert (tally.passed, tally.failed, tally.not_evaluable, tally.not_applicable) == (
            counts[(rule.id, "pass")], counts[(rule.id, "fail")],
            counts[(rule.id, "not_evaluable")], counts[(rule.id, "not_applicable")])
    # and the samples do exercise every outcome the engine can give
    assert {o for o in engine_outcomes.values()} >= {"pass", "fail", "not_evaluable", "not_applicable"}
