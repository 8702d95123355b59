"""Source maps (SPEC 8): validation with every problem at its position, FHIR exports read through a
view, and a map file among the inputs it maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine.inputs.builder import InputStats, Seen
from engine.inputs.maps import load_map_bytes
from engine.inputs.sources import bind, read_binding
from engine.judge.context import PackContext
from engine.language.model import Rejected
from engine.packs import load_pack_bytes
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
      escort_present: boolean
  vital:
    key: vital_id
    patient: patient_id
    time: taken_at
    fields:
      vital_id: string
      patient_id: string
      taken_at: datetime
      sbp: number
rules:
  - id: DOSE-01
    title: dose at most 100 mg
    severity: major
    for: session
    require: {dose_mg: {at_most: 100}}
  - id: BP-01
    title: systolic under 180
    severity: major
    for: vital
    require: {sbp: {less_than: 180}}
"""
HEAD = 'map: m\nversion: "1"\ninputs:\n'


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def at(text: str, needle: str, start: int = 0) -> str:
    """``line:column`` (1-based) of the first occurrence of ``needle`` in ``text`` from ``start``."""
    offset = text.index(needle, start)
    line = text.count("\n", 0, offset) + 1
    return f"{line}:{offset - (text.rfind(chr(10), 0, offset) + 1) + 1}"


def validate(tmp_path: Path, map_body: str, with_pack: bool = True) -> tuple[int, list[str], str]:
    """``validate [PACK] MAP`` on a map of ``map_body``: exit code, stderr lines, map path."""
    path = write(tmp_path, "m.yaml", map_body)
    pack = [str(write(tmp_path, "pack.yaml", PACK))] if with_pack else []
    code, _, err = run("validate", *pack, str(path))
    return code, err.splitlines(), str(path)


# (id, an entry of the map's inputs, the text at the problem's position, the message)
CASES = [
    ("unknown-top-key", "  - type: session\nversio: x\n", "versio: x",
     'unknown key "versio" in map (did you mean "version"?)'),
    ("unknown-entry-key", "  - type: session\n    fils: a.csv\n", "fils",
     'unknown key "fils" in inputs[0] (did you mean "files"?)'),
    ("unknown-column-key", "  - type: session\n    columns:\n      dose_mg: {column: Dose, unti: mg}\n", "unti",
     'unknown key "unti" in column of dose_mg (did you mean "unit"?)'),
    ("unknown-long-key", "  - type: vital\n    long: {key: [A], name: N, value: V, nme: X}\n", "nme",
     'unknown key "nme" in long (did you mean "name"?)'),
    ("unknown-view-key", "  - type: vital\n    view: {resource: Observation, selct: [],"
                         " select: [{column: [{name: vital_id, path: id}]}]}\n", "selct",
     'unknown key "selct" in the view (did you mean "select"?)'),
    ("unknown-type", "  - type: sesion\n", "sesion",
     'record type "sesion" is not declared by any pack of the run (did you mean "session"?)'),
    ("column-not-a-field", "  - type: session\n    columns:\n      dose: Dose\n", "dose:",
     '"dose" is not a field of session (did you mean "dose_mg"?)'),
    ("absent-not-a-field", "  - type: session\n    absent: [escort]\n", "escort]",
     'absent: "escort" is not a field of session (did you mean "escort_present"?)'),
    ("absent-and-read", "  - type: session\n    absent: [dose_mg]\n    columns: {dose_mg: Dose}\n", "dose_mg: Dose",
     '"dose_mg" is listed under absent: and read from a column'),
    ("unknown-codec", "  - type: session\n    encoding: utf8x\n", "utf8x",
     'unknown encoding "utf8x" (did you mean "utf-8"?)'),
    ("utf-16", "  - type: session\n    encoding: utf-16\n", "utf-16",
     'encoding "utf-16" is not supported: files are read line by line, so the encoding must keep ASCII as is '
     "(utf-8, cp1252, latin-1, ...); save the export as UTF-8"),
    ("unknown-format", "  - type: session\n    format: xls\n", "xls", 'unknown format "xls" (did you mean "xlsx"?)'),
    ("bad-directive", '  - type: session\n    datetime_formats: ["%Y-%m-%d %Q"]\n', '"%Y',
     'datetime_formats: "%Y-%m-%d %Q" cannot read what it writes (\'Q\' is a bad directive in format '
     "'%Y-%m-%d %Q'); see strptime's directives"),
    ("no-directive", '  - type: session\n    date_formats: ["plain"]\n', '"plain"',
     'date_formats: "plain" has no strptime directive (%Y, %m, %d, ...)'),
    ("no-date", '  - type: session\n    datetime_formats: ["%H:%M"]\n', '"%H',
     'datetime_formats: "%H:%M" does not give a whole date (year, month and day)'),
    ("no-day", '  - type: session\n    date_formats: ["%m/%Y"]\n', '"%m',
     'date_formats: "%m/%Y" does not give a whole date (year, month and day)'),
    ("no-time", '  - type: session\n    datetime_formats: ["%d/%m/%Y"]\n', '"%d',
     'datetime_formats: "%d/%m/%Y" does not give the time of day (hours and minutes; %I needs %p)'),
    ("I-without-p", '  - type: session\n    datetime_formats: ["%m/%d/%Y %I:%M"]\n', '"%m',
     'datetime_formats: "%m/%d/%Y %I:%M" does not give the time of day (hours and minutes; %I needs %p)'),
    ("join-one-column", "  - type: session\n    columns:\n      session_id: {join: [CSN]}\n", "[CSN]",
     "join needs two or more columns"),
    ("join-twice", "  - type: session\n    columns:\n      session_id: {join: [CSN, CSN]}\n", "[CSN, CSN]",
     "join names a column twice"),
    ("long-key-twice", "  - type: vital\n    long: {key: [A, A], name: N, value: V}\n", "[A, A]",
     "long key names a column twice"),
    ("part-without-split", "  - type: session\n    columns:\n      dose_mg: {column: Dose, part: 2}\n", "2}",
     "part needs split:"),
    ("part-zero", '  - type: session\n    columns:\n      dose_mg: {column: Dose, split: "/", part: 0}\n', "0}",
     "part must be a whole number from 1 (the first part)"),
    ("view-without-resource", "  - type: vital\n    view:\n      select: [{column: [{name: vital_id, path: id}]}]\n",
     "select:", "resource is required (the FHIR resource type the view reads)"),
    ("fhirpath-does-not-parse", "  - type: vital\n    view:\n      resource: Observation\n"
                                '      select: [{column: [{name: vital_id, path: "id.("}]}]\n', '"id.(',
     "FHIRPath \"id.(\" does not parse at character 4: mismatched input '('"),
    ("fhir-without-view", "  - type: vital\n    format: fhir\n", "type: vital",
     "a fhir entry needs a view: (an SQL-on-FHIR ViewDefinition) saying what each column is"),
    ("view-not-fhir", "  - type: vital\n    format: csv\n    view: {resource: Observation,"
                      " select: [{column: [{name: vital_id, path: id}]}]}\n", "view:",
     'a view reads FHIR resources: the entry\'s format must be "fhir", not "csv"'),
    ("bad-timezone", "  - type: session\n    timezone: Mars/Base\n", "Mars", 'unknown time zone "Mars/Base"'),
    ("duplicate-key", "  - type: session\n    type: vital\n", "type: vital", 'duplicate key "type" (first at line 4)'),
    ("codec-not-ascii", "  - type: session\n    encoding: utf-7\n", "utf-7",
     'encoding "utf-7" is not supported: files are read line by line, so the encoding must keep ASCII as is '
     "(utf-8, cp1252, latin-1, ...); save the export as UTF-8"),
    ("codec-not-text", "  - type: session\n    encoding: rot_13\n", "rot_13",
     'encoding "rot_13" is not supported: files are read line by line, so the encoding must keep ASCII as is '
     "(utf-8, cp1252, latin-1, ...); save the export as UTF-8"),
    ("digit-delimiter", "  - type: session\n    delimiter: '1'\n", "'1'",
     "delimiter must be one character, not a letter, a digit, a sign, a quote or a line break"),
    ("sign-decimal", "  - type: session\n    decimal: '-'\n", "'-'",
     "decimal must be one character, not a letter, a digit, a sign, a quote or a line break"),
    ("p-without-I", '  - type: session\n    datetime_formats: ["%m/%d/%Y %H:%M %p"]\n', '"%m',
     'datetime_formats: "%m/%d/%Y %H:%M %p" has %p (AM/PM) without %I: strptime reads %H as 0-23 and ignores '
     "AM/PM; write %I for a 12-hour clock"),
    ("directive-twice", '  - type: session\n    datetime_formats: ["%Y-%m-%d %H:%M %Y"]\n', '"%Y',
     'datetime_formats: "%Y-%m-%d %H:%M %Y" cannot read what it writes (a directive appears twice); '
     "see strptime's directives"),
    ("month-day-and-day-month", '  - type: session\n    date_formats: ["%m/%d/%Y", "%d/%m/%Y"]\n', '"%d/%m',
     'date_formats: "%d/%m/%Y" and "%m/%d/%Y" read \'04/03/2026\' as different days; '
     "list only the one the export writes"),
    ("true-and-false", '  - type: session\n    true_values: ["X"]\n    false_values: ["x"]\n', '"X"',
     'true_values: "x" also means false (false_values)'),
    ("true-is-built-in-false", '  - type: session\n    true_values: ["No"]\n', '"No"',
     'true_values: "no" also means false (always)'),
    ("false-is-built-in-true", '  - type: session\n    false_values: ["Y"]\n', '"Y"',
     'false_values: "y" always means true'),
    ("long-not-a-flowsheet-format", "  - type: vital\n    format: ndjson\n    long: {key: [A], name: N, value: V}\n",
     "long:", "long: gathers the rows of a CSV or XLSX flowsheet, not ndjson"),
    ("delimiter-on-xlsx", "  - type: session\n    format: xlsx\n    delimiter: ';'\n", "delimiter",
     "delimiter: applies to csv files, and this entry reads xlsx"),
    ("sheet-on-csv", "  - type: session\n    format: csv\n    sheet: Data\n", "sheet",
     "sheet: applies to xlsx files, and this entry reads csv"),
    ("files-with-folder", '  - type: session\n    files: "exports/*.csv"\n', '"exports',
     'files: "exports/*.csv" is matched against a file\'s name alone, so a folder in it never matches: '
     "give the pattern of the name"),
]


def test_a_map_without_inputs_says_so(tmp_path: Path) -> None:
    code, err, path = validate(tmp_path, 'map: m\nversion: "1"\n')
    assert code == 2
    assert any("inputs" in line and line.startswith(path) for line in err), err
    assert not any("internal error" in line for line in err)


@pytest.mark.parametrize("entry, needle, message", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_each_map_problem_at_its_position(tmp_path: Path, entry: str, needle: str, message: str) -> None:
    text = HEAD + entry
    code, err, path = validate(tmp_path, text)
    assert code == 2
    assert err == [f"{path}:{at(text, needle)}: {message}", "protocol-audit: 1 problem in 1 map"]


def test_every_problem_of_a_map_is_listed(tmp_path: Path) -> None:
    chosen = [case for case in CASES if case[0] in ("unknown-entry-key", "utf-16", "part-zero", "no-time")]
    text = HEAD + "".join(entry for _, entry, _, _ in chosen)
    code, err, path = validate(tmp_path, text)
    expected = [f"{path}:{at(text, needle, text.index(entry))}: {message}" for _, entry, needle, message in chosen]
    assert code == 2
    assert err == [*expected, f"protocol-audit: {len(chosen)} problems in 1 map"]


def test_audit_with_a_bad_map_exits_2_before_reading(tmp_path: Path) -> None:
    text = HEAD + CASES[1][1]
    path = write(tmp_path, "m.yaml", text)
    write(tmp_path, "pack.yaml", PACK)
    report = tmp_path / "report.json"
    code, _, err = run("audit", "--pack", str(tmp_path / "pack.yaml"), "--map", str(path),
                       str(tmp_path / "no-such-export.csv"), "-o", str(report))
    assert code == 2
    assert err.splitlines()[-2:] == [f"{path}:{at(text, 'fils')}: {CASES[1][3]}", "protocol-audit: 1 problem in 1 map"]
    assert not report.exists()


def test_yaml_syntax_error_in_a_map(tmp_path: Path) -> None:
    text = HEAD + "  - type: session\n    files: [unclosed\n"
    code, err, path = validate(tmp_path, text)
    assert code == 2
    end = text.count("\n") + 1  # the line after the last: the list is still open at the end of the text
    assert err[0].startswith(f"{path}:{end}:1: syntax error: ")
    assert err[-1] == "protocol-audit: 1 problem in 1 map"


FOREIGN = '  - type: consent\n    files: "Consent*.csv"\n    columns: {whatever: Column}\n'


def test_an_entry_for_a_type_no_pack_declares_is_checked_and_left_unused(tmp_path: Path) -> None:
    # "consent" is no misspelling of a type of the run: a map shared with other packs, not a problem
    text = HEAD + "  - type: session\n" + FOREIGN
    path = write(tmp_path, "m.yaml", text)
    pack = write(tmp_path, "pack.yaml", PACK)
    code, out, err = run("validate", str(pack), str(path))
    assert code == 0, err
    assert out.splitlines()[1:] == [
        f"{path}: inputs[1] reads consent records, which no pack of this run declares: its files are not read "
        "through it", f"{path}: ok (map m 1, 1 entry)"]
    sessions = write(tmp_path, "sessions.csv", "session_id,patient_id,session_start,dose_mg\nA1,P1,2026-03-02,5\n")
    code, _, err = run("audit", "--pack", str(pack), "--map", str(path), str(sessions), "--as-of", "2026-04-01")
    assert code == 0 and f"protocol-audit: {path}: inputs[1] reads consent records" in err
    # its own problems are still problems
    text = HEAD + FOREIGN + "    encoding: utf-16\n"
    code, err_lines, path_text = validate(tmp_path, text)
    assert code == 2 and err_lines[0].startswith(f"{path_text}:{at(text, 'utf-16')}: encoding \"utf-16\" is not "
                                                 "supported")


def test_validate_a_map_alone_says_types_and_fields_were_not_checked(tmp_path: Path) -> None:
    # "sesion" and "dose" would be problems against the pack; without it they cannot be checked
    code, err, path = validate(tmp_path, HEAD + "  - type: sesion\n    columns: {dose: Dose}\n", with_pack=False)
    assert code == 0
    result = CliRunner().invoke(main, ["validate", path])
    assert result.stdout.splitlines() == [f"{path}: ok (map m 1, 1 entry; give its packs too to check its record "
                                          "types and fields)"]


FHIR_MAP = HEAD + """\
  - type: vital
    files: "Observation*"
    format: fhir
    view:
      resource: Observation
      where: [{path: "code.coding.where(system = 'http://loinc.org' and code = '85354-9').exists()"}]
      select:
        - column:
            - {name: vital_id, path: id}
            - {name: patient_id, path: "subject.getReferenceKey(Patient)"}
            - {name: taken_at, path: "effective.ofType(dateTime)"}
            - {name: sbp, path: "component.where(code.coding.code = '8480-6').value.ofType(Quantity).value"}
"""


def observation(ident: str, code: str = "85354-9", *sbp: float) -> dict[str, object]:
    return {"resourceType": "Observation", "id": ident, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "effectiveDateTime": "2026-03-02T10:00:00Z",
            "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                           "valueQuantity": {"value": value, "unit": "mm[Hg]"}} for value in sbp]}


PATIENT = {"resourceType": "Patient", "id": "p1"}
NDJSON_LINES = [
    json.dumps(observation("o1", "85354-9", 134)),
    json.dumps(PATIENT),  # another resource type: skipped
    json.dumps(observation("o2", "8867-4", 80)),  # a heart rate: the view's where excludes it
    "{not json",
    json.dumps(observation("o3", "85354-9", 134, 150)),  # two systolic values
    "",
    json.dumps(observation("o4", "85354-9")),  # no systolic value: missing
]


def read_fhir(tmp_path: Path, name: str, content: str) -> tuple[list[object], InputStats]:
    context = PackContext([load_pack_bytes(PACK.encode(), "pack.yaml")])
    loaded = load_map_bytes(FHIR_MAP.encode(), "m.yaml", context.types)
    [binding] = bind([str(write(tmp_path, name, content))], context.types, [loaded])
    stats = InputStats(binding.path, binding.type)
    return list(read_binding(binding, context.types, context.tz, Seen(), stats)), stats


def shown(items: list[object]) -> list[tuple[int, object]]:
    return [(item.line, item.reason if isinstance(item, Rejected) else  # type: ignore[attr-defined]
             (item.key, item.patient, item.values.get("sbp"))) for item in items]  # type: ignore[attr-defined]


def test_fhir_ndjson_through_a_view(tmp_path: Path) -> None:
    items, stats = read_fhir(tmp_path, "Observation.ndjson", "\n".join(NDJSON_LINES) + "\n")
    bad_line = NDJSON_LINES.index("{not json") + 1
    with pytest.raises(json.JSONDecodeError) as parsing:
        json.loads("{not json")
    assert shown(items) == [(1, ("o1", "p1", 134)),
                            (bad_line, f"not valid JSON ({parsing.value.msg} at column {parsing.value.colno})"),
                            (5, "sbp: 2 values"), (7, ("o4", "p1", None))]
    assert (stats.skipped, stats.filtered) == (1, 1)
    assert (stats.records_read, stats.records_rejected) == (4, 2)


def test_fhir_bundle_entries_at_their_position(tmp_path: Path) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": observation("o5", "85354-9", 120)}, {"resource": PATIENT},
                        {"resource": observation("o6", "85354-9", 120, 121)}, {"fullUrl": "urn:x"}]}
    items, stats = read_fhir(tmp_path, "Observation-bundle.json", json.dumps(bundle))
    assert shown(items) == [(1, ("o5", "p1", 120)), (3, "sbp: 2 values"), (4, "Bundle entry without a resource")]
    assert (stats.skipped, stats.filtered, stats.records_read) == (1, 0, 3)


def test_fhir_audit_skips_a_file_of_other_resources_and_counts_per_input(tmp_path: Path) -> None:
    write(tmp_path, "pack.yaml", PACK)
    write(tmp_path, "m.yaml", FHIR_MAP)
    observations = write(tmp_path, "Observation.ndjson", "\n".join(NDJSON_LINES) + "\n")
    patients = write(tmp_path, "Patient.ndjson", "".join(json.dumps({**PATIENT, "id": i}) + "\n" for i in ("p1", "p2")))
    report = tmp_path / "report.json"
    code, _, err = run("audit", "--pack", str(tmp_path / "pack.yaml"), "--map", str(tmp_path / "m.yaml"),
                       str(observations), str(patients), "-o", str(report), "--as-of", "2026-04-01")
    assert code == 1, err  # o4 has no systolic value: not documented fails BP-01
    data = json.loads(report.read_text())
    by_path = {item["path"]: item for item in data["inputs"]}
    obs = by_path[str(observations)]
    assert (obs["map"], obs["entry"], obs["skipped"], obs["filtered"]) == ("m", 0, 1, 1)
    assert (obs["records_read"], obs["records_rejected"]) == (4, 2)
    pat = by_path[str(patients)]
    assert (pat.get("records_read"), pat.get("records_rejected"), pat.get("skipped")) == (0, 0, 2)
    assert {r["source"]["path"] for r in data["rejected"]} == {str(observations)}
    assert [f["record_key"] for f in data["findings"]] == ["o4"]


def test_a_map_in_the_inputs_folder_is_not_an_input(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    write(tmp_path, "pack.yaml", PACK)
    entry = '  - type: session\n    files: "Infusions*.csv"\n    columns: {dose_mg: Dose}\n'
    write(export, "acme.map.yaml", HEAD + entry)
    write(export, "Infusions.csv", "session_id,patient_id,session_start,Dose\nA1,P1,2026-03-02T10:00:00,35\n")
    report = tmp_path / "report.json"
    everything = sorted(str(path) for path in export.iterdir())  # what export/* expands to
    assert len(everything) == 2
    code, _, err = run("audit", "--pack", str(tmp_path / "pack.yaml"), "--map", str(export / "acme.map.yaml"),
                       *everything, "-o", str(report), "--as-of", "2026-04-01")
    assert code == 0, err
    data = json.loads(report.read_text())
    assert [item["path"] for item in data["inputs"]] == [str(export / "Infusions.csv")]
    assert data["summary"]["records_judged"] == 1 and data["rejected"] == []


def test_a_view_column_with_collection_true_feeding_a_field_is_a_map_problem(tmp_path: Path) -> None:
    text = HEAD + ("  - type: vital\n    format: fhir\n    view:\n      resource: Observation\n      select:\n"
                   "        - column:\n            - {name: vital_id, path: id}\n"
                   "            - {name: sbp, path: \"component.value.ofType(Quantity).value\", collection: true}\n")
    code, err, path = validate(tmp_path, text)
    assert code == 2
    assert err == [f"{path}:{at(text, '{name: sbp')}: column \"sbp\" is collection: true, which no field type "
                   "accepts: a record with several values is rejected instead (\"2 values\")",
                   "protocol-audit: 1 problem in 1 map"]


def test_type_equals_file_binds_to_the_types_entry_whatever_its_files(tmp_path: Path) -> None:
    write(tmp_path, "pack.yaml", PACK)
    write(tmp_path, "m.yaml", HEAD + '  - type: session\n    files: "Infusions*.csv"\n    columns: {dose_mg: Dose}\n')
    data = write(tmp_path, "march.csv", "session_id,patient_id,session_start,Dose,escort_present\n"
                                        "A1,P1,2026-03-02T10:00:00,135,y\n")
    report = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["audit", "--pack", str(tmp_path / "pack.yaml"), "--map",
                                       str(tmp_path / "m.yaml"), f"session={data}", "-o", str(report)])
    assert result.exit_code == 1, result.output
    got = json.loads(report.read_text())
    assert [(i["map"], i["entry"]) for i in got["inputs"]] == [("m", 0)]
    assert [(f["rule"], f["record_key"]) for f in got["findings"]] == [("DOSE-01", "A1")]
