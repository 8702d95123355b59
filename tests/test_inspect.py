"""``protocol-audit inspect`` (SPEC 8): the column feeding each field, missing and unconvertible
counts with the first examples, a missing column named without stopping, the first records as the
rules see them, identifiers through the privacy gate; and ``explain`` and ``diff`` with ``--map``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from tests import test_map_cells as flow
from tests import test_maps as fhir
from tests.helpers import write

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
      dose_mg: {type: number, unit: mg}
      route: {type: enum, values: [IV, IN]}
      escort_present: boolean
      born: {type: date, phi: true}
      note: string
rules:
  - id: DOSE-01
    title: dose at most LIMIT mg
    severity: major
    for: session
    require: {dose_mg: {at_most: LIMIT}}
"""
MAP = """\
map: acme
version: "1"
inputs:
  - type: session
    files: "Infusions*.csv"
    delimiter: ";"
    decimal: ","
    thousands: "."
    datetime_formats: ["%m/%d/%Y %I:%M %p"]
    missing: ["NULL"]
    absent: [escort_present]
    columns:
      session_id: CSN
      patient_id: MRN
      session_start: Arrived
      dose_mg: {column: Dose, unit: mg}
      route: {column: Route, values: {Intravenous: IV, Intranasal: IN}}
      born: Born
"""
HEADER = "CSN;MRN;Arrived;Dose;Route;Born"
ROWS = [
    "A1;P-111;03/02/2026 09:15 AM;1.234,5 mg;Intravenous;1980-01-02",
    "A2;P-222;03/02/2026 10:00 AM;35 mg;IV;",
    "A3;P-111;03/03/2026 10:00 AM;NULL;Intranasal;1980-13-45",
    "A4;P-333;03/03/2026 11:00 AM;35 mcg;Oral;1980-01-02",
    "A5;P-333;03/04/2026 11:00 AM;ten;IV;1980-01-02",
    "A6;P-444;03/04/2026 12:00 PM;9 g;IV;1980-01-02",
    "A7;P-444;03/05/2026 12:00 PM;12 ml;IV;1980-01-02",
]
DOSES = [row.split(";")[3] for row in ROWS]
BAD_DOSE = [(line, dose) for line, dose in enumerate(DOSES, 2) if dose in ("35 mcg", "ten", "9 g", "12 ml")]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def export(tmp_path: Path) -> dict[str, str]:
    return {"pack": str(write(tmp_path, "pack.yaml", PACK.replace("LIMIT", "100"))),
            "map": str(write(tmp_path, "acme.map.yaml", MAP)),
            "data": str(write(tmp_path, "Infusions.csv", "\n".join([HEADER, *ROWS]) + "\n"))}


ROW = re.compile(r"^  (\w+)\s+(.*?)\s+(\d+)\s+(\d+)\s+(no rule|.*read by rule.*|.*looked at.*)$")


def table(out: str) -> tuple[dict[str, tuple[str, int, int, str]], dict[str, list[str]], list[str]]:
    """inspect's output as: field -> (column, missing, bad, read by); field -> its example lines; the rest."""
    rows: dict[str, tuple[str, int, int, str]] = {}
    examples: dict[str, list[str]] = {}
    rest: list[str] = []
    last = ""
    for line in out.splitlines():
        if (match := ROW.match(line)) and match.group(1) != "field":
            last = match.group(1)
            rows[last] = (match.group(2), int(match.group(3)), int(match.group(4)), match.group(5))
        elif line.startswith("      ") and line.strip().startswith("line ") and last:
            examples.setdefault(last, []).append(line.strip())
        else:
            last = ""
            rest.append(line)
    return rows, examples, rest


def test_inspect_shows_columns_counts_and_first_examples(export: dict[str, str]) -> None:
    code, out, err = run("inspect", "--pack", export["pack"], "--map", export["map"], export["data"], "--rows", "0")
    assert code == 0, err
    rows, examples, rest = table(out)
    assert rest[0] == f"{export['data']}: session (map acme entry 0, csv)"
    assert rows["session_id"] == ('"CSN"', 0, 0, "the key of session, read by rule DOSE-01")
    assert rows["dose_mg"] == ('"Dose" (unit mg)', 1, len(BAD_DOSE), "read by rule DOSE-01")
    assert rows["route"] == ('"Route" (2 labels)', 0, 1, "no rule")
    assert rows["born"][1:3] == (1, 1)
    assert "note" not in rows  # no column "note" (shown as such below), and no rule reads it
    assert [line.split()[0] for line in rest if "NO COLUMN" in line] == ["note"]
    assert "escort_present" not in rows and any("escort_present" in line and "absent" in line for line in rest)
    # the first three problems of a field, each at its line and naming the column
    assert examples["dose_mg"] == [f'line {line}: dose_mg (column "Dose"): "{cell}" is not a number'
                                   for line, cell in BAD_DOSE[:3]]
    assert examples["route"] == ['line 5: route (column "Route"): "Oral" is not one of IV, IN']
    rejected = len(BAD_DOSE) + 1  # and A3, whose date of birth is not a date
    assert f"  {len(ROWS)} records read, {rejected} rejected" in rest


def test_inspect_keeps_phi_values_out_of_its_examples(export: dict[str, str]) -> None:
    _, out, _ = run("inspect", "--pack", export["pack"], "--map", export["map"], export["data"], "--rows", "0")
    _, examples, _ = table(out)
    [example] = examples["born"]
    assert example.startswith("line 4: born (column \"Born\"): ") and "1980-13-45" not in example
    _, out, _ = run("inspect", "--pack", export["pack"], "--map", export["map"], export["data"], "--rows", "0",
                    "--reveal-identifiers")
    assert table(out)[1]["born"] == ['line 4: born (column "Born"): "1980-13-45" is not a date (tried ISO 8601)']


def test_inspect_names_a_missing_column_and_goes_on(export: dict[str, str], tmp_path: Path) -> None:
    data = write(tmp_path, "Infusions.csv", "\n".join([HEADER.replace("Dose", "Dosage").replace("Born", "DOB"),
                                                       *ROWS]) + "\n")
    code, out, err = run("inspect", "--pack", export["pack"], "--map", export["map"], str(data), "--rows", "1")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines if "NO COLUMN" in line] == ["dose_mg", "born", "note"]
    dose = next(line for line in lines if "NO COLUMN" in line and "dose_mg" in line)
    assert dose.split("dose_mg", 1)[1].strip() == "NO COLUMN \"Dose\"; closest: 'Dosage' - STOPS AN AUDIT"
    born = next(line for line in lines if "NO COLUMN" in line and "born" in line)
    assert born.split("born", 1)[1].strip() == 'NO COLUMN "Born"'  # no rule reads it: no warning, no close name
    assert "  the first record as the rules see them:" in lines
    code, _, err = run("audit", "--pack", export["pack"], "--map", export["map"], str(data))
    assert code == 2 and 'field dose_mg (read by rule DOSE-01) has no column "Dose"' in err


def test_inspect_shows_the_first_records_typed_with_pseudonyms(export: dict[str, str], tmp_path: Path) -> None:
    code, out, err = run("inspect", "--pack", export["pack"], "--map", export["map"], export["data"], "--rows", "2")
    assert code == 0, err
    lines = out.splitlines()
    start = lines.index("  the first 2 records as the rules see them:")
    first, second = lines[start + 1:start + 3]
    assert first.startswith("    line 2: session_id=A1, patient_id=")
    assert "session_start=2026-03-02T09:15:00+00:00, dose_mg=1234.5, route=IV, born=" in first
    assert second.startswith("    line 3: session_id=A2, ") and "dose_mg=35" in second and "born=" not in second
    assert len(lines) == start + 3  # two records, no more
    assert not any(ident in out for ident in ("P-111", "P-222", "1980-01-02"))  # patients and phi fields
    pseudonym = first.split("patient_id=")[1].split(",")[0]
    # the audit names the patient by the same pseudonym (same key)
    report = tmp_path / "report.json"
    run("audit", "--pack", export["pack"], "--map", export["map"], export["data"], "-o", str(report))
    finding = next(f for f in json.loads(report.read_text())["findings"] if f["record_key"] == "A1")
    assert finding["patient"] == pseudonym
    _, revealed, _ = run("inspect", "--pack", export["pack"], "--map", export["map"], export["data"], "--rows", "2",
                         "--reveal-identifiers")
    assert "line 2: session_id=A1, patient_id=P-111, " in revealed and "patient_id=P-222" in revealed
    assert "born=1980-01-02" in revealed


def test_explain_reads_a_mapped_export(export: dict[str, str]) -> None:
    code, out, err = run("explain", "--pack", export["pack"], "--map", export["map"], "--rule", "DOSE-01",
                         "--record", "A1", export["data"])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].startswith(f"record session A1 at {export['data']}:2, patient ")
    assert "  dose_mg ≤ 100.0: dose_mg = 1234.5 -> false" in lines  # "1.234,5 mg" read with the map
    assert "outcome: fail (the rule engine agrees)" in lines
    code, _, err = run("explain", "--pack", export["pack"], "--rule", "DOSE-01", "--record", "A1", export["data"])
    assert code == 2  # without the map the export's columns are not the pack's fields


def test_diff_reads_a_mapped_export(export: dict[str, str], tmp_path: Path) -> None:
    head = write(tmp_path, "head.yaml", PACK.replace("LIMIT", "2000"))
    out = tmp_path / "diff.json"
    code, _, err = run("diff", "--base", export["pack"], "--head", str(head), "--map", export["map"], export["data"],
                       "-o", str(out), "--as-of", "2026-04-01")
    assert code == 0, err
    data = json.loads(out.read_text())
    [rule] = data["rules"]
    assert (rule["failed_before"], rule["failed_after"]) == (1, 0)  # A1: 1234.5 mg
    assert [(r["record_key"], r["source"]["line"]) for r in rule["no_longer_flagged"]] == [("A1", 2)]
    assert data["summary"]["records_rejected_before"] == data["summary"]["records_rejected_after"] \
        == len(BAD_DOSE) + 1


def test_inspect_a_fhir_export_counts_skipped_and_filtered(tmp_path: Path) -> None:
    pack, source_map = write(tmp_path, "pack.yaml", fhir.PACK), write(tmp_path, "m.yaml", fhir.FHIR_MAP)
    data = write(tmp_path, "Observation.ndjson", "\n".join(fhir.NDJSON_LINES) + "\n")
    code, out, err = run("inspect", "--pack", str(pack), "--map", str(source_map), str(data), "--rows", "1",
                         "--reveal-identifiers")
    assert code == 0, err
    rows, examples, rest = table(out)
    assert rows["sbp"] == ('"sbp"', 1, 1, "read by rule BP-01")  # o4 has none, o3 has two
    assert examples["sbp"] == ["line 5: sbp: 2 values"]
    assert ("  4 records read, 2 rejected, 1 resource of other types skipped, 1 resource filtered out by the view"
            in rest)
    assert "    line 1: vital_id=o1, patient_id=p1, taken_at=2026-03-02T10:00:00+00:00, sbp=134.0" in rest


def test_inspect_a_fhir_file_no_entry_reads_says_it_is_skipped(tmp_path: Path) -> None:
    pack, source_map = write(tmp_path, "pack.yaml", fhir.PACK), write(tmp_path, "m.yaml", fhir.FHIR_MAP)
    patients = write(tmp_path, "Patient.ndjson", json.dumps(fhir.PATIENT) + "\n")
    code, out, err = run("inspect", "--pack", str(pack), "--map", str(source_map), str(patients))
    assert code == 0, err
    assert "record_type column" not in out and "skipped" in out


def test_inspect_a_flowsheet_counts_rows_and_records(tmp_path: Path) -> None:
    pack, source_map = write(tmp_path, "pack.yaml", flow.VITAL_PACK), write(tmp_path, "m.yaml", flow.LONG_MAP)
    data = write(tmp_path, "Flowsheet.csv", flow.FLOWSHEET)
    code, out, err = run("inspect", "--pack", str(pack), "--map", str(source_map), str(data), "--rows", "0")
    assert code == 0, err
    rows, _, rest = table(out)
    assert rows["vital_id"][0] == '"CSN" + "Taken At"' and rows["sbp"][0] == "\"BP\" (part 1 of '/')"
    assert rows["spo2"][1:3] == (1, 0)  # A2 has no SpO2 row
    assert f"  3 records read from {flow.FLOWSHEET.count(chr(10)) - 1} rows, 1 rejected" in rest
