"""Effective-dated rule versions (SPEC 9): each record judged by the version in force at its time,
per-rule totals with a breakdown per version, overlapping windows refused, examples placed in
their version's window or at their ``time:``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from tests.helpers import write

HEAD = """\
pack: eff
version: "1"
title: effective dates
timezone: America/Chicago
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, dose_mg: number}
rules:
"""
V1 = """\
  - id: DOSE
    title: dose at most 100
    severity: major
    for: session
    effective: {until: 2026-01-31}
    require: {dose_mg: {at_most: 100}}
    tests:
      - {record: {dose_mg: 100}, expect: pass}
      - {record: {dose_mg: 101}, expect: fail}
"""
V2 = """\
  - id: DOSE
    title: dose at most 50 (tightened)
    severity: critical
    for: session
    effective: {from: 2026-02-01}
    require: {dose_mg: {at_most: 50}}
    tests:
      - {record: {dose_mg: 50}, expect: pass}
      - {record: {dose_mg: 60}, expect: fail}
      - {record: {dose_mg: 60}, time: "2026-01-31T23:30:00", expect: pass}
"""
# S1, S2 in January (v1); S3 at 23:30 on 31 January in Chicago, 05:30 on 1 February in UTC (v1);
# S4, S5 from February (v2); S6 has no time: not evaluable, counted once
SESSIONS = """\
session_id,patient_id,session_start,dose_mg
S1,P1,2026-01-10T09:00:00,60
S2,P1,2026-01-20T09:00:00,120
S3,P2,2026-02-01T05:30:00Z,60
S4,P2,2026-02-01T09:00:00,60
S5,P3,2026-03-01T09:00:00,40
S6,P3,,40
"""


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_each_record_is_judged_by_the_version_in_force(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", HEAD + V1 + V2)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    out = tmp_path / "r.json"
    code, _, err = run("audit", "--pack", str(pack), str(sessions), "--reveal-identifiers", "-o", str(out),
                       "--as-of", "2026-04-01T00:00:00Z")
    assert code == 1, err
    data = json.loads(out.read_text())
    [dose] = data["rules"]
    assert (dose["title"], dose["severity"]) == ("dose at most 50 (tightened)", "critical")  # the latest names it
    assert (dose["applicable"], dose["passed"], dose["failed"], dose["not_evaluable"]) == (5, 3, 2, 1)
    assert [(v["effective"], v["severity"], v["passed"], v["failed"], v["not_applicable"], v["not_evaluable"])
            for v in dose["versions"]] == [
        ({"from": None, "until": "2026-01-31"}, "major", 2, 1, 2, 0),
        ({"from": "2026-02-01", "until": None}, "critical", 1, 1, 3, 1)]
    assert sorted((f["record_key"], f["severity"]) for f in data["findings"]) == [("S2", "major"), ("S4", "critical")]


def test_the_examples_run_in_their_versions_window_or_at_their_time(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", HEAD + V1 + V2)
    code, stdout, err = run("test", str(pack), "--min-coverage", "100")
    assert code == 0, stdout + err
    assert "5 examples" in stdout and "0 failed" in stdout


def test_explain_uses_the_version_in_force(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", HEAD + V1 + V2)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    code, stdout, _ = run("explain", "--pack", str(pack), "--rule", "DOSE", "--record", "S1", str(sessions),
                          "--reveal-identifiers")
    assert code == 0
    assert "the version in force from the start until 2026-01-31" in stdout and "outcome: pass" in stdout
    code, stdout, _ = run("explain", "--pack", str(pack), "--rule", "DOSE", "--record", "S4", str(sessions),
                          "--reveal-identifiers")
    assert "the version in force from 2026-02-01 until now" in stdout and "outcome: fail" in stdout


@pytest.mark.parametrize("second, needle, message", [
    (V2.replace("{from: 2026-02-01}", "{from: 2026-01-31}"), "{from: 2026-01-31}",
     'effective window overlaps the version of "DOSE" at line 12 (a shared day, or two open ends, overlap)'),
    (V2.replace("{from: 2026-02-01}", "{until: 2026-12-31}"), "{until: 2026-12-31}",
     'effective window overlaps the version of "DOSE" at line 12 (a shared day, or two open ends, overlap)'),
    (V2.replace("    effective: {from: 2026-02-01}\n", ""), "DOSE\n    title: dose at most 50",
     'duplicate rule id "DOSE" (first at line 12); versions of one rule each need effective: {from, until} '
     "windows that do not overlap"),
    (V2.replace("{from: 2026-02-01}", "{from: 2026-02-30}"), "2026-02-30",
     "effective from must be a date (YYYY-MM-DD)"),
    (V2.replace("{from: 2026-02-01}", "{from: 2026-03-01, until: 2026-02-01}"), "2026-02-01}",
     "effective until 2026-02-01 is before from 2026-03-01"),
    (V2.replace("{from: 2026-02-01}", "{}"), "{}",
     "effective needs from, until or both (a rule always in force has no effective:)"),
], ids=["shared-day", "open-ends", "no-window", "bad-date", "reversed", "empty"])
def test_bad_versions_are_validation_errors_at_their_position(tmp_path: Path, second: str, needle: str,
                                                              message: str) -> None:
    text = HEAD + V1 + second
    pack = write(tmp_path, "pack.yaml", text)
    code, _, err = run("validate", str(pack))
    index = text.index(needle, len(HEAD + V1))
    line = text.count("\n", 0, index) + 1
    column = index - text.rfind("\n", 0, index)
    assert code == 2
    assert f"{pack}:{line}:{column}: {message}" in err.splitlines(), err


def test_diff_sees_a_new_version_from_a_date_and_its_impact_only_after_it(tmp_path: Path) -> None:
    always = V1.replace("    effective: {until: 2026-01-31}\n", "")
    base = write(tmp_path, "base.yaml", HEAD + always)
    head = write(tmp_path, "head.yaml", HEAD + V1 + V2)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    out = tmp_path / "diff.json"
    code, _, err = run("diff", "--base", str(base), "--head", str(head), str(sessions), "-o", str(out),
                       "--as-of", "2026-04-01T00:00:00Z")
    assert code in (0, 1), err
    [row] = json.loads(out.read_text())["rules"]
    assert row["status"] == "changed"
    # the message follows the title, which the new version changed
    assert row["changes"] == ["effective dates", "require", "severity", "message", "title"]
    # S3 is 31 January in the pack's zone: the old version still judges it; only S4 is new
    assert [flagged["record_key"] for flagged in row["newly_flagged"]] == ["S4"]
    assert row["no_longer_flagged"] == []


def test_the_html_report_shows_each_version(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", HEAD + V1 + V2)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    html = tmp_path / "r.html"
    run("audit", "--pack", str(pack), str(sessions), "-o", str(html), "--as-of", "2026-04-01T00:00:00Z")
    text = html.read_text()
    assert "<h3>Rule versions</h3>" in text
    assert '<td class="nowrap">from the start to 2026-01-31</td><td class="sev-major">major</td>' in text
    assert '<td class="nowrap">2026-02-01 to now</td><td class="sev-critical">critical</td>' in text


def test_a_waiver_of_a_versioned_rule_covers_each_version(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", HEAD + V1 + V2)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    waivers = write(tmp_path, "w.yaml", "waivers:\n  - id: W1\n    rule: DOSE\n    records: [S2, S4]\n"
                                        "    reason: r\n    approved_by: MD\n    approved_on: 2026-01-05\n")
    out = tmp_path / "r.json"
    code, _, err = run("audit", "--pack", str(pack), str(sessions), "--waivers", str(waivers), "-o", str(out),
                       "--as-of", "2026-04-01T00:00:00Z")
    assert code == 0, err
    [dose] = json.loads(out.read_text())["rules"]
    assert (dose["failed"], dose["waived"]) == (0, 2)
    assert [(v["failed"], v["waived"]) for v in dose["versions"]] == [(0, 1), (0, 1)]
