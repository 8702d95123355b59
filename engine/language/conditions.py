"""The rule language's conditions in Python: compiled to closures under SPEC 4.1's three-valued
logic (the one evaluator; every answer of the rule engine is checked through it), the missing fields
behind an unknown, and their human readings."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from engine.language import operators
from engine.language.model import JUDGED_PREFIX, AnyOf, Condition, History, Leaf, Not, Outcome
from engine.language.patterns import compile_pattern, full_match
from engine.language.values import format_duration

Truth = bool | None  # None is "unknown"


def fields_of(cond: Condition | None) -> list[str]:
    """Every field a condition reads, in order of first use."""
    names: list[str] = []

    def walk(c: Condition) -> None:
        if isinstance(c, History):
            for name in (c.time_field, c.join, *c.judged):
                if name and name not in names:
                    names.append(name)
        elif isinstance(c, Leaf):
            for name in (c.field, c.ref):
                if name and name not in names:
                    names.append(name)
        elif isinstance(c, Not):
            walk(c.part)
        else:
            for part in c.parts:
                walk(part)

    if cond is not None:
        walk(cond)
    return names


def leaves_of(cond: Condition | None) -> list[Leaf]:
    if cond is None:
        return []
    if isinstance(cond, History):
        return [cond.leaf]
    if isinstance(cond, Leaf):
        return [cond]
    if isinstance(cond, Not):
        return leaves_of(cond.part)
    return [leaf for part in cond.parts for leaf in leaves_of(part)]


def compare(op: str, value: Any, operand: Any) -> bool:
    """A leaf operator on two present values of one kind."""
    return bool(operators.get(op).test(value, operand))


def evaluate(cond: Condition, values: dict[str, Any],
             forced: dict[int, Truth] | None = None) -> tuple[Truth, list[str]]:
    """The condition's truth on ``values`` (from its compiled closure, the one evaluator) and, when
    unknown, the missing fields that made it so.

    A history condition's truth is in ``values`` under its name (put there from the timeline).
    ``forced`` sets the truth of some parts, by id(), whatever the values say (rule-test coverage
    asks what the outcome would have been).
    """
    truth = (compile_condition(cond, forced) if forced else _compiled(cond))(values)
    if truth is not None:
        return truth, []
    return None, list(dict.fromkeys(_missing(cond, values, forced)))


def _missing(cond: Condition, values: dict[str, Any], forced: dict[int, Truth] | None) -> list[str]:
    """The missing fields behind an unknown ``cond``: those of its unknown parts."""
    if forced and id(cond) in forced:
        return []
    if isinstance(cond, History):
        return [n for n in (cond.time_field, cond.join, *cond.judged) if n and values.get(n) is None] \
            or [cond.time_field]
    if isinstance(cond, Leaf):
        return [n for n in (cond.field, cond.ref) if n and values.get(n) is None]
    if isinstance(cond, Not):
        return _missing(cond.part, values, forced)
    return [name for part in cond.parts
            if (compile_condition(part, forced) if forced else _compiled(part))(values) is None
            for name in _missing(part, values, forced)]


def outcome(when: Truth, require: Truth) -> Outcome:
    """A rule's outcome from its ``when`` (True when it has none) and ``require`` truths (SPEC 4)."""
    if when is None:
        return Outcome.NOT_EVALUABLE
    if when is False:
        return Outcome.NOT_APPLICABLE
    return Outcome.PASS if require is True else Outcome.FAIL


def compile_outcome(when: Condition | None, require: Condition) -> Callable[[dict[str, Any]], Outcome]:
    """A rule's outcome on a record's values as a closure (``outcome`` of the compiled truths): the
    plain-Python judgement every answer of the rule engine is checked against."""
    test_when = compile_condition(when) if when is not None else None
    test_require = compile_condition(require)

    def judge(values: dict[str, Any]) -> Outcome:
        if test_when is not None:
            truth = test_when(values)
            if truth is None:
                return Outcome.NOT_EVALUABLE
            if truth is False:
                return Outcome.NOT_APPLICABLE
        return Outcome.PASS if test_require(values) is True else Outcome.FAIL
    return judge


def histories_of(cond: Condition | None) -> list[History]:
    """Every history condition in a condition tree, in order."""
    if cond is None or isinstance(cond, Leaf):
        return []
    if isinstance(cond, History):
        return [cond]
    if isinstance(cond, Not):
        return histories_of(cond.part)
    return [h for part in cond.parts for h in histories_of(part)]


def describe_window(cond: History) -> str:
    if cond.form in ("since_previous", "first") or (cond.before is None and cond.after is None):
        return "" if cond.form in ("since_previous", "first") else "in the whole history"
    parts = [f"{format_duration(cond.before)} before" if cond.before else "",
             f"{format_duration(cond.after)} after" if cond.after else ""]
    return "within " + (" and ".join(p for p in parts if p) or "the same moment")


def describe_history(cond: History) -> str:
    text = f"{cond.form} {cond.of}"
    if cond.where is not None:
        text += f" where ({describe(cond.where)})"
    if cond.join:
        text += f" with the same {cond.join}" if cond.their_join == cond.join else \
            f" whose {cond.their_join} is this {cond.join}"
    window = describe_window(cond)
    if window:
        text += f" {window}"
    if cond.at_most is not None:
        text += f", at most {cond.at_most}"
    if cond.at_least is not None:
        text += f", at least {cond.at_least}"
    if cond.gap is not None:
        text += f" at least {format_duration(cond.gap)}"
    return text


def describe(cond: Condition | None) -> str:
    """A one-line human reading of a condition, for ``rules`` listings."""
    if cond is None:
        return "always"
    if isinstance(cond, History):
        return describe_history(cond)
    if isinstance(cond, Leaf):
        if cond.op == "present":
            return f"{cond.field} {'documented' if cond.value else 'not documented'}"
        if cond.op == "between":
            return f"{cond.field} between [{_show(cond.value[0])}, {_show(cond.value[1])}]"
        operand = cond.ref if cond.ref else _show(cond.value)
        if cond.ref and cond.ref.startswith(JUDGED_PREFIX):
            operand = f"the judged record's {cond.ref[len(JUDGED_PREFIX):]}"
        return f"{cond.field} {operators.get(cond.op).symbol} {operand}"
    if isinstance(cond, Not):
        return f"not ({describe(cond.part)})"
    joiner = " and " if not isinstance(cond, AnyOf) else " or "
    return joiner.join(describe(p) if isinstance(p, Leaf) else f"({describe(p)})" for p in cond.parts)


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)




def _constant_leaf(op: str, field: str, expected: Any,
                   test: Callable[[Any, Any], bool]) -> Callable[[dict[str, Any]], Truth]:
    """A leaf comparing a field with a constant through the operator table's test; a list operand
    becomes a set and a pattern is compiled once, since every record's every rule is judged through
    these (each answer of the engine is checked)."""
    form = operators.get(op).operand
    if form == "set":  # the table's membership test, on a set rather than the pack's list
        expected = frozenset(expected)
    if form == "regex":
        pattern = compile_pattern(expected)

        def matches(values: dict[str, Any]) -> Truth:
            value = values.get(field)
            return None if value is None else full_match(pattern, value)
        return matches

    def leaf(values: dict[str, Any]) -> Truth:
        value = values.get(field)
        return None if value is None else test(value, expected)
    return leaf


def compile_condition(cond: Condition, forced: dict[int, Truth] | None = None) -> Callable[[dict[str, Any]], Truth]:
    """The condition's truth (True, False or None for unknown) as a closure, under SPEC 4.1's
    three-valued logic: the one evaluator of the rule language in Python. Every answer of the rule
    engine is checked through these, and a history condition's ``where`` is tried on many records.

    ``forced`` fixes the truth of some parts, by id(), whatever the values say.
    """
    if forced and id(cond) in forced:
        fixed = forced[id(cond)]
        return lambda values: fixed
    if isinstance(cond, History):
        name = cond.name
        return lambda values: values.get(name)
    if isinstance(cond, Leaf):
        field, ref, expected = cond.field, cond.ref, cond.value
        if cond.op == "present":
            return lambda values: (values.get(field) is not None) == expected
        test = operators.get(cond.op).test
        if ref:
            def compared(values: dict[str, Any]) -> Truth:
                value, operand = values.get(field), values.get(ref)
                return None if value is None or operand is None else test(value, operand)
            return compared
        return _constant_leaf(cond.op, field, expected, test)
    if isinstance(cond, Not):
        inner = compile_condition(cond.part, forced)

        def negate(values: dict[str, Any]) -> Truth:
            truth = inner(values)
            return None if truth is None else not truth
        return negate
    parts = [compile_condition(part, forced) for part in cond.parts]
    decisive = isinstance(cond, AnyOf)

    def combine(values: dict[str, Any]) -> Truth:
        unknown = False
        for part in parts:
            truth = part(values)
            if truth is decisive:
                return decisive
            if truth is None:
                unknown = True
        return None if unknown else not decisive
    return combine


# The closures of conditions evaluated again and again (the missing fields of each finding, explain):
# conditions are frozen, so equal ones share one.
_compiled = functools.lru_cache(maxsize=4096)(compile_condition)


def need(needed: dict[str, dict[str, str]], rtype: Any, name: str, why: str) -> None:
    """Note in ``needed`` (type -> field -> why) the declared field ``name`` of ``rtype``, or the
    inputs of the derived field ``name``, unless an earlier reader is noted already."""
    if name in rtype.derived:
        for source in rtype.derived[name].inputs:
            need(needed, rtype, source, f"{why} through {name}")
    elif name in rtype.fields:
        needed.setdefault(rtype.name, {}).setdefault(name, why)


def fields_read(rules: list[Any], types: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Per record type, every declared field the rules read (directly, through derive, as a history
    condition's where or join, or as key, patient or time), with the first rule that reads it:
    what an export must provide (SPEC 8, a column that is not there stops the run)."""
    needed: dict[str, dict[str, str]] = {}

    def add(type_name: str, name: str | None, why: str) -> None:
        rtype = types.get(type_name)
        if rtype is not None and name is not None:
            need(needed, rtype, name, why)

    def identity(type_name: str, why: str) -> None:
        rtype = types.get(type_name)
        if rtype is not None:
            for name, role in ((rtype.key, "key"), (rtype.patient, "patient"), (rtype.time, "time")):
                add(type_name, name, f"the {role} of {type_name}, {why}")

    for rule in rules:
        why = f"read by rule {rule.id}"
        identity(rule.for_type, why)
        for name in fields_of(rule.when) + fields_of(rule.require):
            add(rule.for_type, name, why)
        if rule.per is not None and rule.per != "patient":
            add(rule.for_type, rule.per, f"counted per by rule {rule.id}")
        for history in histories_of(rule.when) + histories_of(rule.require):
            identity(history.of, f"looked at by rule {rule.id}")
            for name in fields_of(history.where):
                add(history.of, name, f"read by rule {rule.id}'s {history.form}")
            if history.join:
                add(history.of, history.their_join, f"joined on by rule {rule.id}")
    return needed
