"""The only module that imports durable_rules: drives its C engine in a worker process.

durable_rules 2.0.28 can segfault, loop or lose matches (see the developers' notes); so the
engine runs in a child process that the audit watches. A crash or a hang becomes an EngineError
that names what was not judged, never a report that looks complete. Inside the worker the C
module is driven directly (assert_facts / start_action_for_state / complete_and_start_action /
delete_state) so the Python Host with its background threads, swallowed action errors and state
re-assertion loop is never used. The worker never outlives the process that started it.

Starting a worker costs a fresh interpreter and its imports (about 0.3 s); so a worker that ended
an audit normally is kept, idle, and the next audit of the same process hands it its own ruleset
instead of starting another. Anything abnormal (an error, a crash, a hang, an audit that stopped
early, a substitute worker) ends the worker as before, and a kept worker that does not answer
"ready" is replaced by a fresh one.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import marshal
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import re
import signal
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from typing import Any

from engine.errors import EngineError
from engine.judge.facts import GUARD, TYPE, sentinel

SID = "batch"
_RULE_NAME = re.compile(r'"(r\d+_[pfae]_\d+|zz_sentinel)":')
_FACT_ID = re.compile(r'"id": ?"(\d+)"')
DEFAULT_TIMEOUT = 120.0  # seconds one batch may take before the engine is declared hung
MAX_IN_FLIGHT = 3
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_NEW_RULESET = "ruleset"  # a task handing a kept worker the next audit's ruleset and keys
_RULESET = -1  # the batch id of a reply about a ruleset: error None for ready, else the refusal


def _worker_start(target: Callable[..., None], *arguments: Any) -> None:
    """The worker process's entry: tie its life to the parent's, then run ``target``.

    Ctrl-C on a terminal reaches every process of the foreground group; the parent handles it
    (and stops the worker), so the worker ignores it instead of printing a traceback of its own.
    It was started with SIGINT and SIGTERM blocked (see _interrupts_blocked), so a Ctrl-C that came
    while the interpreter started is dropped here rather than breaking the start with a fatal
    error; a SIGTERM sent to it ends it from here on, as a signal's default does.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _INTERRUPTS)
    _die_with_parent()
    ruleset_json, keys_json, tasks, results = arguments
    try:
        target(ruleset_json, keys_json, _Channel(tasks), _Channel(results))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the audit's ends of the pipes closed: it was stopped, and says so itself; nothing to add


_INTERRUPTS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _interrupts_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM blocked on this thread while a process starts: the child inherits the mask
    (as multiprocessing starts its resource tracker), and here the signal is delayed, not lost. A
    SIGTERM handled in the middle of spawning would cut the child's start-up data short, and the
    child would print a traceback of its own after the one-line message."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows: no such mask, nor process groups
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _INTERRUPTS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _die_with_parent() -> None:
    """End this process when the parent ends, however it ends (a SIGKILL runs no clean-up).

    A worker left behind would hold the parent's stdout and stderr open (a pipe reading them never
    ends) and keep multiprocessing's resource tracker alive. On Linux the kernel kills it
    (PR_SET_PDEATHSIG; it follows the thread that started the worker, and evaluators are made on
    the main thread). Everywhere, a thread waits on the parent's end of the pipe multiprocessing
    opened to start this process, which closes when the parent dies; it acts only between the
    engine's C calls, which hold the interpreter lock.
    """
    parent = mp.parent_process()
    if parent is None:  # not started by multiprocessing: nothing to follow
        return
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no prctl: the thread below still watches
            pass
    if os.getppid() != parent.pid:  # the parent died before the death signal was armed
        os._exit(1)
    threading.Thread(target=exit_when_closed, args=(parent.sentinel, _exit_now), daemon=True,
                     name="parent-watch").start()


def _exit_now() -> None:
    os._exit(1)


def exit_when_closed(sentinel: Any, end: Callable[[], None]) -> None:
    """Wait until ``sentinel`` (the parent's end of a pipe, or its process handle) is ready, which
    happens only when the parent has gone, then call ``end``."""
    multiprocessing.connection.wait([sentinel])
    end()


def worker_main(ruleset_json: str, keys_json: str, tasks: Any, results: Any) -> None:
    """Judge batches of facts; reply with a flat int array of segments:
    rule index, outcome code, n, then the n fact ids that rule gave that outcome.

    A batch arrives as marshalled rows (type code, values...); the facts' JSON is built here, on
    the engine's core, so that the reading process only encodes numbers. After the batches of one
    audit, a None ends the worker; a new ruleset (a kept worker handed to the next audit) replaces
    the current one, answered with a ready reply, or with the engine's refusal, which ends the worker.
    """
    import durable_rules_engine as dre

    rulesets = 0
    while True:
        rulesets += 1
        try:
            # a name of its own per ruleset: nothing of the previous audit's can be confused with it
            handle = dre.create_ruleset(f"audit{rulesets}", ruleset_json)
        except Exception as exc:  # durable's compile errors are bare numeric codes
            results.put((_RULESET, b"", f"the engine refused the compiled rules ({exc})"))
            return
        if rulesets > 1:
            results.put((_RULESET, b"", None))
        task = _judge(dre, handle, fact_templates({int(code): names for code, names in json.loads(keys_json).items()}),
                      tasks, results)
        if task is None:
            return
        try:
            dre.delete_ruleset(handle)  # its states were deleted batch by batch: nothing is left in it
        except Exception as exc:  # not ready: the audit starts a fresh worker instead
            results.put((_RULESET, b"", f"the engine could not delete the previous ruleset ({exc})"))
            return
        ruleset_json, keys_json = task


def _judge(dre: Any, handle: int, templates: dict[int, str], tasks: Any, results: Any) -> tuple[str, str] | None:
    """Judge the batches that come until the end (None returned, also after an error, which is
    replied) or the next audit's ruleset and keys (returned)."""
    from engine.judge.compiler import OUTCOME_CODES, SENTINEL_RULE, parse_rule_name

    codes = {code: n for n, code in enumerate(OUTCOME_CODES)}
    while True:
        task = tasks.get()
        if task is None:
            return None
        if task[0] == _NEW_RULESET:
            _, ruleset_json, keys_json = task
            return ruleset_json, keys_json
        batch_id, payload = task
        try:
            out = array("i")
            code, offset = dre.assert_facts(handle, _facts_json(payload, templates))
            if code == 2:
                raise RuntimeError("the engine rejected a fact as already seen (id collision)")
            result = dre.start_action_for_state(handle, offset)
            while result is not None:
                text = result[1] if isinstance(result, tuple) else result
                # Only the rule names and fact ids are needed; parsing every matched fact with
                # json.loads cost 90% of the worker's time. A misread here cannot go unnoticed:
                # the audit checks that every record got exactly one outcome per rule.
                names = list(_RULE_NAME.finditer(text))
                for number, found in enumerate(names):
                    if found.group(1) == SENTINEL_RULE:
                        continue
                    index, code = parse_rule_name(found.group(1))
                    outcome = codes[code]
                    end = names[number + 1].start() if number + 1 < len(names) else len(text)
                    ids = _FACT_ID.findall(text, found.end(), end)
                    out.extend((index, outcome, len(ids)))
                    out.extend(map(int, ids))
                result = dre.complete_and_start_action(handle, offset)
            dre.delete_state(handle, SID)
            results.put((batch_id, out.tobytes(), None))
        except Exception as exc:  # reported to the parent, which stops the audit
            results.put((batch_id, b"", f"{type(exc).__name__}: {exc}"))
            return None


def _segments(flat: array[int]) -> Iterator[tuple[int, int, array[int]]]:
    position = 0
    while position < len(flat):
        rule_index, outcome, count = flat[position:position + 3]
        yield rule_index, outcome, flat[position + 3:position + 3 + count]
        position += 3 + count


def fact_templates(keys: dict[int, list[str]]) -> dict[int, str]:
    """A %-template per type code for the JSON of one fact (a third of the cost of json.dumps).

    Every value in a row is an int or a finite float (facts.Layout encodes all types to numbers),
    and repr() of those is valid JSON.
    """
    templates = {}
    for code, names in keys.items():
        body = "".join(f',"{name}":%r' for name in names)
        templates[code] = '{"id":"%d","sid":"' + SID + f'","{GUARD}":1,"{TYPE}":{code}' + body + "}"
    return templates


# repr() writes 1e16 and 1e-05 without a decimal point, valid JSON that durable_rules' parser
# misreads (the fact then matches no rule at all); 1.0e+16 it reads right. Every value follows a
# colon; the pattern starts with one, so the scan is quick (about 3 us a fact).
_BARE_EXPONENT = re.compile(r":(-?\d+)e")


def _facts_json(payload: bytes, templates: dict[int, str]) -> str:
    facts = [templates[row[0]] % (number, *row[1:]) for number, row in enumerate(marshal.loads(payload))]
    facts.append(json.dumps(dict(sentinel(), sid=SID)))
    return _BARE_EXPONENT.sub(r":\1.0e", "[" + ",".join(facts) + "]")


def engine_json(ruleset: dict[str, Any]) -> str:
    """The compiled ruleset as durable_rules reads it right: a pack's threshold of 0.00001 or 1e16
    is written 1e-05 / 1e+16 by json.dumps, which durable refuses (error 204) unless written 1.0e-05."""
    return _BARE_EXPONENT.sub(r":\1.0e", json.dumps(ruleset, separators=(",", ":")))


class _Channel:
    """One end of a one-way pipe as the worker sees it: ``get`` what the audit sent, ``put`` a reply."""

    def __init__(self, connection: multiprocessing.connection.Connection) -> None:
        self.connection = connection

    def get(self) -> Any:
        return self.connection.recv()

    def put(self, item: Any) -> None:
        self.connection.send(item)


def _feed(tasks: queue.SimpleQueue[Any], connection: multiprocessing.connection.Connection) -> None:
    """Send queued batches to the worker until the closing None is sent or the worker is gone."""
    with contextlib.suppress(OSError, ValueError):
        while True:
            task = tasks.get()
            connection.send(task)
            if task is None:
                return


def _collect(connection: multiprocessing.connection.Connection, results: queue.SimpleQueue[Any]) -> None:
    """Queue the worker's replies as they come; a None when its end closes (it ended, however)."""
    with contextlib.suppress(EOFError, OSError, ValueError):
        while True:
            results.put(connection.recv())
    results.put(None)


class _Worker:
    """A started worker process, the pipes to it, and the audit process's threads doing their I/O.

    Plain pipes, not multiprocessing queues: a queue's locks are named semaphores that a Ctrl-C
    arriving at the wrong moment leaves for the resource tracker to report on stderr.
    """

    def __init__(self, target: Callable[..., None], ruleset_json: str, keys_json: str) -> None:
        context = mp.get_context("spawn")
        task_reader, task_writer = context.Pipe(duplex=False)
        result_reader, result_writer = context.Pipe(duplex=False)
        self.process = context.Process(target=_worker_start, args=(
            target, ruleset_json, keys_json, task_reader, result_writer),
            daemon=True, name="durable-rules-worker")
        if sys.platform != "win32":
            # spawning starts multiprocessing's resource tracker, and starting it unblocks SIGINT
            # on this thread (Python 3.11): started first, it cannot undo the mask below
            resource_tracker.ensure_running()
        with _interrupts_blocked():
            self.process.start()
        # the worker's ends belong to the worker alone: its death then ends this side's reads
        task_reader.close()
        result_writer.close()
        # PR_SET_PDEATHSIG follows the thread that started the process: only that thread reuses it
        self.thread = threading.current_thread()
        self.owner = os.getpid()  # a forked copy of this module must not take the parent's worker
        self.real = target is worker_main  # only the real worker is kept; tests substitute others
        self.tasks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._connections = (task_writer, result_reader)
        self._threads = (threading.Thread(target=_feed, args=(self.tasks, task_writer), daemon=True,
                                          name="engine-feed"),
                         threading.Thread(target=_collect, args=(result_reader, self.results), daemon=True,
                                          name="engine-replies"))
        for thread in self._threads:
            thread.start()

    def reusable(self) -> bool:
        """Whether this worker may judge another audit: the real one, alive, nothing left unread,
        in the process and on the thread that started it."""
        return (self.real and self.owner == os.getpid() and self.thread is threading.current_thread()
                and self.results.empty() and self.process.is_alive())

    def hand_over(self, ruleset_json: str, keys_json: str, timeout: float) -> bool:
        """Give this idle worker the next audit's ruleset; True once it answered ready."""
        self.tasks.put((_NEW_RULESET, ruleset_json, keys_json))
        try:
            reply = self.results.get(timeout=timeout)
        except queue.Empty:
            return False
        return bool(reply == (_RULESET, b"", None))

    def stop(self) -> None:
        """End the worker (asked first, killed if it does not end) and the I/O threads."""
        if self.process.is_alive():
            self.tasks.put(None)
            self.process.join(2)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(2)
        self.tasks.put(None)  # the feed ends even when the worker never read its last batch
        for thread in self._threads:  # the worker has ended: its ends of the pipes are closed
            thread.join(2)
        for connection in self._connections:
            connection.close()


# The worker kept between audits (one per process) and the lock guarding the hand-over.
_idle: _Worker | None = None
_idle_lock = threading.Lock()


def _take_idle() -> _Worker | None:
    global _idle
    with _idle_lock:
        worker, _idle = _idle, None
    return worker


def _keep(worker: _Worker) -> bool:
    global _idle
    with _idle_lock:
        if _idle is None:
            _idle = worker
            return True
    return False


def idle_worker() -> multiprocessing.process.BaseProcess | None:
    """The worker process kept for this process's next audit, if any."""
    worker = _idle
    return None if worker is None or worker.owner != os.getpid() else worker.process


def stop_idle_worker() -> None:
    """End the kept worker now rather than with this process."""
    worker = _take_idle()
    if worker is not None and worker.owner == os.getpid():
        worker.stop()


def _engine(target: Callable[..., None], ruleset_json: str, keys_json: str, timeout: float) -> _Worker:
    """The kept worker with this ruleset if it answers ready, else a worker started for it."""
    kept = _take_idle() if target is worker_main else None
    if kept is not None and kept.owner == os.getpid():  # else a forked copy's: the parent's to end
        if kept.thread is not threading.current_thread() and kept.thread.is_alive():
            if not _keep(kept):  # another thread's, left to it; this audit starts its own
                kept.stop()
        elif kept.reusable() and kept.hand_over(ruleset_json, keys_json, timeout):
            return kept
        else:  # not ready (refused, dead, stopped): ended, whatever it is doing
            kept.process.kill()
            kept.stop()
    return _Worker(target, ruleset_json, keys_json)


class DurableEvaluator:
    """A durable_rules worker process judging batches of facts, with crash and hang detection.

    Plain pipes carry batches and replies, each side's pipe I/O done by a thread of the audit's
    process (so reading, judging and writing overlap, a batch or reply larger than a pipe's buffer
    included). The worker is the one kept by the previous audit of this process when there is one
    and it is well (see the module's docstring); closing keeps it again when the audit ended
    normally, with every batch answered.
    """

    def __init__(self, ruleset: dict[str, Any], keys: dict[int, list[str]], timeout: float = DEFAULT_TIMEOUT,
                 target: Callable[..., None] = worker_main) -> None:
        self.timeout = timeout
        self.worker = _engine(target, engine_json(ruleset), json.dumps(keys), timeout)
        self.process = self.worker.process
        self.tasks = self.worker.tasks
        self.results = self.worker.results
        self.pending: dict[int, str] = {}
        self.next_id = 0
        self._failed = False
        self._closed = False

    def submit(self, rows: list[tuple[Any, ...]], what: str) -> int:
        """Queue one batch of rows (type code, values in the type's key order); ``what`` names it in errors.

        Fact ids are the rows' positions in the batch.
        """
        batch_id = self.next_id
        self.next_id += 1
        self.pending[batch_id] = what
        self.tasks.put((batch_id, marshal.dumps(rows)))
        return batch_id

    @property
    def full(self) -> bool:
        return len(self.pending) >= MAX_IN_FLIGHT

    def receive(self) -> tuple[int, Iterator[tuple[int, int, array[int]]]]:
        """The next finished batch: (batch id, segments of (rule index, outcome code, fact ids))."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                reply = self.results.get(timeout=0.2)
            except queue.Empty:
                reply = ()
            if reply is None:  # the worker's end closed: every reply it sent came before
                self._fail(self._death())
            if reply:
                batch_id, data, error = reply
                break
            if time.monotonic() > deadline:
                self.process.kill()
                self._fail(f"the rule engine did not answer within {self.timeout:.0f} s (hung)")
        if error:
            self._fail(f"the rule engine failed: {error}")
        self.pending.pop(batch_id, None)
        flat = array("i")
        flat.frombytes(data)
        return batch_id, _segments(flat)

    def _death(self) -> str:
        self.process.join(2)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"the rule engine crashed ({name})"
        return f"the rule engine stopped unexpectedly (exit code {code})"

    def _fail(self, reason: str) -> None:
        self._failed = True
        unjudged = ", ".join(self.pending[k] for k in sorted(self.pending)[:3])
        more = len(self.pending) - 3
        if more > 0:
            unjudged += f" and {more} more batches"
        self.close()
        raise EngineError(f"{reason}; not judged: {unjudged}")

    def close(self) -> None:
        """Keep the worker for the next audit if this one ended normally, else end it.

        Normally: no failure seen, every batch answered, and no exception on its way (closing from
        a ``finally`` or ``__exit__`` of an audit that stopped with an error, which may be a wrong
        answer of the engine found by the audit's own check, or a Ctrl-C).
        """
        if self._closed:  # closed twice (after a failure, then by its owner): the worker may be another's now
            return
        self._closed = True
        normal = not self._failed and not self.pending and sys.exc_info()[1] is None
        if not (normal and self.worker.reusable() and _keep(self.worker)):
            self.worker.stop()

    def __enter__(self) -> DurableEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
