"""The report of an audit (SPEC section 7), built from what the judge tallied; every format renders it."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator

from engine.inputs.records import InputStats
from engine.judge.period import Period
from engine.judge.tally import Result, RuleCounts
from engine.language.model import SEVERITIES, Pack, Rule, latest_version
from engine.results import (
    InputSummary,
    MonthCount,
    PackSummary,
    Report,
    RuleResult,
    Strata,
    StratumCount,
    Summary,
    VersionCount,
)
from engine.version import __version__
from engine.waivers import Waivers

TOOL_NAME = "protocol-audit"
# Compliance targets by severity, after clinical-audit practice (domain notes 4.3); a pack may set its own.
DEFAULT_TARGETS = {"critical": 1.0, "major": 0.95, "minor": 0.90}
TOO_FEW = 10  # below this many applicable records a rate says little: "too few records"
Z95 = 1.959963984540054


def wilson(passed: int, total: int) -> list[float] | None:
    """The Wilson score 95% interval of passed / total (None when total is 0)."""
    if total == 0:
        return None
    p = passed / total
    denominator = 1 + Z95 ** 2 / total
    centre = (p + Z95 ** 2 / (2 * total)) / denominator
    spread = Z95 * math.sqrt(p * (1 - p) / total + Z95 ** 2 / (4 * total ** 2)) / denominator
    return [round(max(0.0, centre - spread), 4), round(min(1.0, centre + spread), 4)]


def status(rate: float | None, decided: int, target: float | None) -> str:
    """A rule's standing against its target, judged on the records it decided (passed or failed;
    waived ones are neither)."""
    if decided == 0 or rate is None:
        return "no data"
    if decided < TOO_FEW:
        return "too few records"
    if target is None:
        return "no target"
    return "met" if rate >= target else "not met"


def _rate(passed: int, failed: int) -> float | None:
    return round(passed / (passed + failed), 4) if passed + failed else None


def tool_version() -> str:
    return __version__


def build(result: Result, inputs: list[InputStats], packs: list[Pack], as_of: dt.datetime,
          fail_on: str = "major", period: Period | None = None, waivers: Waivers | None = None) -> Report:
    """The report; identical inputs and ``as_of`` give an identical Report (and JSON)."""
    rules = []
    targets = {pack.id: {**DEFAULT_TARGETS, **pack.targets} for pack in packs}
    # versions of a rule (effective dates) are one row: their totals, and counts per version
    by_id: dict[tuple[str, str], list[tuple[Rule, RuleCounts]]] = {}
    for rule, counts in zip(result.rules, result.tallies):
        by_id.setdefault((rule.pack, rule.id), []).append((rule, counts))
    for versions in by_id.values():
        rule = latest_version(r for r, _ in versions)  # the latest version names the rule
        latest = next(c for r, c in versions if r is rule)
        total = RuleCounts(*(sum(getattr(c, name) for _, c in versions) for name in
                             ("passed", "failed", "waived", "not_evaluable", "not_applicable")))
        total.patients = set().union(*(c.patients for _, c in versions))
        if len(versions) > 1:  # each version answers every record; one of them judged it, the others found
            # it outside their window: not applicable is what is left of the records the latest answered
            answered = latest.passed + latest.failed + latest.waived + latest.not_evaluable + latest.not_applicable
            total.not_applicable = answered - (total.passed + total.failed + total.waived + total.not_evaluable)
        applicable = total.passed + total.failed + total.waived
        rate = _rate(total.passed, total.failed)
        target = targets.get(rule.pack, DEFAULT_TARGETS).get(rule.severity)
        ci95 = wilson(total.passed, total.passed + total.failed)
        rules.append(RuleResult(
            id=rule.id, pack=rule.pack, title=rule.title, severity=rule.severity, for_type=rule.for_type,
            applicable=applicable, passed=total.passed, failed=total.failed, waived=total.waived,
            not_evaluable=total.not_evaluable, not_applicable=total.not_applicable, compliance_rate=rate,
            ci95=None if ci95 is None else (ci95[0], ci95[1]), target=target,
            status=status(rate, total.passed + total.failed, target), cite=rule.cite, rationale=rule.rationale,
            versions=_versions(versions), patients_affected=len(total.patients), per=rule.per))
    findings = result.findings.sorted()
    by_severity = {severity: 0 for severity in SEVERITIES}
    for finding in findings:
        if finding.counts:
            by_severity[finding.severity] += 1
    read = sum(s.records_read for s in inputs)
    rejected_count = sum(s.records_rejected for s in inputs)
    outside = None if period is None else sum(s.outside_period or 0 for s in inputs)
    return Report(
        tool_name=TOOL_NAME, tool_version=tool_version(), as_of=as_of.isoformat(),
        inputs=tuple(InputSummary(s.path, s.record_type, s.sha256, s.records_read, s.records_judged,
                                  s.records_rejected, s.map_id, s.entry, s.rows_read, s.skipped, s.filtered,
                                  s.absent, s.outside_period) for s in inputs),
        packs=tuple(PackSummary(p.id, p.version, p.title, p.path, p.sha256) for p in packs),
        period_first=result.first.isoformat() if result.first else None,
        period_last=result.last.isoformat() if result.last else None,
        pseudonymised=result.pseudonymised is not None,
        identifiers=(f"patient identifiers pseudonymised with HMAC-SHA256 under {result.pseudonymised}"
                     if result.pseudonymised else "patient identifiers as in the inputs"),
        summary=Summary(records_read=read, records_judged=read - rejected_count - (outside or 0),
                        records_rejected=rejected_count, findings=len(findings), by_severity=by_severity,
                        exit_threshold=fail_on, records_outside_period=outside),
        rules=tuple(rules),
        findings=findings,
        not_evaluable=result.not_evaluable.sorted(),
        rejected=tuple(sorted(result.rejected, key=lambda r: (r.path, r.line))),
        by_month=tuple(_by_month(result)),
        strata=Strata(tuple(result.group_by), tuple(_by_stratum(result, waivers is not None)))
        if result.group_by else None,
        period_from=period.start.isoformat() if period and period.start else None,
        period_until=period.end.isoformat() if period and period.end else None,
        period_given=period is not None,
        waivers=None if waivers is None else waivers.statuses())


def _versions(versions: list[tuple[Rule, RuleCounts]]) -> tuple[VersionCount, ...] | None:
    """Counts per version, in time order, for a rule with effective dates (None for any other)."""
    if all(rule.effective is None for rule, _ in versions):
        return None
    made = []
    for rule, counts in sorted(versions, key=lambda pair: pair[0].starts):
        start, end = rule.effective or (None, None)
        made.append(VersionCount(start.isoformat() if start else None, end.isoformat() if end else None,
                                 rule.severity, counts.passed + counts.failed + counts.waived, counts.passed,
                                 counts.failed, counts.waived, counts.not_evaluable, counts.not_applicable,
                                 _rate(counts.passed, counts.failed)))
    return tuple(made)


def _merged(result: Result, by_month: bool) -> list[tuple[Rule, tuple[str, ...], list[int]]]:
    """Counts per rule and month, or per rule and stratum of the group-by fields, in order (the
    versions of a rule counted as one)."""
    merged: dict[tuple[int, tuple[str, ...]], list[int]] = {}
    first: dict[tuple[str, str], int] = {}
    for index, rule in enumerate(result.rules):
        first.setdefault((rule.pack, rule.id), index)
    for (index, stratum), counts in result.strata.items():
        key = stratum[:1] if by_month else stratum[1:]
        rule = result.rules[index]
        total = merged.setdefault((first[(rule.pack, rule.id)], key), [0, 0, 0, 0])
        for column, count in enumerate(counts):
            total[column] += count
    return [(result.rules[index], key, counts) for (index, key), counts in sorted(merged.items())]


def _by_month(result: Result) -> Iterator[MonthCount]:
    for rule, (month,), (passed, failed, _, _) in _merged(result, by_month=True):
        yield MonthCount(rule.id, rule.pack, month, passed, failed, _rate(passed, failed))


def _by_stratum(result: Result, waivers: bool) -> Iterator[StratumCount]:
    """Each rule's counts per stratum; with waivers, the waived ones too, so the strata add up."""
    for rule, key, (passed, failed, not_evaluable, waived) in _merged(result, by_month=False):
        yield StratumCount(rule.id, rule.pack, dict(zip(result.group_by, key)), passed + failed + waived,
                           not_evaluable, passed, failed, _rate(passed, failed), waived if waivers else None)
