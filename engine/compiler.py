"""Rules -> one durable_rules ruleset (JSON grammar); pure, never imports durable.

Each pack rule becomes up to four engine rules, one per outcome, that partition the records of
its type: pass = T(when) & T(require), fail = T(when) & ¬T(require), not_applicable = F(when),
not_evaluable = ¬T(when) & ¬F(when). Three-valued logic is carried by compiling every condition
in four polarities (true, false, not-true, not-false) down to leaves that test the status slot
explicitly. The evaluator then checks that every record got exactly one outcome per rule, so a
match the engine loses is an error, never a silent pass.
"""

from __future__ import annotations

from typing import Any

from .errors import PackError, Problem
from .facts import GUARD, SENTINEL, TYPE, Layout
from .model import All, AnyOf, Condition, Leaf, Not, Outcome, Rule

TRUE: dict[str, Any] = {"$true": 1}    # markers, simplified away before the JSON is built
FALSE: dict[str, Any] = {"$false": 1}
OUTCOME_CODES = {"p": Outcome.PASS, "f": Outcome.FAIL, "a": Outcome.NOT_APPLICABLE, "e": Outcome.NOT_EVALUABLE}
SENTINEL_RULE = "zz_sentinel"
CAP = 1000
MAX_ALTERNATIVES = 512  # durable builds one network path per alternative

_NEGATE = {"equals": "not_equals", "not_equals": "equals", "less_than": "at_least", "at_least": "less_than",
           "at_most": "greater_than", "greater_than": "at_most", "one_of": "none_of", "none_of": "one_of"}
_DURABLE_OP = {"less_than": "$lt", "at_most": "$lte", "greater_than": "$gt", "at_least": "$gte",
               "not_equals": "$neq"}


def and_(*parts: dict[str, Any]) -> dict[str, Any]:
    kept = [p for p in parts if p is not TRUE]
    if any(p is FALSE for p in kept):
        return FALSE
    if not kept:
        return TRUE
    return kept[0] if len(kept) == 1 else {"$and": kept}


def or_(*parts: dict[str, Any]) -> dict[str, Any]:
    kept = [p for p in parts if p is not FALSE]
    if any(p is TRUE for p in kept):
        return TRUE
    if not kept:
        return FALSE
    return kept[0] if len(kept) == 1 else {"$or": kept}


def exclusive_or(branches: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """``yes_1 | (no_1 & yes_2) | ...`` from (yes, no) pairs, where no is the exact negation of yes."""
    alternatives = []
    before: list[dict[str, Any]] = []
    for yes, no in branches:
        alternatives.append(and_(*before, yes))
        before.append(no)
    return or_(*alternatives)


def alternatives(expr: dict[str, Any]) -> int:
    """How many branches durable expands ``expr`` into (its disjunctive normal form)."""
    if "$or" in expr:
        return sum(alternatives(e) for e in expr["$or"])
    if "$and" in expr:
        count = 1
        for part in expr["$and"]:
            count *= alternatives(part)
        return count
    return 1


class RuleCompiler:
    """Compiles conditions of one record type against a Layout."""

    def __init__(self, layout: Layout, type_name: str) -> None:
        self.layout = layout
        self.type_name = type_name
        self.rtype = layout.types[type_name]

    def _slot(self, name: str) -> int:
        return self.layout.slots[(self.type_name, name)]

    def _status(self, name: str, present: bool) -> dict[str, Any]:
        return {f"s{self._slot(name)}": 1 if present else 0}

    def _operand(self, name: str, value: Any) -> Any:
        kind = self.rtype.type_of(name)
        assert kind is not None
        return self.layout.encode_value(kind, value)

    def _compare(self, leaf: Leaf, op: str) -> dict[str, Any]:
        """The comparison ``op`` of a leaf whose inputs are all present."""
        key = f"v{self._slot(leaf.field)}"
        if leaf.op == "matches":
            return {f"x{self.layout.patterns[leaf]}": 1 if op == "matches" else 0}
        if leaf.ref is not None:
            operand: Any = {"$m": f"v{self._slot(leaf.ref)}"}
        elif op in ("one_of", "none_of"):
            # distinct items keep the branches of one_of exclusive
            items = list(dict.fromkeys(self._operand(leaf.field, v) for v in leaf.value))
            if op == "one_of":
                return or_(*({key: item} for item in items))
            return and_(*({"$neq": {key: item}} for item in items))
        elif op in ("between", "outside"):
            low, high = (self._operand(leaf.field, v) for v in leaf.value)
            if op == "between":
                return and_({"$gte": {key: low}}, {"$lte": {key: high}})
            return or_({"$lt": {key: low}}, {"$gt": {key: high}})
        else:
            operand = self._operand(leaf.field, leaf.value)
        if op == "equals":
            return {key: operand}
        return {_DURABLE_OP[op]: {key: operand}}

    def _negated_op(self, leaf: Leaf) -> str:
        if leaf.op == "between":
            return "outside"
        if leaf.op == "matches":
            return "not_matches"
        return _NEGATE[leaf.op]

    # Each condition compiles in four polarities. Every disjunction is made exclusive
    # (a | (¬a & b) | (¬a & ¬b & c)) because durable matches a fact once per satisfied branch:
    # with exclusive branches each record gets exactly one match per rule, and a duplicate
    # or a missing match is an engine fault the evaluator detects.
    def true(self, cond: Condition) -> dict[str, Any]:
        if isinstance(cond, Leaf):
            if cond.op == "present":
                return self._status(cond.field, cond.value)
            return and_(self._known(cond), self._compare(cond, cond.op))
        if isinstance(cond, Not):
            return self.false(cond.part)
        if isinstance(cond, All):
            return and_(*(self.true(p) for p in cond.parts))
        return exclusive_or([(self.true(p), self.not_true(p)) for p in cond.parts])

    def false(self, cond: Condition) -> dict[str, Any]:
        if isinstance(cond, Leaf):
            if cond.op == "present":
                return self._status(cond.field, not cond.value)
            return and_(self._known(cond), self._compare(cond, self._negated_op(cond)))
        if isinstance(cond, Not):
            return self.true(cond.part)
        if isinstance(cond, All):
            return exclusive_or([(self.false(p), self.not_false(p)) for p in cond.parts])
        return and_(*(self.false(p) for p in cond.parts))

    def not_true(self, cond: Condition) -> dict[str, Any]:
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

    def not_false(self, cond: Condition) -> dict[str, Any]:
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

    def _known(self, leaf: Leaf) -> dict[str, Any]:
        return and_(*(self._status(n, True) for n in (leaf.field, leaf.ref) if n))

    def _unknown(self, leaf: Leaf) -> dict[str, Any]:
        if leaf.ref is None:
            return self._status(leaf.field, False)
        # exclusive, like every disjunction here: the field missing, or present and the other missing
        return or_(self._status(leaf.field, False),
                   and_(self._status(leaf.field, True), self._status(leaf.ref, False)))

    def outcomes(self, rule: Rule) -> dict[str, dict[str, Any]]:
        """The engine condition of each outcome code; an impossible outcome is left out."""
        when_true = TRUE if rule.when is None else self.true(rule.when)
        result = {
            "p": and_(when_true, self.true(rule.require)),
            "f": and_(when_true, self.not_true(rule.require)),
        }
        if rule.when is not None:
            result["a"] = self.false(rule.when)
            result["e"] = and_(self.not_true(rule.when), self.not_false(rule.when))
        return {code: expr for code, expr in result.items() if expr is not FALSE}


def engine_rule_name(index: int, code: str) -> str:
    return f"r{index}{code}"


def compile_rules(rules: list[Rule], layout: Layout) -> dict[str, Any]:
    """The durable ruleset document for ``rules`` (rule ``i`` of the list is ``r<i><code>``)."""
    ruleset: dict[str, Any] = {}
    problems: list[Problem] = []
    for index, rule in enumerate(rules):
        compiler = RuleCompiler(layout, rule.for_type)
        guard = [{GUARD: 1}, {TYPE: layout.type_codes[rule.for_type]}]
        for code, expr in compiler.outcomes(rule).items():
            test = and_(*guard, expr)
            size = alternatives(test)
            if size > MAX_ALTERNATIVES:
                problems.append(Problem(rule.mark.path, rule.mark.line, rule.mark.column,
                                        f"rule {rule.id} is too complex for the rule engine ({size} alternatives "
                                        f"for one outcome; at most {MAX_ALTERNATIVES}): split it into rules"))
                break
            ruleset[engine_rule_name(index, code)] = {"all": [{"m": test}], "cap": CAP}
    if problems:
        raise PackError(problems)
    ruleset[SENTINEL_RULE] = {"all": [{"m": {SENTINEL: 1}}]}
    return ruleset


def parse_rule_name(name: str) -> tuple[int, Outcome]:
    return int(name[1:-1]), OUTCOME_CODES[name[-1]]
