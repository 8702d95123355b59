"""An independent plain-Python judge of SPEC 4.1, used only by the tests to cross-check the engine.

It reads the pack's rules from the plain YAML (yaml.safe_load), not from the engine's parsed
conditions, and shares nothing with the compiler or the durable evaluator: only the value
conversion (engine.values) and the records as the readers produced them.
"""

from __future__ import annotations

from typing import Any

import re2
import yaml

from engine.language.model import RecordType
from engine.language.values import convert


def _and(parts: list[bool | None]) -> bool | None:
    if False in parts:
        return False
    return None if None in parts else True


def _or(parts: list[bool | None]) -> bool | None:
    if True in parts:
        return True
    return None if None in parts else False


DURATION = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(text: str) -> float:
    return float(text[:-1]) * DURATION[text[-1]]


def _judged_fields(where: Any) -> list[str]:
    """The judged record's fields a where compares with ({judged: NAME})."""
    if isinstance(where, dict):
        if set(where) == {"judged"}:
            return [where["judged"]]
        return [name for value in where.values() for name in _judged_fields(value)]
    if isinstance(where, list):
        return [name for item in where for name in _judged_fields(item)]
    return []


def _with_values(tree: Any, params: dict[str, Any]) -> Any:
    """The rules with each parameter reference ``{param: NAME}`` replaced by the parameter's value."""
    if isinstance(tree, dict):
        if set(tree) == {"param"}:
            return params[tree["param"]]
        return {key: _with_values(value, params) for key, value in tree.items()}
    if isinstance(tree, list):
        return [_with_values(item, params) for item in tree]
    return tree


class Reference:
    """``history`` maps a patient to all their accepted records (any type), for history conditions;
    they are scanned linearly here, on purpose nothing like the engine's sorted timelines."""

    def __init__(self, pack_path: str, types: dict[str, RecordType], tz: Any,
                 history: dict[str, list[Any]] | None = None) -> None:
        with open(pack_path, encoding="utf-8") as handle:
            self.pack = yaml.safe_load(handle)
        params = {name: entry["value"] for name, entry in (self.pack.get("parameters") or {}).items()}
        self.pack["rules"] = _with_values(self.pack["rules"], params)
        self.types = types
        self.tz = tz
        self.history = history or {}
        self.judged: Any = None  # the record being judged (history conditions need it)

    def past(self, form: str, spec: dict[str, Any], rtype: RecordType) -> bool | None:
        record = self.judged
        join = spec.get("join")
        mine, theirs = next(iter(join.items())) if isinstance(join, dict) else (join, join)
        if record.time is None or (mine and record.values.get(mine) is None):
            return None
        if any(record.values.get(name) is None for name in _judged_fields(spec.get("where"))):
            return None
        moment = record.time.timestamp()
        other_type = self.types[spec["of"]]
        matches = []
        # a reference table (no patient: a staff roster) is everyone's; the rest is the patient's own
        pool = self.history.get("", []) if not other_type.patient else self.history.get(record.patient, [])
        for other in pool:
            if (other.type, other.key) == (record.type, record.key) or other.type != spec["of"] or other.time is None:
                continue
            if mine and other.values.get(theirs) != record.values.get(mine):
                continue
            if "where" in spec and self.condition(spec["where"], other_type, other.values) is not True:
                continue
            matches.append(other.time.timestamp())
        if form == "first":
            return not any(t < moment for t in matches)
        if form == "since_previous":
            earlier = [t for t in matches if t <= moment]
            return not earlier or moment - max(earlier) >= seconds(spec["at_least"])
        if "within" in spec:
            low = moment - seconds(spec["within"].get("before", "0m"))
            high = moment + seconds(spec["within"].get("after", "0m"))
        else:
            low, high = float("-inf"), float("inf")
        count = sum(1 for t in matches if low <= t <= high)
        if form == "exists":
            return count >= 1
        return (count <= spec.get("at_most", count)) and (count >= spec.get("at_least", count))

    def rules(self) -> list[dict[str, Any]]:
        return list(self.pack["rules"])

    def _const(self, rtype: RecordType, field: str, raw: Any) -> Any:
        spec = rtype.fields.get(field)
        if spec is None:  # a derived field: numbers
            return float(raw)
        if hasattr(raw, "isoformat"):
            raw = raw.isoformat()
        return convert(spec, raw, self.tz)

    def condition(self, cond: dict[str, Any], rtype: RecordType, values: dict[str, Any]) -> bool | None:
        results: list[bool | None] = []
        for key, body in cond.items():
            if key == "all":
                results.append(_and([self.condition(c, rtype, values) for c in body]))
            elif key == "any":
                results.append(_or([self.condition(c, rtype, values) for c in body]))
            elif key == "not":
                inner = self.condition(body, rtype, values)
                results.append(None if inner is None else not inner)
            elif key in ("exists", "count", "since_previous", "first"):
                results.append(self.past(key, body, rtype))
            else:
                reference = isinstance(body, dict) and len(body) == 1 and set(body) <= {"judged", "field"}
                ops = body if isinstance(body, dict) and not reference else {"equals": body}
                results.append(_and([self.leaf(key, op, operand, rtype, values) for op, operand in ops.items()]))
        return _and(results)

    def leaf(self, field: str, op: str, operand: Any, rtype: RecordType, values: dict[str, Any]) -> bool | None:
        value = values.get(field)
        if op == "present":
            return (value is not None) is bool(operand)
        if value is None:
            return None
        if isinstance(operand, dict):
            other = self.judged.values.get(operand["judged"]) if "judged" in operand else values.get(operand["field"])
            if other is None:
                return None
            target = other
        elif op in ("between", "one_of", "none_of"):
            target = [self._const(rtype, field, v) for v in operand]
        elif op == "matches":
            return re2.fullmatch(operand, value) is not None
        else:
            target = self._const(rtype, field, operand)
        return {
            "equals": lambda: value == target, "not_equals": lambda: value != target,
            "less_than": lambda: value < target, "at_most": lambda: value <= target,
            "greater_than": lambda: value > target, "at_least": lambda: value >= target,
            "between": lambda: target[0] <= value <= target[1],
            "one_of": lambda: value in target, "none_of": lambda: value not in target,
        }[op]()

    def outcome(self, rule: dict[str, Any], record: Any) -> str:
        self.judged = record
        values = record.values
        rtype = self.types[rule["for"]]
        when = self.condition(rule["when"], rtype, values) if "when" in rule else True
        if when is None:
            return "not_evaluable"
        if when is False:
            return "not_applicable"
        return "pass" if self.condition(rule["require"], rtype, values) is True else "fail"
