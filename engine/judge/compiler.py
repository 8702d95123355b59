"""Rules -> one durable_rules ruleset (JSON grammar); pure, never imports durable.

Each pack rule has four outcomes that partition the records of its type:
pass = T(when) & T(require), fail = T(when) & ¬T(require), not_applicable = F(when) and
not_evaluable = ¬T(when) & ¬F(when). Three-valued logic is carried by compiling every condition
in four polarities (true, false, not-true, not-false) down to leaves that test a status slot
explicitly. Every disjunction is made exclusive (a | ¬a&b | ¬a&¬b&c), and each outcome is
expanded into its disjunctive normal form with one flat engine rule per term: so a record
matches exactly one engine rule per pack rule, no pattern nests ``$and``/``$or`` (durable caps
a pattern at 32 expression entries and mis-evaluates nested ones in joins), and a lost or
doubled match is an engine fault the evaluator detects.
"""

from __future__ import annotations

from typing import Any, Union

from engine.errors import PackError, Problem
from engine.judge.facts import GUARD, SENTINEL, TYPE, Layout
from engine.language import operators
from engine.language.model import All, Condition, History, Leaf, Not, Outcome, Rule, kind_of

OUTCOME_CODES = {"p": Outcome.PASS, "f": Outcome.FAIL, "a": Outcome.NOT_APPLICABLE, "e": Outcome.NOT_EVALUABLE}
SENTINEL_RULE = "zz_sentinel"
CAP = 1000
MAX_TERMS = 256      # engine rules one outcome of one pack rule may expand into
MAX_ENGINE_RULES = 4000  # durable allows 4096 actions per ruleset

# An atom is one engine test: (operator, key, operand); operand is a number or ("$m", key).
Atom = tuple[str, str, Any]
# A formula is an atom, ("and", parts), ("or", parts), or one of the two constants.
Formula = Union[Atom, tuple[str, tuple[Any, ...]], str]
TRUE = "true"
FALSE = "false"

_NEGATE = {"eq": "neq", "neq": "eq", "lt": "gte", "gte": "lt", "lte": "gt", "gt": "lte"}
_DURABLE = {"neq": "$neq", "lt": "$lt", "lte": "$lte", "gt": "$gt", "gte": "$gte"}


def and_(*parts: Formula) -> Formula:
    kept: list[Formula] = []
    for part in parts:
        if part == FALSE:
            return FALSE
        if part == TRUE:
            continue
        if isinstance(part, tuple) and part[0] == "and":
            kept.extend(part[1])
        else:
            kept.append(part)
    if not kept:
        return TRUE
    return kept[0] if len(kept) == 1 else ("and", tuple(kept))


def or_(*parts: Formula) -> Formula:
    kept: list[Formula] = []
    for part in parts:
        if part == TRUE:
            return TRUE
        if part == FALSE:
            continue
        if isinstance(part, tuple) and part[0] == "or":
            kept.extend(part[1])
        else:
            kept.append(part)
    if not kept:
        return FALSE
    return kept[0] if len(kept) == 1 else ("or", tuple(kept))


def exclusive_or(branches: list[tuple[Formula, Formula]]) -> Formula:
    """``yes_1 | (no_1 & yes_2) | ...`` from (yes, no) pairs, where no is the exact negation of yes."""
    alternatives: list[Formula] = []
    before: list[Formula] = []
    for yes, no in branches:
        alternatives.append(and_(*before, yes))
        before.append(no)
        # each alternative is n atoms long: past a few times the term limit, the outcome cannot
        # fit anyway, and building the rest would cost n**2 (a pack must not make validate slow)
        if len(alternatives) > 4 * MAX_TERMS:
            raise TooComplex(len(alternatives))
    return or_(*alternatives)


class TooComplex(Exception):
    pass


def terms(formula: Formula, limit: int = MAX_TERMS) -> list[tuple[Atom, ...]]:
    """The disjunctive normal form: a list of conjunctions, contradictory ones left out.

    Raises TooComplex as soon as more than ``limit`` terms are found: a pack must not make
    validation slow (an exclusive disjunction of n parts costs n**2 atoms, its check n**3 before).
    """
    return [tuple(dict.fromkeys(term.atoms)) for term in _dnf(formula, limit)]


class _Term:
    """A conjunction being built, with what its atoms fix (for the consistency check of each new atom)."""

    __slots__ = ("atoms", "equal", "seen")

    def __init__(self, atoms: tuple[Atom, ...] = (), equal: dict[str, Any] | None = None,
                 seen: dict[tuple[str, Any], str] | None = None) -> None:
        self.atoms = atoms
        self.equal: dict[str, Any] = equal if equal is not None else {}
        self.seen: dict[tuple[str, Any], str] = seen if seen is not None else {}

    def joined(self, other: _Term) -> _Term | None:
        """This conjunction and ``other``'s, or None when two atoms cannot both hold
        (pruning only; may miss some). Costs the length of ``other`` in Python steps."""
        joined = _Term(self.atoms + other.atoms, dict(self.equal), dict(self.seen))
        for atom in other.atoms:
            if not joined.admit(atom):
                return None
        return joined

    def admit(self, atom: Atom) -> bool:
        op, key, operand = atom
        if op == "eq":
            if key in self.equal and self.equal[key] != operand:
                return False
            self.equal[key] = operand
        frozen = (key, _freeze(operand))
        opposite = self.seen.get(frozen)
        if opposite is not None and _NEGATE.get(opposite) == op:
            return False
        self.seen[frozen] = op
        return True


def _dnf(formula: Formula, limit: int) -> list[_Term]:
    if formula == FALSE:
        return []
    if formula == TRUE:
        return [_Term()]
    if formula[0] == "or":
        found: list[_Term] = []
        for part in formula[1]:
            found.extend(_dnf(part, limit))
            if len(found) > limit:
                raise TooComplex(len(found))
        return found
    if formula[0] == "and":
        found = [_Term()]
        for part in formula[1]:
            options = _dnf(part, limit)
            found = [joined for a in found for b in options if (joined := a.joined(b)) is not None]
            if len(found) > limit:
                raise TooComplex(len(found))
        return found
    term = _Term((formula,))  # type: ignore[arg-type]
    term.admit(formula)  # type: ignore[arg-type]
    return [term]


def _freeze(operand: Any) -> Any:
    return tuple(operand) if isinstance(operand, list) else operand


def to_durable(atom: Atom) -> dict[str, Any]:
    op, key, operand = atom
    value = {"$m": operand[1]} if isinstance(operand, tuple) else operand
    if op == "eq":
        return {key: value}
    return {_DURABLE[op]: {key: value}}


class RuleCompiler:
    """Compiles the conditions of one record type against a Layout."""

    def __init__(self, layout: Layout, type_name: str) -> None:
        self.layout = layout
        self.type_name = type_name
        self.rtype = layout.types[type_name]

    def _slot(self, name: str) -> int:
        return self.layout.slots[(self.type_name, name)]

    def _status(self, name: str, present: bool) -> Formula:
        return ("eq", f"s{self._slot(name)}", 1 if present else 0)

    def _operand(self, name: str, value: Any) -> Any:
        kind = kind_of(self.rtype, name)
        assert kind is not None
        return self.layout.encode_value(kind, value)

    def _compare(self, leaf: Leaf, negate: bool) -> Formula:
        """The leaf's comparison (or its exact negation) on present values."""
        key = f"v{self._slot(leaf.field)}"
        if leaf in self.layout.tested_here:  # evaluated in Python (a pattern, a long list): a 0/1 slot
            return ("eq", f"x{self.layout.tested_here[leaf]}", 0 if negate else 1)
        if leaf.op in ("one_of", "none_of"):
            # distinct items keep the branches exclusive
            items = list(dict.fromkeys(self._operand(leaf.field, v) for v in leaf.value))
            if (leaf.op == "one_of") != negate:
                return or_(*(("eq", key, item) for item in items))
            return and_(*(("neq", key, item) for item in items))
        if leaf.op == "between":
            low, high = (self._operand(leaf.field, v) for v in leaf.value)
            if negate:
                return or_(("lt", key, low), ("gt", key, high))
            return and_(("gte", key, low), ("lte", key, high))
        op = operators.get(leaf.op).engine
        assert op is not None, leaf.op
        op = _NEGATE[op] if negate else op
        if leaf.ref is not None:
            return (op, key, ("$m", f"v{self._slot(leaf.ref)}"))
        return (op, key, self._operand(leaf.field, leaf.value))

    def _known(self, leaf: Leaf) -> Formula:
        return and_(*(self._status(n, True) for n in (leaf.field, leaf.ref) if n))

    def _unknown(self, leaf: Leaf) -> Formula:
        if leaf.ref is None:
            return self._status(leaf.field, False)
        return or_(self._status(leaf.field, False),
                   and_(self._status(leaf.field, True), self._status(leaf.ref, False)))

    def true(self, cond: Condition) -> Formula:
        if isinstance(cond, History):
            cond = cond.leaf
        if isinstance(cond, Leaf):
            if cond.op == "present":
                return self._status(cond.field, cond.value)
            return and_(self._known(cond), self._compare(cond, negate=False))
        if isinstance(cond, Not):
            return self.false(cond.part)
        if isinstance(cond, All):
            return and_(*(self.true(p) for p in cond.parts))
        return exclusive_or([(self.true(p), self.not_true(p)) for p in cond.parts])

    def false(self, cond: Condition) -> Formula:
        if isinstance(cond, History):
            cond = cond.leaf
        if isinstance(cond, Leaf):
            if cond.op == "present":
                return self._status(cond.field, not cond.value)
            return and_(self._known(cond), self._compare(cond, negate=True))
        if isinstance(cond, Not):
            return self.true(cond.part)
        if isinstance(cond, All):
            return exclusive_or([(self.false(p), self.not_false(p)) for p in cond.parts])
        return and_(*(self.false(p) for p in cond.parts))

    def not_true(self, cond: Condition) -> Formula:
        if isinstance(cond, History):
            cond = cond.leaf
        """False or unknown."""
        if isinstance(cond, Leaf):
            if cond.op == "present":
                return self.false(cond)
            return or_(self._unknown(cond), self.false(cond))
        if isinstance(cond, Not):
            return self.not_false(cond.part)
        if isinstance(cond, All):
            return exclusive_or([(self.not_true(p), self.true(p)) for p in cond.parts])
        return and_(*(self.not_true(p) for p in cond.parts))

    def not_false(self, cond: Condition) -> Formula:
        if isinstance(cond, History):
            cond = cond.leaf
        """True or unknown."""
        if isinstance(cond, Leaf):
            if cond.op == "present":
                return self.true(cond)
            return or_(self._unknown(cond), self.true(cond))
        if isinstance(cond, Not):
            return self.not_true(cond.part)
        if isinstance(cond, All):
            return and_(*(self.not_false(p) for p in cond.parts))
        return exclusive_or([(self.not_false(p), self.false(p)) for p in cond.parts])

    def outcomes(self, rule: Rule) -> dict[str, Formula]:
        """The formula of each outcome code; an impossible outcome is left out."""
        when_true = TRUE if rule.when is None else self.true(rule.when)
        result = {
            "p": and_(when_true, self.true(rule.require)),
            "f": and_(when_true, self.not_true(rule.require)),
        }
        if rule.when is not None:
            result["a"] = self.false(rule.when)
            result["e"] = and_(self.not_true(rule.when), self.not_false(rule.when))
        return {code: formula for code, formula in result.items() if formula != FALSE}


def engine_rule_name(index: int, code: str, term: int) -> str:
    return f"r{index}_{code}_{term}"


def parse_rule_name(name: str) -> tuple[int, str]:
    """(pack rule index, outcome code) of an engine rule name."""
    index, code, _ = name.split("_")
    return int(index[1:]), code


# durable walks its test network with a stack of 64 entries (events.c, handleAlpha) and fails a
# fact with error 303 when more branches match at one node: with every pack rule's tests hanging
# off the type test, a fact of a type with more than about 64 rules could not be judged. Rules
# are therefore grouped by eight under always-true tests on the guard (one operator per level,
# so the levels are distinct nodes), which bounds every node's matching branches.
FAN_OUT = 8
_LEVEL_TESTS = ("gt", "gte", "neq")  # _a (= 1) > -(n+1), >= -(n+1), != -(n+1): true, distinct per n
# A fact holds at most 255 properties (state.h); id, sid, the guard and the type take four.
MAX_FACT_KEYS = 250


def _grouping(position: int, count: int) -> list[Atom]:
    """Always-true tests placing the ``position``-th of ``count`` rules of a type in a tree of
    groups of FAN_OUT (none when FAN_OUT or fewer rules share the type)."""
    atoms: list[Atom] = []
    span = FAN_OUT
    level = 0
    while span < count:
        atoms.append((_LEVEL_TESTS[level], GUARD, -(position // span + 1)))
        span *= FAN_OUT
        level += 1
    return atoms[::-1]  # the widest groups first


def _check_fact_size(rules: list[Rule], layout: Layout) -> list[Problem]:
    problems = []
    for type_name in layout.type_codes:
        size = len(layout.keys(type_name))
        if size > MAX_FACT_KEYS:
            first = next(rule for rule in rules if rule.for_type == type_name).mark
            problems.append(Problem(first.path, first.line, first.column,
                                    f'the rules on record type "{type_name}" read too many fields for the rule '
                                    f"engine ({size} values per record; it holds {MAX_FACT_KEYS}, a field "
                                    f"taking two and a pattern one): audit some of the rules in another run"))
    return problems


def compile_rules(rules: list[Rule], layout: Layout) -> dict[str, Any]:
    """The durable ruleset document for ``rules``; rule ``i`` of the list is ``r<i>_<code>_<term>``."""
    ruleset: dict[str, Any] = {}
    problems: list[Problem] = _check_fact_size(rules, layout)
    of_type = {name: [i for i, rule in enumerate(rules) if rule.for_type == name] for name in layout.type_codes}
    position = {index: number for indexes in of_type.values() for number, index in enumerate(indexes)}
    for index, rule in enumerate(rules):
        compiler = RuleCompiler(layout, rule.for_type)
        guard: list[Atom] = [("eq", GUARD, 1), ("eq", TYPE, layout.type_codes[rule.for_type]),
                             *_grouping(position[index], len(of_type[rule.for_type]))]
        try:
            for code, formula in compiler.outcomes(rule).items():
                for number, term in enumerate(terms(formula)):
                    test = [to_durable(atom) for atom in (*guard, *term)]
                    ruleset[engine_rule_name(index, code, number)] = {"all": [{"m": {"$and": test}}], "cap": CAP}
        except TooComplex as exc:
            problems.append(Problem(rule.mark.path, rule.mark.line, rule.mark.column,
                                    f"rule {rule.id} is too complex for the rule engine (more than {MAX_TERMS} "
                                    f"alternatives for one outcome, {exc.args[0]} found): split it into rules"))
    if len(ruleset) > MAX_ENGINE_RULES:
        first = rules[0].mark
        problems.append(Problem(first.path, first.line, first.column,
                                f"the packs compile to {len(ruleset)} engine rules; the engine allows "
                                f"{MAX_ENGINE_RULES}: audit with fewer or simpler rules at a time"))
    if problems:
        raise PackError(problems)
    ruleset[SENTINEL_RULE] = {"all": [{"m": {SENTINEL: 1}}]}
    return ruleset
