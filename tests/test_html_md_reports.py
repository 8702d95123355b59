"""HTML and Markdown reports: golden files, escaping of hostile record values, self-containment."""

from __future__ import annotations

import base64
import copy
import csv
import functools
import hashlib
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from engine import reporters
from engine.reporters import csv_report, html_report, md_report
from engine.results import Report
from tests.helpers import check_golden, render

GOLDEN = Path(__file__).parent / "golden" / "reporters"
PACK = "ketamine-iv"


def _rule(rule_id: str, severity: str, title: str, counts: tuple[int, int, int, int, int],
          rate: float | None, target: float, ci95: list[float] | None, status: str) -> dict[str, Any]:
    applicable, passed, failed, waived, not_evaluable = counts
    return {"id": rule_id, "pack": PACK, "title": title, "severity": severity, "for": "session",
            "applicable": applicable, "passed": passed, "failed": failed, "waived": waived,
            "not_evaluable": not_evaluable, "not_applicable": 0, "compliance_rate": rate,
            "cite": "Clinic SOP KET-IV-003 rev 4", "rationale": "Protocol requirement.",
            "target": target, "ci95": ci95, "status": status}


def _finding(rule: str, severity: str, key: str, patient: str | None, time: str | None, line: int,
             message: str, evidence: Any, outcome: str = "fail") -> dict[str, Any]:
    return {"rule": rule, "pack": PACK, "severity": severity, "outcome": outcome, "record_type": "session",
            "record_key": key, "patient": patient, "time": time,
            "source": {"path": "samples/sessions.csv", "line": line}, "message": message, "evidence": evidence}


def _month(rule: str, month: str, passed: int, failed: int) -> dict[str, Any]:
    decided = passed + failed
    return {"rule": rule, "pack": PACK, "month": month, "passed": passed, "failed": failed,
            "compliance_rate": round(passed / decided, 4) if decided else None}


def _stratum(rule: str, site: str, month: str, counts: tuple[int, int, int, int]) -> dict[str, Any]:
    applicable, passed, failed, not_evaluable = counts
    decided = passed + failed
    return {"rule": rule, "pack": PACK, "stratum": {"site_id": site, "month": month},
            "applicable": applicable, "passed": passed, "failed": failed, "not_evaluable": not_evaluable,
            "compliance_rate": round(passed / decided, 4) if decided else None}


def full_report() -> dict[str, Any]:
    """A small report with every key the HTML and Markdown formats show, the lead's new ones too."""
    return {
        "tool": {"name": "protocol-audit", "version": "1.0.0"},
        "as_of": "2026-11-26T00:00:00+00:00",
        "period": {"first": "2026-02-27T08:00:00-08:00", "last": "2026-04-02T16:30:00-07:00"},
        "inputs": [{"path": "samples/sessions.csv", "record_type": "session", "sha256": "ab12" * 16,
                    "records_read": 40, "records_judged": 39, "records_rejected": 1}],
        "packs": [{"id": PACK, "version": "2026.11", "title": "Ketamine IV infusion protocol",
                   "path": "rules/ketamine-iv.yaml", "sha256": "cd34" * 16}],
        "pseudonymised": True,
        "identifiers": "pseudonymised with a keyed hash (key from PROTOCOL_AUDIT_KEY)",
        "summary": {"records_read": 40, "records_judged": 39, "records_rejected": 1, "findings": 5,
                    "by_severity": {"critical": 1, "major": 3, "minor": 0, "info": 0},
                    "exit_threshold": "major"},
        "rules": [
            _rule("DOSE-01", "major", "IV dose within 0.1-1.0 mg/kg", (30, 27, 3, 0, 1), 0.9, 0.95,
                  [0.7438, 0.9654], "not met"),
            _rule("ESC-02", "critical", "Escort present at discharge", (6, 5, 1, 0, 0), 0.8333, 1.0,
                  [0.4365, 0.9699], "too few records"),
            _rule("BP-03", "major", "BP recorded at 40 minutes", (39, 38, 0, 1, 0), 1.0, 0.95,
                  [0.9082, 1.0], "met"),
            _rule("CONS-04", "minor", "Consent signed before the session", (0, 0, 0, 0, 1), None, 0.9,
                  None, "no data"),
        ],
        "by_month": [
            _month("DOSE-01", "2026-02", 3, 0), _month("DOSE-01", "2026-03", 14, 3),
            _month("DOSE-01", "2026-04", 10, 0),
            _month("ESC-02", "2026-02", 0, 0), _month("ESC-02", "2026-03", 3, 1),
            _month("ESC-02", "2026-04", 2, 0),
            _month("BP-03", "2026-03", 20, 0), _month("BP-03", "2026-04", 18, 0),
        ],
        "strata": {"by": ["site_id", "month"], "rows": [
            _stratum("DOSE-01", "SITE-01", "2026-03", (12, 10, 2, 1)),
            _stratum("DOSE-01", "SITE-02", "2026-03", (5, 4, 1, 0)),
            _stratum("ESC-02", "SITE-01", "2026-03", (4, 3, 1, 0)),
        ]},
        "findings": [
            _finding("DOSE-01", "major", "S-0042", "p-7f3a", "2026-03-02T09:15:00-08:00", 43,
                     "dose 1.3 mg/kg outside 0.1-1.0", {"dose_mg_per_kg": 1.3, "route": "IV"}),
            _finding("DOSE-01", "major", "S-0043", "p-91c2", "2026-03-03T10:00:00-08:00", 44,
                     "dose 1.25 mg/kg outside 0.1-1.0", {"route": "IV", "dose_mg_per_kg": 1.25}),
            _finding("DOSE-01", "major", "S-0047", "p-91c2", "2026-03-20T10:00:00-07:00", 48,
                     "dose 0.05 mg/kg outside 0.1-1.0", {"dose_mg_per_kg": 0.05, "route": "IV"}),
            # A history condition's evidence is nested; no time sorts last.
            _finding("ESC-02", "critical", "S-0044", "p-0c55", None, 45, "no escort documented",
                     {"discharge": {"escort_present": False}, "earlier": [{"session": "S-0031"}]}),
            _finding("BP-03", "major", "S-0045", None, "2026-03-04T08:00:00-08:00", 46,
                     "no BP within 35-45 min", {"bp_times": []}, outcome="waived"),
        ],
        "not_evaluable": [
            {"rule": "CONS-04", "pack": PACK, "record_type": "session", "record_key": "S-0050",
             "missing": ["consent_signed_at"], "source": {"path": "samples/sessions.csv", "line": 51}},
            {"rule": "DOSE-01", "pack": PACK, "record_type": "session", "record_key": "S-0051",
             "missing": ["weight_kg", "route"], "source": {"path": "samples/sessions.csv", "line": 52}},
        ],
        "rejected": [{"source": {"path": "samples/sessions.csv", "line": 88}, "record_type": "session",
                      "reason": 'dose_mg: "12,5" is not a number'}],
    }


@pytest.mark.parametrize("name", ["html", "md"])
def test_golden(name: str, request: pytest.FixtureRequest) -> None:
    check_golden(render(name, full_report()).encode("utf-8"), GOLDEN / f"full_report.{name}", request)


@pytest.mark.parametrize("name", ["html", "md"])
def test_rerun_is_identical_and_input_untouched(name: str) -> None:
    report = full_report()
    first = render(name, report)
    assert report == full_report()
    assert first == render(name, copy.deepcopy(report))


@pytest.mark.parametrize(("path", "render"), [
    ("r.html", html_report.render), ("R.HTM", html_report.render), ("out/r.md", md_report.render),
], ids=["html", "htm-upper", "md"])
def test_registry(path: str, render: Any) -> None:
    assert reporters.for_path(path) is render
    assert reporters.get(reporters.EXTENSIONS[Path(path).suffix.lower()]) is render


@pytest.mark.parametrize("name", ["html", "md"])
def test_renders_a_report_with_the_newer_values_empty(name: str) -> None:
    report = full_report()
    report.update(period={"first": None, "last": None}, by_month=[], strata=None, identifiers="")
    for rule in report["rules"]:
        rule.update(target=None, ci95=None, status="", cite=None)
    report["packs"][0]["title"] = ""
    text = render(name, report)
    assert "no record times" in text and "pseudonymised" in text
    assert ("site\\_id" if name == "md" else "site_id") not in text


@pytest.mark.parametrize("name", ["html", "md"])
def test_renders_an_audit_with_nothing_in_it(name: str) -> None:
    report = full_report()
    report.update(rules=[], findings=[], not_evaluable=[], rejected=[], by_month=[], strata=None)
    report["summary"].update(findings=0, records_rejected=0)
    assert "No findings." in render(name, report)


class _Page(HTMLParser):
    """Every start tag with its attributes, script bodies, and the page's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)


def _parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def _attr(tags: list[tuple[str, list[tuple[str, str | None]]]], tag: str, name: str) -> list[str | None]:
    return [dict(attrs).get(name) for t, attrs in tags if t == tag]


def _findings_data(page: _Page) -> tuple[str, list[list[Any]]]:
    """The findings data block (``<script type="application/json">``): its raw text and its rows."""
    types = _attr(page.tags, "script", "type")
    assert types == ["application/json", None], types  # the data, then the page's one script
    raw = page.scripts[0]
    return raw, json.loads(raw)


def test_html_is_self_contained_with_one_hashed_script() -> None:
    page = _parse(render("html", full_report()))
    code, _ = html_report.script()
    _findings_data(page)
    assert page.scripts[1:] == [str(code)]
    assert _attr(page.tags, "script", "src") == [None, None]
    digest = base64.b64encode(hashlib.sha256(page.scripts[1].encode("utf-8")).digest()).decode()
    (policy,) = [dict(a)["content"] for t, a in page.tags if t == "meta" and dict(a).get("http-equiv")]
    assert policy is not None and "default-src 'none'" in policy and f"'sha256-{digest}'" in policy
    for tag, attrs in page.tags:
        assert tag not in ("link", "img", "iframe", "object", "embed"), tag
        for name, value in attrs:
            assert name not in ("src", "href") or not value or value.startswith("#"), (tag, name, value)


def test_html_findings_table_hooks() -> None:
    page = _parse(render("html", full_report()))
    ids = [dict(attrs).get("id") for _, attrs in page.tags]
    assert {"filter-rule", "filter-severity", "findings", "finding-count"} <= set(ids)
    _, rows = _findings_data(page)
    # The fields report.js reads by position: rank, severity, rule, outcome, record, patient, time,
    # time sort key, message, evidence, source, source sort key.
    assert [(r[2], r[1], r[0]) for r in rows] == [
        ("DOSE-01", "major", 1), ("DOSE-01", "major", 1), ("DOSE-01", "major", 1), ("ESC-02", "critical", 0),
        ("BP-03", "major", 1)]
    assert rows[0][4:8] == ["S-0042", "p-7f3a", "2026-03-02T09:15:00-08:00", "2026-03-02T17:15:00.000000+00:00"]
    assert rows[0][10:] == ["samples/sessions.csv:43", "samples/sessions.csv:0000000043"]
    assert "5 findings" in "".join(page.text)
    assert _attr(page.tags, "option", "value") == [
        "", "DOSE-01", "ESC-02", "BP-03", "CONS-04", "", "critical", "major", "minor", "info"]


def test_html_action_plan_has_one_empty_row_per_failed_rule() -> None:
    page = render("html", full_report())
    plan = page[page.index('<section id="action-plan"'):]
    plan = plan[:plan.index("</section>")]
    rows = re.findall(r"<tr><td>(\S+) .*?</td><td class=\"num\">(\d+)</td>((?:<td></td>){4})</tr>", plan)
    assert [(rule, count) for rule, count, _ in rows] == [("DOSE-01", "3"), ("ESC-02", "1")]


def test_html_renders_10000_findings_once() -> None:
    report = full_report()
    base = report["findings"][0]
    report["findings"] = [dict(base, record_key=f"S-{i:05d}") for i in range(10_000)]
    page = _parse(render("html", report))
    _, rows = _findings_data(page)
    assert [row[4] for row in rows] == [f"S-{i:05d}" for i in range(10_000)]
    assert "10000 findings" in "".join(page.text)


def test_md_shows_first_findings_per_rule_then_a_count() -> None:
    render_md = functools.partial(md_report.render, max_findings=2)  # as the CLI passes it
    out = io.StringIO()
    render_md(Report.from_json(full_report()), out)
    text = out.getvalue()
    assert text.count("S-0042") == 1 and "S-0047" not in text
    assert "(+1 more)" in text and text.count("more)") == 1


PAYLOADS = ('<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', '=HYPERLINK("http://x","y")',
            "{{ 7*7 }}", "| pipe")
HOSTILE = " ".join(PAYLOADS)


def hostile_report() -> dict[str, Any]:
    """Every record-derived value the formats show, set to markup, formulas and template syntax."""
    report = full_report()
    for finding in report["findings"]:
        finding.update(message=PAYLOADS[2] + " " + HOSTILE, record_key=HOSTILE, patient=HOSTILE)
        finding["evidence"] = {"value": HOSTILE, HOSTILE: [HOSTILE], "nested": {"x": HOSTILE}}
    for rule in report["rules"]:
        rule.update(title=HOSTILE, cite=HOSTILE)
    report["findings"][0]["rule"] = HOSTILE
    report["rejected"][0]["reason"] = HOSTILE
    report["not_evaluable"][0].update(record_key=HOSTILE, missing=[HOSTILE])
    report["inputs"][0]["path"] = HOSTILE
    report["packs"][0]["title"] = HOSTILE
    report["strata"]["rows"][0]["stratum"]["site_id"] = HOSTILE
    report["identifiers"] = HOSTILE
    return report


def test_html_escapes_hostile_values() -> None:
    text = render("html", hostile_report())
    assert "<script>alert" not in text and "<img" not in text
    page = _parse(text)
    raw, rows = _findings_data(page)
    assert page.scripts[1:] == [str(html_report.script()[0])]  # the page's own script, nothing else
    assert "img" not in [tag for tag, _ in page.tags]
    assert not [(tag, name) for tag, attrs in page.tags for name, _ in attrs if name.startswith("on")]
    shown = "".join(page.text)
    assert shown.count(HOSTILE) >= 10  # shown as typed, "{{ 7*7 }}" too
    # The data block holds no character that could end it or open markup, and reads back exact.
    assert not set("<>&") & set(raw)
    assert rows[0][2] == HOSTILE and all(row[4] == row[5] == HOSTILE for row in rows)
    # the evidence cell: a "field: value" line per field, values exact
    assert all({f"value: {HOSTILE}", f"{HOSTILE}: {HOSTILE}"} <= set(row[9].split("\n")) for row in rows)


def _unescaped(text: str, char: str) -> int:
    """How often ``char`` occurs in Markdown ``text`` not escaped (after an even run of backslashes)."""
    return sum(1 for m in re.finditer(r"(\\*)" + re.escape(char), text) if len(m.group(1)) % 2 == 0)


def _cells(row: str) -> int:
    """Table cells in a GFM row: unescaped pipes, less one."""
    return _unescaped(row, "|") - 1


def test_md_escapes_hostile_values() -> None:
    text = render("md", hostile_report())
    for raw in ("<script", "<img", "<", ">", "{{ 7*7 }}"):
        assert raw not in text, raw
    for char in ("[", "]", "`", "*", "_", "~"):  # "**" is only ever the header's own bold labels
        assert _unescaped(text.replace("**", ""), char) == 0, char
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text and "{{ 7\\*7 }}" in text
    lines = text.split("\n")
    tables = 0
    for i, line in enumerate(lines):
        if line.startswith("| ") and not lines[i - 1].startswith("|"):  # a table's header row
            tables += 1
            width = _cells(line)
            body = lines[i:]
            body = body[:next((n for n, row in enumerate(body) if not row.startswith("|")), len(body))]
            assert all(_cells(row) == width for row in body), body
    assert tables >= 8
    assert "://" not in text.replace("\\://", "")  # no bare URL for GitHub to turn into a link
    assert all(line.startswith(("|", "#", "- ", "(+")) or not line or line[0].isalnum() for line in lines)


def test_csv_neutralises_the_hostile_formula() -> None:
    rows = list(csv.DictReader(io.StringIO(render("csv", hostile_report()), newline="")))
    assert rows and all(row["message"].startswith("'=HYPERLINK(") for row in rows)
    for row in rows:
        assert not any(cell.startswith(csv_report.FORMULA_PREFIXES) for cell in row.values())


@pytest.mark.parametrize("name", ["html", "md"])
def test_control_and_bidi_characters_show_as_escapes(name: str) -> None:
    report = full_report()
    report["findings"][0]["message"] = "dose \x1b[2Jcleared \u202egnp.exe\x00"
    text = render(name, report)
    assert "\x1b" not in text and "\u202e" not in text and "\x00" not in text
    assert ("\\\\x1b" if name == "md" else "\\x1b") in text and "\\u202e" in text


@pytest.mark.parametrize(("value", "expected"), [
    ("plain text 1.3 mg", "plain text 1.3 mg"),
    ("a|b", "a\\|b"),
    ("*bold* _it_ `code` [x](y) ~s~ !#", "\\*bold\\* \\_it\\_ \\`code\\` \\[x\\](y) \\~s\\~ \\!\\#"),
    ("<b>&amp;</b>", "&lt;b&gt;&amp;amp;&lt;/b&gt;"),
    ("back\\slash|", "back\\\\slash\\|"),
    ("two\nlines\r\nhere", "two lines  here"),
    ("see https://x.example or www.y.example", "see https\\://x.example or www\\.y.example"),
    (None, "—"),
], ids=["plain", "pipe", "inline-markup", "html", "backslash", "newlines", "autolinks", "none"])
def test_md_escape(value: Any, expected: str) -> None:
    assert md_report.md(value) == expected


def test_panels_scale_to_their_values_and_keep_the_target() -> None:
    """A monthly panel's axis starts at its lowest value or target rounded down to 10% (at most 90%), so a
    drop from 99% to 90% spans the panel instead of a sliver at its top."""
    flat = html_report.panel("R", "p", 0.95, [("2026-01", 99, 1, 0.99), ("2026-02", 90, 10, 0.90)])
    assert (flat["top"], flat["middle"], flat["bottom"]) == ("100%", "95%", "90%")
    ys = [point["y"] for point in flat["points"]]
    assert ys[1] - ys[0] > 60  # 99% near the top, 90% at the bottom (the panel is 72 high)
    assert flat["target_y"] == html_report.PANEL_Y0 + 0.5 * (html_report.PANEL_Y1 - html_report.PANEL_Y0)
    low = html_report.panel("R", "p", 0.95, [("2026-01", 42, 58, 0.42)])
    assert low["bottom"] == "40%" and low["points"][0]["y"] < html_report.PANEL_Y1
    empty = html_report.panel("R", "p", None, [None])
    assert empty["bottom"] == "90%" and empty["points"] == []
