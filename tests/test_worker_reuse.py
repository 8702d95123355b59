"""The engine worker kept between the audits of one process: it answers as a fresh worker does, it
is the same process while audits end normally, a fresh one follows anything abnormal, and a
ruleset the engine refuses leaves the next audit unharmed."""

from __future__ import annotations

import csv
import os
import re
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.errors import EngineError
from engine.judge import durable
from engine.judge.context import PackContext
from engine.judge.durable import DurableEvaluator
from engine.judge.pipeline import judge
from engine.judge.tally import Result
from engine.language.model import Pack, Record
from engine.language.values import ConversionError
from engine.packs import load_pack
from tests.helpers import record

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
PACKS = ("ketamine-iv", "esketamine-rems")
# A comparison that names no field: durable_rules refuses to compile it (error 102).
REFUSED = {"r0_p_0": {"all": [{"m": {"$lt": 5}}]}}


def sample_records(pack: Pack, rows: int = 150) -> list[Record]:
    """The first ``rows`` rows of each sample export the pack reads, as records (rows a reader
    would reject left out)."""
    found = []
    for type_name, rtype in pack.records.items():
        with open(SAMPLES / f"{type_name}s.csv", encoding="utf-8", newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                if line > rows + 1:
                    break
                values = {name: value for name, value in row.items() if name in rtype.fields}
                try:
                    found.append(record(pack, values, line, type_name))
                except ConversionError:
                    continue
    return found


@pytest.fixture(scope="module")
def cases() -> dict[str, tuple[Pack, list[Record]]]:
    """Each shipped pack with records of the samples (records are immutable: shared safely)."""
    packs = {name: load_pack(str(ROOT / "rules" / f"{name}.yaml")) for name in PACKS}
    return {name: (pack, sample_records(pack)) for name, pack in packs.items()}


@pytest.fixture(scope="module")
def fresh(cases: dict[str, tuple[Pack, list[Record]]]) -> dict[str, Result]:
    """Each pack judged by a worker started for it: the answers a kept worker must give."""
    results = {}
    for name, (pack, records) in cases.items():
        durable.stop_idle_worker()
        results[name] = judge([pack], records)
        tallies = results[name].tallies
        assert sum(t.passed for t in tallies) and sum(t.failed for t in tallies)  # something to compare
    durable.stop_idle_worker()
    return results


def engine_input(pack: Pack) -> tuple[dict[str, Any], dict[int, list[str]]]:
    """The compiled ruleset and the fact keys per type code of ``pack``, as an audit gives them to the worker."""
    context = PackContext([pack])
    layout = context.layout
    return context.ruleset, {code: layout.keys(name) for name, code in layout.type_codes.items()}


def audit(cases: dict[str, tuple[Pack, list[Record]]], name: str, **kwargs: Any) -> Result:
    pack, records = cases[name]
    return judge([pack], records, **kwargs)


def kept_worker(cases: dict[str, tuple[Pack, list[Record]]]) -> Any:
    """The worker an audit that ended normally keeps, alive and idle."""
    audit(cases, "ketamine-iv")
    worker = durable.idle_worker()
    assert worker is not None and worker.is_alive()
    return worker


def test_audits_in_a_row_share_one_worker_and_answer_as_fresh_ones(cases: Any, fresh: dict[str, Result]) -> None:
    durable.stop_idle_worker()
    assert audit(cases, "ketamine-iv") == fresh["ketamine-iv"]
    worker = durable.idle_worker()
    assert worker is not None and worker.is_alive()
    # another pack: the kept worker is handed its ruleset in place of the previous one
    assert audit(cases, "esketamine-rems") == fresh["esketamine-rems"]
    assert audit(cases, "ketamine-iv") == fresh["ketamine-iv"]
    assert durable.idle_worker() is worker and worker.is_alive()


def _kill(signum: int) -> Any:
    """An outcome hook that sends the kept worker ``signum`` at the audit's first outcome."""
    worker = durable.idle_worker()
    assert worker is not None and worker.pid is not None
    pid = worker.pid
    sent = []

    def hook(*_: Any) -> None:
        if not sent:
            sent.append(signum)
            os.kill(pid, signum)

    return hook


@pytest.mark.parametrize("signum, timeout, message", [
    (signal.SIGSEGV, 60, "the rule engine crashed (SIGSEGV)"),
    (signal.SIGKILL, 60, "the rule engine crashed (SIGKILL)"),
    (signal.SIGSTOP, 1, "the rule engine did not answer within 1 s (hung)"),
], ids=["segfault", "killed", "hang"])
def test_after_an_engine_failure_the_next_audit_gets_a_fresh_worker(cases: Any, fresh: dict[str, Result],
                                                                     signum: int, timeout: float,
                                                                     message: str) -> None:
    worker = kept_worker(cases)
    # small batches: many are still to be judged when the worker fails
    with pytest.raises(EngineError, match=f"^{re.escape(message)}; not judged: "):
        audit(cases, "ketamine-iv", batch_size=20, timeout=timeout, on_outcome=_kill(signum))
    assert durable.idle_worker() is None
    assert not worker.is_alive()
    assert audit(cases, "ketamine-iv") == fresh["ketamine-iv"]
    assert durable.idle_worker() not in (None, worker)


def test_after_an_error_reply_the_next_audit_gets_a_fresh_worker(cases: Any, fresh: dict[str, Result]) -> None:
    worker = kept_worker(cases)
    with DurableEvaluator(*engine_input(cases["ketamine-iv"][0]), timeout=60) as evaluator:
        assert evaluator.process is worker
        evaluator.submit([], "batch one")
        evaluator.receive()
        evaluator.submit([(77,)], "batch two")  # a type the worker was given no keys for
        with pytest.raises(EngineError, match=r"^the rule engine failed: KeyError: 77; not judged: batch two$"):
            evaluator.receive()
    assert durable.idle_worker() is None
    assert not worker.is_alive()
    assert audit(cases, "esketamine-rems") == fresh["esketamine-rems"]
    assert durable.idle_worker() not in (None, worker)


def test_an_audit_stopped_by_an_exception_does_not_keep_its_worker(cases: Any, fresh: dict[str, Result]) -> None:
    # nothing is in flight, yet the audit stopped with an error (which may be a wrong answer the
    # audit's own check found, or a Ctrl-C): its worker is not trusted with the next audit
    worker = kept_worker(cases)
    with pytest.raises(KeyboardInterrupt), DurableEvaluator(*engine_input(cases["ketamine-iv"][0])) as evaluator:
        assert evaluator.process is worker
        evaluator.submit([], "batch one")
        evaluator.receive()
        raise KeyboardInterrupt
    assert durable.idle_worker() is None
    assert not worker.is_alive()
    assert audit(cases, "ketamine-iv") == fresh["ketamine-iv"]


def test_a_batch_left_in_flight_does_not_keep_the_worker(cases: Any) -> None:
    worker = kept_worker(cases)
    evaluator = DurableEvaluator(*engine_input(cases["ketamine-iv"][0]), timeout=60)
    assert evaluator.process is worker
    os.kill(worker.pid, signal.SIGSTOP)  # the batch stays unanswered
    evaluator.submit([], "batch one")
    evaluator.close()
    assert durable.idle_worker() is None
    assert not worker.is_alive()


def test_a_kept_worker_that_died_while_idle_is_replaced(cases: Any, fresh: dict[str, Result]) -> None:
    worker = kept_worker(cases)
    os.kill(worker.pid, signal.SIGKILL)
    assert audit(cases, "ketamine-iv") == fresh["ketamine-iv"]  # no error: a fresh worker judged it
    assert durable.idle_worker() not in (None, worker)


def test_a_kept_worker_that_does_not_answer_ready_is_replaced(cases: Any, fresh: dict[str, Result]) -> None:
    worker = kept_worker(cases)
    os.kill(worker.pid, signal.SIGSTOP)  # alive, but it never answers the new ruleset
    with DurableEvaluator(*engine_input(cases["esketamine-rems"][0]), timeout=1) as evaluator:
        assert evaluator.process is not worker
    assert not worker.is_alive()
    assert audit(cases, "esketamine-rems") == fresh["esketamine-rems"]


def test_a_ruleset_the_engine_refuses_leaves_the_next_audit_unharmed(cases: Any, fresh: dict[str, Result]) -> None:
    kept_worker(cases)
    with DurableEvaluator(REFUSED, {0: []}, timeout=60) as evaluator:
        evaluator.submit([(0,)], "batch one")
        with pytest.raises(EngineError) as caught:
            evaluator.receive()
    assert str(caught.value) == ("the rule engine failed: the engine refused the compiled rules (Could not "
                                 "create ruleset, error code: 102); not judged: batch one")
    assert durable.idle_worker() is None
    assert audit(cases, "ketamine-iv") == fresh["ketamine-iv"]
    worker = durable.idle_worker()
    assert audit(cases, "esketamine-rems") == fresh["esketamine-rems"]
    assert durable.idle_worker() is worker


def _echo(ruleset_json: str, keys_json: str, tasks: Any, results: Any) -> None:
    """A substitute worker that answers every batch with no outcome."""
    while (task := tasks.get()) is not None:
        results.put((task[0], b"", None))


def test_a_substitute_worker_neither_takes_nor_replaces_the_kept_one(cases: Any) -> None:
    worker = kept_worker(cases)
    with DurableEvaluator({}, {0: []}, timeout=60, target=_echo) as evaluator:
        assert evaluator.process is not worker
        evaluator.submit([(0,)], "batch one")
        evaluator.receive()
        substitute = evaluator.process
    assert durable.idle_worker() is worker
    assert not substitute.is_alive()


def test_an_audit_on_another_thread_does_not_take_the_kept_worker(cases: Any, fresh: dict[str, Result]) -> None:
    # the kernel ends a worker when the thread that started it ends (PR_SET_PDEATHSIG): a worker
    # is handed only to audits on the thread that started it
    worker = kept_worker(cases)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append((audit(cases, "ketamine-iv"), durable.idle_worker())))
    thread.start()
    thread.join()
    (result, kept_there), = results
    assert result == fresh["ketamine-iv"]
    assert kept_there is worker and worker.is_alive()
    assert audit(cases, "ketamine-iv") == fresh["ketamine-iv"]
