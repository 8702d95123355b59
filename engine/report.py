"""The result of an audit as the plain report dict (SPEC section 7) every format renders from."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from . import __version__
from .audit import Result
from .model import SEVERITIES, Pack
from .records import InputStats

TOOL_NAME = "protocol-audit"


def tool_version() -> str:
    return __version__


def _time_key(finding: dict[str, Any]) -> float:
    text = finding.get("time")
    return dt.datetime.fromisoformat(text).timestamp() if text else math.inf


def build(result: Result, inputs: list[InputStats], packs: list[Pack], as_of: dt.datetime,
          fail_on: str = "major") -> dict[str, Any]:
    """The report dict; identical inputs and ``as_of`` give an identical dict (and JSON)."""
    rules = []
    for rule, tally in zip(result.rules, result.tallies):
        decided = tally.passed + tally.failed
        rules.append({
            "id": rule.id, "pack": rule.pack, "title": rule.title, "severity": rule.severity,
            "for": rule.for_type,
            "applicable": tally.passed + tally.failed + tally.waived,
            "passed": tally.passed, "failed": tally.failed, "waived": tally.waived,
            "not_evaluable": tally.not_evaluable, "not_applicable": tally.not_applicable,
            "compliance_rate": round(tally.passed / decided, 4) if decided else None,
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
    return {
        "tool": {"name": TOOL_NAME, "version": tool_version()},
        "as_of": as_of.isoformat(),
        "inputs": [{"path": s.path, "record_type": s.record_type, "sha256": s.sha256,
                    "records_read": s.records_read, "records_judged": s.records_judged,
                    "records_rejected": s.records_rejected} for s in inputs],
        "packs": [{"id": p.id, "version": p.version, "title": p.title, "path": p.path, "sha256": p.sha256}
                  for p in packs],
        "pseudonymised": False,
        "summary": {"records_read": read, "records_judged": read - rejected_count,
                    "records_rejected": rejected_count, "findings": len(findings),
                    "by_severity": by_severity, "exit_threshold": fail_on},
        "rules": rules,
        "findings": findings,
        "not_evaluable": not_evaluable,
        "rejected": rejected,
    }


def failing_findings(report: dict[str, Any], fail_on: str) -> int:
    """How many unwaived findings are at or above ``fail_on``."""
    threshold = SEVERITIES.index(fail_on)
    return sum(1 for f in report["findings"]
               if f["outcome"] == "fail" and SEVERITIES.index(f["severity"]) <= threshold)
