"""Every answer of the rule engine is checked: a wrong reply of each kind (a fail turned into a pass
and back, not-applicable and not-evaluable swapped, a pair missing or doubled) stops the audit with
exit 2, naming the rule, the record, its file:line and both outcomes, and no report is written."""

from __future__ import annotations

import functools
import re
from array import array
from pathlib import Path
from typing import Any

import pytest

from cli import main
from engine.judge import pipeline
from engine.judge.compiler import OUTCOME_CODES
from engine.judge.durable import worker_main
from engine.language.model import Outcome

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "audit"
CODES = {outcome: number for number, outcome in enumerate(OUTCOME_CODES.values())}


class _Tampering:
    """The worker's results queue, with the first segment of one outcome changed by ``mode``."""

    def __init__(self, results: Any, mode: str) -> None:
        self.results, self.mode, self.done = results, mode, False

    def put(self, item: tuple[int, bytes, str | None]) -> None:
        batch_id, data, error = item
        if data and not self.done:
            data = self._tamper(data)
        self.results.put((batch_id, data, error))

    def _tamper(self, data: bytes) -> bytes:
        flat = array("i")
        flat.frombytes(data)
        source, target = {"fail->pass": (Outcome.FAIL, Outcome.PASS), "pass->fail": (Outcome.PASS, Outcome.FAIL),
                          "not_applicable->not_evaluable": (Outcome.NOT_APPLICABLE, Outcome.NOT_EVALUABLE),
                          "not_evaluable->not_applicable": (Outcome.NOT_EVALUABLE, Outcome.NOT_APPLICABLE),
                          "missing": (Outcome.FAIL, None), "doubled": (Outcome.FAIL, None),
                          "stranger": (Outcome.FAIL, None)}[self.mode]
        position = 0
        while position < len(flat):
            rule, outcome, count = flat[position:position + 3]
            if outcome == CODES[source] and count:
                self.done = True
                if target is not None:
                    flat[position + 1] = CODES[target]
                elif self.mode == "missing":  # the segment's last fact loses its outcome
                    flat[position + 2] = count - 1
                    del flat[position + 3 + count - 1]
                elif self.mode == "stranger":  # an outcome for a fact the batch does not have
                    flat[position + 3] = 100_000
                else:  # the segment's first fact gets its outcome twice
                    flat[position + 2] = count + 1
                    flat.insert(position + 3, flat[position + 3])
                break
            position += 3 + count
        return flat.tobytes()


def _tampering_worker(mode: str, ruleset_json: str, keys_json: str, tasks: Any, results: Any) -> None:
    worker_main(ruleset_json, keys_json, tasks, _Tampering(results, mode))


@pytest.mark.parametrize("mode, message", [
    ("fail->pass", "judged rule {rule} pass on session {key} (sessions.csv:{line}), the plain-Python check fail"),
    ("pass->fail", "judged rule {rule} fail on session {key} (sessions.csv:{line}), the plain-Python check pass"),
    ("not_applicable->not_evaluable", "judged rule {rule} not_evaluable on session {key} (sessions.csv:{line}), "
                                      "the plain-Python check not_applicable"),
    ("not_evaluable->not_applicable", "judged rule {rule} not_applicable on session {key} (sessions.csv:{line}), "
                                      "the plain-Python check not_evaluable"),
    ("missing", "gave no outcome for rule {rule} on session {key} (sessions.csv:{line})"),
    ("doubled", "gave rule {rule} a second or misplaced outcome on session {key} (sessions.csv:{line})"),
    # the engine is given the first record of each signature only (engine/judge/verdicts.py): lines 6
    # and 7 read as earlier ones do, and wait for their answers
    ("stranger", "answered rule {rule} for a record it was not given (batch of 4 records: sessions.csv lines 2-5)"),
])
def test_a_wrong_answer_of_the_engine_stops_the_audit(mode: str, message: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run",
                        lambda *a, **k: real_run(*a, **k, worker=functools.partial(_tampering_worker, mode)))
    monkeypatch.chdir(GOLDEN)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["audit", "--pack", "pack.yaml", "sessions.csv", "--reveal-identifiers",
                                       "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()
    (line,) = result.stderr.splitlines()
    assert line.startswith("protocol-audit: the rule engine ") and line.endswith(
        "; the audit is incomplete and no report was written")
    # the message names a real rule, record and line of the export
    ids = re.findall(r"^  - id: (\S+)$", (GOLDEN / "pack.yaml").read_text(), re.MULTILINE)
    rules = [rule for rule in ids if f"rule {rule} " in line]
    assert rules, line
    rows = (GOLDEN / "sessions.csv").read_text().splitlines()
    named = [(key, number) for number, row in enumerate(rows[1:], 2) if (key := row.split(",")[0])
             and message.format(rule=rules[0], key=key, line=number) in line]
    assert named, line


HISTORY_PACK = """\
pack: hist
version: "1"
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, dose_mg: number, weight_kg: number}
derive:
  dose_mg_per_kg: dose_mg / weight_kg
rules:
  - id: GAP
    title: two days apart, dose at most 1 mg/kg
    severity: major
    for: session
    require:
      all:
        - since_previous: {of: session, where: {dose_mg_per_kg: {greater_than: 0}}, at_least: 48h}
        - dose_mg_per_kg: {at_most: 1}
"""


def _history_records() -> tuple[Any, list[Any]]:
    from engine.language.loader import load_yaml
    from engine.language.schema import build_pack
    from tests.helpers import record

    pack = build_pack(load_yaml(HISTORY_PACK, "hist.yaml"), "hist.yaml", HISTORY_PACK.encode())
    rows = [("S1", "2026-03-01 09:00"), ("S2", "2026-03-02 09:00"), ("S3", "2026-03-06 09:00")]
    return pack, [record(pack, {"session_id": key, "patient_id": "P", "session_start": start, "dose_mg": "35",
                                "weight_kg": "70"}, line=n + 2) for n, (key, start) in enumerate(rows)]


def test_judging_leaves_the_values_as_read_and_derived() -> None:
    from engine.judge.pipeline import judge

    pack, records = _history_records()
    outcomes: dict[str, str] = {}
    judge([pack], records, on_outcome=lambda rule, rec, outcome: outcomes.__setitem__(rec.key, outcome.value))
    assert outcomes == {"S1": "pass", "S2": "fail", "S3": "pass"}
    for rec in records:
        assert set(rec.values) == {"session_id", "patient_id", "session_start", "dose_mg", "weight_kg",
                                   "dose_mg_per_kg"}  # history answers are kept beside, not in, the values
        with pytest.raises(AttributeError):
            rec.values = {}  # type: ignore[misc]  # a record is not changed by being judged


def test_explain_needs_no_audit_before_it() -> None:
    from engine.commands.explain import trace
    from engine.judge.context import PackContext

    pack, records = _history_records()  # fresh records: not derived, not judged
    outcome, lines = trace(PackContext([pack]), pack.rules[0], records[1], records)
    assert outcome is Outcome.FAIL
    # the history where reads a derived field of the other records: derived here, not by an audit
    assert lines[3:] == ["    since_previous session where (dose_mg_per_kg > 0) at least 2d -> false",
                         "      previous: S1 at 2026-03-01T09:00:00+00:00 (mem:2)", "      hours_since: 24.0",
                         "    dose_mg_per_kg ≤ 1.0: dose_mg_per_kg = 0.5 (derived: dose_mg / weight_kg; "
                         "dose_mg = 35.0, weight_kg = 70.0) -> true"]
