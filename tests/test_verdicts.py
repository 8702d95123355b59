"""The engine's verdicts remembered by signature (engine/judge/verdicts.py) change no outcome: an audit
where the engine judges the first record of each signature gives the same counts, strata, findings
and not-evaluable entries as one where it judges every record, on the shipped samples with every
pack (history rules included) and on records made of the packs' own constants, just below and just
above each, and missing values."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.errors import EngineError
from engine.judge import pipeline, verdicts
from engine.judge.context import PackContext
from engine.language.conditions import leaves_of
from engine.packs import load_pack, load_pack_bytes, load_packs
from tests.helpers import crashing_worker, same, write

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(str(p) for p in (ROOT / "samples").glob("*.csv"))

PACK = """\
pack: sig
version: "1"
title: signature pack
timezone: America/New_York
records:
  session:
    key: session_id
    patient: patient_id
    time: start
    fields:
      session_id: string
      patient_id: string
      start: datetime
      end: datetime
      dose_mg: number
      weight_kg: number
      sbp: integer
      route: {type: enum, values: [IV, IM, IN]}
      escort: boolean
      staff: string
derive:
  minutes: "minutes(start, end)"
  dose_per_kg: "dose_mg / weight_kg"
rules:
  - id: DOSE
    title: dose within range
    severity: major
    for: session
    when: {route: {one_of: [IV, IM]}}
    require: {dose_per_kg: {between: [0.1, 1.0]}}
  - id: LONG
    title: watched long enough
    severity: critical
    for: session
    when: {all: [{escort: true}, {not: {route: IN}}]}
    require: {any: [{minutes: {at_least: 40}}, {sbp: {less_than: 120}}]}
  - id: STAFF
    title: staff id written
    severity: minor
    for: session
    require: {staff: {matches: "U-[0-9]{4}"}}
  - id: ORDER
    title: ends after it starts
    severity: major
    for: session
    when: {end: {present: true}}
    require: {end: {greater_than: {field: start}}}
  - id: BP
    title: blood pressure checked
    severity: major
    for: session
    when: {sbp: {at_least: 90}}
    require: {sbp: {at_most: 160}}
"""


def test_the_samples_judge_alike_with_and_without_remembered_verdicts() -> None:
    packs = load_packs(["ketamine-iv", "esketamine-rems"])
    remembered, _ = pipeline.run(packs, SAMPLES, group_by=["route"])
    each, _ = pipeline.run(packs, SAMPLES, group_by=["route"], remember=False)
    same(remembered, each)
    assert remembered.findings  # the samples plant failures of every kind


def test_records_spilled_to_partitions_judge_as_those_held_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    packs = load_packs(["ketamine-iv", "esketamine-rems"])
    held, _ = pipeline.run(packs, SAMPLES, group_by=["route"])
    monkeypatch.setattr(pipeline, "IN_MEMORY", 1000)  # the samples' 17,578 records spill past 1,000
    spilled, _ = pipeline.run(packs, SAMPLES, group_by=["route"])
    same(held, spilled)


def test_records_that_read_alike_share_a_signature_and_others_do_not() -> None:
    context = PackContext([load_pack_bytes(PACK.encode(), 'pack.yaml')])
    table = verdicts.Verdicts(context.rules_by_type, context.atoms, context.dated)
    base = {"route": "IV", "dose_per_kg": 0.5, "escort": True, "minutes": 50.0, "sbp": 130, "staff": "U-0001",
            "start": dt.datetime(2026, 1, 1, 9, tzinfo=dt.UTC), "end": dt.datetime(2026, 1, 1, 10, tzinfo=dt.UTC)}
    alike = {**base, "dose_per_kg": 0.7, "minutes": 41.0, "sbp": 150, "staff": "U-9999"}
    assert table.signature("session", base) == table.signature("session", alike)
    for change in ({"dose_per_kg": 1.01}, {"minutes": 39.0}, {"sbp": 119}, {"staff": "U-12345"}, {"route": "IN"},
                   {"end": base["start"]}, {"sbp": None}, {"escort": False}):
        assert table.signature("session", base) != table.signature("session", {**base, **change}), change


def _values(pack_text: str) -> dict[str, list[Any]]:
    """For each number field: every constant the rules compare it with, just below and just above it."""
    pack = load_pack_bytes(pack_text.encode(), 'pack.yaml')
    found: dict[str, set[float]] = {"dose_mg": set(), "weight_kg": {0.0, 1.0, 70.0}, "sbp": set()}
    for rule in pack.rules:
        for leaf in leaves_of(rule.when) + leaves_of(rule.require):
            constants = leaf.value if isinstance(leaf.value, list) else [leaf.value]
            for constant in constants:
                if isinstance(constant, int | float) and not isinstance(constant, bool):
                    target = "dose_mg" if leaf.field == "dose_per_kg" else leaf.field
                    if target in found:
                        scale = 70.0 if leaf.field == "dose_per_kg" else 1.0  # dose for a 70 kg patient
                        found[target] |= {constant * scale - 1, constant * scale, constant * scale + 1}
    return {name: sorted(values) for name, values in found.items()}


VALUES = _values(PACK)
MINUTES = [0, 39, 40, 41, None]  # after the start; None: no end time


def _row(number: int, dose: Any, weight: Any, sbp: Any, route: Any, escort: Any, staff: Any,
         minutes: Any) -> list[Any]:
    start = dt.datetime(2026, 3, 8, 1, 30) + dt.timedelta(minutes=7 * number)  # across the DST change
    end = "" if minutes is None else (start + dt.timedelta(minutes=minutes)).isoformat()

    def cell(value: Any) -> Any:
        return "" if value is None else value
    return [f"S{number}", f"P{number % 7}", start.isoformat(), end, cell(dose), cell(weight), cell(sbp),
            cell(route), cell(escort), cell(staff)]


ROWS = st.lists(st.tuples(
    st.sampled_from([*VALUES["dose_mg"], None]), st.sampled_from([*VALUES["weight_kg"], None]),
    st.sampled_from([*(int(v) for v in VALUES["sbp"]), None]), st.sampled_from(["IV", "IM", "IN", None]),
    st.sampled_from(["true", "false", None]), st.sampled_from(["U-0001", "U-12345", "x", None]),
    st.sampled_from(MINUTES)), min_size=40, max_size=400)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=ROWS)
def test_edge_values_judge_alike_with_and_without_remembered_verdicts(tmp_path: Path,
                                                                      rows: list[tuple[Any, ...]]) -> None:
    pack = write(tmp_path, "pack.yaml", PACK)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["session_id", "patient_id", "start", "end", "dose_mg", "weight_kg", "sbp", "route", "escort",
                     "staff"])
    writer.writerows(_row(number, *row) for number, row in enumerate(rows))
    data = write(tmp_path, "sessions.csv", out.getvalue())
    packs = [load_pack(str(pack))]
    remembered, _ = pipeline.run(packs, [str(data)])
    each, _ = pipeline.run(packs, [str(data)], remember=False)
    same(remembered, each)
    counts = [(c.passed, c.failed, c.waived, c.not_evaluable, c.not_applicable) for c in each.tallies]
    assert all(sum(c) == len(rows) for c in counts)  # every rule answered every record once


@pytest.mark.parametrize("remember", [True, False])
def test_a_rule_with_effective_dates_is_tallied_record_by_record(tmp_path: Path, remember: bool) -> None:
    dated = PACK.replace("  - id: BP\n", "  - id: BP\n    effective: {from: 2026-03-08}\n")
    pack = write(tmp_path, "pack.yaml", dated)
    rows = [_row(n, 35, 70, 150, "IV", "true", "U-0001", 45) for n in range(30)]
    rows[3][2] = ""  # a record without a time: not evaluable for the dated rule, once
    text = "session_id,patient_id,start,end,dose_mg,weight_kg,sbp,route,escort,staff\n" + \
        "\n".join(",".join(str(c) for c in row) for row in rows) + "\n"
    data = write(tmp_path, "sessions.csv", text)
    result, _ = pipeline.run([load_pack(str(pack))], [str(data)], remember=remember)
    bp = result.rules.index(next(r for r in result.rules if r.id == "BP"))
    assert (result.tallies[bp].passed, result.tallies[bp].not_evaluable) == (29, 1)


ALIKE_PACK = """\
pack: alike
version: "1"
title: alike
timezone: UTC
records:
  session:
    key: id
    patient: pid
    time: start
    fields: {id: string, pid: string, start: datetime, end: datetime, dose: number}
rules:
  - id: ORDER
    title: ends after it starts
    severity: major
    for: session
    require: {end: {greater_than: {field: start}}}
  - id: DOSE
    title: dose at most 10
    severity: major
    for: session
    require: {dose: {at_most: 10}}
"""


def test_records_wait_at_most_a_batch_and_a_crash_says_how_many(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", ALIKE_PACK)
    rows = "".join(f"S{n},P{n % 9},2026-01-01T09:00:00,2026-01-01T10:00:00,5\n" for n in range(20_000))
    data = write(tmp_path, "sessions.csv", "id,pid,start,end,dose\n" + rows)  # one signature throughout
    with pytest.raises(EngineError) as raised:
        pipeline.run([load_pack(str(pack))], [str(data)], worker=crashing_worker)
    message = str(raised.value)
    assert "not judged: 1 records (" in message and "and 500 records that read like them, waiting" in message
    # the crash is met when the waiting records are a batch, not after the whole file
    assert "reading stopped after" in message and int(message.split(" record ")[-1].split(";")[0]) <= 502


def test_a_time_the_engine_cannot_hold_to_the_microsecond_is_judged_by_it(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", ALIKE_PACK)
    # S1 and S2 read alike to the rule language (end after start), but in year 9000 the engine's float
    # seconds cannot tell S2's microsecond apart: judged by the engine, the disagreement stops the audit
    data = write(tmp_path, "sessions.csv", "id,pid,start,end,dose\nS1,P1,2026-01-01T09:00:00,2026-01-01T10:00:00,5\n"
                                           "S2,P1,9000-01-01T09:00:00,9000-01-01T09:00:00.000001,5\n")
    for remember in (True, False):
        with pytest.raises(EngineError, match="judged rule ORDER fail on session S2"):
            pipeline.run([load_pack(str(pack))], [str(data)], remember=remember)


def test_one_remembered_record_in_64_is_judged_by_the_engine_again(tmp_path: Path) -> None:
    from engine.judge.audit import Auditor
    from engine.judge.session import CHECK_EVERY
    from tests.helpers import record

    pack = load_pack(str(write(tmp_path, "pack.yaml", ALIKE_PACK)))
    auditor = Auditor([pack])
    try:
        for n in range(1000):
            made = record(pack, {"id": f"S{n}", "pid": "P1", "start": "2026-01-01T09:00:00",
                                 "end": "2026-01-01T10:00:00", "dose": "5" if n % 2 else "50"})
            auditor.context.derive(made)
            auditor.add(made)
        result = auditor.finish()
        # two signatures (dose 5, dose 50): the engine is given their first records; the next 500 wait
        # for its answers (taken when the waiting reach a batch); of the 498 after them, remembered,
        # one in 64 is given to the engine again
        assert auditor.session.sent == 2 + 498 // CHECK_EVERY
    finally:
        auditor.close()
    assert result.tallies[1].passed == 500 and result.tallies[1].failed == 500
