"""``protocol-audit test``: a pack's examples and scenario files judged by the engine an audit uses,
and the report of failing cases and coverage. The file format is in ``scenarios``, coverage in
``coverage``; this module runs them and writes the report.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.commands.coverage import Coverage, coverage, describe_branch, where
from engine.commands.explain import trace
from engine.commands.scenarios import Case, build_cases, load_pack_scenarios, test_files
from engine.judge.context import PackContext
from engine.judge.pipeline import judge
from engine.language.model import Outcome, Pack, Record, Rule, count_rules, window_text


@dataclass(slots=True)
class PackResult:
    """One pack's run: its judged cases and the coverage of each rule."""

    pack: Pack
    files: list[Path]
    cases: list[Case]
    coverage: list[Coverage]
    examples: int
    scenarios: int
    context: PackContext  # the pack compiled once; failing cases are traced with it

    @property
    def failed(self) -> list[Case]:
        return [case for case in self.cases if not case.ok]


def run_pack(pack: Pack) -> PackResult:
    """Judge every example and scenario of ``pack`` with the engine an audit uses."""
    files = test_files(pack)
    scenarios = load_pack_scenarios(pack, files)
    cases, records = build_cases(pack, scenarios)
    actual: dict[tuple[int, int], Outcome] = {}

    def keep(rule: Rule, record: Record, outcome: Outcome) -> None:
        actual[(id(rule), id(record))] = outcome  # by rule object: versions of one rule share its id

    judge([pack], records, on_outcome=keep)
    for case in cases:
        case.actual = actual[(id(case.rule), id(case.record))].value
    examples = sum(len(rule.examples) for rule in pack.rules)
    context = PackContext([pack])
    return PackResult(pack, files, cases, [coverage(rule, cases, context) for rule in pack.rules], examples,
                      len(scenarios), context)


def evidence(context: PackContext, case: Case) -> list[str]:
    """Why the case came out as it did: every condition traced, as ``explain`` shows it."""
    _, lines = trace(context, case.rule, case.record, case.patient)
    return lines


def report_lines(result: PackResult, min_coverage: float | None) -> Iterator[str]:
    """The human report of one pack: failing cases with evidence, then coverage."""
    pack = result.pack
    extra = f", {result.scenarios} scenario{'s' if result.scenarios != 1 else ''} in " \
            f"{', '.join(str(p) for p in result.files)}" if result.files else ""
    yield (f"{pack.path}: {pack.id} {pack.version}, {count_rules(pack.rules)}, {result.examples} examples"
           f"{extra}: {len(result.cases)} cases, {len(result.failed)} failed")
    for case in result.failed:
        yield (f"FAIL {case.mark.path}:{case.mark.line}: {_named(case.rule)} {case.label}: "
               f"expected {case.expected_text}, got {case.actual}")
        for line in evidence(result.context, case):
            yield f"    {line}"
    full = sum(1 for c in result.coverage if c.full)
    total = len(result.coverage)
    items = sum(c.total for c in result.coverage)
    met = sum(c.met for c in result.coverage)
    yield (f"coverage: {full} of {total} rules fully covered; {met} of {items} items "
           f"({100.0 * met / items if items else 100.0:.1f}%: a pass case, a fail case and every branch "
           "decisive, per rule)")
    for cov in result.coverage:
        if cov.full:
            continue
        below = cov.below(min_coverage)
        gaps = ([] if cov.has_pass else ["no passing case"]) + ([] if cov.has_fail else ["no failing case"])
        yield f"  {_named(cov.rule)}: {cov.percent:.0f}%{' (below --min-coverage)' if below else ''}" + \
              (f"; {', '.join(gaps)}" if gaps else "")
        for branch, part in cov.uncovered:
            yield f"    never decisive ({part}): {describe_branch(branch)} at {where(branch, cov.rule)}"


def below_minimum(result: PackResult, min_coverage: float | None) -> list[Coverage]:
    """The rules of the run under the ``--min-coverage`` floor."""
    return [cov for cov in result.coverage if cov.below(min_coverage)]


def _named(rule: Rule) -> str:
    """A rule's id, with its window when it is one version of several (effective dates)."""
    return rule.id if rule.effective is None else f"{rule.id} (in force {window_text(*rule.effective)})"
