"""The Markdown report: GitHub-flavoured tables, every record value escaped as plain text."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any, TextIO

from engine.reporters.common import compared_text, period, vs_last
from engine.reporters.html_report import evidence, identifiers, interval, outcome, rate, source, target
from engine.results import Finding, Report, RuleResult

MAX_FINDINGS = 20
# Backslash-escaped: emphasis, code, links, images, strikethrough, table cells, headings, escapes.
_ESCAPED = frozenset("\\`*_[]|~!#")
# As entities, so no tag (<script>, <img ...>) and no entity of the value's own survives as markup.
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# GitHub turns bare "http://...", "www...." and "mailto:..." into links (the autolink extension);
# an escaped ":" or "." stops it and renders the same text. (Bare e-mail addresses still become
# mailto: links showing their own text; nothing short of changing the text prevents that.)
_AUTOLINK = re.compile(r"(?i)(://|www\.|\b(?:mailto|xmpp):)")


def md(value: Any) -> str:
    """``value`` as inline Markdown that renders as the literal text, on one line."""
    text = "—" if value is None else str(value)
    out = []
    for ch in text:
        if ch in _ESCAPED:
            out.append("\\" + ch)
        elif ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch == "@":  # a word joiner after it: "@org/team" in a record must not notify anyone on GitHub
            out.append("@\u2060")
        elif ch in "\t\n\r\v\f\u2028\u2029\x85":
            out.append(" ")  # a newline would end the table row or the paragraph
        elif unicodedata.category(ch) == "Cc" or ch in _BIDI:
            out.append(f"\\\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return _AUTOLINK.sub(_unlink, "".join(out))


def _unlink(match: re.Match[str]) -> str:
    """The matched link start with its ":" (or "www"'s ".") escaped."""
    found = match.group(0)
    return "\\" + found if found == "://" else found[:-1] + "\\" + found[-1]


def table(header: list[str], rows: Iterable[list[Any]], right: frozenset[int] = frozenset()) -> list[str]:
    """A GFM table; header cells are ours, body cells are escaped values."""
    align = ["---:" if i in right else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines.extend("| " + " | ".join(md(cell) for cell in row) + " |" for row in rows)
    return lines


RULE_COLUMNS = ["Rule", "Title", "Severity", "Source", "Applicable (N)", "Passed", "Failed", "Patients affected",
                "Waived", "Not evaluable", "Compliance (95% CI)", "Target", "Status"]


def _compliance(rule: RuleResult) -> str:
    ci = interval(rule.ci95)
    return rate(rule.compliance_rate) + (f" ({ci})" if ci else "")


def _header(report: Report) -> list[str]:
    summary = report.summary
    lines = ["# Protocol compliance audit", "",
             f"- **Audit period:** {md(period(report))}",
             f"- **As of:** {md(report.as_of)}",
             f"- **Tool:** {md(report.tool_name)} {md(report.tool_version)}",
             f"- **Patient identifiers:** {md(identifiers(report))}",
             f"- **Records:** {summary.records_read} read, {summary.records_judged} judged, "
             f"{summary.records_rejected} rejected" + _outside(summary.records_outside_period),
             "", "## Rule packs", ""]
    lines += table(["Pack", "Title", "Version", "SHA-256"],
                    ([p.id, p.title or "", p.version, p.sha256] for p in report.packs))
    lines += ["", "## Inputs", ""]
    # with a period, the records read as history only, not judged
    outside = ["Outside period"] if report.period_given else []
    lines += table(["File", "Record type", "SHA-256", "Read", "Judged", "Rejected", *outside],
                   ([i.path, i.record_type, i.sha256, i.records_read, i.records_judged, i.records_rejected,
                     *([i.outside_period or 0] if outside else [])] for i in report.inputs), frozenset({3, 4, 5, 6}))
    read = [i for i in report.inputs if i.reading]
    if read:
        lines += ["", "Read through source maps:", ""]
        lines += [f"- {md(i.path)}{_typed(i.record_type)}: {md(i.reading)}" for i in read]
    return lines


def _typed(record_type: str | None) -> str:
    return f" ({md(record_type)})" if record_type else ""


def _rules(report: Report) -> list[str]:
    summary = report.summary
    counts = ", ".join(f"{summary.by_severity.get(s, 0)} {s}" for s in summary.by_severity)
    waived = sum(1 for f in report.findings if f.outcome == "waived")
    lines = ["", "## Results against each standard", "",
             f"{summary.findings} findings: {md(counts)} (unwaived), {waived} waived. "
             f"Exit threshold: {md(summary.exit_threshold)}.", ""]
    compared = compared_text(report)
    if compared is not None:
        lines += [md(compared[:1].upper() + compared[1:]) + ".", ""]
    last = ["vs last audit"] if report.archived else []
    rows = ([r.id, r.title + (f" (counts {r.counted}, each once)" if r.per else ""), r.severity, r.cite or "—",
             r.applicable, r.passed, r.failed,
             "—" if r.patients_affected is None else r.patients_affected, r.waived,
             r.not_evaluable, _compliance(r), target(r.target), r.status or "—",
             *([vs_last(report, r.pack, r.id)] if last else [])] for r in report.rules)
    lines += table([*RULE_COLUMNS, *last], rows, frozenset(range(4, 12)))
    versioned = [r for r in report.rules if r.versions]
    if versioned:  # rules with effective dates: each record was judged by the version in force on its day
        lines += ["", "Rule versions (effective dates):", ""]
        lines += table(["Rule", "In force", "Severity", "Applicable (N)", "Passed", "Failed", "Waived",
                        "Not evaluable", "Compliance"],
                       ([r.id, v.window, v.severity, v.applicable,
                         v.passed, v.failed, v.waived, v.not_evaluable, rate(v.compliance_rate)]
                        for r in versioned for v in r.versions or ()), frozenset(range(3, 9)))
    return lines


def _strata(report: Report) -> list[str]:
    strata = report.strata
    if strata is None:
        return []
    header = ["Rule", *(md(key) for key in strata.by), "Applicable (N)", "Passed", "Failed", "Not evaluable",
              "Compliance"]
    rows = ([row.rule, *(row.stratum.get(key) for key in strata.by), row.applicable, row.passed, row.failed,
             row.not_evaluable, rate(row.compliance_rate)] for row in strata.rows)
    first = len(strata.by) + 1
    return ["", f"## Results by {md(', '.join(strata.by))}", "",
            *table(header, rows, frozenset(range(first, first + 5)))]


FINDING_COLUMNS = ["Severity", "Outcome", "Record", "Patient", "Time", "Message", "Evidence", "Source"]


def _findings(report: Report, max_findings: int) -> list[str]:
    lines = ["", "## Findings"]
    if not report.findings:
        return [*lines, "", "No findings."]
    # per rule, its count and the first rows it shows, open failures first so a rule's waived
    # findings do not crowd them out; the rest are counted, not held (they may be spilled)
    grouped: dict[tuple[str, str], tuple[list[Finding], list[Finding], list[int]]] = {}
    for finding in report.findings:
        unwaived, waived, count = grouped.setdefault((finding.pack, finding.rule), ([], [], [0]))
        count[0] += 1
        kept = waived if finding.outcome == "waived" else unwaived
        if len(kept) < max_findings:
            kept.append(finding)
    titles = {(r.pack, r.id): r.title for r in report.rules}
    for (pack, rule), (unwaived, waived, (total,)) in grouped.items():
        title = titles.get((pack, rule))
        heading = f"{md(rule)} — {md(title)}" if title else md(rule)
        lines += ["", f"### {heading} ({total} finding{'' if total == 1 else 's'})", ""]
        shown = (unwaived + waived)[:max_findings]
        rows = ([f.severity, outcome(f), f.record_key, f.patient, f.time, f.message, evidence(f, "; "),
                 source(f.source)] for f in shown)
        lines += table(FINDING_COLUMNS, rows)
        if total > max_findings:
            lines += ["", f"(+{total - max_findings} more)"]
    return lines


def _data_quality(report: Report, max_rows: int) -> list[str]:
    rejected, not_evaluable = report.rejected, report.not_evaluable
    lines = ["", "## Data quality", "",
             f"{report.summary.records_rejected} rejected, {len(not_evaluable)} not evaluable "
             "(counted apart from non-compliance)."]
    if rejected:
        lines += ["", *table(["Source", "Record type", "Reason"],
                              ([source(r), r.type, r.reason] for r in rejected[:max_rows]))]
        if len(rejected) > max_rows:
            lines += ["", f"(+{len(rejected) - max_rows} more)"]
    missing: dict[tuple[str, str], set[str]] = {}
    for entry in not_evaluable:
        missing.setdefault((entry.pack, entry.rule), set()).update(entry.missing)
    rows = [[r.id, r.not_evaluable, ", ".join(sorted(missing.get((r.pack, r.id), ())))]
            for r in report.rules if r.not_evaluable]
    if rows:
        lines += ["", *table(["Rule", "Not evaluable", "Missing fields"], rows, frozenset({1}))]
    return lines


def render(report: Report, out: TextIO, max_findings: int = MAX_FINDINGS) -> None:
    """Write the report as Markdown, with the first ``max_findings`` findings of each rule
    (and rejected records)."""
    lines = [*_header(report), *_rules(report), *_strata(report), *_findings(report, max_findings),
             *_data_quality(report, max_findings), *_waivers(report)]
    out.write("\n".join(lines) + "\n")


def _waivers(report: Report) -> list[str]:
    if report.waivers is None:
        return []
    return ["", "## Waivers", "", "Applied waivers turned the fails they cover into waived; an expired waiver covers "
            "nothing, and an unused one covered no fail.", "",
            *table(["Waiver", "Rule", "Status", "Records waived", "Expires"],
                   ([w.id, f"{w.pack}/{w.rule}", w.status, w.records_waived, w.expires or "—"] for w in report.waivers),
                   frozenset({3}))]


def _outside(count: int | None) -> str:
    return "" if count is None else f", {count} outside the period (history only)"
