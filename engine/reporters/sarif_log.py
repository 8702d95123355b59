"""The SARIF 2.1.0 report: findings as code-scanning results pointing at the record's file and line."""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path, PurePath
from typing import Any, TextIO

from engine.reporters import json_report
from engine.reporters.common import pack_lookup, pack_of

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


def _driver_rule(rule: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": rule_id(rule.get("pack") or "", rule["id"]),
        "name": rule["id"],
        "shortDescription": {"text": rule.get("title") or rule["id"]},
        "defaultConfiguration": {"level": LEVELS.get(rule["severity"], "warning")},
        "properties": {"severity": rule["severity"], "pack": rule.get("pack"),
                       "tags": [t for t in (rule.get("pack"), rule["severity"]) if t]},
    }
    if rule.get("rationale"):
        entry["fullDescription"] = {"text": rule["rationale"]}
    if rule.get("cite"):
        entry["help"] = {"text": f"Source: {rule['cite']}"}
    return entry


def _fingerprint(pack: str, finding: dict[str, Any]) -> str:
    key = "\x1f".join(str(finding.get(k)) for k in ("rule", "record_type", "record_key"))
    return hashlib.sha256(f"{pack}\x1f{key}".encode()).hexdigest()


def _result(finding: dict[str, Any], pack: str, index: int) -> dict[str, Any]:
    source = finding.get("source") or {}
    region = {"startLine": source["line"]} if isinstance(source.get("line"), int) and source["line"] >= 1 else {}
    location: dict[str, Any] = {"artifactLocation": {"uri": uri(source.get("path"))}}
    if region:
        location["region"] = region
    properties = {"record_type": finding["record_type"], "record_key": finding["record_key"],
                  "patient": finding.get("patient"), "time": finding.get("time"), "outcome": finding["outcome"],
                  "evidence": finding.get("evidence") or {}}
    if finding.get("missing"):
        properties["missing"] = finding["missing"]
    result: dict[str, Any] = {
        "ruleId": rule_id(pack, finding["rule"]),
        "ruleIndex": index,
        "level": LEVELS.get(finding["severity"], "warning"),
        "message": {"text": finding["message"]},
        "locations": [{"physicalLocation": location}],
        "partialFingerprints": {"protocolAuditRecord/v1": _fingerprint(pack, finding)},
        "properties": properties,
    }
    if finding["outcome"] == "waived":
        reason = (finding.get("waiver") or {}).get("reason") or "waived"
        result["suppressions"] = [{"kind": "external", "justification": str(reason)}]
    return result


def sarif(report: dict[str, Any]) -> dict[str, Any]:
    """The report as a SARIF log: one run, each rule once in the driver, one result per finding."""
    rules = [_driver_rule(rule) for rule in report["rules"]]
    index = {rule["id"]: n for n, rule in enumerate(rules)}
    lookup = pack_lookup(report)
    packs = [pack_of(finding, lookup) for finding in report["findings"]]
    for finding, pack in zip(report["findings"], packs):  # a rule the report does not list: added
        key = rule_id(pack, finding["rule"])
        if key not in index:
            index[key] = len(rules)
            rules.append(_driver_rule({"id": finding["rule"], "pack": pack, "severity": finding["severity"]}))
    tool = report["tool"]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": tool["name"], "version": str(tool["version"]), "rules": rules}},
        "invocations": [{"executionSuccessful": True}],
        "artifacts": [{"location": {"uri": uri(i["path"])}, "hashes": {"sha-256": i["sha256"]},
                       "properties": {"record_type": i["record_type"], "records_read": i["records_read"],
                                      "records_rejected": i["records_rejected"]}}
                      for i in report["inputs"]],
        "results": [_result(f, pack, index[rule_id(pack, f["rule"])]) for f, pack in zip(report["findings"], packs)],
        "properties": {"as_of": report["as_of"], "pseudonymised": report.get("pseudonymised"),
                       "packs": [{k: p.get(k) for k in ("id", "version", "sha256")} for p in report["packs"]]},
    }
    return {"$schema": SCHEMA_URI, "version": "2.1.0", "runs": [run]}


def render(report: dict[str, Any], out: TextIO) -> None:
    """Write the SARIF log as indented UTF-8 JSON; insertion order is the report's, so reruns match."""
    json_report.render(sarif(report), out)
