"""``protocol-audit diff``: what a change to the rules would do to an audit of the same records.

Both rule versions audit the same inputs through the same engine; rules are matched by pack
and rule id. Per rule: added, removed, changed (which parts of its definition) or unchanged;
failures and compliance before and after; and the records newly flagged and no longer
flagged, by record type and key, with their source lines. Patients are never shown.

Either side may be given as ``git:REV:PATH`` (engine/gitrefs.py), so CI can compare with the
merge base.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import replace
from typing import Any

from engine.inputs.maps import SourceMap
from engine.inputs.sources import bind
from engine.judge import pipeline
from engine.language import conditions
from engine.language.model import SEVERITIES, All, Condition, Leaf, Pack, Rule, merged_types
from engine.privacy import Pseudonymiser
from engine.reporters import report as report_builder
from engine.results import Finding, Report

GIT_PREFIX = "git:"
# The parts of a rule whose change can change outcomes or findings, as the report names them.
PARTS = ("pack", "for", "effective dates", "earlier versions", "when", "require", "derived fields",
         "field declarations", "severity", "message", "title")


# -- what changed in a rule ----------------------------------------------------------------

def _plain(value: Any) -> Any:
    """A condition (or any value) without source positions, for comparison across versions."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (type(value).__name__,) + tuple(
            (f.name, _plain(getattr(value, f.name))) for f in dataclasses.fields(value) if f.name != "mark")
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    return value


def _read_by(pack: Pack, rule: Rule) -> tuple[dict[str, str], dict[str, Any]]:
    """What the rule reads beyond its own text: the expressions of the derived fields and the
    declarations (type, values) of the fields, its history conditions' included, by ``type.field``."""
    derived: dict[str, str] = {}
    declared: dict[str, Any] = {}

    def add(type_name: str, cond: Condition | None) -> None:
        rtype = pack.records.get(type_name)
        if rtype is None:
            return
        for name in conditions.fields_of(cond):
            spec = rtype.derived.get(name)
            for field in (*spec.inputs, name) if spec else (name,):
                if field in rtype.fields:
                    declared[f"{type_name}.{field}"] = _plain(rtype.fields[field])
            if spec:
                derived[f"{type_name}.{name}"] = spec.source
        for history in conditions.histories_of(cond):
            add(history.of, history.where)

    add(rule.for_type, _own_when(rule))
    add(rule.for_type, rule.require)
    return derived, declared


def _own_when(rule: Rule) -> Condition | None:
    """The rule's own when, without the bounds its effective window added (they are its dates)."""
    when = rule.when
    if rule.effective is None or when is None:
        return when
    if isinstance(when, Leaf) and when.mark is None:
        return None
    if isinstance(when, All):
        kept = tuple(part for part in when.parts if not (isinstance(part, Leaf) and part.mark is None))
        return kept[0] if len(kept) == 1 else All(kept) if kept else None
    return when


def _windows(pack: Pack, rule: Rule) -> list[Any]:
    """Every version's effective window of the rule's id, in time order."""
    return sorted((r.effective for r in pack.rules if r.id == rule.id and r.effective),
                  key=lambda window: window[0] or dt.date.min)


def _earlier(pack: Pack, rule: Rule) -> list[Any]:
    """The versions of the rule's id before its latest, as comparable definitions."""
    versions = sorted((r for r in pack.rules if r.id == rule.id), key=lambda r: r.starts)[:-1]
    return [_plain((r.effective, _own_when(r), r.require, r.severity, r.message, r.title)) for r in versions]


def changed_parts(base: tuple[Pack, Rule], head: tuple[Pack, Rule]) -> list[str]:
    """What differs between two definitions of a rule; with versions, their latest ones, and
    "effective dates" when the versions' windows differ (a new version from a date changes the
    outcomes of records from that date only)."""
    (base_pack, old), (head_pack, new) = base, head
    (old_derived, old_fields), (new_derived, new_fields) = _read_by(base_pack, old), _read_by(head_pack, new)
    parts = {
        "pack": (base_pack.id, head_pack.id),
        "effective dates": (_windows(base_pack, old), _windows(head_pack, new)),
        "earlier versions": (_earlier(base_pack, old), _earlier(head_pack, new)),
        "for": (old.for_type, new.for_type), "when": (_plain(_own_when(old)), _plain(_own_when(new))),
        "require": (_plain(old.require), _plain(new.require)),
        "derived fields": (old_derived, new_derived), "field declarations": (old_fields, new_fields),
        "severity": (old.severity, new.severity), "message": (old.message, new.message),
        "title": (old.title, new.title),
    }
    return [name for name in PARTS if parts[name][0] != parts[name][1]]


# -- the two audits and their difference ------------------------------------------------------

Where = tuple[str, int]  # a record's source: path and line


def _flagged(finding: Finding) -> dict[str, Any]:
    return {"record_type": finding.record_type, "record_key": finding.record_key, "time": finding.time,
            "source": finding.source.to_json(), "message": finding.message}


class _Side:
    """One rule version's audit, indexed for comparison."""

    def __init__(self, report: Report, skipped: list[dict[str, str]]) -> None:
        self.report = report
        self.skipped = skipped  # inputs this side could not read (a record type it lacks)
        self.rules = {(r.pack, r.id): r for r in report.rules}
        self.flagged: dict[tuple[str, str], dict[tuple[str, str], Finding]] = {key: {} for key in self.rules}
        for finding in report.findings:
            if finding.counts:
                self.flagged[(finding.pack, finding.rule)][(finding.record_type, finding.record_key)] = finding
        self.rejected: dict[Where, str] = {(r.path, r.line): r.reason for r in report.rejected}


def _delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 4)


def _readable(files: list[str], packs: list[Pack], others: list[Pack],
              maps: list[SourceMap]) -> tuple[list[str], list[dict[str, str]], list[SourceMap]]:
    """The inputs one side can read: a file bound (by TYPE=, its name or a map entry) to a record type
    that only the other side declares is left out for this side, and said so, instead of stopping
    the diff; so are the map entries of such a type."""
    mine, _ = merged_types(packs)
    theirs, _ = merged_types(others)
    kept: list[str] = []
    skipped: list[dict[str, str]] = []
    for arg in files:
        bound = bind([arg], {**theirs, **mine}, maps)
        foreign = [b for b in bound if b.type is not None and b.type not in mine]
        skipped.extend({"path": b.path, "record_type": b.type} for b in foreign if b.type is not None)
        if len(foreign) < len(bound):
            kept.append(arg)
    own = [replace(m, entries=tuple(e for e in m.entries if e.type in mine)) for m in maps]
    return kept, skipped, own


def _audit(packs: list[Pack], others: list[Pack], files: list[str], as_of: dt.datetime,
           pseudonymise: Pseudonymiser, maps: list[SourceMap]) -> _Side:
    readable, skipped, own = _readable(files, packs, others, maps)
    result, stats = pipeline.run(packs, readable, pseudonymise=pseudonymise, maps=own)
    return _Side(report_builder.build(result, stats, packs, as_of), skipped)


def _pairs(base: _Side, head: _Side) -> list[tuple[tuple[str, str] | None, tuple[str, str] | None]]:
    """Rules matched across versions: by pack and id, and a rule whose id is in one pack on each
    side (moved to another pack, or its pack renamed) matched by id alone."""
    removed = [key for key in base.rules if key not in head.rules]
    added = [key for key in head.rules if key not in base.rules]
    moved: dict[tuple[str, str], tuple[str, str]] = {}
    for key in added:
        was = [old for old in removed if old[1] == key[1]]
        if len(was) == 1 and sum(new[1] == key[1] for new in added) == 1:
            moved[key] = was[0]
    pairs: list[tuple[tuple[str, str] | None, tuple[str, str] | None]] = []
    for key in head.rules:
        pairs.append((key if key in base.rules else moved.get(key), key))
    pairs += [(key, None) for key in removed if key not in moved.values()]
    return pairs


def _row(base: _Side, head: _Side, old_key: tuple[str, str] | None, new_key: tuple[str, str] | None,
         parts: list[str]) -> dict[str, Any]:
    old = base.rules[old_key] if old_key else None
    new = head.rules[new_key] if new_key else None
    was = base.flagged.get(old_key, {}) if old_key else {}
    now = head.flagged.get(new_key, {}) if new_key else {}
    status = "added" if old is None else "removed" if new is None else "changed" if parts else "unchanged"
    shown = new or old
    assert shown is not None
    gone = []
    for key, finding in was.items():
        if key in now:
            continue
        item = _flagged(finding)
        reason = head.rejected.get((finding.source.path, finding.source.line))
        if reason is not None:  # not judged any more: rejected on reading, which is no improvement
            item["now_rejected"] = reason
        gone.append(item)
    return {
        "pack": shown.pack, "id": shown.id, "title": shown.title, "status": status, "changes": parts,
        "pack_before": old.pack if old else None,
        "severity": shown.severity, "severity_before": old.severity if old else None,
        "failed_before": old.failed if old else None, "failed_after": new.failed if new else None,
        "not_evaluable_before": old.not_evaluable if old else None,
        "not_evaluable_after": new.not_evaluable if new else None,
        "compliance_before": old.compliance_rate if old else None,
        "compliance_after": new.compliance_rate if new else None,
        "compliance_change": _delta(old.compliance_rate if old else None, new.compliance_rate if new else None),
        "newly_flagged": [_flagged(f) for k, f in now.items() if k not in was],
        "no_longer_flagged": gone,
    }


def compare(base: list[Pack], head: list[Pack], files: list[str], as_of: dt.datetime,
            fail_on_new: str | None = None, maps: list[SourceMap] | None = None) -> dict[str, Any]:
    """Audit ``files`` with both rule versions; the diff as a plain dict (the JSON form)."""
    # patients never appear in a diff; a throwaway key keeps them and other identifying values out
    # of it all the same, one key for both sides, so a record's pseudonymised key matches across them
    pseudonymise = Pseudonymiser.for_this_run()
    before = _audit(base, head, files, as_of, pseudonymise, maps or [])
    after = _audit(head, base, files, as_of, pseudonymise, maps or [])
    # a rule with versions is compared by its latest one (and its versions' windows)
    base_defs = {(p.id, r.id): (p, r) for p in base for r in sorted(p.rules, key=lambda r: r.starts)}
    head_defs = {(p.id, r.id): (p, r) for p in head for r in sorted(p.rules, key=lambda r: r.starts)}
    rows = [_row(before, after, old, new, changed_parts(base_defs[old], head_defs[new]) if old and new else [])
            for old, new in _pairs(before, after)]
    threshold = SEVERITIES.index(fail_on_new) if fail_on_new else None
    new_at_threshold = sum(len(r["newly_flagged"]) for r in rows
                           if threshold is not None and r["status"] != "removed"
                           and SEVERITIES.index(r["severity"]) <= threshold)

    def side(audit: _Side) -> dict[str, Any]:
        return {"packs": [pack.to_json() for pack in audit.report.packs],
                "records_rejected": audit.report.summary.records_rejected,
                "inputs_not_read": audit.skipped}

    inputs = {i.path: i for i in before.report.inputs} | {i.path: i for i in after.report.inputs}
    return {
        "tool": {"name": before.report.tool_name, "version": before.report.tool_version},
        "as_of": before.report.as_of,
        "base": side(before), "head": side(after),
        "inputs": [{"path": i.path, "record_type": i.record_type, "sha256": i.sha256, "records_read": i.records_read}
                   for i in inputs.values()],
        "summary": {
            "rules_added": sum(r["status"] == "added" for r in rows),
            "rules_removed": sum(r["status"] == "removed" for r in rows),
            "rules_changed": sum(r["status"] == "changed" for r in rows),
            "rules_unchanged": sum(r["status"] == "unchanged" for r in rows),
            "newly_flagged": sum(len(r["newly_flagged"]) for r in rows),
            "no_longer_flagged": sum(len(r["no_longer_flagged"]) for r in rows),
            "now_rejected": sum(1 for r in rows for i in r["no_longer_flagged"] if "now_rejected" in i),
            "records_rejected_before": before.report.summary.records_rejected,
            "records_rejected_after": after.report.summary.records_rejected,
            "fail_on_new": fail_on_new,
            "newly_flagged_at_or_above": new_at_threshold if fail_on_new else None,
        },
        "rules": rows,
    }
