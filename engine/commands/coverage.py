"""Branch coverage of a pack's tests: per rule, a passing case, a failing case, and every *branch*
(each leaf condition and each history condition of ``when`` and ``require``) decisive in at least
one case: setting that branch alone to the other truth value would change the rule's outcome.
A branch never decisive is one the tests cannot tell from a constant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.commands.explain import rule_values
from engine.commands.scenarios import Case
from engine.judge.context import PackContext
from engine.language import conditions
from engine.language.model import Condition, History, Leaf, Not, Outcome, Rule

Truth = bool | None
Branch = Leaf | History


def branches(cond: Condition | None) -> list[Branch]:
    """The leaves and history conditions of a condition (not inside a history's ``where``)."""
    if cond is None:
        return []
    if isinstance(cond, Leaf) and cond.mark is None:
        return []  # an effective window's bound: when the rule is in force, not a condition to cover
    if isinstance(cond, (Leaf, History)):
        return [cond]
    if isinstance(cond, Not):
        return branches(cond.part)
    return [b for part in cond.parts for b in branches(part)]


def _outcome(rule: Rule, values: dict[str, Any], forced: dict[int, Truth]) -> Outcome:
    when = True if rule.when is None else conditions.evaluate(rule.when, values, forced)[0]
    return conditions.outcome(when, conditions.evaluate(rule.require, values, forced)[0])


def decisive(rule: Rule, values: dict[str, Any], branch: Branch) -> bool:
    """Whether ``branch`` was compared (its value known) and setting it alone to the other truth
    value changes the rule's outcome. A branch left unknown by a missing field was not tested."""
    actual = conditions.evaluate(branch, values)[0]
    if actual is None:
        return False
    return _outcome(rule, values, {id(branch): not actual}) is not _outcome(rule, values, {})


@dataclass(slots=True)
class Coverage:
    """How well one rule's cases cover it."""

    rule: Rule
    has_pass: bool
    has_fail: bool
    uncovered: list[tuple[Branch, str]]   # branches never decisive, with "when" or "require"
    total: int                             # coverage items: a pass case, a fail case, each branch

    @property
    def met(self) -> int:
        return self.total - len(self.uncovered) - (not self.has_pass) - (not self.has_fail)

    @property
    def percent(self) -> float:
        return 100.0 * self.met / self.total

    @property
    def full(self) -> bool:
        return self.met == self.total

    def below(self, min_coverage: float | None) -> bool:
        """Under the ``--min-coverage`` floor (never, without one)."""
        return min_coverage is not None and self.percent < min_coverage


def coverage(rule: Rule, cases: list[Case], context: PackContext) -> Coverage:
    """The coverage of ``rule`` by its ``cases`` (already judged), each branch tried on what the rule
    reads of the case's record."""
    mine = [case for case in cases if case.rule is rule]
    outcomes = {case.actual for case in mine}
    labelled = [(b, "when") for b in branches(rule.when)] + [(b, "require") for b in branches(rule.require)]
    seen = [rule_values(context, rule, case.record, case.patient) for case in mine]
    uncovered = [(b, part) for b, part in labelled if not any(decisive(rule, values, b) for values in seen)]
    return Coverage(rule, Outcome.PASS.value in outcomes, Outcome.FAIL.value in outcomes, uncovered,
                    2 + len(labelled))


def describe_branch(branch: Branch) -> str:
    """A branch in words, as ``explain`` writes it."""
    return conditions.describe_history(branch) if isinstance(branch, History) else conditions.describe(branch)


def where(branch: Branch, rule: Rule) -> str:
    """Where a branch is written, ``path:line:column`` (the rule's place if the branch has none)."""
    mark = branch.mark or rule.mark
    return f"{mark.path}:{mark.line}:{mark.column}"
