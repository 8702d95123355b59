"""The terminal report: a plain-text summary for a compliance officer, at most 100 columns."""

from __future__ import annotations

import datetime as dt
import heapq
import textwrap
import unicodedata
from collections.abc import Iterable
from typing import Any, TextIO

from engine.language.model import SEVERITIES
from engine.reporters.common import compared_text, period, printable, vs_last
from engine.results import Report

WIDTH = 100
MAX_FINDINGS = 10
MAX_REJECTED = 5


def _clean(value: Any, absent: str = "-") -> str:
    """``value`` as one printable line: record values are untrusted, and an escape sequence in a
    message could rewrite the officer's terminal, a newline break the layout."""
    return printable(value, absent, spaces="\t\n\r")


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _width(text: str) -> int:
    """Columns ``text`` takes on a terminal (wide CJK characters take two)."""
    return sum(_char_width(ch) for ch in text)


def _fit(text: str, width: int, keep_tail: bool = False) -> str:
    """``text`` cut to ``width`` columns with "..." (at the start for paths, whose end matters)."""
    if _width(text) <= width:
        return text
    room, kept = width - 3, []
    for ch in reversed(text) if keep_tail else text:
        room -= _char_width(ch)
        if room < 0:
            break
        kept.append(ch)
    return "..." + "".join(reversed(kept)) if keep_tail else "".join(kept) + "..."


def _pad(text: str, width: int, right: bool = False) -> str:
    fill = " " * max(0, width - _width(text))
    return fill + text if right else text + fill


def _table(rows: list[list[str]], caps: list[int],
           right: frozenset[int] = frozenset()) -> list[str]:
    """Aligned columns, two spaces apart, each cell cut to its column's cap."""
    cells = [[_fit(c, cap) for c, cap in zip(row, caps, strict=True)] for row in rows]
    widths = [max((_width(row[i]) for row in cells), default=0) for i in range(len(caps))]
    return ["  ".join(_pad(cell, widths[i], i in right) for i, cell in enumerate(row)).rstrip()
            for row in cells]


def _rate(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _time_key(time: str | None) -> tuple[int, str]:
    """Sorts by instant across offsets; no time sorts last, an unparsable one by its text."""
    if time is None:
        return (2, "")
    try:
        moment = dt.datetime.fromisoformat(time)
    except ValueError:
        return (1, time)
    if moment.tzinfo is None:  # never the machine's local zone: output must not vary by host
        moment = moment.replace(tzinfo=dt.UTC)
    return (0, moment.astimezone(dt.UTC).isoformat(timespec="microseconds"))


def _header(report: Report) -> list[str]:
    summary = report.summary
    title = f"{report.tool_name} {report.tool_version}  audit as of {report.as_of}"
    lines = [_fit(_clean(title), WIDTH)]
    for pack in report.packs:
        lines.append(_fit(_clean(f"pack     {pack.id} {pack.version}"), WIDTH))
    for inp in report.inputs:
        counts = (f" ({inp.record_type or 'several types'}): {inp.records_read} read, "
                  f"{inp.records_judged} judged, {inp.records_rejected} rejected"
                  + ("" if inp.outside_period is None else f", {inp.outside_period} outside the period"))
        room = WIDTH - 9 - _width(_clean(counts))
        lines.append("input    " + _fit(_clean(inp.path), room, keep_tail=True) + _clean(counts))
        if inp.reading:
            lines.append(_fit("         " + _clean(inp.reading), WIDTH))
    outside = summary.records_outside_period
    beyond = "" if outside is None else f", {outside} outside the period"
    lines.append(f"records  {summary.records_read} read, {summary.records_judged} judged, "
                 f"{summary.records_rejected} rejected{beyond}")
    if report.period_given:  # the period given, then the span of the records judged in it
        given, _, judged = period(report).partition(" (as given; ")
        lines.append(_fit("period   " + _clean(given) + " (as given)", WIDTH))
        lines.append(_fit("         " + _clean(judged.removesuffix(")")), WIDTH))
    lines.append("patients " + ("pseudonymised" if report.pseudonymised
                                else "identifiers as given (not pseudonymised)"))
    return lines


def _count(number: int | None) -> str:
    return "-" if number is None else str(number)


def _rules(report: Report) -> list[str]:
    header = ["rule", "severity", "applicable", "passed", "failed", "patients", "waived", "not evaluable",
              "compliance"]
    rows = [[_clean(r.id), _clean(r.severity), str(r.applicable), str(r.passed),
             str(r.failed), _count(r.patients_affected), str(r.waived), str(r.not_evaluable),
             _rate(r.compliance_rate)] for r in report.rules]
    caps = [24, 8, 10, 8, 8, 8, 8, 13, 10]
    if report.archived:  # the change since the last archived audit, and its new findings
        header.append("vs last audit")
        for row, r in zip(rows, report.rules, strict=True):
            row.append(_clean(vs_last(report, r.pack, r.id, short=True)))
        caps.append(18)
    lines = ["RULES", *_table([header, *rows], caps, frozenset(range(2, 9)))]
    compared = compared_text(report)
    if compared is not None:  # a sentence: wrapped, not cut
        lines += textwrap.wrap(_clean(compared), WIDTH, subsequent_indent="  ")
    for r in report.rules:  # a rule with effective dates: its versions, each with its window
        for v in r.versions or ():
            extra = "".join(f", {n} {what}" for n, what in ((v.waived, "waived"), (v.not_evaluable, "n/e")) if n)
            lines.append(_fit(_clean(f"  {r.id} {v.start or 'start'}..{v.end or 'now'} ({v.severity}): "
                                     f"{v.applicable} applicable, {v.passed} passed, {v.failed} failed{extra}"),
                              WIDTH))
    return lines


def _findings(report: Report) -> list[str]:
    # Waived findings are accepted deviations: they are counted per rule and in the last line,
    # and listed in full in the JSON/CSV reports, but the officer's attention goes to open ones.
    # the first few of every open finding, worst first, without holding them all (they may be spilled)
    unwaived = sum(1 for f in report.findings if f.counts)
    if not unwaived:
        return ["FINDINGS", "none unwaived"]
    shown = heapq.nsmallest(MAX_FINDINGS, (f for f in report.findings if f.counts),
                            key=lambda f: (_severity_rank(f.severity), f.rule, _time_key(f.time), f.record_key))
    rows = [[_clean(f.severity), _clean(f.rule), _clean(f.record_key),
             _clean(f.patient), _clean(f.time, "no time")] for f in shown]
    lines = [f"FINDINGS, worst first ({len(shown)} of {unwaived} unwaived)"]
    indent = " " * 10
    for finding, line in zip(shown, _table(rows, [8, 20, 20, 16, 25]), strict=True):
        lines.append(line)
        lines.append(indent + _fit(_clean(finding.message), WIDTH - len(indent)))
        if finding.missing:
            missing = "not documented: " + ", ".join(finding.missing)
            lines.append(indent + _fit(_clean(missing), WIDTH - len(indent)))
    if unwaived > len(shown):
        lines.append(f"(+{unwaived - len(shown)} more)")
    return lines


def _data_quality(report: Report) -> list[str]:
    rejected = report.rejected
    count = report.summary.records_rejected
    lines = ["DATA QUALITY",
             f"{count} record{'' if count == 1 else 's'} rejected" + (":" if rejected else "")]
    for rej in rejected[:MAX_REJECTED]:
        lines.append("  " + _fit(_clean(f"{rej.path}:{rej.line}: {rej.reason}"), WIDTH - 2))
    if len(rejected) > MAX_REJECTED:
        lines.append(f"  (+{len(rejected) - MAX_REJECTED} more)")
    counted = [r for r in report.rules if r.not_evaluable]
    if not counted:
        return [*lines, "no record was left not evaluable"]
    lines.append("not evaluable (a field the rule's applicability needs is missing; never a pass):")
    missing: dict[str, set[str]] = {}
    for entry in report.not_evaluable:
        missing.setdefault(entry.rule, set()).update(entry.missing)
    rows = [[_clean(r.id), str(r.not_evaluable),
             _clean("missing " + ", ".join(sorted(missing[r.id]))) if r.id in missing else ""]
            for r in counted]
    lines.extend("  " + line for line in _table(rows, [24, 10, 60], frozenset({1})))
    return lines


def _waivers(report: Report) -> list[str]:
    """Each waiver given (--waivers) with its status: expired and unused ones need the director's eye."""
    if report.waivers is None:
        return []
    rows = [[_clean(w.id), _clean(f"{w.pack}/{w.rule}"), w.status, str(w.records_waived), w.expires or "—"]
            for w in report.waivers]
    return ["WAIVERS", *_table([["waiver", "rule", "status", "waived", "expires"], *rows], [20, 30, 8, 7, 10],
                               frozenset({3}))]


def _verdict(report: Report) -> str:
    by_severity = report.summary.by_severity
    threshold = report.summary.exit_threshold
    waived = sum(1 for f in report.findings if f.outcome == "waived")
    parts = [f"{by_severity.get(s, 0)} {s}" for s in SEVERITIES if by_severity.get(s, 0)]
    if waived:
        parts.append(f"{waived} waived")
    blocking = sum(by_severity.get(s, 0) for s in SEVERITIES[: _severity_rank(threshold) + 1])
    counts = f" ({', '.join(parts)})" if parts else ""
    total = len(report.findings)
    return (f"{total} finding{'' if total == 1 else 's'}{counts}; {blocking} unwaived at or above "
            f"{threshold}: {'FAIL' if blocking else 'OK'}")


def _blocks(report: Report) -> Iterable[list[str]]:
    yield _header(report)
    yield _rules(report)
    yield _findings(report)
    yield _data_quality(report)
    if report.waivers is not None:
        yield _waivers(report)
    yield [_verdict(report)]


def render(report: Report, out: TextIO) -> None:
    """Write the summary: header, per-rule table, worst findings, data quality, verdict."""
    out.write("\n\n".join("\n".join(block) for block in _blocks(report)) + "\n")
