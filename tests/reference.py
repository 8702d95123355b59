"""An independent plain-Python judge of SPEC 4.1, used only by the tests to cross-check the engine.

It reads the pack's rules from the plain YAML (yaml.safe_load), not from the engine's parsed
conditions, and shares nothing with the compiler or the durable evaluator: only the value
conversion (engine.values) and the records as the readers produced them.
"""

from __future__ import annotations

from typing import Any

import re2
import yaml

from engine.model import RecordType
from engine.values import convert


def _and(parts: list[bool | None]) -> bool | None:
    if False in parts:
        return False
    return None if None in parts else True


def _or(parts: list[bool | None]) -> bool | None:
    if True in parts:
        return True
    return None if None in parts else False


class Reference:
    def __init__(self, pack_path: str, types: dict[str, RecordType], tz: Any) -> None:
        with open(pack_path, encoding="utf-8") as handle:
            self.pack = yaml.safe_load(handle)
        self.types = types
        self.tz = tz

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
            else:
                ops = body if isinstance(body, dict) else {"equals": body}
                results.append(_and([self.leaf(key, op, operand, rtype, values) for op, operand in ops.items()]))
        return _and(results)

    def leaf(self, field: str, op: str, operand: Any, rtype: RecordType, values: dict[str, Any]) -> bool | None:
        value = values.get(field)
        if op == "present":
            return (value is not None) is bool(operand)
        if value is None:
            return None
        if isinstance(operand, dict):
            other = values.get(operand["field"])
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

    def outcome(self, rule: dict[str, Any], values: dict[str, Any]) -> str:
        rtype = self.types[rule["for"]]
        when = self.condition(rule["when"], rtype, values) if "when" in rule else True
        if when is None:
            return "not_evaluable"
        if when is False:
            return "not_applicable"
        return "pass" if self.condition(rule["require"], rtype, values) is True else "fail"
