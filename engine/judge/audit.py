"""An audit run's judging: a record (or a patient's records, when rules look at history) in, its
outcomes tallied out. The Auditor ties together the pack context, the engine session and the tally."""

from __future__ import annotations

from collections.abc import Callable

from engine.judge.context import PackContext
from engine.judge.durable import DEFAULT_TIMEOUT, worker_main
from engine.judge.period import Period, within
from engine.judge.session import BATCH_SIZE, EngineSession
from engine.judge.tally import OutcomeHook, Result, Tally
from engine.judge.timeline import Timeline
from engine.language.model import Pack, Record, Rejected
from engine.privacy import Pseudonymiser
from engine.waivers import Waivers

__all__ = ["BATCH_SIZE", "Auditor", "OutcomeHook", "Result"]


class Auditor:
    """Judges every rule on every record of its type through durable_rules."""

    def __init__(self, packs: list[Pack], on_outcome: OutcomeHook | None = None,
                 timeout: float = DEFAULT_TIMEOUT, batch_size: int = BATCH_SIZE,
                 worker: Callable[..., None] = worker_main, group_by: list[str] | None = None,
                 pseudonymise: Pseudonymiser | None = None, reveal: bool = False,
                 period: Period | None = None, waivers: Waivers | None = None,
                 fingerprints: Pseudonymiser | None = None, remember: bool = True) -> None:
        self.context = PackContext(packs, pseudonymise, reveal)
        self.period = period
        self.bounds = period.bounds(self.context.tz) if period is not None else (None, None)
        self.tally = Tally(self.context, group_by, on_outcome, waivers, fingerprints)
        self.session = EngineSession(self.context, self.tally, timeout, batch_size, worker, remember)
        # the reference tables' records (a staff roster: no patient), held until every record is read,
        # then one timeline every patient's history conditions reach through their join
        self.shared: list[Record] = []
        self.shared_timeline: Timeline | None = None

    def _open_shared(self) -> Timeline:
        """The reference tables' timeline, made (and their own records judged) once, when every
        record has been read: before the first patient is judged, or at the end."""
        if self.shared_timeline is None:
            self.shared_timeline = Timeline(self.shared, self.context.wheres)
            self._judge_group(self.shared, self.shared_timeline)
        return self.shared_timeline

    def in_period(self, record: Record) -> bool:
        """Whether ``record`` is judged (SPEC 9: outside the period it is history only)."""
        return self.period is None or within(record.time, self.bounds)

    def add(self, record: Record) -> None:
        """Judge one record of a run without history rules (derived fields already added)."""
        if record.type in self.context.rules_by_type and self.in_period(record):
            self.session.add(self.tally.case(record, record.values))

    def add_patient(self, records: list[Record]) -> None:
        """Judge all the records of one patient: history conditions are answered from their timeline
        (and the reference tables' timeline, for conditions on a reference table)."""
        shared = self._open_shared()
        self._judge_group(records, Timeline(records, self.context.wheres, shared))

    def _judge_group(self, records: list[Record], timeline: Timeline) -> None:
        context = self.context
        for record in records:
            if record.type not in context.rules_by_type or not self.in_period(record):
                continue  # outside the period: in the timeline as history, not judged
            histories = context.histories_by_type.get(record.type)
            if histories:
                values = {**record.values, **timeline.answers(histories, record)}
                self.session.add(self.tally.case(record, values, timeline))
            else:
                self.session.add(self.tally.case(record, record.values))

    def reject(self, item: Rejected) -> None:
        self.tally.reject(item)

    def finish(self) -> Result:
        self._open_shared()
        self.session.drain()
        self.tally.count_units()
        return self.tally.result

    def close(self) -> None:
        self.session.close()
