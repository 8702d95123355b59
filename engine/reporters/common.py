"""Helpers several formats (and the command line's messages) share: characters made visible."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from engine.errors import UsageError

if TYPE_CHECKING:
    from engine.results import Report


def escape_matches(pattern: re.Pattern[str], text: str) -> str:
    """``text`` with each character ``pattern`` matches written as ``\\xNN`` or ``\\uNNNN``: control
    characters, bidi overrides ("Trojan Source") and whatever else a format cannot show or hold."""
    return pattern.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


# Control characters (C0, DEL, C1) and the bidirectional overrides that make a line read differently
# from its characters ("Trojan Source").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(value: Any, absent: str = "-", spaces: str = "") -> str:
    """``value`` as text a terminal shows as it is, ``absent`` for None: record values, CSV headers
    and pack keys are untrusted, and an escape sequence in them could rewrite the user's terminal.
    Control characters and bidi overrides become visible escapes (``\\x1b``), except those in
    ``spaces`` (the terminal report's tab and line breaks, which would break its layout), which
    become a space. The one implementation for the terminal report and the command line's messages.
    """
    text = absent if value is None else str(value)
    if spaces:
        text = text.translate({ord(ch): " " for ch in spaces})
    return escape_matches(_UNPRINTABLE, text)


def period(report: Report) -> str:
    """The audit period: the one given (--period) with the judged records' span, else that span."""
    first, last = report.period_first, report.period_last
    judged = "no record times" if first is None and last is None else f"{_shown(first)} to {_shown(last)}"
    if not report.period_given:
        return judged
    start, end = report.period_from, report.period_until
    given = f"{start} to {end}" if start and end else f"from {start}" if start else f"until {end}"
    return f"{given} (as given; records judged: {judged})"


def _shown(value: str | None) -> str:
    return "—" if value is None else value


def points(change: float | None) -> str:
    """A change of compliance rate in percentage points ("+1.2 pp", "0.0 pp"), or "n/a"."""
    if change is None:
        return "n/a"
    shown = round(change * 100, 1) + 0.0  # + 0.0: no "-0.0" for a change too small to show
    return "0.0 pp" if shown == 0 else f"{shown:+.1f} pp"


def vs_last(report: Report, pack: str, rule: str, short: bool = False) -> str:
    """A rule's "vs last audit" cell: the change of its rate and its findings new / persisting /
    resolved since the last archived audit ("" when the run has no archive). ``short``: the change
    and the new ones only (the terminal's narrow table; the rest is in the line under it)."""
    compared = report.compared_to
    if compared is None:
        return "first audit" if report.archived else ""
    change = compared.for_rule(pack, rule)
    if change is None:
        return "n/a"
    moved = points(change.change) if change.in_last_audit else "new rule"
    if change.new is None:
        return moved
    if short:
        return f"{moved}, {change.new} new"
    return f"{moved}; {change.new} new, {change.persisting} persisting, {change.resolved} resolved"


def compared_text(report: Report) -> str | None:
    """What this audit is compared with, in one sentence (None when the run has no archive)."""
    if not report.archived:
        return None
    compared = report.compared_to
    if compared is None:
        return "first audit of these packs in the archive: nothing to compare with yet"
    span = (f"{compared.period_from or '…'} to {compared.period_until or '…'}"
            if compared.period_from or compared.period_until else
            f"records {_shown(compared.first)} to {_shown(compared.last)}")
    said = f"compared with archived audit {compared.audit} (as of {compared.as_of}; {span})"
    if compared.new is None:
        return f"{said}: {compared.note}" if compared.note else said
    return (f"{said}: {compared.new} new findings, {compared.persisting} persisting, "
            f"{compared.resolved} resolved")


T = TypeVar("T")


def by_extension(path: str, renderers: Mapping[str, T], what: str, allowed: str) -> T:
    """The renderer of an output file by its extension (any case); otherwise a usage error saying
    ``cannot write {what} as "{path}": use {allowed}``."""
    found = renderers.get(os.path.splitext(path)[1].lower())
    if found is None:
        raise UsageError(f'cannot write {what} as "{path}": use {allowed}')
    return found
