"""One patient's records in time order, answering history conditions in O(log n) per record.

The answers feed the rule engine: each history condition's truth goes into the judged record's
values under the condition's name, and the compiled rule reads it like a boolean field.
Semantics (SPEC 4.1): only the patient's *other*, accepted records count; windows are inclusive
elapsed time around the judged record's time; a judged record without a time (or without its
join field) makes the condition unknown. A record without a time cannot be placed in any window
and is never a match; a candidate matches only when its ``where`` is true (not unknown).
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
from collections.abc import Callable, KeysView
from typing import Any

from engine.language.conditions import compile_condition
from engine.language.model import JUDGED_PREFIX, History, Record
from engine.privacy import REVEAL_ALL, Privacy

MAX_LISTED = 20  # matched records named in evidence; the count is always given
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def micros(time: dt.datetime) -> int:
    """``time`` in whole microseconds since 1970 (UTC). Integers, not float seconds: a window's
    edge computed in floats can round past a record exactly on it (timestamps near 2**30 s)."""
    return (time - _EPOCH) // _MICROSECOND
Where = Callable[[dict[str, Any]], "bool | None"]  # a history condition's compiled where


def window(cond: History, moment: float) -> tuple[float, float]:
    """The window a history condition searches around ``moment`` (microseconds), both ends inclusive:
    the whole history when it gives neither ``before`` nor ``after``."""
    if cond.before is None and cond.after is None:
        return float("-inf"), float("inf")
    before = cond.before // _MICROSECOND if cond.before is not None else 0
    after = cond.after // _MICROSECOND if cond.after is not None else 0
    return moment - before, moment + after


class _Candidates:
    """The records one history condition can match, per join value, sorted by time; ``members``
    holds id() of each, so the judged record is left out of a count in O(1) however many share its time."""

    __slots__ = ("times", "records", "members")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.records: list[Record] = []
        self.members: set[int] = set()


class Timeline:
    """``shared`` is the timeline of the reference tables' records (a staff roster): they belong to
    no patient, and a history condition on one of their types searches them, through its join."""

    def __init__(self, records: list[Record], wheres: dict[int, Where] | None = None,
                 shared: Timeline | None = None) -> None:
        self.records = records
        self.shared = shared
        self.wheres = wheres if wheres is not None else {}  # id(condition) -> its compiled where
        # keyed by id(): conditions live as long as their pack, and hashing a frozen
        # dataclass walks its whole where-tree on every lookup
        self._index: dict[int, dict[Any, _Candidates]] = {}
        self._moments = {id(r): micros(r.time) for r in records if r.time is not None}
        self._of_type: dict[str, list[Record]] | None = None  # the timed records of each type, made once

    def moment(self, record: Record) -> int:
        """The record's time in whole microseconds since 1970 (UTC)."""
        found = self._moments.get(id(record))
        if found is None:
            assert record.time is not None
            found = self._moments[id(record)] = micros(record.time)
        return found

    def _candidates(self, cond: History, record: Record) -> _Candidates | None:
        shared = self.shared
        owner = shared if shared is not None and cond.of in shared.types() else self
        index = owner._index.get(id(cond))
        if index is None:
            index = owner._index[id(cond)] = owner._build(cond)
        key = record.values.get(cond.join) if cond.join else None
        group = index.get(key)
        if group is None or not cond.judged:
            return group
        # a where reading the judged record's fields ({judged: NAME}) is applied per judged record
        where = self._where(cond)
        assert where is not None
        judged = {JUDGED_PREFIX + name: record.values.get(name) for name in cond.judged}
        kept = _Candidates()
        for moment, other in zip(group.times, group.records):
            if where({**other.values, **judged}) is True:
                kept.times.append(moment)
                kept.records.append(other)
        kept.members = {id(other) for other in kept.records}
        return kept

    def types(self) -> KeysView[str]:
        """The record types this timeline holds a timed record of."""
        return (self._of_type if self._of_type is not None else self._timed()).keys()

    def _timed(self) -> dict[str, list[Record]]:
        if self._of_type is None:
            self._of_type = {}
            for record in self.records:
                if record.time is not None:
                    self._of_type.setdefault(record.type, []).append(record)
        return self._of_type

    def _where(self, cond: History) -> Where | None:
        where = self.wheres.get(id(cond))
        if where is None and cond.where is not None:
            where = self.wheres[id(cond)] = compile_condition(cond.where)
        return where

    def _build(self, cond: History) -> dict[Any, _Candidates]:
        found: dict[Any, list[tuple[float, str, Record]]] = {}
        where = None if cond.judged else self._where(cond)  # judged: applied per judged record
        their_join = cond.their_join
        for record in self._timed().get(cond.of, ()):
            if where is not None and where(record.values) is not True:
                continue
            key = record.values.get(their_join) if their_join else None
            if their_join and key is None:
                continue
            found.setdefault(key, []).append((self.moment(record), record.key, record))
        index: dict[Any, _Candidates] = {}
        for key, items in found.items():
            items.sort(key=lambda item: (item[0], item[1]))
            group = index[key] = _Candidates()
            group.times = [item[0] for item in items]
            group.records = [item[2] for item in items]
            group.members = {id(item[2]) for item in items}
        return index

    def _others(self, cond: History, record: Record, low: float, high: float,
                limit: int = MAX_LISTED, strictly_before: bool = False) -> list[Record]:
        """The first ``limit`` other candidates in [low, high] (in [low, high) when ``strictly_before``)."""
        group = self._candidates(cond, record)
        if group is None:
            return []
        start = bisect.bisect_left(group.times, low)
        end = (bisect.bisect_left if strictly_before else bisect.bisect_right)(group.times, high)
        records = group.records  # indexed, not sliced: a slice would copy every tied record per call
        return list(itertools.islice((records[i] for i in range(start, end) if records[i] is not record), limit))

    def _count(self, cond: History, record: Record, low: float, high: float) -> int:
        group = self._candidates(cond, record)
        if group is None:
            return 0
        count = bisect.bisect_right(group.times, high) - bisect.bisect_left(group.times, low)
        # the judged record is a candidate itself only at its own moment; it never counts
        if id(record) in group.members and low <= self.moment(record) <= high:
            count -= 1
        return count

    def _previous(self, cond: History, record: Record, moment: float) -> Record | None:
        group = self._candidates(cond, record)
        if group is None:
            return None
        position = bisect.bisect_right(group.times, moment) - 1
        while position >= 0 and group.records[position] is record:
            position -= 1
        return group.records[position] if position >= 0 else None

    def _unknown(self, cond: History, record: Record) -> bool:
        return self._missing(cond, record) is not None

    @staticmethod
    def _missing(cond: History, record: Record) -> str | None:
        """The judged record's field whose absence makes ``cond`` unknown: its time, its join field,
        or a field its where compares with; None when none is missing."""
        if record.time is None:
            return cond.time_field
        values = record.values
        if cond.join is not None and values.get(cond.join) is None:
            return cond.join
        for name in cond.judged:
            if values.get(name) is None:
                return name
        return None

    def answers(self, conds: list[History], record: Record) -> dict[str, bool]:
        """The truths of ``conds`` on ``record`` by condition name; an unknown one is left out."""
        found = {}
        for cond in conds:
            truth = self.truth(cond, record)
            if truth is not None:
                found[cond.name] = truth
        return found

    def truth(self, cond: History, record: Record) -> bool | None:
        """Whether ``cond`` holds for ``record``; None when it is unknown."""
        if self._unknown(cond, record):
            return None
        moment = self.moment(record)
        if cond.form == "first":
            group = self._candidates(cond, record)
            return group is None or bisect.bisect_left(group.times, moment) == 0
        if cond.form == "since_previous":
            previous = self._previous(cond, record, moment)
            if previous is None or previous.time is None or cond.gap is None:
                return True  # no earlier record: nothing to be too close to
            return moment - self.moment(previous) >= cond.gap // _MICROSECOND
        count = self._count(cond, record, *window(cond, moment))
        if cond.form == "exists":
            return count >= 1
        return (cond.at_most is None or count <= cond.at_most) and (cond.at_least is None or count >= cond.at_least)

    def evidence(self, cond: History, record: Record, privacy: Privacy = REVEAL_ALL) -> dict[str, Any]:
        """What an officer needs to follow the answer back: the window searched and what matched
        (other records named by key through the privacy gate; at most MAX_LISTED, with the count)."""
        def describe(other: Record) -> str:
            when = other.time.isoformat() if other.time else "no time"
            return f"{privacy.key(other.type, other.key)} at {when} ({other.path}:{other.line})"

        missing = self._missing(cond, record)
        if missing is not None:
            return {"result": "unknown", "missing": missing}
        assert record.time is not None
        moment = self.moment(record)
        shown: dict[str, Any] = {"result": self.truth(cond, record)}
        if cond.form == "since_previous":
            previous = self._previous(cond, record, moment)
            if previous is None or previous.time is None:
                shown["previous"] = f"no earlier {cond.of}"
            else:
                shown["previous"] = describe(previous)
                shown["hours_since"] = round((moment - self.moment(previous)) / 3_600_000_000, 2)
            return shown
        if cond.form == "first":
            earlier = self._others(cond, record, float("-inf"), moment, strictly_before=True)
            shown["earlier"] = [describe(r) for r in earlier] or f"no earlier {cond.of}"
            return shown
        low, high = window(cond, moment)
        shown["window"] = _span(record.time, low, high, moment)
        shown["count"] = self._count(cond, record, low, high)
        matched = self._others(cond, record, low, high)
        shown["matched"] = [describe(r) for r in matched] or f"no matching {cond.of}"
        return shown


def _span(time: dt.datetime, low: float, high: float, moment: float) -> list[str]:
    def show(edge: float) -> str:
        if edge in (float("-inf"), float("inf")):
            return "any time"
        try:
            return (time + dt.timedelta(microseconds=edge - moment)).isoformat()
        except OverflowError:  # a window reaching past the calendar's ends
            return "any time"
    return [show(low), show(high)]
