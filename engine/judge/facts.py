"""Records -> slim, typed facts for the rule engine: every value numeric, every field with a status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.language import operators
from engine.language.conditions import leaves_of
from engine.language.model import Leaf, RecordType, Rule, kind_of
from engine.language.patterns import Matcher

GUARD = "_a"   # every pattern tests _a == 1: durable's own state document never carries it
TYPE = "_t"
SENTINEL = "_s"


class Layout:
    """Which fact key carries which field, for the fields the rules read.

    Each field read by a rule gets a value slot ``v<i>`` and a status slot ``s<i>`` (1 present,
    0 missing); a missing value is sent as 0 so that no comparison ever meets an absent operand.
    Strings and enums travel as interned integers and booleans as 0/1, so the engine only ever
    compares numbers (durable compares mistyped values as strings). ``matches`` is evaluated here
    with RE2 and sent as a 0/1 slot ``x<j>``, because durable's own regex dialect has false negatives;
    so is ``one_of`` / ``none_of`` with more than MAX_SET_IN_ENGINE values (a code list), which the
    engine could only test as that many alternatives, each an engine rule.
    """

    def __init__(self, types: dict[str, RecordType], rules: list[Rule]) -> None:
        self.types = types
        self.type_codes = {name: code for code, name in enumerate(sorted({r.for_type for r in rules}))}
        self.slots: dict[tuple[str, str], int] = {}
        self.tested_here: dict[Leaf, int] = {}  # leaves evaluated in Python -> their x<j> slot
        self.per_type: dict[str, list[tuple[str, int, str]]] = {name: [] for name in self.type_codes}
        # per type: (field, slot key, test) of each leaf evaluated here and sent as 0/1
        self.precomputed: dict[str, list[tuple[str, str, Callable[[Any], bool]]]] = {n: [] for n in self.type_codes}
        self.strings: dict[str, int] = {}
        for rule in rules:
            rtype = types[rule.for_type]
            for leaf in leaves_of(rule.when) + leaves_of(rule.require):
                for name in (leaf.field, leaf.ref):
                    if name and (rule.for_type, name) not in self.slots:
                        slot = len(self.slots)
                        self.slots[(rule.for_type, name)] = slot
                        kind = kind_of(rtype, name)
                        assert kind is not None
                        self.per_type[rule.for_type].append((name, slot, kind))
                test = _precomputed(leaf)
                if test is not None and leaf not in self.tested_here:
                    index = len(self.tested_here)
                    self.tested_here[leaf] = index
                    self.precomputed[rule.for_type].append((leaf.field, f"x{index}", test))

        self._encoders = {name: self._plan(name) for name in self.type_codes}

    def _plan(self, type_name: str) -> list[tuple[str, str, str, Any]]:
        """(field, status key, value key, value encoder) for each slot of a type, computed once."""
        plan = []
        for name, slot, kind in self.per_type[type_name]:
            plan.append((name, f"s{slot}", f"v{slot}", self._encoder(kind)))
        return plan

    def _encoder(self, kind: str) -> Any:
        if kind in ("string", "enum"):
            return self.intern
        if kind == "boolean":
            return int
        if kind == "datetime":
            return lambda value: value.timestamp()
        if kind == "date":
            return lambda value: value.toordinal()
        if kind == "duration":
            return lambda value: value.total_seconds()
        return None

    def intern(self, text: str) -> int:
        code = self.strings.get(text)
        if code is None:
            code = self.strings[text] = len(self.strings)
        return code

    def encode_value(self, kind: str, value: Any) -> Any:
        encoder = self._encoder(kind)
        return value if encoder is None else encoder(value)

    def keys(self, type_name: str) -> list[str]:
        """The fact keys of a type, in the order of ``encode_row``."""
        keys = [k for _, status, value, _ in self._encoders[type_name] for k in (status, value)]
        return keys + [key for _, key, _ in self.precomputed[type_name]]

    def encode_row(self, type_name: str, values: dict[str, Any]) -> tuple[Any, ...]:
        """The fact's values in ``keys`` order: plain numbers, cheap to send to the engine's process."""
        row: list[Any] = []
        append = row.append
        for name, _, _, encoder in self._encoders[type_name]:
            value = values.get(name)
            if value is None:
                append(0)
                append(0)
            else:
                append(1)
                append(value if encoder is None else encoder(value))
        for name, _, test in self.precomputed[type_name]:
            value = values.get(name)
            append(1 if value is not None and test(value) else 0)
        return tuple(row)

    def encode(self, type_name: str, values: dict[str, Any], fact_id: int) -> dict[str, Any]:
        """The whole fact as the engine sees it (the worker builds the same from a row)."""
        fact: dict[str, Any] = {"id": str(fact_id), GUARD: 1, TYPE: self.type_codes[type_name]}
        fact.update(zip(self.keys(type_name), self.encode_row(type_name, values)))
        return fact


MAX_SET_IN_ENGINE = 16  # one_of / none_of values compiled into engine tests; a longer list is tested here


def _precomputed(leaf: Leaf) -> Callable[[Any], bool] | None:
    """The test of a leaf evaluated in Python and sent as a 0/1 slot (true when the leaf holds on a
    present value), or None for a leaf the engine tests itself."""
    form = operators.get(leaf.op).operand
    if form == "regex":
        return Matcher(leaf.value)
    if form == "set" and len(leaf.value) > MAX_SET_IN_ENGINE:
        items, test = frozenset(leaf.value), operators.get(leaf.op).test
        return lambda value: test(value, items)
    return None


def sentinel() -> dict[str, Any]:
    """A fact only the sentinel rule matches, so an action always runs before delete_state
    (durable frees uninitialised memory when a state is deleted before any action ran)."""
    return {"id": "sentinel", SENTINEL: 1}
