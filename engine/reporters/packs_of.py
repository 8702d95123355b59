"""Which pack a finding belongs to, for the formats that group or name findings by pack."""

from __future__ import annotations

from typing import Any


def pack_lookup(report: dict[str, Any]) -> dict[str, str]:
    """Rule id -> the pack of the first rule with that id in the report."""
    found: dict[str, str] = {}
    for rule in report["rules"]:
        found.setdefault(rule["id"], rule.get("pack") or "")
    return found


def pack_of(finding: dict[str, Any], lookup: dict[str, str]) -> str:
    """The finding's pack: its own ``pack`` (the engine always writes it), else its rule's.

    SPEC section 7 lists findings without ``pack``; a report trimmed to those keys still renders.
    """
    return str(finding.get("pack") or lookup.get(finding["rule"], ""))
