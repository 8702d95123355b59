"""The sample year in its three forms (canonical CSV, FHIR R4 bulk export, Acme EHR vendor export):
the generator rewrites the two new forms byte for byte, the shipped FHIR map's views give the
canonical rows, and the three audits agree rule by rule and finding by finding."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cli import main
from engine.inputs.builder import InputStats, Seen
from engine.inputs.fhir_view import compile_view
from engine.inputs.maps import load_maps
from engine.inputs.sources import bind, read_binding
from engine.judge.context import PackContext
from engine.language.model import Record
from engine.packs import load_packs
from samples import generate
from samples.forms import number_text, valid

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
FHIR_MAP = ROOT / "maps" / "fhir-r4.yaml"
VENDOR_MAP = SAMPLES / "vendor" / "acme-ehr.map.yaml"
PACKS = ["--pack", str(ROOT / "rules" / "ketamine-iv.yaml"), "--pack", str(ROOT / "rules" / "esketamine-rems.yaml")]
AS_OF = "2026-11-26T00:00:00Z"
CANONICAL = ["sessions", "vitals", "screenings", "assessments", "enrollments", "credentials", "interventions",
             "problems", "profiles", "pregnancy_tests", "adverse_events", "treatment_reviews", "consent_forms",
             "consents"]
STEM_OF = {"session": "sessions", "vital": "vitals", "screening": "screenings", "assessment": "assessments",
           "enrollment": "enrollments", "credential": "credentials", "intervention": "interventions",
           "problem": "problems", "profile": "profiles", "pregnancy_test": "pregnancy_tests",
           "adverse_event": "adverse_events", "treatment_review": "treatment_reviews",
           "consent_form": "consent_forms", "consent": "consents"}
FORM_FILES = [f"fhir/{n}.ndjson" for n in ("Patient", "MedicationAdministration", "Observation", "Consent",
                                           "Practitioner", "Procedure", "Condition", "AdverseEvent",
                                           "ClinicalImpression", "Questionnaire")] + [
    f"vendor/{n}" for n in ("Infusions.csv", "Flowsheet_Vitals.csv", "Scales.csv", "REMS_Enrollments.csv",
                            "Staff_Credentials.csv", "Screenings.xlsx", "Interventions.csv", "Problem_List.csv",
                            "Registrations.csv", "Pregnancy_Tests.csv", "Adverse_Events.csv",
                            "Treatment_Reviews.csv", "Consent_Forms.csv", "Consents.csv")]


def _has_map_option() -> bool:
    result = CliRunner().invoke(main, ["audit", "--help"])
    return "--map" in result.output


needs_map = pytest.mark.skipif(not _has_map_option(), reason="audit has no --map option yet")


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    subprocess.run([sys.executable, str(SAMPLES / "generate.py"), "--out", str(out)], check=True,
                   capture_output=True)
    return out


@pytest.mark.parametrize("name", FORM_FILES + [f"{stem}.csv" for stem in CANONICAL] + ["sessions.ndjson"])
def test_generated_files_are_byte_identical(fresh: Path, name: str) -> None:
    assert (fresh / name).read_bytes() == (SAMPLES / name).read_bytes()


def _canonical(stem: str) -> dict[str, list[dict[str, str]]]:
    """Canonical rows by key (a key exported twice has two rows); rows with a wrong cell count are left out."""
    with open(SAMPLES / f"{stem}.csv", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows: dict[str, list[dict[str, str]]] = {}
        for cells in reader:
            if len(cells) == len(header):
                rows.setdefault(cells[0], []).append(dict(zip(header, cells, strict=True)))
    return rows


def _text(value: Any) -> str:
    """A view value as canonical text: booleans lower case, numbers as written, the rest as is."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) or type(value).__name__ == "Decimal":
        return number_text(value)
    return str(value)


def _same(kind_value: str, view_text: str) -> bool:
    if kind_value == view_text:
        return True
    if valid("number", kind_value) and valid("number", view_text):
        return number_text(kind_value) == number_text(view_text)
    return False


def _resources(name: str) -> list[Any]:
    out = []
    for line in (SAMPLES / "fhir" / name).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append(None)
    return out


KINDS = {"session": generate.COLUMNS, "vital": generate.VITAL_COLUMNS, "screening": generate.SCREENING_COLUMNS,
         "assessment": generate.ASSESSMENT_COLUMNS, "enrollment": generate.ENROLLMENT_COLUMNS,
         "credential": generate.CREDENTIAL_COLUMNS, "intervention": generate.INTERVENTION_COLUMNS,
         "problem": generate.PROBLEM_COLUMNS, "profile": generate.PROFILE_COLUMNS,
         "pregnancy_test": generate.PREGNANCY_TEST_COLUMNS, "adverse_event": generate.ADVERSE_EVENT_COLUMNS,
         "treatment_review": generate.REVIEW_COLUMNS, "consent_form": generate.CONSENT_FORM_COLUMNS,
         "consent": generate.CONSENT_COLUMNS}
# the packs' enum values (the two packs declare their shared types identically)
ENUMS = {type_name: {field: spec["values"] for field, spec in record["fields"].items()
                     if isinstance(spec, dict) and spec.get("type") == "enum"}
         for pack in ("ketamine-iv", "esketamine-rems")
         for type_name, record in yaml.safe_load((ROOT / "rules" / f"{pack}.yaml").read_text(encoding="utf-8"))[
             "records"].items()}


# record types whose keys are no resource ids, so every resource the view matches is checked: a
# Practitioner's qualifications (several a resource), the registration on a Patient
NESTED = {"credential", "profile"}
# record types checked whole, every resource: small files
WHOLE = {"adverse_event", "treatment_review", "consent_form", "consent"}
# record types whose canonical file has no planted bad row (the consent forms: a reference table)
NO_BAD_ROW = {"consent_form"}


def _planted(type_name: str, canonical: dict[str, list[dict[str, str]]]) -> set[str]:
    """Keys of the planted bad rows: a key exported twice, a typed cell that does not convert, or an
    enum cell that is none of the pack's values."""
    kinds, enums = KINDS[type_name], ENUMS[type_name]
    return {key for key, rows in canonical.items()
            if len(rows) > 1 or any(v and ((kinds.get(c) in ("integer", "number", "boolean", "date", "datetime")
                                            and not valid(kinds[c], v)) or (c in enums and v not in enums[c]))
                                    for row in rows for c, v in row.items())}


ENTRIES = ["session", "vital", "screening", "assessment", "enrollment", "credential", "intervention", "problem",
           "profile", "pregnancy_test", "adverse_event", "treatment_review", "consent_form", "consent"]


@pytest.mark.parametrize("index", range(len(ENTRIES)), ids=ENTRIES)
def test_fhir_map_views_give_the_canonical_rows(index: int) -> None:
    """Every column of every view, evaluated on the generated resources, gives the canonical cell,
    and a planted bad value the same text (which does not convert either). Every planted bad row
    and every 10th resource is checked (all of them take fhirpathpy 100 s); a resource holding
    several records (a Practitioner, a credential per qualification) is checked whole, and so is
    every registration (its key is no resource id), every adverse event, treatment review, consent
    form version and signed consent. The consent forms have no planted bad row."""
    entry = yaml.safe_load(FHIR_MAP.read_text(encoding="utf-8"))["inputs"][index]
    assert entry["type"] == ENTRIES[index]
    view = compile_view(entry["view"])
    canonical = _canonical(STEM_OF[entry["type"]])
    planted = _planted(entry["type"], canonical)
    file_name = entry["files"].replace("*", "")
    seen: Counter[str] = Counter()
    checked: set[str] = set()
    for number, resource in enumerate(_resources(file_name)):
        if not isinstance(resource, dict):
            continue
        if resource.get("id") in canonical:              # one record a resource, keyed by its id
            key = resource["id"]
            if key not in planted and number % 10 and entry["type"] not in WHOLE:
                seen[key] += 1
                continue
            if not view.matches(resource):
                continue
            rows = view.rows(resource)
            assert len(rows) == 1 and _text(rows[0][view.columns[0].name][0]) == key
        elif entry["type"] in NESTED and view.matches(resource):
            rows = view.rows(resource)                    # several records a resource, each checked
            assert rows, resource.get("id")
        else:
            continue
        for row in rows:
            key = _text(row[view.columns[0].name][0])
            expected = canonical[key][seen[key]]
            seen[key] += 1
            checked.add(key)
            for column in view.columns:
                values = row[column.name]
                assert len(values) <= 1, (key, column.name, values)
                got = _text(values[0]) if values else ""
                assert _same(expected[column.name], got), (key, column.name, expected[column.name], got)
    assert planted <= checked and bool(planted) != (entry["type"] in NO_BAD_ROW)
    if entry["type"] in NESTED | WHOLE:
        assert checked == set(canonical)


# every record, not a sample: the small files each form gained last
READ_BACK = {"adverse_event": ("AdverseEvent.ndjson", "Adverse_Events.csv"),
             "treatment_review": ("ClinicalImpression.ndjson", "Treatment_Reviews.csv"),
             "consent_form": ("Questionnaire.ndjson", "Consent_Forms.csv"),
             "consent": ("Consent.ndjson", "Consents.csv")}


def _read_records(path: Path, maps: list[Any], context: PackContext,
                  record_type: str) -> tuple[dict[str, Record], list[str]]:
    """Every record of one file, read as an audit reads it (through its map's entry for the type: a file
    may feed several, Consent.ndjson the enrollments and the signed consents), by key; and the
    rejections' reasons."""
    bindings = [b for b in bind([f"{record_type}={path}"] if not maps else [str(path)], context.types, maps)
                if b.type == record_type]
    assert len(bindings) == 1, bindings
    records: dict[str, Record] = {}
    reasons: list[str] = []
    for item in read_binding(bindings[0], context.types, context.tz, Seen(), InputStats(str(path), record_type)):
        if isinstance(item, Record):
            records[item.key] = item
        else:
            reasons.append(item.reason)
    return records, reasons


@pytest.mark.parametrize("type_name", list(READ_BACK))
def test_each_form_reads_back_the_canonical_records(type_name: str) -> None:
    """Every good adverse event, treatment review, consent form version and signed consent reads, in
    the FHIR and the vendor form, to the canonical record: the same key, patient (none for a form
    version), time and every field's value (a time the same instant); the planted bad row is the one
    rejection of each form (the consent forms have none)."""
    context = PackContext(load_packs([str(ROOT / "rules" / f"{p}.yaml") for p in ("ketamine-iv", "esketamine-rems")]))
    fhir_file, vendor_file = READ_BACK[type_name]
    bad = 0 if type_name in NO_BAD_ROW else 1
    want, want_rejected = _read_records(SAMPLES / f"{STEM_OF[type_name]}.csv", [], context, type_name)
    assert len(want) == len(_canonical(STEM_OF[type_name])) - bad and len(want_rejected) == bad
    for path, source in ((SAMPLES / "fhir" / fhir_file, FHIR_MAP), (SAMPLES / "vendor" / vendor_file, VENDOR_MAP)):
        got, rejected = _read_records(path, [load_maps([str(source)], context.types)[0]], context, type_name)
        assert len(rejected) == bad and all(r.startswith(ONE_REJECTED[type_name][0]) for r in rejected), \
            (path.name, rejected)
        assert got.keys() == want.keys(), path.name
        for key, record in want.items():
            assert (got[key].patient, got[key].time, got[key].values) == (record.patient, record.time, record.values), \
                (path.name, key)


def test_fhir_enrollment_entry_reads_only_the_enrollments() -> None:
    """Consent.ndjson holds the REMS enrollments and the signed treatment consents: the enrollment
    entry reads exactly the enrollments (as REMS_Enrollments' canonical file gives them, the same
    rejections), the consent entry none of them, by their category."""
    context = PackContext(load_packs([str(ROOT / "rules" / f"{p}.yaml") for p in ("ketamine-iv", "esketamine-rems")]))
    fhir = [load_maps([str(FHIR_MAP)], context.types)[0]]
    want, want_rejected = _read_records(SAMPLES / "enrollments.csv", [], context, "enrollment")
    got, rejected = _read_records(SAMPLES / "fhir" / "Consent.ndjson", fhir, context, "enrollment")
    assert got.keys() == want.keys() and len(rejected) == len(want_rejected) == 2
    for key, record in want.items():
        assert (got[key].patient, got[key].time, got[key].values) == (record.patient, record.time, record.values), key
    consents, _rejected = _read_records(SAMPLES / "fhir" / "Consent.ndjson", fhir, context, "consent")
    assert consents and not consents.keys() & set(_canonical("enrollments"))


# ----------------------------------------------------------------------------- the three audits

def _audit(tmp_path: Path, name: str, *args: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    result = CliRunner().invoke(main, ["audit", *PACKS, *args, "-o", str(out), "--as-of", AS_OF])
    assert result.exit_code in (0, 1), result.output
    return json.loads(out.read_text(encoding="utf-8"))


def _summary(report: dict[str, Any]) -> tuple[dict[str, Any], set[tuple[str, str]]]:
    """Per-rule counts and the (rule, record key) of every finding."""
    counts = {r["id"]: {k: v for k, v in r.items() if isinstance(v, int) and not isinstance(v, bool)}
              for r in report["rules"]}
    findings = {(f["rule"], f["record_key"]) for f in report["findings"]}
    return counts, findings


@pytest.fixture(scope="module")
def canonical_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("canonical")
    return _audit(tmp, "canonical", *(str(SAMPLES / f"{stem}.csv") for stem in CANONICAL))


# the one planted bad row of each of these files: the field the rejection names, and its text in each form
ONE_REJECTED = {
    "credential": ("issued_on", dict.fromkeys(("canonical", "fhir", "vendor"), '"2026-03-3"')),   # CR-053
    "intervention": ("kind", dict.fromkeys(("canonical", "fhir", "vendor"), '"BP rechecked"')),   # INT-0133
    "problem": ("onset_on", {"canonical": '"2018-13-18"', "fhir": '"2018-13-18"', "vendor": '"13/18/2018"'}),
    "profile": ("duplicate profile_id", dict.fromkeys(("canonical", "fhir", "vendor"), '"REG-0066"')),
    "pregnancy_test": ("result", dict.fromkeys(("canonical", "fhir", "vendor"), '"neg"')),          # PT-0041
    "adverse_event": ("onset_at", {"canonical": '"2026-02-30T14:22:00-08:00"',                    # AE-0113
                                   "fhir": '"2026-02-30T14:22:00-08:00"', "vendor": '"02/30/2026 02:22 PM"'}),
    "treatment_review": ("decision", dict.fromkeys(("canonical", "fhir", "vendor"), '"cont."')),    # TR-0118
    "consent": ("signed_on", {"canonical": '"2026-04-31"', "fhir": '"2026-04-31"',                 # CNS-0222
                              "vendor": '"04/31/2026"'}),
}


@needs_map
@pytest.mark.parametrize("form", ["fhir", "vendor"])
def test_each_form_audits_as_the_canonical_export(form: str, canonical_report: dict[str, Any],
                                                  tmp_path: Path) -> None:
    if form == "fhir":  # the whole bulk export, Patient.ndjson too: no entry reads it, so it is skipped
        args = ["--map", "fhir-r4", *(str(p) for p in sorted((SAMPLES / "fhir").glob("*.ndjson")))]
    else:  # the export's folder as a glob gives: the map file in it is not an input
        args = ["--map", str(VENDOR_MAP), *(str(p) for p in sorted((SAMPLES / "vendor").iterdir()))]
    report = _audit(tmp_path, form, *args)
    want_counts, want_findings = _summary(canonical_report)
    got_counts, got_findings = _summary(report)
    assert got_counts == want_counts
    assert got_findings == want_findings
    # each record type reads as many records as from its canonical file: no view picks up another
    # type's resources (the pregnancy tests are Observations too)
    read = {i["record_type"]: i["records_read"] for i in canonical_report["inputs"]}
    assert {i["record_type"]: i["records_read"] for i in report["inputs"] if i["record_type"]} == read
    rejected = sum(i.get("records_rejected", 0) for i in report["inputs"])
    # 20 planted bad rows of the sessions, vitals, scales, screenings and enrollments, and one in
    # each of the roster, interventions, problems, profiles, pregnancy tests, adverse events,
    # treatment reviews and signed consents (none in the consent forms)
    assert rejected == sum(i.get("records_rejected", 0) for i in canonical_report["inputs"]) == 28
    for type_name, (field, texts) in ONE_REJECTED.items():
        for name, got in (("canonical", canonical_report), (form, report)):
            reasons = [r["reason"] for r in got["rejected"] if r["record_type"] == type_name]
            assert len(reasons) == 1 and reasons[0].startswith(field) and texts[name] in reasons[0], \
                (name, type_name, reasons)
    if form == "fhir":  # every Patient carries its registration (REG-0066's twice): none skipped or filtered
        patients = [i for i in report["inputs"] if i["path"].endswith("Patient.ndjson")]
        assert [(i["record_type"], i["records_read"], i["skipped"], i["filtered"]) for i in patients] == [
            ("profile", read["profile"], 0, 0)]


def test_vendor_datetimes_are_the_canonical_instants() -> None:
    """The vendor's local US times denote the canonical instants (spot check on the infusions)."""
    with open(SAMPLES / "sessions.csv", newline="", encoding="utf-8") as fh:
        canonical = {r["session_id"]: r for r in csv.DictReader(fh) if r.get("session_start")}
    with open(SAMPLES / "vendor" / "Infusions.csv", newline="", encoding="cp1252") as fh:
        rows = list(csv.DictReader(fh, delimiter=";"))
    tz = __import__("zoneinfo").ZoneInfo("America/Los_Angeles")
    for row in rows[:200]:
        local = dt.datetime.strptime(row["Arrived"], "%m/%d/%Y %I:%M %p").replace(tzinfo=tz)
        assert local == dt.datetime.fromisoformat(canonical[row["Encounter CSN"]]["session_start"])
