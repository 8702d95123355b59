"""The durable engine against the independent reference judge, pair by pair, on the shipped samples."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from engine.inputs.records import InputStats, Seen, bind_inputs, read_input
from engine.judge import pipeline
from engine.judge.context import PackContext
from engine.language.model import Record
from engine.packs import load_pack
from tests.reference import Reference

ROOT = Path(__file__).resolve().parent.parent
PACK_PATHS = sorted(p for p in (ROOT / "rules").glob("*.yaml") if not p.stem.endswith(".tests"))
SAMPLES = ROOT / "samples"
OTHER_FILES = sorted(str(p) for p in SAMPLES.glob("*.csv") if p.stem != "sessions")
HISTORY = ROOT / "tests" / "golden" / "history"
CASES = {  # packs, inputs, how many sessions at least
    "samples-csv": (PACK_PATHS, [str(SAMPLES / "sessions.csv"), *OTHER_FILES], 2000),
    "samples-ndjson": (PACK_PATHS, [str(SAMPLES / "sessions.ndjson"), *OTHER_FILES], 2000),
    "history-edges": ([HISTORY / "pack.yaml"], [str(HISTORY / f) for f in ("sessions.csv", "screenings.csv",
                                                                            "vitals.csv")], 6),
}


def accepted_by_patient(context: PackContext, files: list[str]) -> dict[str, list[Record]]:
    """Every accepted record of the inputs, derived fields added, grouped by patient."""
    seen = Seen()
    found: dict[str, list[Record]] = {}
    for type_name, path in bind_inputs(files, context.types):
        for item in read_input(path, type_name, context.types, context.tz, seen, InputStats(path, type_name)):
            if isinstance(item, Record):
                context.derive(item)
                found.setdefault(item.patient or "", []).append(item)
    return found


@pytest.mark.parametrize("pack_paths, files, sessions", list(CASES.values()), ids=list(CASES))
def test_engine_agrees_with_reference_on_every_pair(pack_paths: list[Path], files: list[str], sessions: int) -> None:
    packs = [load_pack(str(p)) for p in pack_paths]
    context = PackContext(packs)
    history = accepted_by_patient(context, files)
    references = {pack.id: Reference(pack.path, context.types, context.tz, history) for pack in packs}
    by_id = {(pack_id, rule["id"]): rule for pack_id, ref in references.items() for rule in ref.rules()}
    engine_outcomes: dict[tuple[str, str, str], str] = {}
    expected: dict[tuple[str, str, str], str] = {}

    def hook(rule: Any, record: Record, outcome: Any) -> None:
        key = (rule.pack, rule.id, record.key)
        assert key not in engine_outcomes, f"two outcomes for {key}"
        engine_outcomes[key] = outcome.value
        expected[key] = references[rule.pack].outcome(by_id[(rule.pack, rule.id)], record)

    result, stats = pipeline.run(packs, files, on_outcome=hook)
    judged_by_type = Counter(r.type for records in history.values() for r in records)
    assert judged_by_type["session"] >= sessions
    per_rule = Counter((p, r) for p, r, _ in engine_outcomes)  # counted once: rules x outcomes took a second
    for rule in result.rules:
        assert per_rule[(rule.pack, rule.id)] == judged_by_type[rule.for_type]
    mismatches = [(k, engine_outcomes[k], expected[k]) for k in engine_outcomes if engine_outcomes[k] != expected[k]]
    assert mismatches == []
    counts = Counter((p, r, outcome) for (p, r, _), outcome in engine_outcomes.items())
    # a rule counted per patient or course counts units: worked out here from the record outcomes
    records = {(r.type, r.key): r for found in history.values() for r in found}
    for rule in result.rules:
        if rule.per is None:
            continue
        units: dict[tuple[str, ...], set[str]] = {}
        for (pack, rule_id, key), outcome in engine_outcomes.items():
            if (pack, rule_id) == (rule.pack, rule.id):
                record = records[(rule.for_type, key)]
                value = None if rule.per == "patient" else record.values.get(rule.per)
                unit = (record.patient or "",) if rule.per == "patient" else \
                    (record.patient or "", value) if value is not None else (record.patient or "", None, key)
                units.setdefault(unit, set()).add(outcome)
        for column in ("pass", "fail", "not_evaluable", "not_applicable"):
            counts[(rule.pack, rule.id, column)] = 0
        for outcomes in units.values():
            column = next(o for o in ("fail", "pass", "not_evaluable", "not_applicable") if o in outcomes)
            counts[(rule.pack, rule.id, column)] += 1
    for rule, tally in zip(result.rules, result.tallies):
        assert (tally.passed, tally.failed, tally.not_evaluable, tally.not_applicable) == (
            counts[(rule.pack, rule.id, "pass")], counts[(rule.pack, rule.id, "fail")],
            counts[(rule.pack, rule.id, "not_evaluable")], counts[(rule.pack, rule.id, "not_applicable")])
    # the samples exercise every outcome the engine can give
    assert set(engine_outcomes.values()) >= {"pass", "fail", "not_evaluable", "not_applicable"}
