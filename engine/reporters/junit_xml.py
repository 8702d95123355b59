"""The JUnit XML report: a test suite per pack, a test case per rule, for CI test dashboards."""

from __future__ import annotations

import datetime as dt
import json
import re
import xml.etree.ElementTree as ET
from typing import Any, TextIO

from engine.language.model import SEVERITIES
from engine.reporters.common import compared_text, escape_matches, period, vs_last
from engine.results import Finding, PackSummary, Report, RuleResult

# XML 1.0 cannot carry most control characters (a parser rejects the whole file), a carriage
# return in element text comes back from any parser as a line feed, and bidi overrides make a
# value read differently from what it is: all shown as visible escapes.
_NOT_XML = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff"
                      "\u202a-\u202e\u2066-\u2069]")


def clean(value: Any) -> str:
    """``value`` as text an XML 1.0 document can hold, with invisible characters made visible."""
    text = "" if value is None else str(value)
    return escape_matches(_NOT_XML, text)


def _finding_text(finding: Finding) -> str:
    """One line per finding: a line feed inside a record value is escaped so it cannot split it."""
    evidence = json.dumps(dict(finding.evidence), sort_keys=True, ensure_ascii=False, separators=(",", ":"),
                          default=str)
    missing = f" missing: {', '.join(finding.missing)}" if finding.missing else ""
    since = f" [{finding.since_last_audit} since the last audit]" if finding.since_last_audit else ""
    line = (f"{finding.record_type} {finding.record_key} at {finding.time or 'no time'} "
            f"({finding.source.path}:{finding.source.line}): {finding.message}{missing} evidence: {evidence}{since}")
    return line.replace("\n", "\\n")


def _timestamp(as_of: str) -> str:
    """``as_of`` in UTC without an offset: the JUnit schema's timestamp has none."""
    try:
        moment = dt.datetime.fromisoformat(as_of)
    except ValueError:
        return clean(as_of)
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="seconds")


def _rate(rule: RuleResult) -> str:
    rate = rule.compliance_rate
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _case(suite: ET.Element, rule: RuleResult, findings: list[Finding], report: Report) -> tuple[int, int]:
    """One rule as a test case; returns (failures, skipped) it adds."""
    case = ET.SubElement(suite, "testcase", classname=clean(rule.pack),
                         name=clean(f"{rule.id}: {rule.title}" if rule.title else rule.id))
    failed = [f for f in findings if f.counts]
    waived = [f for f in findings if f.outcome == "waived"]
    if failed:
        noun = "finding" if len(failed) == 1 else "findings"
        # the worst severity among them: versions of a rule (effective dates) may differ in it
        worst = min((f.severity for f in failed), key=lambda s: SEVERITIES.index(s) if s in SEVERITIES else 99)
        failure = ET.SubElement(case, "failure", message=clean(f"{len(failed)} {noun} ({worst})"),
                                type=clean(worst))
        failure.text = clean("\n".join(_finding_text(f) for f in failed))
    elif waived:
        reasons = sorted({str((f.waiver or {}).get("reason") or "waived") for f in waived})
        ET.SubElement(case, "skipped", message=clean(f"{len(waived)} waived: {'; '.join(reasons)}"))
    out = ET.SubElement(case, "system-out")
    affected = "" if rule.patients_affected is None else f" ({rule.patients_affected} patients)"
    out.text = clean(f"applicable {rule.applicable}, passed {rule.passed}, failed {rule.failed}{affected}, "
                     f"waived {rule.waived}, not evaluable {rule.not_evaluable}, "
                     f"not applicable {rule.not_applicable}; compliance {_rate(rule)}"
                     + (f"; vs last audit: {vs_last(report, rule.pack, rule.id)}" if report.archived else ""))
    return (1 if failed else 0), (1 if not failed and waived else 0)


def _properties(suite: ET.Element, pack: PackSummary | None, report: Report) -> None:
    properties = ET.SubElement(suite, "properties")
    if pack is not None:
        for name, value in (("version", pack.version), ("sha256", pack.sha256), ("path", pack.path)):
            ET.SubElement(properties, "property", name=f"pack.{name}", value=clean(value))
    if report.period_given:
        ET.SubElement(properties, "property", name="period", value=clean(period(report)))
    for waiver in report.waivers or ():  # every waiver given, with its status: expired and unused ones too
        if pack is not None and waiver.pack == pack.id:
            ET.SubElement(properties, "property", name=f"waiver.{clean(waiver.id)}",
                          value=clean(f"{waiver.status}: {waiver.rule}, {waiver.records_waived} records waived, "
                                      f"expires {waiver.expires or 'never'}"))
    compared = compared_text(report)
    if compared is not None:
        ET.SubElement(properties, "property", name="compared_to", value=clean(compared))


def render(report: Report, out: TextIO) -> None:
    """Write the report as JUnit XML: <testsuites>, a <testsuite> per pack, a <testcase> per rule."""
    by_rule: dict[tuple[str, str], list[Finding]] = {}
    for finding in report.findings:
        by_rule.setdefault((finding.pack, finding.rule), []).append(finding)
    root = ET.Element("testsuites", name="protocol-audit")
    totals = [0, 0, 0]
    # every pack the report lists, then any a rule names that the list lacks: no rule is left out
    listed = {pack.id for pack in report.packs}
    packs: list[tuple[str, PackSummary | None]] = [(pack.id, pack) for pack in report.packs]
    packs += [(pack_id, None) for pack_id in dict.fromkeys(r.pack for r in report.rules) if pack_id not in listed]
    for pack_id, pack in packs:
        rules = [r for r in report.rules if r.pack == pack_id]
        suite = ET.SubElement(root, "testsuite", name=clean(pack_id), tests=str(len(rules)),
                              timestamp=_timestamp(report.as_of), errors="0")
        _properties(suite, pack, report)
        failures = skipped = 0
        for rule in rules:
            failed, waived = _case(suite, rule, by_rule.get((rule.pack, rule.id), []), report)
            failures += failed
            skipped += waived
        suite.set("failures", str(failures))
        suite.set("skipped", str(skipped))
        for i, count in enumerate((len(rules), failures, skipped)):
            totals[i] += count
    root.set("tests", str(totals[0]))
    root.set("failures", str(totals[1]))
    root.set("skipped", str(totals[2]))
    root.set("errors", "0")
    ET.indent(root)
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write(ET.tostring(root, encoding="unicode"))
    out.write("\n")
