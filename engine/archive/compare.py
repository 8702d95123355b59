"""An audit against the last archived audit of the same packs (SPEC 9's ``compared_to``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable

from engine.archive import Archive, ArchivedAudit, ArchivedFinding, ArchivedRule, audited_days, first_day, pack_set
from engine.judge.period import Period
from engine.results import Comparison, Finding, Report, RuleChange
from engine.spool import Mapped


def compared(report: Report, archive: Archive, key_check: str, tz: dt.tzinfo) -> Report:
    """``report`` with ``compared_to`` (None: the archive has no audit of these packs yet) and each
    open finding marked new or persisting."""
    last = previous(archive.audits(pack_set(report)),
                    audited_days(report.period_from, report.period_until, report.period_first, report.period_last),
                    first_day(report.period_from, report.period_first))
    if last is None:
        return dataclasses.replace(report, archived=True)
    before = {(r.pack, r.rule): r for r in archive.rules(last.id)}
    if last.key_check != key_check:
        note = ("the last audit was archived under another pseudonym key: its findings cannot be matched with "
                "this audit's (compliance rates are compared)")
        unmatched = tuple(RuleChange(rule.id, rule.pack, _rate(before, rule.pack, rule.id),
                                     _change(rule.compliance_rate, _rate(before, rule.pack, rule.id)), None, None, None,
                                     (rule.pack, rule.id) in before)
                          for rule in report.rules)
        return dataclasses.replace(report, archived=True,
                                   compared_to=_comparison(last, None, None, None, unmatched, note))
    was_open = {f.fingerprint: f for f in archive.open_findings(last.id)}
    now_open = {f.fingerprint for f in report.findings if f.counts}
    in_scope = _scope(report, tz)
    mark = functools.partial(_marked, was_open=was_open)
    # a tuple while the findings are in memory; read and marked one at a time once they are spilled
    marked = tuple(map(mark, report.findings)) if isinstance(report.findings, tuple) \
        else Mapped(report.findings, mark)
    counts: dict[tuple[str, str], list[int]] = {}
    for finding in marked:
        if finding.since_last_audit is not None:
            column = 0 if finding.since_last_audit == "new" else 1
            counts.setdefault((finding.pack, finding.rule), [0, 0, 0])[column] += 1
    for fingerprint, old in was_open.items():
        if fingerprint not in now_open and in_scope(old):
            counts.setdefault((old.pack, old.rule), [0, 0, 0])[2] += 1
    changes = []
    for rule in report.rules:
        then = _rate(before, rule.pack, rule.id)
        new, persisting, resolved = counts.get((rule.pack, rule.id), [0, 0, 0])
        changes.append(RuleChange(rule.id, rule.pack, then, _change(rule.compliance_rate, then),
                                  new, persisting, resolved, (rule.pack, rule.id) in before))
    # the totals are the rows': findings of a rule this audit no longer has are not "resolved"
    new, persisting, resolved = (sum(getattr(c, name) or 0 for c in changes) for name in ("new", "persisting",
                                                                                          "resolved"))
    return dataclasses.replace(report, archived=True, findings=marked,
                               compared_to=_comparison(last, new, persisting, resolved, tuple(changes), None))


def previous(audits: list[ArchivedAudit], span: tuple[str, str], start: str) -> ArchivedAudit | None:
    """The audit this one is compared with, among the archived audits of the same packs: the last
    one of the same days (this is a re-audit, after corrections or new waivers), else the one that
    began last on or before the day this one began (the last quarter; a shorter or longer audit
    from the same day; the same export grown since), else none (nothing before it). An audit's
    first day is its period's, else its first judged record's."""
    same = [a for a in audits if a.span == span]
    if same:
        return same[-1]
    before = [a for a in audits if a.start <= start]
    return max(before, key=lambda a: (a.start, a.id)) if before else None


def _comparison(last: ArchivedAudit, new: int | None, persisting: int | None, resolved: int | None,
                changes: tuple[RuleChange, ...], note: str | None) -> Comparison:
    return Comparison(last.id, last.as_of, last.period_from, last.period_until, last.first_record, last.last_record,
                      new, persisting, resolved, changes, note)


def _marked(finding: Finding, was_open: dict[str, ArchivedFinding]) -> Finding:
    if not finding.counts or finding.fingerprint is None:
        return finding
    return dataclasses.replace(finding, since_last_audit="persisting" if finding.fingerprint in was_open else "new")


def _rate(before: dict[tuple[str, str], ArchivedRule], pack: str, rule: str) -> float | None:
    found = before.get((pack, rule))
    return None if found is None else found.compliance_rate


def _change(now: float | None, then: float | None) -> float | None:
    return None if now is None or then is None else round(now - then, 4)


def _scope(report: Report, tz: dt.tzinfo) -> Callable[[ArchivedFinding], bool]:
    """Whether a finding of the last audit lies in this audit's period: the period given, else the
    span of the judged records' times (a finding without a time is in every period)."""
    low: dt.datetime | None
    high: dt.datetime | None
    if report.period_given:
        period = Period(*(None if day is None else dt.date.fromisoformat(day)
                          for day in (report.period_from, report.period_until)))
        low, high = period.bounds(tz)  # high: the first moment after the period
    else:
        low, last = (None if when is None else dt.datetime.fromisoformat(when).astimezone(dt.UTC)
                     for when in (report.period_first, report.period_last))
        high = None if last is None else last + dt.timedelta(microseconds=1)

    def in_scope(finding: ArchivedFinding) -> bool:
        if finding.record_time is None:
            return True
        when = dt.datetime.fromisoformat(finding.record_time).astimezone(dt.UTC)
        return (low is None or when >= low) and (high is None or when < high)
    return in_scope
