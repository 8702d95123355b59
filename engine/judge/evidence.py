"""How values appear in findings: displayed values, filled-in messages, the fields a rule reads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from engine.language import conditions
from engine.language.model import RecordType, Rule
from engine.language.schema import PLACEHOLDER
from engine.language.values import format_duration


def display(value: Any) -> Any:
    """A value as JSON shows it: times in ISO 8601, durations as ``90m``, numbers rounded to 4 places
    (small ones to 4 significant digits)."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return format_duration(value)
    if isinstance(value, float):
        if value and abs(value) < 0.01:  # 4 places would show 0.00001 as 0.0: keep 4 significant digits
            return float(f"{value:.4g}")
        return round(value, 4)
    return value


def render_message(template: str, values: dict[str, Any],
                   gate: Callable[[str, Any], Any] = lambda name, value: value) -> str:
    """``{field}`` placeholders filled with the record's values, each through ``gate`` (the privacy
    gate: an identifying value becomes its pseudonym); nothing else is interpreted."""
    def fill(match: Any) -> str:
        value = gate(match.group(1), display(values.get(match.group(1))))
        if value is None:
            return "missing"
        if isinstance(value, bool):       # as the export and JSON write it
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return PLACEHOLDER.sub(fill, template)


def evidence_fields(rule: Rule, rtype: RecordType) -> list[str]:
    """Each field the rule reads; a derived field brings the inputs it came from."""
    names: list[str] = []
    for name in conditions.fields_of(rule.when) + conditions.fields_of(rule.require):
        derived = rtype.derived.get(name)
        names.extend((*derived.inputs, name) if derived else (name,))
    return list(dict.fromkeys(names))
