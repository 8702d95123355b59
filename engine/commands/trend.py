"""``protocol-audit trend TARGET``: each rule's compliance over the audits an archive holds (SPEC 9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.version import __version__


def trend(target: str, packs: list[str]) -> dict[str, Any]:
    """The trend of the archive at ``target`` as JSON-ready data: its audits, by the time they audited, and per
    rule its counts and rate in each audit that judged it (only the rules of ``packs``, if given)."""
    from engine.archive import Archive, is_url

    if not is_url(target) and not Path(target).is_file():
        raise UsageError(f"{target}: no such archive (an audit with --archive {target} makes one)")
    archive = Archive(target, read_only=True)
    try:
        audits = archive.audits()
        counts = archive.all_rules()
    finally:
        archive.close()
    # in the order of the time they audited (the period given, else the first judged record), then as archived
    audits.sort(key=lambda a: (a.start or a.as_of[:10], a.id))
    wanted = set(packs)
    if wanted:
        audits = [a for a in audits if wanted & set(a.pack_set.split(","))]
    rules: dict[tuple[str, str], dict[str, Any]] = {}
    for audit in audits:
        for rule in counts.get(audit.id, []):
            if wanted and rule.pack not in wanted:
                continue
            row = rules.setdefault((rule.pack, rule.rule), {"pack": rule.pack, "rule": rule.rule, "audits": []})
            row.update(title=rule.title, severity=rule.severity, target=rule.target)  # as the latest audit says
            row["audits"].append({"audit": audit.id, "applicable": rule.applicable, "passed": rule.passed,
                                  "failed": rule.failed, "waived": rule.waived,
                                  "compliance_rate": rule.compliance_rate})
    return {
        "tool": {"name": "protocol-audit", "version": __version__},
        "archive": archive.shown,
        "audits": [{"audit": a.id, "as_of": a.as_of, "archived_at": a.archived_at, "tool_version": a.tool_version,
                    "packs": a.pack_set.split(","), "label": label(*a.span),
                    "period": {"from": a.period_from, "until": a.period_until, "first": a.first_record,
                               "last": a.last_record}} for a in audits],
        "rules": [{key: row[key] for key in ("pack", "rule", "title", "severity", "target", "audits")}
                  for row in rules.values()],
    }


def label(start: str, end: str) -> str:
    """An audit on a chart's axis, from the days it audited (ArchivedAudit.span)."""
    return f"{start or '…'}..{end or '…'}" if start or end else "no records"
