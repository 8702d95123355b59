"""Rules counted per patient or per course (``per: patient``, ``per: FIELD``): a patient-level
obligation such as consent on file is counted once per patient (and course), failed when any of its
records fails, with one finding on the earliest failing record that lists every failing one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from tests.helpers import pack_text, write
from tests.test_loader import problems

PACK = """\
pack: u
version: "1"
title: per-unit pack
timezone: UTC
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, course_id: string,
             consent_signed: boolean, route: {type: enum, values: [IV, IN]}}
rules:
  - id: CONS
    title: consent on file
    severity: critical
    for: session
    per: PER
    when: {route: IV}
    require: {consent_signed: true}
    message: "no consent on file at {session_start}"
"""
# P1 course A: S1 passes, S2 and S3 fail; P1 course B: S4 passes; P2: S5 fails; P3 course A: S6 has no
# route (not evaluable); P3 course B: S7 is IN (not applicable); P4: S8 not evaluable, S9 passes
SESSIONS = """\
session_id,patient_id,session_start,course_id,consent_signed,route
S3,P1,2026-03-20T09:00:00,A,false,IV
S1,P1,2026-01-10T09:00:00,A,true,IV
S2,P1,2026-02-10T09:00:00,A,false,IV
S4,P1,2026-06-01T09:00:00,B,true,IV
S5,P2,2026-02-01T09:00:00,A,false,IV
S6,P3,2026-02-01T09:00:00,A,true,
S7,P3,2026-05-01T09:00:00,B,false,IN
S8,P4,2026-04-01T09:00:00,A,true,
S9,P4,2026-04-08T09:00:00,A,true,IV
"""
ENTRY = "    reason: consent on paper, scanned late\n    approved_by: Medical Director\n    approved_on: 2026-01-05\n"


def audit(tmp_path: Path, per: str, *more: str) -> dict:  # type: ignore[type-arg]
    pack = write(tmp_path, "pack.yaml", PACK.replace("PER", per))
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions), "--reveal-identifiers",
                                       "--as-of", "2026-07-01T00:00:00Z", "-o", str(out), *more])
    assert result.exit_code in (0, 1), result.stderr
    return json.loads(out.read_text())


def counts(data: dict) -> tuple[int, int, int, int, int]:  # type: ignore[type-arg]
    [rule] = data["rules"]
    return rule["passed"], rule["failed"], rule["waived"], rule["not_evaluable"], rule["not_applicable"]


def test_per_course_counts_each_patients_course_once(tmp_path: Path) -> None:
    data = audit(tmp_path, "course_id")
    assert counts(data) == (2, 2, 0, 1, 1)  # passed: P1/B, P4/A; failed: P1/A, P2/A; n/e: P3/A; n/a: P3/B
    [rule] = data["rules"]
    assert (rule["per"], rule["applicable"], rule["patients_affected"]) == ("course_id", 4, 2)
    # one finding per failing course, on its earliest failing record; the report lists them by time
    second, first = data["findings"]
    assert (first["record_key"], second["record_key"]) == ("S2", "S5")
    assert first["message"] == "no consent on file at 2026-02-10T09:00:00+00:00 (2 session records of this " \
                               "patient's course_id fail it)"
    listed = first["evidence"]["failing session records of this patient's course_id"]
    assert [item.split(" ")[0] for item in listed] == ["S2", "S3"]
    assert "failing session records of this patient's course_id" not in second["evidence"]
    assert [(n["record_key"], n["missing"]) for n in data["not_evaluable"]] == [("S6", ["route"])]
    # the months: each unit once, in its earliest failing record's month (or its first pass's)
    months = {(m["month"], m["failed"], m["passed"]) for m in data["by_month"]}
    assert sum(m["failed"] for m in data["by_month"]) == 2 and ("2026-02", 2, 0) in months


def test_per_patient_counts_each_patient_once(tmp_path: Path) -> None:
    data = audit(tmp_path, "patient")
    assert counts(data) == (1, 2, 0, 1, 0)  # passed: P4; failed: P1 (course B passes, A fails), P2; n/e: P3
    finding = data["findings"][1]
    assert finding["record_key"] == "S2" and "(2 session records of this patient fail it)" in finding["message"]


def test_a_unit_is_waived_only_when_all_its_fails_are(tmp_path: Path) -> None:
    waivers = write(tmp_path, "w.yaml", "waivers:\n  - id: W1\n    rule: CONS\n    records: [S2, S3]\n" + ENTRY)
    data = audit(tmp_path, "course_id", "--waivers", str(waivers))
    assert counts(data) == (2, 1, 1, 1, 1)
    assert [(f["record_key"], f["outcome"]) for f in data["findings"]] == [("S5", "fail"), ("S2", "waived")]
    assert data["rules"][0]["patients_affected"] == 1
    waivers = write(tmp_path, "w.yaml", "waivers:\n  - id: W1\n    rule: CONS\n    records: [S2]\n" + ENTRY)
    data = audit(tmp_path, "course_id", "--waivers", str(waivers))
    assert counts(data) == (2, 2, 0, 1, 1)  # S3 still fails: the course fails
    assert [(f["record_key"], f["outcome"]) for f in data["findings"]] == [("S5", "fail"), ("S3", "fail")]


def test_strata_count_units(tmp_path: Path) -> None:
    data = audit(tmp_path, "course_id", "--group-by", "course_id")
    rows = {r["stratum"]["course_id"]: (r["passed"], r["failed"], r["not_evaluable"]) for r in data["strata"]["rows"]}
    assert rows == {"A": (1, 2, 1), "B": (1, 0, 0)}


@pytest.mark.parametrize(("per", "expected"), [
    ("cours_id", 'pack.yaml:31:10: per: "cours_id" is neither patient nor a field of "session" '
                 '(did you mean "course_id"?)'),
    ("[patient]", "pack.yaml:31:10: per must be patient or a field of the record type (per: course_id)"),
])
def test_per_is_checked(per: str, expected: str) -> None:
    text = pack_text("  - id: R1\n    severity: major\n    for: session\n    require: {route: IV}\n"
                     f"    per: {per}\n")
    text = text.replace("      wait: duration\n", "      wait: duration\n      course_id: string\n")
    assert problems(text) == [expected]


def test_an_export_without_the_per_field_stops_the_run(tmp_path: Path) -> None:
    """Counting per course_id needs the column: without it every course would be one (exit 2, named)."""
    pack = write(tmp_path, "pack.yaml", PACK.replace("PER", "course_id"))
    rows = [",".join(cell for n, cell in enumerate(line.split(",")) if n != 3) for line in SESSIONS.splitlines()]
    sessions = write(tmp_path, "sessions.csv", "\n".join(rows) + "\n")
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions), "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and "course_id" in result.stderr and "counted per by rule CONS" in result.stderr, \
        result.stderr


def test_a_record_without_the_per_value_is_a_unit_of_its_own(tmp_path: Path) -> None:
    """A session with no course_id belongs to no known course: it is counted on its own, never merged
    with the patient's other unlabelled sessions into one course."""
    pack = write(tmp_path, "pack.yaml", PACK.replace("PER", "course_id"))
    sessions = write(tmp_path, "sessions.csv", "session_id,patient_id,session_start,course_id,consent_signed,route\n"
                     "S1,P1,2026-01-10T09:00:00,,false,IV\n"
                     "S2,P1,2026-02-10T09:00:00,,true,IV\n"
                     "S3,P1,2026-03-10T09:00:00,None,true,IV\n")
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions), "-o", str(out)])
    assert result.exit_code == 1, result.stderr
    assert counts(json.loads(out.read_text())) == (2, 1, 0, 0, 0)  # S1 fails, S2 passes, course "None" passes


def test_per_and_effective_dates_are_refused_together() -> None:
    text = pack_text("  - id: R1\n    severity: major\n    for: session\n    require: {route: IV}\n"
                     "    per: patient\n    effective: {from: 2026-01-01}\n")
    assert problems(text) == ["pack.yaml:30:5: per cannot be combined with effective dates: each version would "
                              "count a patient or course of its own (give the rule one version)"]
