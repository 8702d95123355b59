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
    # six records, each counted once: S6 (no time) not evaluable, none left not applicable
    assert (dose["applicable"], dose["passed"], dose["failed"], dose["not_evaluable"], dose["not_applicable"]) == \
        (5, 3, 2, 1, 0)
    assert [(v["effective"], v["severity"], v["passed"], v["failed"], v["not_applicable"], v["not_evaluable"])
            for v in dose["versions"]] == [
        ({"from": None, "until": "2026-01-31"}, "major", 2, 1, 2, 0),
        ({"from": "2026-02-01", "until": None}, "critical", 1, 1, 3, 1)]
    assert sorted((f["record_key"], f["severity"]) for f in data["findings"]) == [("S2", "major"), ("S4", "critical")]
    assert dose["patients_affected"] == 2  # P1 failed under the first version, P2 under the second


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
    (V2.replace('time: "2026-01-31T23:30:00"', "time: ~"), "~",
     "time: give the datetime that picks the rule's version (e.g. 2026-01-15T09:00:00), or leave time out "
     "for the latest"),
], ids=["shared-day", "open-ends", "no-window", "bad-date", "reversed", "empty", "empty-example-time"])
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
    assert row["changes"] == ["effective dates", "earlier versions", "require", "severity", "message", "title"]
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


def test_an_earlier_version_changed_is_a_change(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", HEAD + V1 + V2)
    head = write(tmp_path, "head.yaml", HEAD + V1.replace("at_most: 100}", "at_most: 50}") + V2)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    out = tmp_path / "diff.json"
    run("diff", "--base", str(base), "--head", str(head), str(sessions), "-o", str(out), "--as-of",
        "2026-04-01T00:00:00Z")
    [row] = json.loads(out.read_text())["rules"]
    assert (row["status"], row["changes"]) == ("changed", ["earlier versions"])
    assert sorted(flagged["record_key"] for flagged in row["newly_flagged"]) == ["S1", "S3"]


def test_windows_at_the_calendar_ends_are_refused(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", HEAD + V1 + V2.replace("{from: 2026-02-01}", "{from: 9999-12-31}"))
    code, _, err = run("validate", str(pack))
    assert code == 2
    assert "effective from must lie between 0001-01-02 and 9999-12-30" in err


def test_a_record_without_a_time_is_not_evaluable_once_whatever_a_versions_when_says(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", HEAD.replace("dose_mg: number}", "dose_mg: number, route: string}") +
                 V1.replace("    require:", "    when: {route: IV}\n    require:", 1) +
                 V2.replace("    require:", "    when: {route: IM}\n    require:", 1))
    sessions = write(tmp_path, "sessions.csv", "session_id,patient_id,session_start,dose_mg,route\nS6,P3,,40,IV\n")
    out = tmp_path / "r.json"
    run("audit", "--pack", str(pack), str(sessions), "-o", str(out), "--as-of", "2026-04-01T00:00:00Z")
    data = json.loads(out.read_text())
    [dose] = data["rules"]
    assert (dose["not_evaluable"], dose["not_applicable"], dose["applicable"]) == (1, 0, 0)
    assert [entry["missing"] for entry in data["not_evaluable"]] == [["session_start"]]


def test_a_scenario_naming_a_versioned_rule_judges_every_version(tmp_path: Path) -> None:
    write(tmp_path, "eff.yaml", HEAD + V1 + V2)
    write(tmp_path, "eff.tests.yaml", """\
pack: eff
scenarios:
  - name: versions
    rules: [DOSE]
    records:
      - {type: session, record: {session_id: S-1, patient_id: P-1, session_start: "2026-01-10T09:00:00", dose_mg: 500}}
      - {type: session, record: {session_id: S-2, patient_id: P-1, session_start: "2026-02-10T09:00:00", dose_mg: 60}}
    expect: {S-1: {DOSE: pass}, S-2: {DOSE: fail}}
""")
    code, stdout, _ = run("test", str(tmp_path / "eff.yaml"))
    assert code == 1
    assert "DOSE (in force from the start to 2026-01-31)" in stdout and "expected pass, got fail" in stdout


def test_junit_names_the_worst_severity_of_the_findings(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", HEAD + V1.replace("severity: major", "severity: info") + V2)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    xml = tmp_path / "r.xml"
    run("audit", "--pack", str(pack), str(sessions), "-o", str(xml), "--as-of", "2026-04-01T00:00:00Z")
    assert '<failure message="2 findings (critical)" type="critical">' in xml.read_text()


def test_an_example_may_have_no_time_and_explain_says_when_no_version_is_in_force(tmp_path: Path) -> None:
    untimed = V2.replace("      - {record: {dose_mg: 50}, expect: pass}\n",
                         "      - {record: {dose_mg: 50}, expect: pass}\n"
                         "      - {record: {dose_mg: 50, session_start: ~}, expect: not_evaluable}\n")
    pack = write(tmp_path, "pack.yaml", HEAD + V1 + untimed)
    code, stdout, _ = run("test", str(pack))
    assert code == 0, stdout
    gap = write(tmp_path, "gap.yaml", HEAD + V1.replace("2026-01-31", "2026-01-15") + V2.replace("2026-02-01",
                                                                                               "2026-02-15"))
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    code, stdout, _ = run("explain", "--pack", str(gap), "--rule", "DOSE", "--record", "S2", str(sessions),
                          "--reveal-identifiers")
    assert "no version of the rule is in force at the record's time" in stdout


def test_markdown_and_terminal_show_each_version(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", HEAD + V1 + V2)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    md = tmp_path / "r.md"
    run("audit", "--pack", str(pack), str(sessions), "-o", str(md), "--as-of", "2026-04-01T00:00:00Z")
    assert "| DOSE | 2026-02-01 to now | critical | 2 | 1 | 1 | 0 | 1 | 50.0% |" in md.read_text()
    _, stdout, _ = run("audit", "--pack", str(pack), str(sessions), "--as-of", "2026-04-01T00:00:00Z")
    assert "  DOSE start..2026-01-31 (major): 3 applicable, 2 passed, 1 failed" in stdout.splitlines()
    assert "  DOSE 2026-02-01..now (critical): 2 applicable, 1 passed, 1 failed, 1 n/e" in stdout.splitlines()
