"""The result of an audit as the plain report dict (SPEC section 7) every format renders from."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from engine.inputs.records import InputStats
from engine.judge.audit import Result
from engine.language.model import SEVERITIES, Pack
from engine.version import __version__

TOOL_NAME = "protocol-audit"
# Compliance targets by severity, after clinical-audit practice (domain notes 4.3); a pack may set its own.
DEFAULT_TARGETS = {"critical": 1.0, "major": 0.95, "minor": 0.90}
TOO_FEW = 10  # below this many applicable records a rate says little: "too few records"
Z95 = 1.959963984540054


def wilson(passed: int, total: int) -> list[float] | None:
    """The Wilson score 95% interval of passed / total (None when total is 0)."""
    if total == 0:
        return None
    p = passed / total
    denominator = 1 + Z95 ** 2 / total
    centre = (p + Z95 ** 2 / (2 * total)) / denominator
    spread = Z95 * math.sqrt(p * (1 - p) / total + Z95 ** 2 / (4 * total ** 2)) / denominator
    return [round(max(0.0, centre - spread), 4), round(min(1.0, centre + spread), 4)]


def status(rate: float | None, applicable: int, target: float | None) -> str:
    if applicable == 0 or rate is None:
        return "no data"
    if applicable < TOO_FEW:
        return "too few records"
    if target is None:
        return "no target"
    return "met" if rate >= target else "not met"


def _rate(passed: int, failed: int) -> float | None:
    return round(passed / (passed + failed), 4) if passed + failed else None


def tool_version() -> str:
    return __version__


def _time_key(finding: dict[str, Any]) -> float:
    text = finding.get("time")
    return dt.datetime.fromisoformat(text).timestamp() if text else math.inf


def build(result: Result, inputs: list[InputStats], packs: list[Pack], as_of: dt.datetime,
          fail_on: str = "major") -> dict[str, Any]:
    """The report dict; identical inputs and ``as_of`` give an identical dict (and JSON)."""
    rules = []
    targets = {pack.id: {**DEFAULT_TARGETS, **pack.targets} for pack in packs}
    for rule, tally in zip(result.rules, result.tallies):
        applicable = tally.passed + tally.failed + tally.waived
        rate = _rate(tally.passed, tally.failed)
        target = targets.get(rule.pack, DEFAULT_TARGETS).get(rule.severity)
        rules.append({
            "id": rule.id, "pack": rule.pack, "title": rule.title, "severity": rule.severity,
            "for": rule.for_type,
            "applicable": applicable,
            "passed": tally.passed, "failed": tally.failed, "waived": tally.waived,
            "not_evaluable": tally.not_evaluable, "not_applicable": tally.not_applicable,
            "compliance_rate": rate,
            "ci95": wilson(tally.passed, tally.passed + tally.failed),
            "target": target, "status": status(rate, applicable, target),
            "cite": rule.cite, "rationale": rule.rationale,
        })
    findings = sorted(result.findings, key=lambda f: (f["rule"], f["pack"], _time_key(f), f["record_key"]))
    not_evaluable = sorted(result.not_evaluable, key=lambda n: (n["rule"], n["pack"], n["record_key"]))
    rejected = sorted(result.rejected, key=lambda r: (r["source"]["path"], r["source"]["line"]))
    by_severity = {severity: 0 for severity in SEVERITIES}
    for finding in findings:
        if finding["outcome"] == "fail":
            by_severity[finding["severity"]] += 1
    read = sum(s.records_read for s in inputs)
    rejected_count = sum(s.records_rejected for s in inputs)
    report = {
        "tool": {"name": TOOL_NAME, "version": tool_version()},
        "as_of": as_of.isoformat(),
        "inputs": [{"path": s.path, "record_type": s.record_type, "sha256": s.sha256,
                    "records_read": s.records_read, "records_judged": s.records_judged,
                    "records_rejected": s.records_rejected} for s in inputs],
        "packs": [{"id": p.id, "version": p.version, "title": p.title, "path": p.path, "sha256": p.sha256}
                  for p in packs],
        "period": {"first": result.first.isoformat() if result.first else None,
                   "last": result.last.isoformat() if result.last else None},
        "pseudonymised": result.pseudonymised is not None,
        "identifiers": (f"patient identifiers pseudonymised with HMAC-SHA256 under {result.pseudonymised}"
                        if result.pseudonymised else "patient identifiers as in the inputs"),
        "summary": {"records_read": read, "records_judged": read - rejected_count,
                    "records_rejected": rejected_count, "findings": len(findings),
                    "by_severity": by_severity, "exit_threshold": fail_on},
        "rules": rules,
        "findings": findings,
        "not_evaluable": not_evaluable,
        "rejected": rejected,
        "by_month": _counts(result, None),
    }
    if result.group_by:
        report["strata"] = {"by": list(result.group_by), "rows": _counts(result, result.group_by)}
    return report


def _counts(result: Result, group_by: list[str] | None) -> list[dict[str, Any]]:
    """Counts per rule and month (``group_by`` None) or per rule and stratum of the group-by fields."""
    merged: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    for (index, stratum), counts in result.strata.items():
        key = stratum[:1] if group_by is None else stratum[1:]
        total = merged.setdefault((index, key), [0, 0, 0])
        for column, count in enumerate(counts):
            total[column] += count
    rows = []
    for (index, key), (passed, failed, not_evaluable) in sorted(merged.items()):
        rule = result.rules[index]
        row: dict[str, Any] = {"rule": rule.id, "pack": rule.pack}
        if group_by is None:
            row["month"] = key[0]
        else:
            row["stratum"] = dict(zip(group_by, key))
            row["applicable"] = passed + failed
            row["not_evaluable"] = not_evaluable
        row.update(passed=passed, failed=failed, compliance_rate=_rate(passed, failed))
        rows.append(row)
    return rows


def failing_findings(report: dict[str, Any], fail_on: str) -> int:
    """How many unwaived findings are at or above ``fail_on``."""
    threshold = SEVERITIES.index(fail_on)
    return sum(1 for f in report["findings"]
               if f["outcome"] == "fail" and SEVERITIES.index(f["severity"]) <= threshold)
