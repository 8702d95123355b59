"""JUnit XML and SARIF 2.1.0 reports of an audit, the SARIF checked against the official schema."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from engine import reporters
from engine.reporters import junit_xml, sarif_log
from engine.results import Report
from tests.helpers import render
from tests.test_html_md_reports import full_report

ROOT = Path(__file__).resolve().parent.parent
# the official schema, kept as test data with its OASIS notice (tests/data/sarif/NOTICE.md)
SARIF_SCHEMA = ROOT / "tests" / "data" / "sarif" / "sarif-schema-2.1.0.json"
AS_OF = "2026-11-26T00:00:00+00:00"


def report_with_waiver() -> dict[str, Any]:
    """The small report, plus a waived finding of a rule with no other finding, a finding without
    patient or time, and an absolute source path."""
    report = copy.deepcopy(full_report())
    cons = next(r for r in report["rules"] if r["id"] == "CONS-04")
    cons.update(failed=0, waived=1)
    report["findings"].append({
        "rule": "CONS-04", "pack": cons["pack"], "severity": cons["severity"], "outcome": "waived",
        "record_type": "session", "record_key": "S-0099", "patient": None, "time": None,
        "source": {"path": "/srv/exports/sessions 2026.csv", "line": 100}, "message": "consent not on file",
        "evidence": {"consent_signed_date": None}, "waiver": {"reason": "consent on paper, scanned late",
                                                             "approver": "medical director"}})
    return report


@pytest.fixture(scope="module")
def sample_reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The samples audited once with both packs, as JSON, JUnit and SARIF."""
    folder = tmp_path_factory.mktemp("ci-reports")
    paths = {ext: folder / f"report.{ext}" for ext in ("json", "xml", "sarif")}
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems",
                                       *sorted(str(p) for p in (ROOT / "samples").glob("*.csv")), "--as-of", AS_OF,
                                       *[arg for path in paths.values() for arg in ("-o", str(path))]])
    assert result.exit_code == 1, result.output
    return {"json": json.loads(paths["json"].read_text(encoding="utf-8")),
            "xml": ET.parse(paths["xml"]).getroot(),
            "sarif": json.loads(paths["sarif"].read_text(encoding="utf-8"))}


def test_formats_are_chosen_by_extension() -> None:
    assert reporters.for_path("out/report.xml") is junit_xml.render
    assert reporters.for_path("report.SARIF") is sarif_log.render
    assert reporters.for_path("report.sarif.json") is sarif_log.render
    assert reporters.for_path("report.json") is reporters.get("json")


# -- JUnit ---------------------------------------------------------------------------------

def test_junit_of_the_samples_agrees_with_the_json(sample_reports: dict[str, Any]) -> None:
    report, root = sample_reports["json"], sample_reports["xml"]
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [p["id"] for p in report["packs"]]
    failing = {(f["pack"], f["rule"]) for f in report["findings"] if f["outcome"] == "fail"}
    for suite in suites:
        rules = [r for r in report["rules"] if r["pack"] == suite.get("name")]
        cases = suite.findall("testcase")
        assert suite.get("tests") == str(len(rules)) == str(len(cases))
        assert suite.get("failures") == str(sum((r["pack"], r["id"]) in failing for r in rules))
        for rule, case in zip(rules, cases, strict=True):
            assert case.get("name", "").startswith(f"{rule['id']}: ")
            failure = case.find("failure")
            assert (failure is not None) == ((rule["pack"], rule["id"]) in failing)
            if failure is not None:
                lines = (failure.text or "").splitlines()
                keys = [f["record_key"] for f in report["findings"]
                        if (f["pack"], f["rule"]) == (rule["pack"], rule["id"]) and f["outcome"] == "fail"]
                assert len(lines) == len(keys) == rule["failed"]
                assert [line.split(" ")[1] for line in lines] == keys
                assert failure.get("type") == rule["severity"]
    assert root.get("tests") == str(len(report["rules"]))
    assert root.get("failures") == str(len(failing))


def test_junit_waived_rule_is_skipped_with_the_reason() -> None:
    root = ET.fromstring(render("junit", report_with_waiver()))
    (case,) = [c for c in root.iter("testcase") if c.get("name", "").startswith("CONS-04")]
    skipped = case.find("skipped")
    assert skipped is not None and case.find("failure") is None
    assert skipped.get("message") == "1 waived: consent on paper, scanned late"
    # and the rules whose findings are all waived are the skipped ones, no other
    report = report_with_waiver()
    only_waived = {f["rule"] for f in report["findings"]} - {f["rule"] for f in report["findings"]
                                                              if f["outcome"] == "fail"}
    assert {c.get("name", "").split(":")[0] for c in root.iter("testcase") if c.find("skipped") is not None} == \
        only_waived
    assert root.get("skipped") == str(len(only_waived))
    assert "waived 1" in (case.findtext("system-out") or "")


def test_junit_keeps_hostile_values_as_text() -> None:
    report = copy.deepcopy(full_report())
    hostile = 'dose \x00\x1b[2J ]]> <script>alert(1)</script> & "quoted" \u202eexe.txt'
    report["findings"][0]["message"] = hostile
    report["rules"][0]["title"] = hostile
    text = render("junit", report)
    root = ET.fromstring(text)  # parses: no raw control character reached the XML
    assert "<script>" not in text and "\x1b" not in text and "\u202e" not in text
    failure = next(root.iter("failure"))
    assert 'dose \\x00\\x1b[2J ]]> <script>alert(1)</script> & "quoted" \\u202eexe.txt' in (failure.text or "")
    assert next(root.iter("testcase")).get("name", "").endswith("\\u202eexe.txt")


def test_junit_keeps_one_line_per_finding_and_titles_whole() -> None:
    """A line break inside a record value cannot split a finding's line, a carriage return (which
    any parser reads back as a line feed) is shown as an escape, and a title keeps its own ending."""
    report = copy.deepcopy(full_report())
    report["findings"][0]["message"] = "line one\nline two\r\nend"
    report["rules"][0]["title"] = "Dose checked:"
    root = ET.fromstring(render("junit", report))
    failure = next(root.iter("failure"))
    rule = report["rules"][0]
    assert len((failure.text or "").splitlines()) == rule["failed"]
    assert "line one\\nline two\\x0d\\nend" in (failure.text or "")
    assert next(root.iter("testcase")).get("name") == f"{rule['id']}: Dose checked:"


def test_junit_is_deterministic() -> None:
    assert render("junit", report_with_waiver()) == render("junit", report_with_waiver())


# -- SARIF ---------------------------------------------------------------------------------

def test_sarif_of_the_samples(sample_reports: dict[str, Any]) -> None:
    report, log = sample_reports["json"], sample_reports["sarif"]
    (run,) = log["runs"]
    rules = run["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert ids == [f"{r['pack']}/{r['id']}" for r in report["rules"]] and len(set(ids)) == len(ids)
    results = run["results"]
    assert len(results) == len(report["findings"])
    for finding, result in zip(report["findings"], results, strict=True):
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"] == f"{finding['pack']}/{finding['rule']}"
        assert result["level"] == sarif_log.LEVELS[finding["severity"]]
        location = result["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == Path(finding["source"]["path"]).as_uri()  # absolute here
        assert location["region"]["startLine"] == finding["source"]["line"]
        assert result["properties"]["record_key"] == finding["record_key"]
    assert Counter(r["level"] for r in results) == Counter(
        sarif_log.LEVELS[s] for f in report["findings"] for s in [f["severity"]])
    assert len({r["partialFingerprints"]["protocolAuditRecord/v1"] for r in results}) == len(results)
    assert [a["hashes"]["sha-256"] for a in run["artifacts"]] == [i["sha256"] for i in report["inputs"]]


def test_sarif_waiver_and_paths() -> None:
    log = sarif_log.sarif(Report.from_json(report_with_waiver()))
    (run,) = log["runs"]
    waived = run["results"][-1]
    assert waived["suppressions"] == [{"kind": "external", "justification": "consent on paper, scanned late"}]
    assert waived["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "file:///srv/exports/sessions%202026.csv"
    assert waived["properties"]["patient"] is None and waived["properties"]["time"] is None
    assert sarif_log.uri("exports/q1 2026/sessions.csv") == "exports/q1%202026/sessions.csv"
    report = report_with_waiver()
    assert [("suppressions" in r) for r in run["results"]] == [f["outcome"] == "waived" for f in report["findings"]]


def _validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install '.[test]')")
    schema = json.loads(SARIF_SCHEMA.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def test_sarif_validates_against_the_official_schema(sample_reports: dict[str, Any]) -> None:
    validator = _validator()
    for log in (sample_reports["sarif"], sarif_log.sarif(Report.from_json(report_with_waiver()))):
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(log)]
        assert errors == []


def test_the_schema_check_can_fail() -> None:
    """The validation above is not vacuous: a result without a message, or a bad level, is refused."""
    validator = _validator()
    log = sarif_log.sarif(Report.from_json(report_with_waiver()))
    del log["runs"][0]["results"][0]["message"]
    log["runs"][0]["results"][1]["level"] = "fatal"
    messages = [e.message for e in validator.iter_errors(log)]
    assert any("'message' is a required property" in m for m in messages)
    assert any("'fatal' is not one of" in m for m in messages)
