"""The engine's verdicts remembered by signature: records that read alike are judged once.

A rule's outcome is a function of the truths of its conditions' atoms: each leaf (a field against
the pack's constant, against another field, a pattern, presence) and each history answer, each
true, false or unknown. A record's *signature* is the vector of the truths of every atom of every
rule of its type. Two records with one signature get the same outcome from every rule, so the
engine judges the first record of each signature (its answer checked by the plain-Python judgement
as always) and every later record of that signature takes the same outcomes. Each record is still
tallied on its own: its stratum, its finding with its own message and evidence, its waiver.

This remembers the engine's verdict; it judges nothing itself. Where the engine could read two
records of one signature differently, it is not trusted: a record with a time the engine's float
seconds cannot hold to the microsecond has no signature and is judged by the engine, and one
remembered record in session.CHECK_EVERY is judged by the engine again and checked. Where outcomes
are observed one by one (an outcome hook: explain, rule tests, the cross-check) it is not used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from engine.language import conditions
from engine.language.model import All, AnyOf, Condition, History, Leaf, Not, Outcome, Rule

Signature = tuple[Any, ...]
Truth = bool | None
MAX_SIGNATURES = 200_000  # past this many, a new signature is judged without being remembered
# The years whose times the engine holds to the microsecond: it reads a time as float seconds since
# 1970, exact to the microsecond while they are below 2**33 (about 272 years either side).
_EXACT_YEARS = (1698, 2241)


def atoms(rules: list[Rule]) -> list[Callable[[dict[str, Any]], Truth]]:
    """Each distinct atom of the rules' conditions as a closure giving its truth on a record's values."""
    found: dict[Any, Callable[[dict[str, Any]], Truth]] = {}
    for rule in rules:
        for atom in _atoms(rule.when) + _atoms(rule.require):
            key = _key(atom)
            if key not in found:
                found[key] = conditions.compile_condition(atom)
    return list(found.values())


def _atoms(cond: Condition | None) -> list[Leaf | History]:
    if cond is None:
        return []
    if isinstance(cond, Leaf | History):
        return [cond]
    if isinstance(cond, Not):
        return _atoms(cond.part)
    assert isinstance(cond, All | AnyOf)
    return [atom for part in cond.parts for atom in _atoms(part)]


def _key(atom: Leaf | History) -> Any:
    if isinstance(atom, History):
        return ("history", atom.name)
    return (atom.field, atom.op, repr(atom.value), atom.ref)


class Verdicts:
    """The outcomes of each signature judged so far, the records waiting for a signature's first
    record to be judged, and the counts of passes and not-applicables taken from memory."""

    def __init__(self, rules_by_type: dict[str, list[int]], type_atoms: dict[str, list[Callable[..., Truth]]],
                 per_record: set[int], times: dict[str, list[str]] | None = None) -> None:
        self.rules_by_type = rules_by_type
        self.type_atoms = type_atoms
        self.times = times or {}  # per type, the datetime fields its rules read (the engine reads them as floats)
        self.per_record = per_record  # rules whose every outcome is tallied record by record (dated ones)
        self.known: dict[Signature, tuple[list[tuple[int, Outcome]], list[tuple[int, Outcome]]]] = {}
        self.waiting: dict[Signature, list[Any]] = {}
        self.counted: dict[tuple[Signature, tuple[str, ...]], int] = {}

    def signature(self, type_name: str, values: dict[str, Any]) -> Signature | None:
        """The record's signature; None for a record the engine must judge itself: one with a time
        outside the years 1698-2241, which the engine's float seconds cannot hold to the microsecond,
        so that two times the rule language tells apart may read alike to the engine."""
        for name in self.times.get(type_name, ()):
            value = values.get(name)
            if value is not None and not _EXACT_YEARS[0] <= value.year <= _EXACT_YEARS[1]:
                return None
        return (type_name, *[atom(values) for atom in self.type_atoms[type_name]])

    @property
    def full(self) -> bool:
        return len(self.known) + len(self.waiting) >= MAX_SIGNATURES

    def remember(self, signature: Signature, outcomes: dict[int, Outcome]) -> list[Any]:
        """Keep the outcomes the engine gave the first record of ``signature`` (rule index ->
        outcome); the records that waited for them."""
        bulk: list[tuple[int, Outcome]] = []
        each: list[tuple[int, Outcome]] = []
        for index in self.rules_by_type[signature[0]]:
            outcome = outcomes[index]
            counted_in_bulk = outcome in (Outcome.PASS, Outcome.NOT_APPLICABLE) and index not in self.per_record
            (bulk if counted_in_bulk else each).append((index, outcome))
        self.known[signature] = (bulk, each)
        return self.waiting.pop(signature, [])

    def take(self, signature: Signature, stratum: tuple[str, ...]) -> list[tuple[int, Outcome]]:
        """A record of a known signature: its passes and not-applicables counted here; the outcomes
        to tally record by record (fails, not evaluable, dated rules)."""
        bulk, each = self.known[signature]
        if bulk:
            key = (signature, stratum)
            self.counted[key] = self.counted.get(key, 0) + 1
        return each

    def counts(self) -> Iterator[tuple[int, Outcome, tuple[str, ...], int]]:
        """(rule index, pass or not applicable, stratum, records) of every record taken from memory;
        then forgotten, so a second call gives only what came since."""
        counted, self.counted = self.counted, {}
        for (signature, stratum), number in counted.items():
            for index, outcome in self.known[signature][0]:
                yield index, outcome, stratum, number
