"""Identifying values never reach a report raw unless --reveal-identifiers: findings, messages,
evidence, strata, rejection reasons, not-evaluable entries, record keys, history evidence, explain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine.commands.explain import explain
from engine.errors import PackError
from engine.packs import load_packs
from engine.privacy import Privacy, Pseudonymiser, identifying_fields

# Every identifier in the export carries a marker no pseudonym, count or date can contain.
PACK = """\
pack: clinic
version: "1"
title: privacy fixture
timezone: UTC
records:
  session:
    key: session_id
    patient: patient_id
    time: start
    fields:
      session_id: {type: string, phi: true}
      patient_id: string
      start: datetime
      mrn: {type: integer, phi: true}
      dose: number
      site: string
      note: {type: string, phi: true}
derive:
  tagged: coalesce(note, site)
rules:
  - id: DOSE
    title: dose at most 10
    severity: major
    for: session
    require: {dose: {at_most: 10}}
    message: "dose {dose} for MRN {mrn}, patient {patient_id}, session {session_id}, note {tagged}"
  - id: ONCE
    title: one session a week
    severity: major
    for: session
    require:
      count: {of: session, within: {before: 7d}, at_most: 0}
    message: "repeat session {session_id}"
  - id: SITE
    title: site A sessions are dosed
    severity: minor
    for: session
    when: {site: A}
    require: {dose: {present: true}}
"""

ROWS = [
    # session_id, patient_id, start, mrn, dose, site, note
    ("SECRETKEY01", "SECRETPAT01", "2026-01-05 09:00", "71000001", "12", "A", "SECRETNOTE01"),
    ("SECRETKEY02", "SECRETPAT01", "2026-01-06 09:00", "71000001", "5", "", ""),
    ("SECRETKEY03", "SECRETPAT02", "2026-01-07 09:00", "SECRETMRN03", "5", "A", ""),  # mrn not an integer
    ("SECRETKEY02", "SECRETPAT02", "2026-01-08 09:00", "71000002", "5", "A", ""),     # duplicate key
    ("SECRETKEY05", "SECRETPAT03", "2026-01-09 09:00", "71000003", "15", "B", ""),
]
MARKERS = ("SECRET", "71000001", "71000002", "71000003")
FORMATS = ("json", "csv", "html", "md", "txt", "xml", "sarif")


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    (tmp_path / "clinic.yaml").write_text(PACK)
    lines = ["session_id,patient_id,start,mrn,dose,site,note", *(",".join(row) for row in ROWS)]
    (tmp_path / "sessions.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def audit(folder: Path, *extra: str) -> tuple[dict[str, str], str]:
    outputs = [folder / f"report.{ext}" for ext in FORMATS]
    result = CliRunner().invoke(main, ["audit", "--pack", str(folder / "clinic.yaml"), str(folder / "sessions.csv"),
                                       "--as-of", "2026-02-01", "--group-by", "patient_id", "--group-by", "mrn",
                                       "--group-by", "tagged", *(a for out in outputs for a in ("-o", str(out))),
                                       *extra])
    assert result.exit_code == 1, result.output
    return {out.suffix: out.read_text(encoding="utf-8") for out in outputs}, result.output


def test_no_identifier_reaches_any_report_format_by_default(export: Path) -> None:
    written, terminal = audit(export)
    for name, text in {**written, "terminal": terminal}.items():
        leaked = [marker for marker in MARKERS if marker in text]
        assert not leaked, f"{name} shows {leaked}"
    report = json.loads(written[".json"])
    # the report still says what an officer needs: which records, why, with pseudonyms for people
    assert report["summary"]["records_rejected"] == 2
    reasons = [r["reason"] for r in report["rejected"]]
    assert any(reason.startswith("mrn: phi-") and reason.endswith("(pseudonymised) is not an integer")
               for reason in reasons), reasons
    assert any(reason.startswith("duplicate session_id phi-") for reason in reasons), reasons
    dose = next(f for f in report["findings"] if f["rule"] == "DOSE")
    assert dose["record_key"].startswith("phi-") and dose["patient"].startswith("pt-")
    assert f"patient {dose['patient']}" in dose["message"] and "MRN phi-" in dose["message"]
    assert "note phi-" in dose["message"]  # derived from a phi field: identifying too
    assert set(dose["evidence"]) == {"dose"}
    repeat = next(f for f in report["findings"] if f["rule"] == "ONCE")
    (history,) = [value for key, value in repeat["evidence"].items() if key.startswith("count")]
    assert history["count"] == 1 and history["matched"][0].startswith("phi-")
    assert all(n["record_key"].startswith("phi-") for n in report["not_evaluable"])
    strata = [row["stratum"] for row in report["strata"]["rows"]]
    assert {s["patient_id"][:3] for s in strata} == {"pt-"}
    assert {s["mrn"][:4] for s in strata} == {"phi-"}


def test_reveal_identifiers_shows_them_everywhere(export: Path) -> None:
    written, _ = audit(export, "--reveal-identifiers")
    report = json.loads(written[".json"])
    assert 'mrn: "SECRETMRN03" is not an integer' in [r["reason"] for r in report["rejected"]]
    dose = next(f for f in report["findings"] if f["rule"] == "DOSE")
    assert dose["record_key"] == "SECRETKEY01" and dose["patient"] == "SECRETPAT01"
    assert dose["message"] == ("dose 12 for MRN 71000001, patient SECRETPAT01, session SECRETKEY01, "
                               "note SECRETNOTE01")
    for text in written.values():
        assert "SECRETPAT01" in text


def test_explain_shows_pseudonyms_and_finds_a_record_by_its_pseudonym(export: Path) -> None:
    packs = load_packs([str(export / "clinic.yaml")])
    pseudonymise = Pseudonymiser(b"test-key-not-a-secret-0123456789", "test")
    key = pseudonymise("SECRETKEY01", "phi")
    for asked in ("SECRETKEY01", key):
        lines, agrees = explain(packs, "DOSE", asked, [str(export / "sessions.csv")], pseudonymise)
        text = "\n".join(lines)
        assert agrees and key in text
        assert not [marker for marker in MARKERS if marker in text], text
    lines, _ = explain(packs, "ONCE", "SECRETKEY02", [str(export / "sessions.csv")], pseudonymise)
    assert key in "\n".join(lines)  # the matched earlier session, named by its pseudonym


def test_identifying_fields_follow_derivations() -> None:
    (pack,) = load_packs_from_text(PACK)
    assert identifying_fields(pack.records["session"]) == {"session_id", "patient_id", "mrn", "note", "tagged"}
    privacy = Privacy(pack.records, None)
    assert privacy.reveals and privacy.value("session", "mrn", 7) == 7


def load_packs_from_text(text: str) -> list:
    from engine.language.loader import load_yaml
    from engine.language.schema import build_pack
    return [build_pack(load_yaml(text, "clinic.yaml"), "clinic.yaml", text.encode())]


def test_diff_matches_records_whose_keys_are_pseudonymised(export: Path) -> None:
    head = export / "head" / "clinic.yaml"
    head.parent.mkdir()
    head.write_text(PACK.replace("{dose: {at_most: 10}}", "{dose: {at_most: 12}}"))
    out = export / "diff.json"
    result = CliRunner().invoke(main, ["diff", "--base", str(export / "clinic.yaml"), "--head", str(head),
                                       str(export / "sessions.csv"), "--as-of", "2026-02-01", "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert not [marker for marker in MARKERS if marker in text]
    (dose,) = [rule for rule in json.loads(text)["rules"] if rule["id"] == "DOSE"]
    # the session at 12 is no longer flagged; the one at 15 stays flagged and is in neither list
    assert [r["record_key"][:4] for r in dose["no_longer_flagged"]] == ["phi-"]
    assert dose["newly_flagged"] == []


def test_a_time_field_marked_phi_is_a_pack_problem() -> None:
    # reports show record times everywhere (findings, period, months, windows): no gate can hide them
    text = PACK.replace("      start: datetime\n", "      start: {type: datetime, phi: true}\n")
    with pytest.raises(PackError) as caught:
        load_packs_from_text(text)
    assert [str(p) for p in caught.value.problems] == [
        'clinic.yaml:9:11: time field "start" is marked phi, but every report shows record times (findings, '
        "the period, months): choose a time field that is not phi"]
