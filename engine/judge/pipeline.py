"""An audit run end to end: inputs read and streamed to the Auditor, patient by patient when rules
look at history; also judging records built in memory (rule examples, tests)."""

from __future__ import annotations

import copyreg
import datetime as dt
import difflib
import functools
import itertools
import pickle
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping

from engine.errors import EngineError, UsageError
from engine.inputs.builder import InputStats, Seen
from engine.inputs.files import bytes_read, check_input, size_of
from engine.inputs.maps import SourceMap
from engine.inputs.sources import Binding, bind, check_columns, grouped, header_of, read_group
from engine.judge.audit import BATCH_SIZE, Auditor, OutcomeHook, Result
from engine.judge.durable import DEFAULT_TIMEOUT, worker_main
from engine.judge.period import Period
from engine.language.model import Pack, Record, RecordType, Rejected
from engine.language.values import fixed_zone
from engine.privacy import Pseudonymiser
from engine.waivers import Waivers


def run(packs: list[Pack], files: list[str], on_outcome: OutcomeHook | None = None,
        progress: Callable[[str, int, int, int], None] | None = None, timeout: float = DEFAULT_TIMEOUT,
        worker: Callable[..., None] = worker_main, group_by: list[str] | None = None,
        pseudonymise: Pseudonymiser | None = None, reveal: bool = False,
        maps: list[SourceMap] | None = None, period: Period | None = None,
        waivers: Waivers | None = None, fingerprints: Pseudonymiser | None = None,
        remember: bool = True) -> tuple[Result, list[InputStats]]:
    """Read every input, judge every record, and return the result with per-input counts.

    ``group_by`` names fields (or ``month``) to count per stratum; ``pseudonymise`` replaces patient
    identifiers in findings; ``reveal`` keeps fields marked phi in the evidence; ``maps`` say how
    the files of other systems become records (SPEC 8); with ``period``, only the records in it
    are judged, the others are history; ``waivers`` turn the fails they cover into waived (SPEC 9);
    with ``fingerprints`` (the archive's key), every finding carries its fingerprint. ``remember``:
    the engine judges the first record of each signature only (engine/judge/verdicts.py); off, every
    record is sent to it (the tests compare the two).
    """
    auditor = Auditor(packs, on_outcome, timeout, worker=worker, group_by=group_by,
                      pseudonymise=pseudonymise, reveal=reveal, period=period, waivers=waivers,
                      fingerprints=fingerprints, remember=remember)
    for name in group_by or []:
        if name != "month" and not any(t.type_of(name) for t in auditor.context.types.values()):
            known = sorted({f for t in auditor.context.types.values() for f in t.fields})
            close = difflib.get_close_matches(name, known, n=1)
            hint = f' (did you mean "{close[0]}"?)' if close else ""
            raise UsageError(f'--group-by "{name}" is not a field of any record type{hint}')
    needed = auditor.context.needed
    if waivers is not None:  # a waiver's where reads fields too: their columns must be there
        extra = waivers.needed(auditor.context.types)
        needed = {name: {**extra.get(name, {}), **needed.get(name, {})} for name in {*needed, *extra}}
    bindings = open_inputs(files, auditor.context.types, maps or [], needed)
    seen = Seen()
    stats_list: list[InputStats] = []
    sizes = {binding.path: size_of(binding.path) for binding in bindings}
    total, finished = sum(sizes.values()), 0
    read = 0  # records read so far, of every input

    def records() -> Iterator[Record]:
        nonlocal finished, read
        for group in grouped(bindings):
            group_stats = [InputStats(binding.path, binding.type, outside_period=None if period is None else 0)
                           for binding in group]
            stats_list.extend(group_stats)
            stats = group_stats[0]
            context = auditor.context
            # several map entries reading one file: a record is the one whose entry just counted it
            # (each entry's records are made one at a time), whatever their types
            counted = [each.records_read for each in group_stats]
            for item in read_group(group, context.types, context.tz, seen, group_stats, context.privacy):
                if isinstance(item, Rejected):
                    auditor.reject(item)
                else:
                    auditor.context.derive(item)
                    if not auditor.in_period(item):
                        owner = stats if len(group_stats) == 1 else next(
                            (each for each, before in zip(group_stats, counted) if each.records_read != before), stats)
                        owner.count_outside()
                    yield item
                if len(group_stats) > 1:
                    counted = [each.records_read for each in group_stats]
                read += 1
                if progress is not None and read % 1000 == 0:
                    progress("reading", finished + bytes_read(group[0].path), total, read)
            finished += sizes[group[0].path]
        if progress is not None:
            progress("reading", total, total, read)

    try:
        if auditor.context.needs_history:
            _judge_by_patient(auditor, records(), progress)
        else:
            for record in records():
                auditor.add(record)
        result = auditor.finish()
    except EngineError as exc:
        where = stats_list[-1] if stats_list else None
        unread = [binding.path for binding in bindings[len(stats_list):]]
        stopped = f"; reading stopped after {where.path} record {where.records_read}" if where else ""
        rest = f", and {', '.join(unread)} were not read" if unread else ""
        raise EngineError(f"{exc}{stopped}{rest}; the audit is incomplete and no report was written") from None
    finally:
        auditor.close()
    return result, stats_list


def open_inputs(files: list[str], types: Mapping[str, RecordType], maps: list[SourceMap],
                needed: Mapping[str, Mapping[str, str]]) -> list[Binding]:
    """Bind every file to its record type and map entry, and check, before anything is read, that each
    is a readable file given once and that its header has every column the rules read."""
    bindings = bind(files, types, maps)
    identities: dict[tuple[int, int], str] = {}
    for binding in bindings:
        path = binding.path
        identity = check_input(path)  # missing, a folder, a pipe or a device: said before anything is read
        # the same file twice would reject every record of the second reading as a duplicate (one
        # file read by several map entries is a file each entry makes its own records of)
        first = identities.get(identity)
        if first is not None and binding.entry is None:
            also = "" if first == path else f" (also as {first})"
            raise UsageError(f"{path}: the same file is given twice{also}")
        identities[identity] = path
    check_columns(bindings, needed, {index: header_of(binding) for index, binding in enumerate(bindings)})
    return bindings


PARTITIONS = 64
# records grouped by patient in memory before an audit with history rules spills them to partition
# files (about 0.5-1 KiB each as Python objects: some 100-200 MiB at the most)
IN_MEMORY = 200_000


@functools.lru_cache(maxsize=256)
def _zone_of(seconds: float) -> dt.timezone:
    """values.fixed_zone of an offset given in seconds: a float pickles and loads in about 60% of
    the time a timedelta takes (measured on 50,000 records of three times each)."""
    return fixed_zone(dt.timedelta(seconds=seconds))


# The fixed offsets of times (-08:00) pickle through copyreg's slow generic path; one small
# constructor call per time instead halves the cost of spilling records to the partitions.
_DISPATCH = copyreg.dispatch_table.copy()
_DISPATCH[dt.timezone] = lambda zone: (_zone_of, (zone.utcoffset(None).total_seconds(),))


def _judge_by_patient(auditor: Auditor, records: Iterator[Record],
                      progress: Callable[[str, int, int, int], None] | None = None,
                      in_memory: int | None = None) -> None:
    """History needs each patient's records together. Up to ``in_memory`` records are grouped by
    patient in memory; past that, every record kept so far and to come is spilled to partition files
    by patient, and one partition at a time is judged, so memory holds a partition rather than the
    whole export. Either way patients are judged one at a time, with all their records.

    The partitions hold the export's values, identifiers included: they are anonymous temporary
    files (no name in any folder), so nothing is left on disk even when the audit is killed.
    """
    kept = auditor.context.kept_types
    in_memory = IN_MEMORY if in_memory is None else in_memory
    by_patient: dict[str, list[Record]] = {}
    held = 0
    spilled = False
    for record in records:
        if auditor.context.is_shared(record):
            auditor.shared.append(record)
        elif record.type in kept:
            by_patient.setdefault(record.patient or "", []).append(record)
            held += 1
            if held > in_memory:
                spilled = True
                break
    if not spilled:
        _judge_patients(auditor, [by_patient], progress, held)
        return
    waiting = (record for patient in by_patient.values() for record in patient)
    by_patient = {}
    _spill_and_judge(auditor, itertools.chain(waiting, records), progress)


def _judge_patients(auditor: Auditor, partitions: Iterable[dict[str, list[Record]]],
                    progress: Callable[[str, int, int, int], None] | None, total: int) -> None:
    """Judge the patients of each partition (its records grouped by patient), one patient at a time;
    ``total``: the records of all of them (the judging's progress)."""
    judged = shown = 0
    for by_patient in partitions:
        for patient in sorted(by_patient):
            judged += len(by_patient[patient])
            auditor.add_patient(by_patient[patient])
            if progress is not None and judged - shown >= 1000:
                progress("judging", judged, total, judged)
                shown = judged
        by_patient.clear()
    if progress is not None:
        progress("judging", total, total, judged)


def _spill_and_judge(auditor: Auditor, records: Iterator[Record],
                     progress: Callable[[str, int, int, int], None] | None) -> None:
    files = [tempfile.TemporaryFile(prefix="protocol-audit-") for _ in range(PARTITIONS)]
    picklers = [pickle.Pickler(handle, protocol=pickle.HIGHEST_PROTOCOL) for handle in files]
    for pickler in picklers:
        pickler.dispatch_table = _DISPATCH
    sources: dict[str, int] = {}
    count = 0
    try:
        for record in records:
            if auditor.context.is_shared(record):
                auditor.shared.append(record)
            elif record.type in auditor.context.kept_types:
                count += 1
                # a plain tuple (pickling the slotted Record costs twice as much); the memo is
                # cleared after each record, or it would keep every record alive
                source = sources.setdefault(record.path, len(sources))
                row = (record.type, record.key, record.patient, record.time, record.values, source, record.line)
                pickler = picklers[zlib.crc32((record.patient or "").encode()) % PARTITIONS]
                pickler.dump(row)
                pickler.clear_memo()
        names = list(sources)

        def partitions() -> Iterator[dict[str, list[Record]]]:
            for source_file in files:
                by_patient: dict[str, list[Record]] = {}
                source_file.seek(0)
                while True:
                    try:
                        kind, key, patient, time, values, source, line = pickle.load(source_file)
                    except EOFError:
                        break
                    record = Record(kind, key, patient, time, values, names[source], line)
                    by_patient.setdefault(patient or "", []).append(record)
                source_file.close()  # its disk space goes back now, not at the end
                yield by_patient

        _judge_patients(auditor, partitions(), progress, count)
    finally:
        for handle in files:
            handle.close()


def judge(packs: list[Pack], records: Iterable[Record], timeout: float = DEFAULT_TIMEOUT,
          batch_size: int = BATCH_SIZE, on_outcome: OutcomeHook | None = None,
          worker: Callable[..., None] = worker_main) -> Result:
    """Judge records built in memory (rule examples, tests) exactly as an audit would."""
    auditor = Auditor(packs, on_outcome, timeout=timeout, batch_size=batch_size, worker=worker)
    try:
        by_patient: dict[str, list[Record]] = {}
        for record in records:
            auditor.context.derive(record)
            if auditor.context.is_shared(record) and auditor.context.needs_history:
                auditor.shared.append(record)
            elif auditor.context.needs_history:
                by_patient.setdefault(record.patient or "", []).append(record)
            else:
                auditor.add(record)
        for patient in sorted(by_patient):
            auditor.add_patient(by_patient[patient])
        return auditor.finish()
    finally:
        auditor.close()
