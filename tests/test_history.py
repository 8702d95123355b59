"""History conditions: each form at its window edges, time zones, joins, unknowns, rejected records,
validation problems, explain, and the audit path (partitions by patient) against in-memory judging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from engine.commands.examples import run_examples
from engine.errors import PackError
from engine.judge.pipeline import judge
from engine.language.loader import load_yaml
from engine.language.model import Outcome, Pack, Record
from engine.language.schema import build_pack
from tests.helpers import record

GOLDEN = Path(__file__).resolve().parent / "golden" / "history"

TYPES = """\
pack: hist
version: "1"
timezone: America/Los_Angeles
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, route: {type: enum, values: [IV, IN]}}
  screening:
    key: screening_id
    patient: patient_id
    time: screened_at
    fields: {screening_id: string, patient_id: string, screened_at: datetime,
             instrument: {type: enum, values: [DAST10, AUDITC]}, score: integer}
  vital:
    key: vital_id
    patient: patient_id
    time: measured_at
    fields: {vital_id: string, patient_id: string, measured_at: datetime, session_id: string, sbp: integer}
rules:
"""


def pack_with(rule_body: str, when: str = "") -> Pack:
    text = TYPES + "  - id: H\n    title: H\n    severity: major\n    for: session\n"
    if when:
        text += f"    when: {when}\n"
    text += f"    require: {rule_body}\n"
    return build_pack(load_yaml(text, "hist.yaml"), "hist.yaml", text.encode())


def outcome_of(pack: Pack, session: dict[str, str], others: list[tuple[str, dict[str, str]]]) -> tuple[str, Any]:
    """The outcome of rule H on ``session`` (patient P) with ``others`` as the patient's other records."""
    judged = record(pack, dict(session, patient_id="P"), type_name="session")
    rest = [record(pack, dict(values, patient_id="P"), line=10 + n, type_name=kind)
            for n, (kind, values) in enumerate(others)]
    seen: dict[str, Outcome] = {}

    def keep(rule: Any, rec: Record, outcome: Outcome) -> None:
        if rec is judged:
            seen["H"] = outcome

    result = judge([pack], [judged, *rest], on_outcome=keep)
    missing = list(result.findings[0].missing) or None if result.findings else None
    return seen["H"].value, missing


def screening(key: str, at: str, instrument: str = "DAST10") -> tuple[str, dict[str, str]]:
    return "screening", {"screening_id": key, "screened_at": at, "instrument": instrument}


def session(key: str, at: str) -> tuple[str, dict[str, str]]:
    return "session", {"session_id": key, "session_start": at, "route": "IV"}


S = {"session_id": "S0", "session_start": "2026-03-02 09:00", "route": "IV"}
EXISTS_90D = "{exists: {of: screening, where: {instrument: DAST10}, within: {before: 90d}}}"


@pytest.mark.parametrize("others, expected", [
    ([screening("K", "2025-12-02 09:00")], "pass"),                  # exactly 90 days before: inclusive
    ([screening("K", "2025-12-02 08:59:59")], "fail"),               # one second too early
    ([screening("K", "2026-03-02 09:00")], "pass"),                  # the same moment: after 0 is inclusive
    ([screening("K", "2026-03-02 09:00:01")], "fail"),               # after the session
    ([screening("K", "2025-12-02T17:00:00+00:00")], "pass"),         # the same instant written in UTC
    ([screening("K", "2026-01-15 09:00", "AUDITC")], "fail"),        # where excludes it
    ([], "fail"),
], ids=["exactly-90d", "90d-and-1s", "same-moment", "after", "utc-offset", "where-excludes", "none"])
def test_exists_window_edges(others: list[tuple[str, dict[str, str]]], expected: str) -> None:
    assert outcome_of(pack_with(EXISTS_90D), S, others)[0] == expected


def test_exists_after_window_and_whole_history() -> None:
    later = [screening("K", "2026-03-03 09:00")]
    assert outcome_of(pack_with("{exists: {of: screening, within: {before: 0d, after: 1d}}}"), S, later)[0] == "pass"
    assert outcome_of(pack_with("{exists: {of: screening}}"), S, later)[0] == "pass"


@pytest.mark.parametrize("others, expected", [
    ([screening("K", "2026-03-07 08:00")], "pass"),   # 24 h before across the spring-forward change: inclusive
    ([screening("K", "2026-03-07 07:59")], "fail"),   # 24 h 1 min before
    ([screening("K", "2026-03-07 09:00")], "pass"),   # the same wall-clock time the day before is only 23 h
], ids=["24h-exact-across-dst", "24h-1m", "23h-wall-clock-day"])
def test_windows_are_elapsed_time_across_daylight_saving(others: list[tuple[str, dict[str, str]]],
                                                        expected: str) -> None:
    # clocks in America/Los_Angeles went forward at 02:00 on 2026-03-08
    judged = {"session_id": "S0", "session_start": "2026-03-08 09:00", "route": "IV"}
    assert outcome_of(pack_with("{exists: {of: screening, within: {before: 1d}}}"), judged, others)[0] == expected


@pytest.mark.parametrize("previous, expected", [
    ("2026-02-28 17:00", "pass"),   # exactly 40 h
    ("2026-02-28 17:01", "fail"),   # 39 h 59 m
    ("2026-03-02 09:00", "fail"),   # the same moment: 0 h since the previous
    (None, "pass"),                 # no previous session: holds
], ids=["exactly-40h", "39h59m", "same-moment", "no-previous"])
def test_since_previous(previous: str | None, expected: str) -> None:
    others = [session("S9", previous)] if previous else []
    assert outcome_of(pack_with("{since_previous: {of: session, at_least: 40h}}"), S, others)[0] == expected


def test_since_previous_ignores_later_records() -> None:
    assert outcome_of(pack_with("{since_previous: {of: session, at_least: 40h}}"), S,
                      [session("S9", "2026-03-02 10:00")])[0] == "pass"


@pytest.mark.parametrize("times, expected", [
    (["2026-02-24 09:00", "2026-02-27 09:00"], "pass"),                      # 2 others in 7 days: this is the third
    (["2026-02-23 09:00", "2026-02-27 09:00", "2026-03-01 09:00"], "fail"),  # 7 days exactly is inside
    (["2026-02-23 08:59", "2026-02-27 09:00", "2026-03-01 09:00"], "pass"),  # just outside the window
], ids=["third-in-7d", "fourth-at-window-edge", "edge-outside"])
def test_count_counts_other_records_in_the_window(times: list[str], expected: str) -> None:
    others = [session(f"S{n}", at) for n, at in enumerate(times, start=1)]
    pack = pack_with("{count: {of: session, within: {before: 7d}, at_most: 2}}")
    assert outcome_of(pack, S, others)[0] == expected


def test_count_at_least() -> None:
    pack = pack_with("{count: {of: screening, within: {before: 30d}, at_least: 2}}")
    assert outcome_of(pack, S, [screening("A", "2026-02-20 09:00")])[0] == "fail"
    assert outcome_of(pack, S, [screening("A", "2026-02-20 09:00"), screening("B", "2026-02-21 09:00")])[0] == "pass"


@pytest.mark.parametrize("others, expected", [
    ([], "pass"),
    ([session("S9", "2026-03-01 09:00")], "not_applicable"),
    ([session("S9", "2026-03-02 09:00")], "pass"),  # a tie in time is not earlier
], ids=["only-session", "an-earlier-one", "tie"])
def test_first_in_when(others: list[tuple[str, dict[str, str]]], expected: str) -> None:
    pack = pack_with("{route: IV}", when="{first: {of: session}}")
    assert outcome_of(pack, S, others)[0] == expected


def test_join_looks_at_records_sharing_the_field() -> None:
    pack = pack_with("{exists: {of: vital, join: session_id, where: {sbp: {present: true}}}}")
    vital = {"vital_id": "V1", "measured_at": "2026-03-02 08:50", "sbp": "120"}
    assert outcome_of(pack, S, [("vital", dict(vital, session_id="S0"))])[0] == "pass"
    assert outcome_of(pack, S, [("vital", dict(vital, session_id="S7"))])[0] == "fail"
    assert outcome_of(pack, S, [("vital", dict(vital, session_id="S0", sbp=""))])[0] == "fail"  # where unknown


def test_a_judged_record_without_time_makes_history_unknown() -> None:
    no_time = dict(S, session_start="")
    others = [screening("K", "2026-01-15 09:00")]
    assert outcome_of(pack_with(EXISTS_90D), no_time, others) == ("fail", ["session_start"])
    assert outcome_of(pack_with("{route: IV}", when=EXISTS_90D), no_time, others)[0] == "not_evaluable"
    assert outcome_of(pack_with(f"{{not: {EXISTS_90D}}}"), no_time, others)[0] == "fail"


def test_records_without_time_never_match() -> None:
    assert outcome_of(pack_with(EXISTS_90D), S, [screening("K", "")])[0] == "fail"


def test_history_combines_with_other_conditions() -> None:
    pack = pack_with(f"{{any: [{EXISTS_90D}, {{route: IN}}]}}")
    assert outcome_of(pack, S, [])[0] == "fail"
    assert outcome_of(pack, dict(S, route="IN"), [])[0] == "pass"


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_audit_of_several_files_with_evidence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(GOLDEN)
    out = tmp_path / "r.json"
    code, _, stderr = run_cli("audit", "--pack", "pack.yaml", "sessions.csv", "screenings.csv", "vitals.csv",
                              "--as-of", "2026-11-26", "-o", str(out))
    assert code == 1, stderr
    report = json.loads(out.read_text())
    counts = {r["id"]: (r["passed"], r["failed"], r["not_evaluable"], r["not_applicable"]) for r in report["rules"]}
    assert counts == {"SCR-01": (1, 5, 0, 0), "GAP-01": (3, 3, 0, 0), "FREQ-01": (4, 2, 0, 0), "BP-01": (1, 1, 1, 3)}
    assert [r["reason"] for r in report["rejected"]] == ['score: "x" is not an integer']
    by_key = {(f["rule"], f["record_key"]): f for f in report["findings"]}
    # P2's only screening was rejected: it is invisible to history
    scr = by_key[("SCR-01", "S5")]["evidence"]["exists screening where (instrument = DAST10) within 90d before"]
    assert scr == {"result": False, "window": ["2025-12-02T09:00:00-08:00", "2026-03-02T09:00:00-08:00"],
                   "count": 0, "matched": "no matching screening"}
    freq = by_key[("FREQ-01", "S4")]["evidence"]["count session within 7d before, at most 2"]
    assert freq["count"] == 3
    assert freq["matched"][0] == "S1 at 2026-03-02T09:00:00-08:00 (sessions.csv:2)"
    assert by_key[("GAP-01", "S6")]["missing"] == ["session_start"]


def test_the_audit_path_and_in_memory_judging_agree(tmp_path: Path) -> None:
    from engine.judge.pipeline import run
    from engine.packs import load_pack

    pack = load_pack(str(GOLDEN / "pack.yaml"))
    files = [str(GOLDEN / name) for name in ("sessions.csv", "screenings.csv", "vitals.csv")]
    via_files: dict[tuple[str, str], str] = {}
    run([pack], files, on_outcome=lambda r, rec, o: via_files.__setitem__((r.id, rec.key), o.value))
    rows = [line.split(",") for line in (GOLDEN / "sessions.csv").read_text().splitlines()[1:]]
    records = [record(pack, {"session_id": r[0], "patient_id": r[1], "session_start": r[2], "route": r[3]})
               for r in rows]
    records += [record(pack, {"vital_id": "V1", "patient_id": "P1", "measured_at": "2026-03-02 08:50",
                              "session_id": "S1", "sbp": "120"}, type_name="vital"),
                record(pack, {"screening_id": "K1", "patient_id": "P1", "screened_at": "2025-12-02 09:00",
                              "instrument": "DAST10", "score": "1"}, type_name="screening")]
    in_memory: dict[tuple[str, str], str] = {}
    judge([pack], records, on_outcome=lambda r, rec, o: in_memory.__setitem__((r.id, rec.key), o.value))
    assert via_files == in_memory and len(via_files) == 24


@pytest.mark.parametrize("reveal, patient", [(False, "pt-a2feb751f3f3"), (True, "P1")],
                         ids=["pseudonymised", "revealed"])
def test_explain_a_history_finding(monkeypatch: pytest.MonkeyPatch, reveal: bool, patient: str) -> None:
    monkeypatch.chdir(GOLDEN)
    code, stdout, _ = run_cli("explain", "--pack", "pack.yaml", "--rule", "FREQ-01", "--record", "S4",
                              "sessions.csv", "screenings.csv", "vitals.csv", *(["--reveal-identifiers"] * reveal))
    assert code == 0
    assert stdout.splitlines() == [
        'rule FREQ-01 "at most 3 a week" (hist, major)',
        f"record session S4 at sessions.csv:5, patient {patient}, time 2026-03-06T09:00:00-08:00",
        "when: always",
        "require -> false",
        "  count session within 7d before, at most 2 -> false",
        "    window: 2026-02-27T09:00:00-08:00 to 2026-03-06T09:00:00-08:00",
        "    count: 3",
        "    matched: S1 at 2026-03-02T09:00:00-08:00 (sessions.csv:2); S2 at 2026-03-04T01:00:00-08:00 "
        "(sessions.csv:3); S3 at 2026-03-05T09:00:00-08:00 (sessions.csv:4)",
        "outcome: fail (the rule engine agrees)",
        "message: at most 3 a week",
    ]


def test_explain_a_per_record_rule_shows_derived_inputs(tmp_path: Path) -> None:
    golden = Path(__file__).resolve().parent / "golden" / "audit"
    code, stdout, _ = run_cli("explain", "--pack", str(golden / "pack.yaml"), "--rule", "DOSE-01", "--record", "S-02",
                              str(golden / "sessions.csv"))
    assert code == 0
    assert "  dose_mg_per_kg between [0.1, 1.0]: dose_mg_per_kg = 1.2857 (derived: dose_mg / weight_kg; " \
           "dose_mg = 90.0, weight_kg = 70.0) -> false" in stdout.splitlines()
    assert "outcome: fail (the rule engine agrees)" in stdout


@pytest.mark.parametrize("args, message", [
    (["--rule", "FREQ-1", "--record", "S4"], 'no rule "FREQ-1" in the packs (did you mean "FREQ-01"?)'),
    (["--rule", "FREQ-01", "--record", "S99"], 'no accepted session record with key "S99" in the inputs'),
], ids=["unknown-rule", "unknown-record"])
def test_explain_errors(monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(GOLDEN)
    code, _, stderr = run_cli("explain", "--pack", "pack.yaml", *args, "sessions.csv", "screenings.csv")
    assert code == 2 and message in stderr


@pytest.mark.parametrize("body, problem", [
    ("{exists: {of: screenings}}", 'hist.yaml:26:28: unknown record type "screenings" (did you mean "screening"?)'),
    ("{exists: {of: screening, where: {instrumnt: DAST10}}}",
     'hist.yaml:26:47: field "instrumnt" is not declared for record type "screening" (did you mean "instrument"?)'),
    ("{exists: {of: screening, within: 90d}}", "hist.yaml:26:47: within must be a mapping"),
    ("{exists: {of: screening, within: {before: 90 days}}}",
     'hist.yaml:26:56: "90 days" is not a duration (write 30m, 40h, 90d or 2w)'),
    ("{exists: {of: screening, within: {}}}",
     'hist.yaml:26:47: within needs "before" and/or "after" (a duration such as 90d)'),
    ("{exists: {of: vital, join: sesion_id}}",
     'hist.yaml:26:41: join field "sesion_id" is not declared for record type "session" (did you mean "session_id"?)'),
    ("{count: {of: session}}", 'hist.yaml:26:22: count needs "at_most" or "at_least" (a whole number)'),
    ("{count: {of: session, at_most: -1}}", 'hist.yaml:26:45: "-1" is not a count (a whole number, 0 or more)'),
    ("{since_previous: {of: session}}",
     'hist.yaml:26:31: since_previous needs "at_least" (a duration such as 40h)'),
    ("{first: {of: session, within: {before: 1d}}}",
     'hist.yaml:26:36: unknown key "within" in first condition'),
    ("{exists: {of: screening, where: {first: {of: screening}}}}",
     'hist.yaml:26:47: history condition "first" cannot be used inside "where"'),
    ("{exists: {where: {instrument: DAST10}}}", 'hist.yaml:26:23: exists condition is missing "of"'),
], ids=["unknown-type", "where-undeclared", "window-not-mapping", "bad-duration", "empty-window", "join-undeclared",
        "count-without-limit", "negative-count", "since-previous-without-gap", "within-on-first", "nested-history",
        "missing-of"])
def test_history_validation(body: str, problem: str) -> None:
    with pytest.raises(PackError) as caught:
        pack_with(body)
    assert [str(p) for p in caught.value.problems] == [problem]


def test_examples_with_history() -> None:
    text = TYPES + """\
  - id: H
    title: screened
    severity: major
    for: session
    require: {exists: {of: screening, within: {before: 90d}}}
    tests:
      - record: {session_start: "2026-03-02T09:00:00-08:00"}
        history: [{type: screening, record: {screened_at: "2025-12-02T09:00:00-08:00"}}]
        expect: pass
      - record: {session_start: "2026-03-02T09:00:00-08:00"}
        history: [{type: screening, record: {screened_at: "2025-12-02T08:59:00-08:00"}}]
        expect: fail
      - record: {session_start: "2026-03-02T09:00:00-08:00"}
        expect: fail
"""
    pack = build_pack(load_yaml(text, "hist.yaml"), "hist.yaml", text.encode())
    assert [(r.example.expect, r.actual) for r in run_examples(pack)] == [
        ("pass", "pass"), ("fail", "fail"), ("fail", "fail")]
