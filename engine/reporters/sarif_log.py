"""The SARIF 2.1.0 report: findings as code-scanning results pointing at the record's file and line."""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path, PurePath
from typing import Any, TextIO

from engine.reporters import json_report
from engine.results import Finding, Report

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
# Severity to SARIF level: a critical or major protocol breach is an error, a minor one a warning.
LEVELS = {"critical": "error", "major": "error", "minor": "warning", "info": "note"}


def uri(path: str | None) -> str:
    """A record's source path as a SARIF artifact URI: relative paths stay relative (forward
    slashes, percent-encoded), absolute ones become file:// URIs."""
    if not path:
        return "unknown"
    if PurePath(path).is_absolute():
        return Path(path).as_uri()
    return urllib.parse.quote(PurePath(path).as_posix())


def rule_id(pack: str, rule: str) -> str:
    """Rule ids are unique within a pack only, so SARIF's are qualified: ``ketamine-iv/DOSE-01``."""
    return f"{pack}/{rule}"


def _driver_rule(pack: str, rule: str, severity: str, title: str | None = None, rationale: str | None = None,
                 cite: str | None = None, patients_affected: int | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": rule_id(pack, rule),
        "name": rule,
        "shortDescription": {"text": title or rule},
        "defaultConfiguration": {"level": LEVELS.get(severity, "warning")},
        "properties": {"severity": severity, "pack": pack, "tags": [t for t in (pack, severity) if t]},
    }
    if patients_affected is not None:
        entry["properties"]["patients_affected"] = patients_affected
    if rationale:
        entry["fullDescription"] = {"text": rationale}
    if cite:
        entry["help"] = {"text": f"Source: {cite}"}
    return entry


def _fingerprint(finding: Finding) -> str:
    key = "\x1f".join((finding.pack, finding.rule, finding.record_type, finding.record_key))
    return hashlib.sha256(key.encode()).hexdigest()


def _result(finding: Finding, index: int) -> dict[str, Any]:
    source = finding.source
    location: dict[str, Any] = {"artifactLocation": {"uri": uri(source.path)}}
    if source.line >= 1:
        location["region"] = {"startLine": source.line}
    properties: dict[str, Any] = {"record_type": finding.record_type, "record_key": finding.record_key,
                                  "patient": finding.patient, "time": finding.time, "outcome": finding.outcome,
                                  "evidence": dict(finding.evidence)}
    if finding.missing:
        properties["missing"] = list(finding.missing)
    if finding.suspect:
        properties["data_quality_suspect"] = True
        properties["rejected_nearby"] = list(finding.suspect)
    result: dict[str, Any] = {
        "ruleId": rule_id(finding.pack, finding.rule),
        "ruleIndex": index,
        "level": LEVELS.get(finding.severity, "warning"),
        "message": {"text": finding.message},
        "locations": [{"physicalLocation": location}],
        "partialFingerprints": {"protocolAuditRecord/v1": _fingerprint(finding)},
        "properties": properties,
    }
    if finding.since_last_audit is not None:  # with an archive: against the last archived audit
        result["baselineState"] = "new" if finding.since_last_audit == "new" else "unchanged"
    if finding.outcome == "waived":
        reason = (finding.waiver or {}).get("reason") or "waived"
        result["suppressions"] = [{"kind": "external", "justification": str(reason)}]
    return result


def sarif(report: Report) -> dict[str, Any]:
    """The report as a SARIF log: one run, each rule once in the driver, one result per finding."""
    rules = [_driver_rule(r.pack, r.id, r.severity, r.title, r.rationale, r.cite, r.patients_affected)
             for r in report.rules]
    index = {rule["id"]: n for n, rule in enumerate(rules)}
    for finding in report.findings:  # a rule the report does not list: added
        key = rule_id(finding.pack, finding.rule)
        if key not in index:
            index[key] = len(rules)
            rules.append(_driver_rule(finding.pack, finding.rule, finding.severity))
    run: dict[str, Any] = {
        "tool": {"driver": {"name": report.tool_name, "version": report.tool_version, "rules": rules}},
        "invocations": [{"executionSuccessful": True}],
        "artifacts": [{"location": {"uri": uri(i.path)}, "hashes": {"sha-256": i.sha256},
                       "properties": {"record_type": i.record_type, "records_read": i.records_read,
                                      "records_rejected": i.records_rejected}}
                      for i in report.inputs],
        "results": [_result(f, index[rule_id(f.pack, f.rule)]) for f in report.findings],
        "properties": {"as_of": report.as_of, "pseudonymised": report.pseudonymised,
                       "packs": [{"id": p.id, "version": p.version, "sha256": p.sha256} for p in report.packs]},
    }
    if report.period_given:
        run["properties"]["period"] = report.period_json()
    if report.waivers is not None:  # every waiver given, with its status (applied, unused, expired)
        run["properties"]["waivers"] = [waiver.to_json() for waiver in report.waivers]
    if report.archived:
        run["properties"]["compared_to"] = None if report.compared_to is None else report.compared_to.to_json()
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def render(report: Report, out: TextIO) -> None:
    """Write the SARIF log as indented UTF-8 JSON; insertion order is the report's, so reruns match."""
    json_report.dump(sarif(report), out)
