"""A column the rules read that is not in the export stops the run before anything is judged
(SPEC 8), with or without a source map: the file, the field, the rule, the column looked for and
the closest header names; fields no rule reads, and fields a map lists as absent, do not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cli import main
from tests.helpers import write

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
VENDOR = SAMPLES / "vendor"
ADVICE = ('nothing was judged: name the columns in a source map (--map, columns: field: "Header Name"), or list a '
          "field the export does not have under absent:")

PACK = """\
pack: mini
version: "1"
title: mini pack
timezone: UTC
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields:
      session_id: string
      patient_id: string
      session_start: datetime
      dose_mg: number
      weight_kg: number
      escort_present: boolean
      note: string
  screening:
    key: screening_id
    patient: patient_id
    time: screened_at
    fields:
      screening_id: string
      patient_id: string
      screened_at: datetime
      instrument: string
derive:
  dose_mg_per_kg: dose_mg / weight_kg
rules:
  - id: DOSE-01
    title: at most 1 mg/kg
    severity: major
    for: session
    require: {dose_mg_per_kg: {at_most: 1}}
  - id: ESC-01
    title: escort at discharge
    severity: major
    for: session
    require: {escort_present: true}
  - id: SCR-01
    title: a DAST-10 screen in the 90 days before
    severity: major
    for: session
    require: {exists: {of: screening, where: {instrument: DAST10}, within: {before: 90d}}}
"""
SESSIONS = """\
session_id,patient_id,session_start,dose_mg,weight_kg,escort_present
S1,P1,2026-03-02T10:00:00,35,70,true
S2,P2,2026-03-02T11:00:00,35,70,false
"""
SCREENINGS = "screening_id,patient_id,screened_at,instrument\nC1,P1,2026-02-01T10:00:00,DAST10\n"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def audit(tmp_path: Path, *args: str, pack: str = "", more: tuple[str, ...] = ()) -> tuple[int, list[str], Path]:
    """``audit`` of ``args`` with the mini pack (unless a pack is given), writing report.json."""
    report = tmp_path / "report.json"
    packs = ["--pack", pack, *more] if pack else ["--pack", str(write(tmp_path, "pack.yaml", PACK))]
    code, _, err = run("audit", *packs, *args, "-o", str(report), "--as-of", "2026-04-01")
    return code, err.splitlines(), report


def first_rule_reading(pack: Path, name: str) -> str:
    """The id of the first rule of ``pack`` whose conditions mention field ``name``."""
    rules = yaml.safe_load(pack.read_text(encoding="utf-8"))["rules"]
    return next(rule["id"] for rule in rules if name in json.dumps([rule.get("when"), rule.get("require")]))


def renamed(tmp_path: Path, source: Path, old: bytes, new: bytes) -> Path:
    """A copy of ``source`` with one header name changed."""
    header, rest = source.read_bytes().split(b"\n", 1)
    assert header.count(old) == 1
    return write(tmp_path, source.name, header.replace(old, new) + b"\n" + rest)


def test_a_renamed_header_stops_the_run_without_a_map(tmp_path: Path) -> None:
    sessions = renamed(tmp_path, SAMPLES / "sessions.csv", b",acls_expiry,", b",ACLS Expiry,")
    code, err, report = audit(tmp_path, str(sessions), pack="ketamine-iv", more=("--pack", "esketamine-rems"))
    rule = first_rule_reading(ROOT / "rules" / "ketamine-iv.yaml", "acls_expiry")
    assert code == 2
    assert err[-2].startswith(f'{sessions}: field acls_expiry (read by rule {rule}) has no column "acls_expiry"; '
                              "closest header names: ")
    assert err[-1] == f"protocol-audit: 1 field the rules read not in the export; {ADVICE}"
    assert not report.exists()


def test_the_closest_header_names_are_the_headers_own(tmp_path: Path) -> None:
    sessions = renamed(tmp_path, SAMPLES / "sessions.csv", b",acls_expiry,", b",ACLS Expiry,")
    _, err, _ = audit(tmp_path, str(sessions), pack="ketamine-iv", more=("--pack", "esketamine-rems"))
    assert err[-2].endswith("closest header names: 'ACLS Expiry'")


def test_a_renamed_header_stops_the_run_with_a_map(tmp_path: Path) -> None:
    infusions = renamed(tmp_path, VENDOR / "Infusions.csv", b";ACLS Exp;", b";ACLS Expiry;")
    code, err, report = audit(tmp_path, "--map", str(VENDOR / "acme-ehr.map.yaml"), str(infusions),
                              pack="ketamine-iv", more=("--pack", "esketamine-rems"))
    rule = first_rule_reading(ROOT / "rules" / "ketamine-iv.yaml", "acls_expiry")
    assert code == 2
    assert err[-2:] == [f'{infusions}: field acls_expiry (read by rule {rule}) has no column "ACLS Exp"; '
                        "closest header names: 'ACLS Expiry'",
                        f"protocol-audit: 1 field the rules read not in the export; {ADVICE}"]
    assert not report.exists()


def test_the_unchanged_vendor_header_passes_the_check(tmp_path: Path) -> None:
    """The counterpart of the test above: the vendor file's first rows, header unchanged, are judged."""
    rows = 20
    head = b"".join((VENDOR / "Infusions.csv").read_bytes().splitlines(keepends=True)[:rows + 1])
    code, err, report = audit(tmp_path, "--map", str(VENDOR / "acme-ehr.map.yaml"),
                              str(write(tmp_path, "Infusions.csv", head)), pack="ketamine-iv",
                              more=("--pack", "esketamine-rems"))
    assert code in (0, 1), err
    assert json.loads(report.read_text())["inputs"][0]["records_read"] == rows


def test_every_missing_field_is_listed_key_time_and_derived_inputs_included(tmp_path: Path) -> None:
    sessions = write(tmp_path, "sessions.csv", "session_id,patient_id,dose_mg\nS1,P1,35\n")
    code, err, report = audit(tmp_path, str(sessions))
    assert code == 2
    assert err == [
        f'{sessions}: field session_start (the time of session, read by rule DOSE-01) has no column "session_start"'
        "; closest header names: 'session_id'",
        f'{sessions}: field weight_kg (read by rule DOSE-01 through dose_mg_per_kg) has no column "weight_kg"',
        f'{sessions}: field escort_present (read by rule ESC-01) has no column "escort_present"',
        f"protocol-audit: 3 fields the rules read not in the export; {ADVICE}",
    ]
    assert not report.exists()


def test_a_field_no_rule_reads_does_not_stop_the_run(tmp_path: Path) -> None:
    # "note" is declared and in no file; no rule reads it
    code, err, report = audit(tmp_path, str(write(tmp_path, "sessions.csv", SESSIONS)),
                              str(write(tmp_path, "screenings.csv", SCREENINGS)))
    assert code == 1, err  # S2 has no escort; P2 has no screen
    data = json.loads(report.read_text())
    assert data["summary"]["records_judged"] == SESSIONS.count("\n") - 1 + SCREENINGS.count("\n") - 1


def test_a_field_read_only_by_a_history_where_counts(tmp_path: Path) -> None:
    screenings = write(tmp_path, "screenings.csv", SCREENINGS.replace(",instrument", ",Instrument Name"))
    code, err, report = audit(tmp_path, str(write(tmp_path, "sessions.csv", SESSIONS)), str(screenings))
    assert code == 2
    assert err[0] == (f"{screenings}: field instrument (read by rule SCR-01's exists) has no column \"instrument\"; "
                      "closest header names: 'Instrument Name'")
    assert not report.exists()


def test_absent_lets_the_run_go_on_and_the_report_lists_it(tmp_path: Path) -> None:
    sessions = write(tmp_path, "sessions.csv", "".join(line.rsplit(",", 1)[0] + "\n" for line in SESSIONS.splitlines()))
    source_map = write(tmp_path, "m.yaml", 'map: m\nversion: "1"\ninputs:\n  - type: session\n'
                                           '    files: "sessions*"\n    absent: [escort_present]\n')
    code, err, _ = audit(tmp_path, str(sessions))
    assert code == 2 and "field escort_present" in err[0]  # without the map: stopped
    code, err, report = audit(tmp_path, "--map", str(source_map), str(sessions),
                              str(write(tmp_path, "screenings.csv", SCREENINGS)))
    assert code == 1, err
    data = json.loads(report.read_text())
    by_type = {item["record_type"]: item for item in data["inputs"]}
    assert by_type["session"]["absent"] == ["escort_present"]
    assert "absent" not in by_type["screening"]  # read without a map entry
    escort = next(rule for rule in data["rules"] if rule["id"] == "ESC-01")
    assert escort["failed"] == SESSIONS.count("\n") - 1  # not documented anywhere: every session fails


@pytest.mark.parametrize("name, content", [
    ("sessions.ndjson", "".join(json.dumps(row) + "\n" for row in [
        {"session_id": "S1", "patient_id": "P1", "session_start": "2026-03-02T10:00:00", "dose_mg": 35,
         "escort_present": True},
        {"session_id": "S2", "patient_id": "P1", "session_start": "2026-03-03T10:00:00", "dose_mg": 35}])),
    ("sessions.json", json.dumps({"records": [
        {"session_id": "S1", "patient_id": "P1", "session_start": "2026-03-02T10:00:00", "dose_mg": 35,
         "escort_present": True}]})),
], ids=["ndjson", "json"])
def test_json_objects_that_never_have_a_key_stop_the_run(tmp_path: Path, name: str, content: str) -> None:
    sessions = write(tmp_path, name, content)
    code, err, report = audit(tmp_path, str(sessions), str(write(tmp_path, "screenings.csv", SCREENINGS)))
    assert code == 2
    assert err == [f'{sessions}: field weight_kg (read by rule DOSE-01 through dose_mg_per_kg) has no column '
                   '"weight_kg"', f"protocol-audit: 1 field the rules read not in the export; {ADVICE}"]
    assert not report.exists()


def test_a_key_some_json_object_has_is_enough(tmp_path: Path) -> None:
    rows = [{"session_id": "S1", "patient_id": "P1", "session_start": "2026-03-02T10:00:00", "dose_mg": 35,
             "escort_present": True, "weight_kg": 70},
            {"session_id": "S2", "patient_id": "P1", "session_start": "2026-03-03T10:00:00", "dose_mg": 35}]
    sessions = write(tmp_path, "sessions.ndjson", "".join(json.dumps(row) + "\n" for row in rows))
    code, err, report = audit(tmp_path, str(sessions), str(write(tmp_path, "screenings.csv", SCREENINGS)))
    assert code == 1, err  # S2 lacks weight_kg and escort_present: it fails, it does not stop the run
    assert json.loads(report.read_text())["summary"]["records_judged"] == len(rows) + 1


def test_a_fhir_view_without_a_column_a_rule_reads_stops_the_run(tmp_path: Path) -> None:
    from tests import test_maps as fhir

    sbp = next(line for line in fhir.FHIR_MAP.splitlines(keepends=True) if "{name: sbp," in line)
    source_map = write(tmp_path, "m.yaml", fhir.FHIR_MAP.replace(sbp, ""))
    data = write(tmp_path, "Observation.ndjson", "\n".join(fhir.NDJSON_LINES) + "\n")
    code, err, report = audit(tmp_path, "--map", str(source_map), str(data),
                              pack=str(write(tmp_path, "vitals.yaml", fhir.PACK)))
    assert code == 2
    assert err[-2:] == [f'{data}: field sbp (read by rule BP-01) has no column "sbp"',
                        f"protocol-audit: 1 field the rules read not in the export; {ADVICE}"]
    assert not report.exists()


def test_a_renamed_xlsx_header_stops_the_run(tmp_path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["session_id", "patient_id", "session_start", "dose_mg", "Weight (kg)", "escort_present"],
                ["S1", "P1", "2026-03-02T10:00:00", 35, 70, True]):
        sheet.append(row)
    book.save(tmp_path / "sessions.xlsx")
    code, err, report = audit(tmp_path, str(tmp_path / "sessions.xlsx"), str(write(tmp_path, "screenings.csv",
                                                                                   SCREENINGS)))
    assert code == 2
    assert err[0] == (f'{tmp_path / "sessions.xlsx"}: field weight_kg (read by rule DOSE-01 through dose_mg_per_kg) '
                      "has no column \"weight_kg\"; closest header names: 'Weight (kg)'")
    assert not report.exists()


def test_a_file_without_header_row_is_not_quoted_back(tmp_path: Path) -> None:
    # the first row is data: its cells (a patient id, a time) must not come back as "closest header names"
    pack = write(tmp_path, "pack.yaml", PACK)
    sessions = write(tmp_path, "sessions.csv", "".join(SESSIONS.splitlines(keepends=True)[1:]))
    code, _, err = run("audit", "--pack", str(pack), str(sessions),
                       "-o", str(tmp_path / "r.json"))
    assert code == 2
    assert "P1" not in err and "S1" not in err and "2026-03-02" not in err
    assert f"{sessions}: its first row has none of the columns the rules read: if the file has no header row, " \
           "add one; `protocol-audit inspect` shows the header it has" in err.splitlines()
