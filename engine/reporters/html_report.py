"""The HTML report: one self-contained, printable page rendered from a jinja2 template."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import math
import re
from collections.abc import Sequence
from typing import Any, TextIO

import jinja2
import markupsafe

from engine.language.model import SEVERITIES
from engine.reporters.common import compared_text, escape_matches, period, vs_last
from engine.results import Finding, MonthCount, Rejected, Report, RuleResult, Source

NONE = "—"  # an absent value, so an empty cell is never mistaken for an empty string
# Control characters, and bidirectional overrides that make a value read differently from its
# characters ("Trojan Source"): shown as escapes, like the terminal report does.
_INVISIBLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(value: Any) -> Any:
    """A string with its control and bidi-override characters as visible escapes (the template's
    ``finalize``: every value shown goes through it); the page's own markup passes unchanged."""
    if not isinstance(value, str) or isinstance(value, markupsafe.Markup):
        return value
    return escape_matches(_INVISIBLE, value)


def rate(value: float | None) -> str:
    """A compliance rate as a percentage with one decimal, or "n/a"."""
    return "n/a" if value is None else f"{value * 100:.1f}%"


def interval(ci95: tuple[float, float] | None) -> str:
    """A 95% Wilson interval as "low–high%", or "" when the report gives none."""
    return "" if not ci95 else f"{ci95[0] * 100:.1f}–{ci95[1] * 100:.1f}%"


def target(value: float | None) -> str:
    """A target as a short percentage ("95%", "97.5%"), or the absent mark."""
    return NONE if value is None else f"{value * 100:g}%"


def text(value: Any) -> str:
    """``value`` as display text; None is the absent mark."""
    return NONE if value is None else str(value)


def identifiers(report: Report) -> str:
    """How patient identifiers appear in the report."""
    if report.identifiers:  # under a "Patient identifiers" label: not said twice
        said = report.identifiers.removeprefix("patient identifiers ")
        return said[:1].upper() + said[1:]
    return "pseudonymised" if report.pseudonymised else "as given (not pseudonymised)"


_EVIDENCE = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(", ", ": "), default=str)


def evidence(finding: Finding, separator: str = "\n") -> str:
    """The evidence as ``field: value`` lines, fields sorted (one stable form whatever the engine's
    order): a value as the report shows it, a list item by item, a history answer as compact JSON;
    then what was not documented. ``separator``: between lines ("; " where a cell is one line)."""
    lines = [f"{name}: {_evidence_value(value)}" for name, value in sorted(finding.evidence.items())]
    if finding.missing:
        lines.append(f"not documented: {', '.join(finding.missing)}")
    return separator.join(lines)


def _evidence_value(value: Any) -> str:
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "; ".join(_evidence_value(item) for item in value) or "none"
    if isinstance(value, dict):
        return _EVIDENCE.encode(value)
    # a line break inside a value would read as another field's line
    return str(value).replace("\r", "\\r").replace("\n", "\\n")


def source(where: Source | Rejected) -> str:
    """Where a record is: its file and line."""
    return f"{where.path}:{where.line}"


def status_class(status: str | None) -> str:
    """The CSS class (and chart pattern) of a rule status: met, not-met, or other."""
    return {"met": "met", "not met": "not-met"}.get(status or "", "other")


def _severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def _time_sort(time: str | None) -> str:
    """A sort key that orders record times by instant across UTC offsets; no time sorts last."""
    if time is None:
        return "~"
    try:
        moment = dt.datetime.fromisoformat(time)
    except ValueError:
        return "}" + time
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat(timespec="microseconds")


def _rule_row(report: Report, rule: RuleResult) -> dict[str, Any]:
    return {"rule": rule, "rate": rate(rule.compliance_rate), "ci": interval(rule.ci95),
            "target": target(rule.target), "status": rule.status or NONE, "status_class": status_class(rule.status),
            "vs_last": vs_last(report, rule.pack, rule.id),
            "patients": NONE if rule.patients_affected is None else rule.patients_affected}


def outcome(finding: Finding) -> str:
    """The finding's outcome; a waived one says which waiver, why, and who approved it when; with an
    archive, an open one says whether it is new since the last audit."""
    waiver = finding.waiver
    suspect = "" if not finding.suspect else \
        f"; data-quality suspect: rejected {', '.join(finding.suspect)} in its window"
    if finding.outcome != "waived" or not waiver:
        since = finding.since_last_audit
        said = finding.outcome if since is None else f"{finding.outcome} ({since} since the last audit)"
        return said + suspect
    return (f"waived by {waiver.get('id')}: {waiver.get('reason')} (approved by {waiver.get('approved_by')} "
            f"on {waiver.get('approved_on')})") + suspect


def _finding_row(finding: Finding) -> list[Any]:
    """One finding as the page script's row: the fields in the order report.js reads them
    (rank, severity, rule, outcome, record, patient, time, time sort key, message, evidence,
    source, source sort key), every string with its invisible characters made visible."""
    where = finding.source
    row: list[Any] = [
        _severity_rank(finding.severity), finding.severity, finding.rule, outcome(finding),
        finding.record_key, text(finding.patient), text(finding.time), _time_sort(finding.time),
        finding.message, evidence(finding), source(where), f"{where.path}:{where.line:010d}",
    ]
    if _INVISIBLE.search("\n".join(row[1:])) is None:  # one search per finding: nearly always clean
        return row
    return [visible(value) for value in row]


# Bar chart geometry (SVG user units): a label column, the 0-100% bar area, a text column.
BAR_X, BAR_W, ROW_H, TOP = 130.0, 400.0, 26.0, 34.0


def _x(value: float) -> float:
    return round(BAR_X + max(0.0, min(1.0, value)) * BAR_W, 1)


def _bars(rules: Sequence[RuleResult]) -> dict[str, Any]:
    rows = []
    for i, rule in enumerate(rules):
        y, value, goal, ci95 = TOP + i * ROW_H, rule.compliance_rate, rule.target, rule.ci95
        label = f"{rate(value)}; target {target(goal)}; {rule.status or 'no status'}"
        rows.append({"id": rule.id, "y": y, "pattern": status_class(rule.status), "label": label,
                     "width": None if value is None else round(_x(value) - BAR_X, 1),
                     "target_x": None if goal is None else _x(goal),
                     "ci": None if not ci95 else (_x(ci95[0]), _x(ci95[1]))})
    ticks = [{"x": _x(t / 100), "label": f"{t}%"} for t in (0, 25, 50, 75, 100)]
    return {"rows": rows, "ticks": ticks, "height": TOP + len(rules) * ROW_H + 24,
            "axis_y": TOP + len(rules) * ROW_H}


# Small multiples: one panel per rule, months on a shared x axis, 0-100% on y.
PANEL_X0, PANEL_X1, PANEL_Y0, PANEL_Y1 = 36.0, 232.0, 10.0, 82.0


def _y(value: float, low: float = 0.0) -> float:
    """The height of ``value`` on a panel whose axis runs from ``low`` (bottom) to 100% (top)."""
    share = (max(low, min(1.0, value)) - low) / (1.0 - low)
    return round(PANEL_Y1 - share * (PANEL_Y1 - PANEL_Y0), 1)


def _axis_low(values: Sequence[float]) -> float:
    """The bottom of a panel's axis: the lowest value or target rounded down to 10%, at most 90% so
    the axis spans at least 10 points (its middle label is then a whole percent). A drop from 99% to
    90% is plain to see, where on a 0-100% axis every rule looks flat at the top."""
    lowest = min(values, default=1.0)
    return max(0.0, min(0.9, math.floor(round(lowest * 10, 9)) / 10))


def panel(rule_id: str, pack: str, goal: float | None,
          series: Sequence[tuple[str, int, int, float | None] | None]) -> dict[str, Any]:
    """One small-multiple chart: a rule's compliance at each step of a shared x axis (months of an
    audit, or archived audits in a trend); ``series`` is (label, passed, failed, rate) per step,
    None where the rule has nothing there."""
    step = (PANEL_X1 - PANEL_X0) / max(1, len(series))
    low = _axis_low([entry[3] for entry in series if entry is not None and entry[3] is not None]
                    + ([goal] if goal is not None else []))
    path, points, pen = [], [], "M"
    for i, entry in enumerate(series):
        label, passed, failed, value = entry or ("", 0, 0, None)
        if value is None:
            pen = "M"  # a step without a decided record breaks the line
            continue
        x, y = round(PANEL_X0 + (i + 0.5) * step, 1), _y(value, low)
        path.append(f"{pen}{x} {y}")
        pen = "L"
        points.append({"x": x, "y": y, "below": goal is not None and value < goal,
                       "label": f"{label}: {rate(value)} ({passed} of {passed + failed})"})
    return {"id": rule_id, "pack": pack, "path": " ".join(path), "points": points,
            "target_y": None if goal is None else _y(goal, low), "target": target(goal),
            "top": "100%", "middle": f"{round((1 + low) * 50)}%", "bottom": f"{round(low * 100)}%"}


def _panel(rule: RuleResult, entries: dict[str, MonthCount], months: list[str]) -> dict[str, Any]:
    series = [None if (e := entries.get(month)) is None else (month, e.passed, e.failed, e.compliance_rate)
              for month in months]
    return panel(rule.id, rule.pack, rule.target, series)


def _monthly(report: Report) -> dict[str, Any]:
    months = sorted({entry.month for entry in report.by_month})
    grouped: dict[tuple[str, str], dict[str, MonthCount]] = {}
    for entry in report.by_month:
        grouped.setdefault((entry.pack, entry.rule), {})[entry.month] = entry
    panels = [_panel(rule, grouped[(rule.pack, rule.id)], months)
              for rule in report.rules if (rule.pack, rule.id) in grouped]
    table = [{"counts": entry, "rate": rate(entry.compliance_rate)} for entry in report.by_month]
    return {"months": months, "panels": panels, "table": table}


def _not_evaluable_by_rule(report: Report) -> list[dict[str, Any]]:
    missing: dict[tuple[str, str], set[str]] = {}
    for entry in report.not_evaluable:
        missing.setdefault((entry.pack, entry.rule), set()).update(entry.missing)
    return [{"id": rule.id, "count": rule.not_evaluable,
             "missing": ", ".join(sorted(missing.get((rule.pack, rule.id), ())))}
            for rule in report.rules if rule.not_evaluable]


def _strata(report: Report) -> dict[str, Any] | None:
    strata = report.strata
    if strata is None:
        return None
    rows = [{"counts": row, "cells": [text(row.stratum.get(key)) for key in strata.by],
             "rate": rate(row.compliance_rate)} for row in strata.rows]
    return {"by": list(strata.by), "rows": rows}


EXECUTIVE_RULES = 10  # the rules below target the executive summary ranks


def _executive(report: Report, counts: dict[str, int]) -> dict[str, Any]:
    """The first screen a director reads: compliance by severity, the rules below target ranked by
    how far below and by patients affected, how many open findings are documentation gaps or
    data-quality suspects, and (with an archive) the change since the last audit. ``counts``: the
    open findings, documentation gaps and suspects among them (context counts them as it lists them)."""
    severities = []
    for severity in SEVERITIES:
        rules = [r for r in report.rules if r.severity == severity]
        if not rules:
            continue
        passed, failed = sum(r.passed for r in rules), sum(r.failed for r in rules)
        severities.append({"severity": severity, "rules": len(rules),
                           "met": sum(1 for r in rules if r.status == "met"),
                           "not_met": sum(1 for r in rules if r.status == "not met"),
                           "rate": rate(passed / (passed + failed)) if passed + failed else NONE,
                           "failed": failed})
    below = [r for r in report.rules if r.status == "not met" and r.compliance_rate is not None
             and r.target is not None]
    below.sort(key=lambda r: (-(r.target or 0) + (r.compliance_rate or 0), -(r.patients_affected or 0), r.id))
    ranked = [{"rule": r, "rate": rate(r.compliance_rate), "target": target(r.target),
               "gap": _points((r.target or 0) - (r.compliance_rate or 0)),
               "patients": NONE if r.patients_affected is None else r.patients_affected}
              for r in below[:EXECUTIVE_RULES]]
    open_findings = counts["open"]

    def share(part: int) -> str:
        if not open_findings:
            return "0"
        percent = 100 * part / open_findings
        return f"{part} ({'<1' if 0 < percent < 1 else round(percent)}%)"

    return {"severities": severities, "below": ranked, "more_below": max(0, len(below) - EXECUTIVE_RULES),
            "open": open_findings, "undocumented": share(counts["undocumented"]), "suspect": share(counts["suspect"])}


def _points(gap: float) -> str:
    """How far below target, in percentage points ("<0.1 points" rather than "0 points")."""
    points = gap * 100
    return "<0.1 points" if 0 < points < 0.05 else f"{round(points, 1):g} points"


def context(report: Report) -> dict[str, Any]:
    """Everything the template shows, already formatted: the template only lays it out."""
    rules = report.rules
    # one walk over the findings (read back from disk when they were spilled): their rows, rules and counts
    rows, rule_ids = [], dict.fromkeys(r.id for r in rules)
    counts = {"open": 0, "undocumented": 0, "suspect": 0, "waived": 0}
    for finding in report.findings:
        rows.append(_finding_row(finding))
        rule_ids.setdefault(finding.rule)
        counts["waived"] += finding.outcome == "waived"
        if finding.counts:
            counts["open"] += 1
            counts["undocumented"] += bool(finding.missing)
            counts["suspect"] += bool(finding.suspect)
    titles = {r.id: r.title or "" for r in rules}
    return {
        "report": report, "period": period(report), "identifiers": identifiers(report),
        "executive": _executive(report, counts),
        "rules": [_rule_row(report, r) for r in rules], "compared": compared_text(report),
        "bars": _bars(rules), "monthly": _monthly(report),
        "findings": rows,
        "rule_options": [{"id": rid, "title": titles.get(rid, "")} for rid in rule_ids],
        "severities": SEVERITIES,
        "waived": counts["waived"],
        "rejected": [{"record": r, "where": source(r)} for r in report.rejected],
        "not_evaluable": [{"record": n, "where": source(n.source), "missing": ", ".join(n.missing)}
                          for n in report.not_evaluable],
        "not_evaluable_rules": _not_evaluable_by_rule(report),
        "strata": _strata(report),
        "actions": [r for r in rules if r.failed],
        "rate": rate,
    }


@functools.cache
def environment() -> jinja2.Environment:
    """The template environment: autoescaping on for every template, undefined names an error."""
    # Templates come only from the package's templates/ folder; record values are only ever
    # context data, so a value like "{{ 7*7 }}" is shown as typed, never evaluated.
    return jinja2.Environment(loader=jinja2.PackageLoader("engine.reporters", "templates"),
                              autoescape=True, undefined=jinja2.StrictUndefined, finalize=visible,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


@functools.cache
def script() -> tuple[markupsafe.Markup, str]:
    """The page's one script (static, no data in it) and its CSP hash source."""
    # The Content-Security-Policy allows only a script with this hash: should a value ever
    # slip through escaping as markup, an injected <script> or onerror= handler would not run.
    code = environment().get_template("report.js").render()
    digest = base64.b64encode(hashlib.sha256(code.encode("utf-8")).digest()).decode("ascii")
    return markupsafe.Markup(code), f"sha256-{digest}"


def render(report: Report, out: TextIO) -> None:
    """Write the report as one HTML page: no network access, scripts or styles from elsewhere."""
    code, digest = script()
    template = environment().get_template("report.html.j2")
    out.writelines(template.generate(context(report), script=code, script_hash=digest))
