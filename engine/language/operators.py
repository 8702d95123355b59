"""The operators of the condition language, one row each: what the pack writes after it, the
plain-Python test, how explain and rule listings write it, and its rule-engine comparison.

Grammar validation, the plain evaluator (conditions), the compiler and explain all read this
table: adding an operator is one row here (plus, for a new kind of operand, its handling in the
grammar and the compiler) and its tests.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from engine.language.patterns import compile_pattern, full_match

# What a pack writes after an operator: a value, an orderable value, [low, high], a list, a flag
# (true/false) or an RE2 pattern. Ordered forms fit only ordered field types.
ORDERED_FORMS = frozenset({"order", "range"})


@lru_cache(maxsize=1024)
def _pattern(text: str) -> Any:
    return compile_pattern(text)


def _between(value: Any, bounds: Any) -> bool:
    return bool(bounds[0] <= value <= bounds[1])


def _matches(value: Any, pattern: str) -> bool:
    return bool(full_match(_pattern(pattern), value))


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    operand: str                          # value | order | range | set | flag | regex
    test: Callable[[Any, Any], bool]      # on a present value and the operand
    symbol: str                           # how explain and rule listings write it
    engine: str | None = None             # durable's comparison for a value or order operand

    @property
    def ordered(self) -> bool:
        """Whether it fits only ordered field types (numbers, dates, datetimes, durations)."""
        return self.operand in ORDERED_FORMS


OPERATORS: dict[str, Operator] = {op.name: op for op in (
    Operator("equals", "value", operator.eq, "=", "eq"),
    Operator("not_equals", "value", operator.ne, "≠", "neq"),
    Operator("less_than", "order", operator.lt, "<", "lt"),
    Operator("at_most", "order", operator.le, "≤", "lte"),
    Operator("greater_than", "order", operator.gt, ">", "gt"),
    Operator("at_least", "order", operator.ge, "≥", "gte"),
    Operator("between", "range", _between, "between"),
    Operator("one_of", "set", lambda value, items: value in items, "one of"),
    Operator("none_of", "set", lambda value, items: value not in items, "none of"),
    # present is never unknown: evaluators test it before any value is read (a present value holds
    # {present: true})
    Operator("present", "flag", lambda value, expected: bool(expected), "documented"),
    Operator("matches", "regex", _matches, "matches"),
)}


def get(name: str) -> Operator:
    """The operator called ``name``; a KeyError names the known ones (validation has said it first)."""
    try:
        return OPERATORS[name]
    except KeyError:
        raise KeyError(f"unknown operator {name!r} (known: {', '.join(OPERATORS)})") from None
