"""A finding whose history window holds a rejected record of the same patient, of a type the rule
looks at, says so ("data_quality_suspect": true, and the rejected lines): the screening the rule
looked for may be the one that could not be read. explain names those rejected records too."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from click.testing import CliRunner

from cli import main
from tests.helpers import write

PACK = """\
pack: dq
version: "1"
title: data-quality pack
timezone: UTC
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime}
  screening:
    key: screening_id
    patient: patient_id
    time: screened_at
    fields: {screening_id: string, patient_id: string, screened_at: datetime, score: integer, session_id: string}
rules:
  - id: SCREEN
    title: a screen in the 30 days before
    severity: major
    for: session
    require:
      exists: {of: screening, within: {before: 30d}}
  - id: SAME
    title: a screen for this session
    severity: minor
    for: session
    require:
      exists: {of: screening, join: session_id}
"""
SESSIONS = """\
session_id,patient_id,session_start
S1,P1,2026-03-01T09:00:00
S2,P2,2026-03-01T09:00:00
S3,P3,2026-03-01T09:00:00
S4,P4,2026-03-01T09:00:00
"""
# P1: a screen in the window, rejected (score "high"); P2: a rejected screen 60 days before (outside the
# window); P3: a rejected screen whose time cannot be read; P4: nothing rejected. Screens carry no
# session_id except P1's (for SAME, joined on session_id).
SCREENINGS = """\
screening_id,patient_id,screened_at,score,session_id
K1,P1,2026-02-20T09:00:00,high,
K2,P2,2025-12-31T09:00:00,high,
K3,P3,yesterday,4,
"""


def audit(tmp_path: Path, *more: str) -> tuple[dict, str]:  # type: ignore[type-arg]
    pack = write(tmp_path, "pack.yaml", PACK)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    screenings = write(tmp_path, "screenings.csv", SCREENINGS)
    out, table = tmp_path / "r.json", tmp_path / "r.csv"
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions), str(screenings),
                                       "--reveal-identifiers", "-o", str(out), "-o", str(table), *more])
    assert result.exit_code == 1, result.stderr
    return json.loads(out.read_text()), table.read_text()


def test_a_rejected_record_in_the_window_makes_the_finding_suspect(tmp_path: Path) -> None:
    report, table = audit(tmp_path)
    screen = {f["record_key"]: f for f in report["findings"] if f["rule"] == "SCREEN"}
    assert sorted(screen) == ["S1", "S2", "S3", "S4"]  # no accepted screen anywhere: all fail
    where = str(tmp_path / "screenings.csv")
    assert screen["S1"]["data_quality_suspect"] is True and screen["S1"]["rejected_nearby"] == [f"{where}:2"]
    assert "data_quality_suspect" not in screen["S2"]  # its rejected screen lies outside the 30 days
    assert screen["S3"]["rejected_nearby"] == [f"{where}:4"]  # no readable time: it may lie anywhere
    assert "data_quality_suspect" not in screen["S4"]
    # joined on session_id: a rejected screen with no session_id might be this session's
    same = {f["record_key"]: f.get("rejected_nearby") for f in report["findings"] if f["rule"] == "SAME"}
    assert same == {"S1": [f"{where}:2"], "S2": [f"{where}:3"], "S3": [f"{where}:4"], "S4": None}
    rows = {(r["rule"], r["record_key"]): r["rejected_nearby"] for r in csv.DictReader(io.StringIO(table))}
    assert rows[("SCREEN", "S1")] == f"{where}:2" and rows[("SCREEN", "S4")] == ""


def test_explain_names_the_rejected_records(tmp_path: Path) -> None:
    audit(tmp_path)
    result = CliRunner().invoke(main, ["explain", "--pack", str(tmp_path / "pack.yaml"), "--rule", "SCREEN",
                                       "--record", "S1", str(tmp_path / "sessions.csv"),
                                       str(tmp_path / "screenings.csv"), "--reveal-identifiers"])
    assert "data-quality suspect: rejected records the rule's history would have looked at:" in result.stdout
    assert f"screening at {tmp_path / 'screenings.csv'}:2: score:" in result.stdout
    result = CliRunner().invoke(main, ["explain", "--pack", str(tmp_path / "pack.yaml"), "--rule", "SCREEN",
                                       "--record", "S2", str(tmp_path / "sessions.csv"),
                                       str(tmp_path / "screenings.csv"), "--reveal-identifiers"])
    assert "data-quality suspect" not in result.stdout


SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def test_the_samples_planted_unreadable_readings_are_named(tmp_path: Path) -> None:
    """samples/README.md: vitals.csv lines 2725 and 7179 are the pre-dose readings of S-000574 and
    S-001324, rejected, so those sessions fail VIT-01B; their findings say why they may."""
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems",
                                       *sorted(str(p) for p in SAMPLES.glob("*.csv")), "--reveal-identifiers",
                                       "-o", str(out)])
    assert result.exit_code == 1, result.stderr
    report = json.loads(out.read_text())
    suspects = {(f["rule"], f["record_key"]): f["rejected_nearby"] for f in report["findings"]
                if f.get("data_quality_suspect")}
    vitals = str(SAMPLES / "vitals.csv")
    assert suspects[("VIT-01B", "S-000574")] == [f"{vitals}:2725"]
    assert suspects[("VIT-01B", "S-001324")] == [f"{vitals}:7179"]
    # the staff roster's renewal of CL-024's BLS card keyed with an unreadable date (credentials.csv:54):
    # each STAFF-03 finding of CL-024's lapse may be a data-entry gap; no other STAFF-03 finding is
    roster = f"{SAMPLES / 'credentials.csv'}:54"
    staff03 = [f for f in report["findings"] if f["rule"] == "STAFF-03"]
    lapsed = [f for f in staff03 if f["evidence"].get("second_bls_staff_id") == "CL-024"]
    assert lapsed and all(f.get("rejected_nearby") == [roster] for f in lapsed)
    assert not any(f.get("data_quality_suspect") for f in staff03 if f not in lapsed)
    # a pregnancy test whose result is unreadable (pregnancy_tests.csv:42) lies before P-0016's course
    [elig06] = [key for rule, key in suspects if rule == "ELIG-06"]
    assert suspects[("ELIG-06", elig06)] == [f"{SAMPLES / 'pregnancy_tests.csv'}:42"]
    # every line named is a rejected record of the report
    rejected = {f"{r['source']['path']}:{r['source']['line']}" for r in report["rejected"]}
    assert {line for lines in suspects.values() for line in lines} <= rejected


def test_the_window_the_join_and_the_where_all_hold(tmp_path: Path) -> None:
    """A rejected screen sharing the session but long before a 1-day window is not near; one whose
    readable values fail the condition's where is not what it looked for; a duplicate row's first copy
    was read, so it is not a suspect either."""
    joined = "exists: {of: screening, join: session_id, where: {score: {at_most: 9}}, within: {before: 1d}}"
    pack = PACK.replace("      exists: {of: screening, join: session_id}", "      " + joined)
    write(tmp_path, "pack.yaml", pack)
    write(tmp_path, "sessions.csv", SESSIONS)
    screenings = ("screening_id,patient_id,screened_at,score,session_id\n"
                  "K1,P1,2025-06-01T09:00:00,high,S1\n"      # P1: same session, 9 months before: outside 1 day
                  "K2,P2,yesterday,12,S2\n"                  # P2: readable score 12: not where score <= 9
                  "K3,P3,2026-03-01T08:00:00,3,S9\n"         # P3: accepted, of another session
                  "K3,P3,2026-03-01T08:30:00,3,S3\n")        # P3: a duplicate key: its first copy was read
    result = CliRunner().invoke(main, ["audit", "--pack", str(tmp_path / "pack.yaml"),
                                       str(tmp_path / "sessions.csv"),
                                       str(write(tmp_path, "screenings.csv", screenings)), "--reveal-identifiers",
                                       "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["rejected"]) == 3
    same = {f["record_key"]: f.get("rejected_nearby") for f in report["findings"] if f["rule"] == "SAME"}
    assert same == {"S1": None, "S2": None, "S3": None, "S4": None}


def test_a_rejected_record_its_readable_values_rule_out_is_not_named(tmp_path: Path) -> None:
    """S-000574's rejected reading (vitals.csv:2725, an unreadable SpO2) is its pre-dose one: OBS-04
    looks for a discharge set, and the row's readable phase says it is not one, so OBS-04's finding
    of S-000574 is no suspect; VIT-01B's, which looks for a pre-dose set with an SpO2, is."""
    out = tmp_path / "r.json"
    CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems",
                              *sorted(str(p) for p in SAMPLES.glob("*.csv")),
                              "--reveal-identifiers", "-o", str(out)])
    findings = {(f["rule"], f["record_key"]): f for f in json.loads(out.read_text())["findings"]}
    assert findings[("VIT-01B", "S-000574")]["data_quality_suspect"] is True
    assert "data_quality_suspect" not in findings[("OBS-04", "S-000574")]
