"""Reference tables: a record type that names no patient (a staff roster) is everyone's. A history
condition reaches its records through ``join`` (``join: {this_field: its_field}`` when the two name
the field differently), and its ``where`` may compare them with the judged record's own fields
(``{judged: NAME}``), so a session can require its supervisor's licence to be current on its date."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from engine.commands.examples import run_examples
from engine.judge import pipeline
from engine.language.conditions import describe
from engine.packs import load_pack_bytes
from tests.helpers import write
from tests.test_loader import problems

PACK = """\
pack: r
version: "1"
title: roster
timezone: UTC
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, session_date: date,
             supervisor_id: string}
  credential:
    key: credential_id
    time: issued_on
    fields: {credential_id: string, staff_id: string, kind: string, issued_on: date, expires_on: date}
rules:
  - id: LIC
    title: supervisor licensed on the session date
    severity: critical
    for: session
    require:
      exists:
        of: credential
        join: {supervisor_id: staff_id}
        where:
          kind: LICENSE
          issued_on: {at_most: {judged: session_date}}
          expires_on: {at_least: {judged: session_date}}
    message: "supervisor {supervisor_id} not licensed on {session_date}"
    tests:
      - record: {supervisor_id: CL-1, session_date: "2026-03-02", session_start: "2026-03-02T09:00:00"}
        history:
          - type: credential
            record: {staff_id: CL-1, kind: LICENSE, issued_on: "2024-03-02", expires_on: "2026-03-02"}
        expect: pass
      - record: {supervisor_id: CL-1, session_date: "2026-03-03", session_start: "2026-03-03T09:00:00"}
        history:
          - type: credential
            record: {staff_id: CL-1, kind: LICENSE, issued_on: "2024-03-02", expires_on: "2026-03-02"}
        expect: fail
      - record: {supervisor_id: CL-1, session_date: "2026-03-02", session_start: "2026-03-02T09:00:00"}
        expect: fail
"""
ROSTER = """\
credential_id,staff_id,kind,issued_on,expires_on
C1,CL-1,LICENSE,2024-01-01,2026-01-31
C2,CL-1,LICENSE,2026-02-10,2028-02-10
C3,CL-2,LICENSE,2025-01-01,2027-01-01
C4,CL-2,BLS,2025-01-01,2027-01-01
C5,CL-3,BLS,2025-01-01,2027-01-01
"""
# P1: S1 before CL-1's lapse (pass), S2 in the lapse (fail), S3 after renewal (pass); P2: S4 by CL-2
# (pass), S5 by CL-3, who holds only BLS (fail), S6 by a clinician not on the roster (fail); P3: S7
# without a date (unknown: fails, naming the missing field), S8 without a supervisor (fails)
SESSIONS = """\
session_id,patient_id,session_start,session_date,supervisor_id
S1,P1,2026-01-20T09:00:00,2026-01-20,CL-1
S2,P1,2026-02-03T09:00:00,2026-02-03,CL-1
S3,P1,2026-02-10T09:00:00,2026-02-10,CL-1
S4,P2,2026-02-03T09:00:00,2026-02-03,CL-2
S5,P2,2026-02-05T09:00:00,2026-02-05,CL-3
S6,P2,2026-02-07T09:00:00,2026-02-07,CL-9
S7,P3,2026-02-03T09:00:00,,CL-2
S8,P3,2026-02-04T09:00:00,2026-02-04,
"""
EXPECTED = {"S1": "pass", "S2": "fail", "S3": "pass", "S4": "pass", "S5": "fail", "S6": "fail", "S7": "fail",
            "S8": "fail"}


def outcomes(tmp_path: Path, roster: str = ROSTER, in_memory: int | None = None) -> dict[str, Any]:
    pack = load_pack_bytes(PACK.encode(), "pack.yaml")
    files = [str(write(tmp_path, "sessions.csv", SESSIONS)), str(write(tmp_path, "credentials.csv", roster))]
    found: dict[str, str] = {}

    def hook(rule: Any, record: Any, outcome: Any) -> None:
        assert record.key not in found
        found[record.key] = outcome.value

    if in_memory is not None:
        original = pipeline.IN_MEMORY
        pipeline.IN_MEMORY = in_memory
    try:
        result, _ = pipeline.run([pack], files, on_outcome=hook)
    finally:
        if in_memory is not None:
            pipeline.IN_MEMORY = original
    return {"outcomes": found, "result": result}


@pytest.mark.parametrize("in_memory", [None, 1])
def test_each_session_is_judged_against_the_whole_roster(tmp_path: Path, in_memory: int | None) -> None:
    """The roster's records belong to no patient: every patient's sessions find them through the
    join, in memory and when the records spill to partition files alike."""
    assert outcomes(tmp_path, in_memory=in_memory)["outcomes"] == EXPECTED


def test_the_roster_order_does_not_matter(tmp_path: Path) -> None:
    lines = ROSTER.splitlines()
    shuffled = "\n".join([lines[0], *reversed(lines[1:])]) + "\n"
    assert outcomes(tmp_path, shuffled)["outcomes"] == EXPECTED


def test_findings_name_the_missing_field_and_the_roster_entries_searched(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK)
    files = [str(write(tmp_path, "sessions.csv", SESSIONS)), str(write(tmp_path, "credentials.csv", ROSTER))]
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), *files, "--reveal-identifiers", "-o", str(out)])
    assert result.exit_code == 1, result.output
    report = json.loads(out.read_text())
    findings = {f["record_key"]: f for f in report["findings"]}
    assert sorted(findings) == ["S2", "S5", "S6", "S7", "S8"]
    assert findings["S7"]["missing"] == ["session_date"]
    assert findings["S8"]["missing"] == ["supervisor_id"]
    assert findings["S2"]["message"] == "supervisor CL-1 not licensed on 2026-02-03"
    history = next(value for name, value in findings["S2"]["evidence"].items() if name.startswith("exists"))
    assert history["count"] == 0 and history["matched"] == "no matching credential"
    passed = {r["id"]: r for r in report["rules"]}["LIC"]
    assert (passed["applicable"], passed["passed"], passed["failed"]) == (8, 3, 5)


def test_explain_reads_the_roster(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK)
    files = [str(write(tmp_path, "sessions.csv", SESSIONS)), str(write(tmp_path, "credentials.csv", ROSTER))]
    args = ["explain", "--pack", str(pack), "--rule", "LIC", *files, "--reveal-identifiers", "--record"]
    out = CliRunner().invoke(main, [*args, "S3"])
    assert out.exit_code == 0, out.output
    assert "outcome: pass (the rule engine agrees)" in out.output
    assert "C2 at 2026-02-10" in out.output
    out = CliRunner().invoke(main, [*args, "S2"])
    assert "outcome: fail (the rule engine agrees)" in out.output


def test_a_rejected_roster_entry_makes_its_findings_suspect(tmp_path: Path) -> None:
    """CL-3's licence row has an unreadable expiry: the finding on S5 may be a data-entry gap."""
    roster = ROSTER + "C6,CL-3,LICENSE,2025-01-01,2027-13-01\n"
    pack = write(tmp_path, "pack.yaml", PACK)
    files = [str(write(tmp_path, "sessions.csv", SESSIONS)), str(write(tmp_path, "credentials.csv", roster))]
    out = tmp_path / "r.json"
    CliRunner().invoke(main, ["audit", "--pack", str(pack), *files, "--reveal-identifiers", "-o", str(out)])
    findings = {f["record_key"]: f for f in json.loads(out.read_text())["findings"]}
    assert findings["S5"].get("data_quality_suspect") is True
    assert findings["S5"]["rejected_nearby"] == [f"{files[1]}:7"]
    assert not findings["S6"].get("data_quality_suspect")  # CL-9's is not the rejected row's staff id


def test_each_example_sees_only_its_own_roster() -> None:
    """Examples are judged together, each a patient of its own: the first example's licence row
    must not let the third, which has none, pass."""
    pack = load_pack_bytes(PACK.encode(), "pack.yaml")
    assert [(case.example.expect, case.actual) for case in run_examples(pack)] == [
        ("pass", "pass"), ("fail", "fail"), ("fail", "fail")]


def test_the_condition_reads_in_words() -> None:
    rule = load_pack_bytes(PACK.encode(), "pack.yaml").rules[0]
    assert describe(rule.require) == (
        "exists credential where (kind = LICENSE and issued_on \u2264 the judged record's session_date and "
        "expires_on \u2265 the judged record's session_date) whose staff_id is this supervisor_id in the whole history")


def test_problems() -> None:
    no_join = PACK.replace("        join: {supervisor_id: staff_id}\n", "")
    assert problems(no_join) == [
        'pack.yaml:23:9: "credential" is a reference table (it names no patient): say how its records are '
        "found, with join: FIELD or join: {this_field: its_field}"]
    assert problems(PACK.replace("join: {supervisor_id: staff_id}", "join: {supervisor_id: staf_id}")) == [
        'pack.yaml:24:31: join field "staf_id" is not declared for record type "credential" '
        '(did you mean "staff_id"?)']
    assert problems(PACK.replace("join: {supervisor_id: staff_id}", "join: {supervisor: staff_id}")) == [
        'pack.yaml:24:16: join field "supervisor" is not declared for record type "session" '
        '(did you mean "supervisor_id"?)']
    assert problems(PACK.replace("join: {supervisor_id: staff_id}", "join: {supervisor_id: issued_on}")) == [
        'pack.yaml:24:31: join field "supervisor_id" is string in "session" but "issued_on" is date in '
        '"credential"']
    assert problems(PACK.replace("{judged: session_date}}\n          expires_on",
                                 "{judged: session_day}}\n          expires_on")) == [
        'pack.yaml:27:41: field "session_day" is not declared for record type "session" '
        '(did you mean "session_date"?)']
    assert problems(PACK.replace("issued_on: {at_most: {judged: session_date}}",
                                 "issued_on: {at_most: {judged: session_start}}")) == [
        'pack.yaml:27:41: cannot compare date field "issued_on" with datetime field "session_start" of '
        '"session"']
    assert problems(PACK.replace("    require:\n      exists:",
                                 "    require:\n      session_date: {at_least: {judged: session_date}}\n"
                                 "      exists:")) == [
        "pack.yaml:22:32: {judged: NAME} compares with the judged record's field, and is written only in "
        "a history condition's where"]


def test_a_reference_table_rule_looks_only_at_reference_tables() -> None:
    """A roster row belongs to no patient, so a rule judging it has no patient's sessions to search:
    validation says so rather than letting every row fail with "no matching session"."""
    text = PACK + """  - id: USED
    severity: minor
    for: credential
    require: {exists: {of: session, join: {staff_id: supervisor_id}}}
"""
    assert problems(text) == [
        'pack.yaml:46:28: "credential" is a reference table (it names no patient), so its rules can look only '
        'at reference tables, not at "session", which belongs to patients']


def test_a_reference_table_rule_finding_names_a_rejected_roster_row(tmp_path: Path) -> None:
    """A roster rule looking at other roster rows: its finding is a data-quality suspect when a roster
    row it could have matched was rejected, in the report as in explain."""
    pack = write(tmp_path, "pack.yaml", PACK + """  - id: BLS-LIC
    severity: minor
    for: credential
    when: {kind: BLS}
    require: {exists: {of: credential, join: staff_id, where: {kind: LICENSE}, within: {before: 3000d}}}
""")
    roster = ROSTER + "C6,CL-3,LICENSE,2024-01-01,2027-13-01\n"
    files = [str(write(tmp_path, "sessions.csv", SESSIONS)), str(write(tmp_path, "credentials.csv", roster))]
    out = tmp_path / "r.json"
    CliRunner().invoke(main, ["audit", "--pack", str(pack), *files, "--reveal-identifiers", "-o", str(out)])
    findings = {(f["rule"], f["record_key"]): f for f in json.loads(out.read_text())["findings"]}
    assert findings[("BLS-LIC", "C5")]["rejected_nearby"] == [f"{files[1]}:7"]
    assert ("BLS-LIC", "C4") not in findings  # CL-2 holds a licence: it passes


def test_explain_says_a_roster_row_has_no_patient(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK + """  - id: BLS-LIC
    severity: minor
    for: credential
    when: {kind: BLS}
    require: {exists: {of: credential, join: staff_id, where: {kind: LICENSE}}}
""")
    files = [str(write(tmp_path, "sessions.csv", SESSIONS)), str(write(tmp_path, "credentials.csv", ROSTER))]
    out = CliRunner().invoke(main, ["explain", "--pack", str(pack), "--rule", "BLS-LIC", "--record", "C5", *files])
    assert out.exit_code == 0, out.output
    assert "no patient (a reference table's row)" in out.output
    assert "outcome: fail (the rule engine agrees)" in out.output
