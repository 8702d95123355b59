"""Waivers (SPEC 9): a fail a valid waiver covers is waived (a finding with the waiver, not a fail,
not in the rate, not against --fail-on); expired waivers cover nothing; a bad waivers file is
exit 2 with every problem at its position; every format shows the waivers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from tests.helpers import write

AS_OF = "2026-04-15T12:00:00+00:00"
PACK = """\
pack: w
version: "1"
title: waiver pack
timezone: America/Chicago
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, dose_mg: number, site: string,
             route: {type: enum, values: [IV, IN]}}
rules:
  - id: DOSE
    title: dose at most 10
    severity: major
    for: session
    require: {dose_mg: {at_most: 10}}
  - id: ROUTE
    title: IV dose at most 10
    severity: minor
    for: session
    when: {route: IV}
    require: {dose_mg: {at_most: 10}}
"""
# every session fails DOSE; S5 has no route: ROUTE is not evaluable for it
SESSIONS = """\
session_id,patient_id,session_start,dose_mg,site,route
S1,P1,2026-01-10T09:00:00,50,A,IV
S2,P1,2026-02-10T09:00:00,50,B,IV
S3,P2,2026-03-31T23:30:00,50,A,IV
S4,P2,2026-04-01T00:30:00,50,,IV
S5,P3,2026-02-01T09:00:00,50,A,
"""
ENTRY = "    reason: cuff failure, paper charting\n    approved_by: Medical Director\n    approved_on: 2026-01-05\n"


def audit(tmp_path: Path, waivers: str, *more: str) -> tuple[int, dict, str]:  # type: ignore[type-arg]
    pack = write(tmp_path, "pack.yaml", PACK)
    sessions = write(tmp_path, "sessions.csv", SESSIONS)
    path = write(tmp_path, "waivers.yaml", waivers)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions), "--waivers", str(path),
                                       "--as-of", AS_OF, "--reveal-identifiers", "-o", str(out), *more])
    data = json.loads(out.read_text()) if out.exists() else {}
    return result.exit_code, data, result.stderr


def waived(data: dict) -> list[tuple[str, str, str]]:  # type: ignore[type-arg]
    return sorted((f["rule"], f["record_key"], f["waiver"]["id"]) for f in data["findings"] if f["outcome"] == "waived")


@pytest.mark.parametrize("narrowing, keys", [
    ("", ["S1", "S2", "S3", "S4", "S5"]),
    ("    records: [S1, S3]\n", ["S1", "S3"]),
    ("    patient: P2\n", ["S3", "S4"]),
    ("    where: {site: A}\n", ["S1", "S3", "S5"]),  # S4 has no site: an unknown where covers nothing
    # whole days in the pack's zone: S3 is 23:30 on 31 March in Chicago, S4 00:30 on 1 April
    ("    from: 2026-02-01\n    until: 2026-03-31\n", ["S2", "S3", "S5"]),
    ("    patient: P2\n    until: 2026-03-31\n", ["S3"]),
], ids=["whole-rule", "records", "patient", "where", "days", "together"])
def test_a_waiver_covers_the_fails_its_narrowings_all_hold_for(tmp_path: Path, narrowing: str, keys: list[str]) -> None:
    code, data, err = audit(tmp_path, "waivers:\n  - id: W1\n    rule: DOSE\n" + narrowing + ENTRY)
    assert waived(data) == [("DOSE", key, "W1") for key in keys], err
    [dose] = [r for r in data["rules"] if r["id"] == "DOSE"]
    assert (dose["failed"], dose["waived"], dose["applicable"]) == (5 - len(keys), len(keys), 5)
    assert data["waivers"] == [{"id": "W1", "rule": "DOSE", "pack": "w", "status": "applied",
                                "records_waived": len(keys), "expires": None}]
    finding = next(f for f in data["findings"] if f["outcome"] == "waived")
    assert finding["waiver"] == {"id": "W1", "reason": "cuff failure, paper charting",
                                 "approved_by": "Medical Director", "approved_on": "2026-01-05"}


def test_waived_findings_do_not_count_against_fail_on_or_the_rate(tmp_path: Path) -> None:
    # ROUTE (minor) still fails for S1-S4; with --fail-on major, only DOSE could fail the run
    code, data, _ = audit(tmp_path, "waivers:\n  - id: W1\n    rule: DOSE\n" + ENTRY)
    assert code == 0
    [dose] = [r for r in data["rules"] if r["id"] == "DOSE"]
    assert dose["compliance_rate"] is None and data["summary"]["by_severity"]["major"] == 0
    code, _, _ = audit(tmp_path, "waivers:\n  - id: W1\n    rule: DOSE\n    records: [S1]\n" + ENTRY)
    assert code == 1


def test_not_evaluable_is_never_waived_and_first_waiver_in_file_order_is_credited(tmp_path: Path) -> None:
    code, data, _ = audit(tmp_path, "waivers:\n  - id: W1\n    rule: ROUTE\n    records: [S1]\n" + ENTRY +
                          "  - id: W2\n    rule: ROUTE\n" + ENTRY)
    assert waived(data) == [("ROUTE", "S1", "W1"), ("ROUTE", "S2", "W2"), ("ROUTE", "S3", "W2"),
                            ("ROUTE", "S4", "W2")]
    [route] = [r for r in data["rules"] if r["id"] == "ROUTE"]
    assert (route["not_evaluable"], route["waived"], route["failed"]) == (1, 4, 0)


def test_expired_waivers_cover_nothing_and_unused_ones_are_listed(tmp_path: Path) -> None:
    code, data, _ = audit(tmp_path, "waivers:\n  - id: OLD\n    rule: DOSE\n    expires: 2026-04-14\n" + ENTRY +
                          "  - id: TODAY\n    rule: DOSE\n    records: [S1]\n    expires: 2026-04-15\n" + ENTRY +
                          "  - id: NONE\n    rule: DOSE\n    records: [S9]\n" + ENTRY)
    assert waived(data) == [("DOSE", "S1", "TODAY")]  # valid through its expiry day (as of the run, Chicago)
    assert [(w["id"], w["status"], w["records_waived"]) for w in data["waivers"]] == [
        ("OLD", "expired", 0), ("TODAY", "applied", 1), ("NONE", "unused", 0)]


def test_every_format_shows_the_waivers(tmp_path: Path) -> None:
    outputs = {ext: tmp_path / f"r.{ext}" for ext in ("md", "html", "csv", "sarif", "txt", "xml")}
    args = [arg for path in outputs.values() for arg in ("-o", str(path))]
    code, _, err = audit(tmp_path, "waivers:\n  - id: W-CUFF\n    rule: DOSE\n    records: [S1]\n" + ENTRY +
                         "  - id: W-GONE\n    rule: DOSE\n    expires: 2026-01-31\n" + ENTRY +
                         "  - id: W-IDLE\n    rule: ROUTE\n    records: [S9]\n" + ENTRY, *args)
    assert code == 1, err
    for ext in ("md", "html", "txt"):
        text = outputs[ext].read_text()
        assert "W-CUFF" in text and "W-GONE" in text and "expired" in text and "applied" in text, ext
    rows = outputs["csv"].read_text().splitlines()
    assert rows[0].endswith('"waiver","waiver_reason","waiver_approved_by","waiver_approved_on"')
    assert any('"waived"' in row and '"W-CUFF","cuff failure, paper charting"' in row for row in rows)
    sarif = json.loads(outputs["sarif"].read_text())
    suppressed = [r for r in sarif["runs"][0]["results"] if r.get("suppressions")]
    assert [s["suppressions"][0]["justification"] for s in suppressed] == ["cuff failure, paper charting"]
    # the waivers that waived nothing are listed too: CSV rows after the findings, SARIF and JUnit properties
    assert rows[-2:] == [
        '"DOSE","","waiver expired","","","","","","","waiver W-GONE expired before the run: it covers nothing",'
        '"","","","","W-GONE","","",""',
        '"ROUTE","","waiver unused","","","","","","","waiver W-IDLE covered no fail","","","","","W-IDLE","","",""']
    assert [(w["id"], w["status"]) for w in sarif["runs"][0]["properties"]["waivers"]] == [
        ("W-CUFF", "applied"), ("W-GONE", "expired"), ("W-IDLE", "unused")]
    junit = outputs["xml"].read_text()
    assert '<property name="waiver.W-GONE" value="expired: DOSE, 0 records waived, expires 2026-01-31" />' in junit
    assert '<property name="waiver.W-IDLE" value="unused: ROUTE, 0 records waived, expires never" />' in junit


def test_a_bad_waivers_file_lists_every_problem_at_its_position(tmp_path: Path) -> None:
    text = ("waivers:\n"
            "  - id: W1\n    rule: DOS\n" + ENTRY +                                     # 2-6
            "  - id: W1\n    rule: DOSE\n    where: {sit: A}\n" + ENTRY +                # 7-12
            "    expires: 2025-12-31\n"                                                  # 13
            "  - id: W3\n    rule: DOSE\n    reasn: x\n    approved_on: 2026-02-30\n"    # 14-17
            "    from: 2026-03-01\n    until: 2026-02-01\n")                             # 18-19
    code, _, err = audit(tmp_path, text)
    path = tmp_path / "waivers.yaml"
    assert code == 2
    assert err.splitlines() == [
        f'{path}:3:11: rule "DOS" is not a rule of the packs given (did you mean "DOSE"?)',
        f'{path}:7:9: duplicate waiver id "W1" (first at line 2)',
        f'{path}:9:13: field "sit" is not declared for record type "session" (did you mean "site"?)',
        f"{path}:13:14: expires 2025-12-31 is before approved_on 2026-01-05",
        f'{path}:14:5: waivers[2] is missing "approved_by"',
        f'{path}:14:5: waivers[2] is missing "reason"',
        f'{path}:16:5: unknown key "reasn" in waivers[2] (did you mean "reason"?)',
        f"{path}:17:18: approved_on must be a date (YYYY-MM-DD)",
        f"{path}:19:12: until 2026-02-01 is before from 2026-03-01",
        "protocol-audit: 9 problems in 1 waivers file",
    ]


def test_an_output_naming_the_waivers_file_is_refused(tmp_path: Path) -> None:
    waivers = write(tmp_path, "w.json", json.dumps({"waivers": [{
        "id": "W1", "rule": "DOSE", "reason": "r", "approved_by": "MD", "approved_on": "2026-01-05"}]}))
    before = waivers.read_text()
    code, _, err = audit(tmp_path, "waivers:\n  - id: W2\n    rule: DOSE\n" + ENTRY, "--waivers", str(waivers),
                         "-o", str(waivers))
    assert (code, err) == (2, f"protocol-audit: cannot write {waivers}: it is the waivers file {waivers}\n")
    assert waivers.read_text() == before


def test_validate_checks_a_waivers_file_alone_and_against_its_packs(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK)
    good = write(tmp_path, "good.yaml", "waivers:\n  - id: W1\n    rule: DOSE\n    where: {site: A}\n" + ENTRY)
    bad = write(tmp_path, "bad.yaml", "waivers:\n  - id: W1\n    rule: DOSES\n    where: {sites: A}\n" + ENTRY)
    result = CliRunner().invoke(main, ["validate", str(good)])
    assert (result.exit_code, result.stdout) == (
        0, f"{good}: ok (1 waiver; give its packs too to check its rules and fields)\n")
    result = CliRunner().invoke(main, ["validate", str(pack), str(good)])
    assert result.exit_code == 0 and f"{good}: ok (1 waiver)\n" in result.stdout
    result = CliRunner().invoke(main, ["validate", str(pack), str(bad)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f'{bad}:3:11: rule "DOSES" is not a rule of the packs given (did you mean "DOSE"?)',
        "protocol-audit: 1 problem in 1 waivers file"]
    assert CliRunner().invoke(main, ["validate", str(bad)]).exit_code == 0  # rules and fields need the packs


def test_the_worked_example_of_docs_governance(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "q1.json"
    samples = sorted(str(p) for p in (root / "samples").glob("*.csv"))
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems", *samples,
                                       "--period", "2026-01-01..2026-03-31", "--waivers",
                                       str(root / "samples" / "waivers-2026Q1.yaml"),
                                       "--as-of", "2026-04-10T09:00:00-07:00", "-o", str(out)])
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    assert [(w["id"], w["status"], w["records_waived"]) for w in data["waivers"]] == [
        ("W-2026-003", "applied", 2), ("W-2025-019", "expired", 0)]
    [vit03] = [r for r in data["rules"] if r["id"] == "VIT-03"]
    assert (vit03["passed"], vit03["failed"], vit03["waived"]) == (529, 3, 2)
    assert data["summary"]["records_outside_period"] == 20724  # docs/governance.md says so


def test_a_rule_decided_on_too_few_records_is_not_met_because_the_rest_were_waived(tmp_path: Path) -> None:
    rows = ["S0,P0,2026-01-02T10:00:00,5,A,IV", *(f"S{n},P{n},2026-01-02T10:00:00,50,B,IV" for n in range(1, 13))]
    pack = write(tmp_path, "pack.yaml", PACK)
    sessions = write(tmp_path, "sessions.csv", "session_id,patient_id,session_start,dose_mg,site,route\n" +
                     "\n".join(rows) + "\n")
    waivers = write(tmp_path, "w.yaml", "waivers:\n  - id: W-B\n    rule: DOSE\n    where: {site: B}\n" + ENTRY)
    out = tmp_path / "r.json"
    CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions), "--waivers", str(waivers), "--as-of", AS_OF,
                              "-o", str(out)])
    [dose] = [r for r in json.loads(out.read_text())["rules"] if r["id"] == "DOSE"]
    assert (dose["applicable"], dose["passed"], dose["waived"], dose["status"]) == (13, 1, 12, "too few records")


def test_waived_findings_come_after_open_ones_and_say_which_waiver(tmp_path: Path) -> None:
    md, html = tmp_path / "r.md", tmp_path / "r.html"
    code, _, err = audit(tmp_path, "waivers:\n  - id: W1\n    rule: DOSE\n    records: [S1, S2, S3]\n" + ENTRY,
                         "-o", str(md), "-o", str(html), "--max-findings", "2")
    assert code == 1, err
    section = md.read_text().split("### DOSE")[1].split("###")[0]
    rows = [line for line in section.splitlines() if line.startswith("| major")]
    assert [row.split(" | ")[1] for row in rows] == ["fail", "fail"]  # S4, S5 open; the waived ones follow
    assert "(+3 more)" in section
    said = "waived by W1: cuff failure, paper charting (approved by Medical Director on 2026-01-05)"
    assert said in html.read_text()
    audit(tmp_path, "waivers:\n  - id: W1\n    rule: DOSE\n" + ENTRY, "-o", str(md))
    assert said in md.read_text()


@pytest.mark.parametrize("narrowing, keys", [
    ('    records: ["S1 ", " S2"]\n', ["S1", "S2"]),   # the reader trims cells: so does a waiver
    ('    patient: " P2 "\n', ["S3", "S4"]),
])
def test_identifiers_are_matched_as_the_reader_makes_them(tmp_path: Path, narrowing: str, keys: list[str]) -> None:
    _, data, _ = audit(tmp_path, "waivers:\n  - id: W1\n    rule: DOSE\n" + narrowing + ENTRY)
    assert [key for _, key, _ in waived(data)] == keys


def test_an_integer_key_is_matched_as_a_number(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK.replace("session_id: string", "session_id: integer"))
    sessions = write(tmp_path, "sessions.csv", "session_id,patient_id,session_start,dose_mg,route\n"
                                               "00123,P1,2026-01-10T09:00:00,50,IV\n")
    waivers = write(tmp_path, "w.yaml", 'waivers:\n  - id: W1\n    rule: DOSE\n    records: ["00123"]\n' + ENTRY)
    out = tmp_path / "r.json"
    CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions), "--waivers", str(waivers), "--as-of", AS_OF,
                              "--reveal-identifiers", "-o", str(out)])
    assert waived(json.loads(out.read_text())) == [("DOSE", "123", "W1")]


def test_a_pseudonym_or_a_key_of_the_wrong_type_is_refused_at_its_position(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK.replace("session_id: string", "session_id: integer"))
    waivers = write(tmp_path, "w.yaml", 'waivers:\n  - id: W1\n    rule: DOSE\n    records: ["S-1"]\n'
                                        "    patient: pt-0123456789ab\n" + ENTRY)
    result = CliRunner().invoke(main, ["validate", str(pack), str(waivers)])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[:2] == [
        f'{waivers}:4:15: "S-1" cannot be a session_id of session: is not an integer',
        f'{waivers}:5:14: "pt-0123456789ab" is a pseudonym from a report: give the identifier as it is in the export']


def test_a_column_a_waiver_reads_that_the_export_lacks_stops_the_run(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK)
    sessions = write(tmp_path, "sessions.csv", "session_id,patient_id,session_start,dose_mg,route\n"
                                               "S1,P1,2026-01-10T09:00:00,50,IV\n")
    waivers = write(tmp_path, "w.yaml", "waivers:\n  - id: W1\n    rule: DOSE\n    where: {site: A}\n" + ENTRY)
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions), "--waivers", str(waivers)])
    assert result.exit_code == 2
    assert f'{sessions}: field site (read by waiver W1) has no column "site"' in result.stderr


def test_validate_refuses_a_waiver_id_given_in_two_files(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK)
    one = write(tmp_path, "q1.waivers.yaml", "waivers:\n  - id: W-1\n    rule: DOSE\n" + ENTRY)
    two = write(tmp_path, "q2.waivers.yaml", "waivers:\n  - id: W-2\n    rule: DOSE\n" + ENTRY +
                "  - id: W-1\n    rule: ROUTE\n" + ENTRY)
    result = CliRunner().invoke(main, ["validate", str(pack), str(one), str(two)])
    assert result.exit_code == 2
    assert f'{two}:7:9: duplicate waiver id "W-1" (first at {one}:2)' in result.output


def test_validate_knows_a_json_waivers_file(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK)
    waivers = write(tmp_path, "w.json", json.dumps({"waivers": [
        {"id": "W1", "rule": "DOSE", "reason": "r", "approved_by": "MD", "approved_on": "2026-01-05"}]}))
    result = CliRunner().invoke(main, ["validate", str(pack), str(waivers)])
    assert (result.exit_code, result.stdout.splitlines()[-1]) == (0, f"{waivers}: ok (1 waiver)")


def test_week_dates_and_a_twice_given_file_are_refused(tmp_path: Path) -> None:
    code, _, err = audit(tmp_path, "waivers:\n  - id: W1\n    rule: DOSE\n    expires: 2026-W14-1\n" + ENTRY)
    assert code == 2 and "4:14: expires must be a date (YYYY-MM-DD)" in err
    code, _, err = audit(tmp_path, "waivers:\n  - id: W1\n    rule: DOSE\n" + ENTRY,
                         "--waivers", str(tmp_path / "waivers.yaml"))
    assert code == 2 and "the same waivers file is given twice" in err


def test_strata_add_up_with_waived_findings(tmp_path: Path) -> None:
    _, data, _ = audit(tmp_path, "waivers:\n  - id: W1\n    rule: DOSE\n    records: [S1, S3]\n" + ENTRY,
                       "--group-by", "site")
    [dose] = [r for r in data["rules"] if r["id"] == "DOSE"]
    rows = [row for row in data["strata"]["rows"] if row["rule"] == "DOSE"]
    assert sum(row["applicable"] for row in rows) == dose["applicable"] == 5
    assert sum(row["waived"] for row in rows) == dose["waived"] == 2
