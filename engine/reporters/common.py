"""Helpers several formats share: which pack a finding belongs to, characters made visible."""

from __future__ import annotations

import re
from typing import Any


def escape_matches(pattern: re.Pattern[str], text: str) -> str:
    """``text`` with each character ``pattern`` matches written as ``\\xNN`` or ``\\uNNNN``: control
    characters, bidi overrides ("Trojan Source") and whatever else a format cannot show or hold."""
    return pattern.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


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
