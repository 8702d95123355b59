"""The only module that imports durable_rules: drives its C engine in a worker process.

durable_rules 2.0.28 can segfault, loop or lose matches (see the developers' notes); so the
engine runs in a child process that the audit watches. A crash or a hang becomes an EngineError
that names what was not judged, never a report that looks complete. Inside the worker the C
module is driven directly (assert_facts / start_action_for_state / complete_and_start_action /
delete_state) so the Python Host with its background threads, swallowed action errors and state
re-assertion loop is never used.
"""

from __future__ import annotations

import json
import re
import multiprocessing as mp
import signal
import time
from array import array
from typing import Any, Callable, Iterator

from .errors import EngineError
from .facts import sentinel

SID = "batch"
_RULE_NAME = re.compile(r'"(r\d+_[pfae]_\d+|zz_sentinel)":')
_FACT_ID = re.compile(r'"id": ?"(\d+)"')
DEFAULT_TIMEOUT = 120.0  # seconds one batch may take before the engine is declared hung
MAX_IN_FLIGHT = 3


def worker_main(ruleset_json: str, tasks: Any, results: Any) -> None:
    """Judge batches of facts; reply with a flat int array: (rule index, outcome code, fact id)..."""
    import durable_rules_engine as dre

    from .compiler import OUTCOME_CODES, SENTINEL_RULE, parse_rule_name

    codes = {code: n for n, code in enumerate(OUTCOME_CODES)}
    try:
        handle = dre.create_ruleset("audit", ruleset_json)
    except Exception as exc:  # durable's compile errors are bare numeric codes
        results.send((-1, b"", f"the engine refused the compiled rules ({exc})"))
        return
    while True:
        task = tasks.get()
        if task is None:
            return
        batch_id, payload = task
        try:
            out = array("q")
            code, offset = _assert(dre, handle, payload)
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
                    for fact_id in _FACT_ID.findall(text, found.end(), end):
                        out.extend((index, outcome, int(fact_id)))
                result = dre.complete_and_start_action(handle, offset)
            dre.delete_state(handle, SID)
            results.send((batch_id, out.tobytes(), None))
        except Exception as exc:  # reported to the parent, which stops the audit
            results.send((batch_id, b"", f"{type(exc).__name__}: {exc}"))
            return


def _assert(dre: Any, handle: int, payload: bytes) -> tuple[int, int]:
    code, offset = dre.assert_facts(handle, payload.decode("utf-8"))
    return int(code), int(offset)


class DurableEvaluator:
    """A durable_rules worker process judging batches of facts, with crash and hang detection."""

    def __init__(self, ruleset: dict[str, Any], timeout: float = DEFAULT_TIMEOUT,
                 target: Callable[..., None] = worker_main) -> None:
        context = mp.get_context("spawn")
        self.timeout = timeout
        self.tasks = context.Queue()
        self.results, child_end = context.Pipe(duplex=False)
        self.process = context.Process(target=target, args=(json.dumps(ruleset), self.tasks, child_end),
                                       daemon=True, name="durable-rules-worker")
        self.process.start()
        child_end.close()
        self.pending: dict[int, str] = {}
        self.next_id = 0

    def submit(self, facts: list[dict[str, Any]], what: str) -> int:
        """Queue one batch (a list of facts); ``what`` names it in errors."""
        batch = [dict(f, sid=SID) for f in facts]
        batch.append(dict(sentinel(), sid=SID))
        batch_id = self.next_id
        self.next_id += 1
        self.pending[batch_id] = what
        self.tasks.put((batch_id, json.dumps(batch, separators=(",", ":")).encode("utf-8")))
        return batch_id

    @property
    def full(self) -> bool:
        return len(self.pending) >= MAX_IN_FLIGHT

    def receive(self) -> tuple[int, Iterator[tuple[int, int, int]]]:
        """The next finished batch: (batch id, [(rule index, outcome code, fact id), ...])."""
        deadline = time.monotonic() + self.timeout
        while not self.results.poll(0.2):
            if not self.process.is_alive():
                self._fail(self._death())
            if time.monotonic() > deadline:
                self.process.kill()
                self._fail(f"the rule engine did not answer within {self.timeout:.0f} s (hung)")
        try:
            batch_id, data, error = self.results.recv()
        except (EOFError, OSError):
            self.process.join(5)
            self._fail(self._death())
        if error:
            self._fail(f"the rule engine failed: {error}")
        self.pending.pop(batch_id, None)
        flat = array("q")
        flat.frombytes(data)
        values = iter(flat)
        return batch_id, zip(values, values, values)

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
        unjudged = ", ".join(self.pending[k] for k in sorted(self.pending)[:3])
        more = len(self.pending) - 3
        if more > 0:
            unjudged += f" and {more} more batches"
        self.close()
        raise EngineError(f"{reason}; not judged: {unjudged}")

    def close(self) -> None:
        if self.process.is_alive():
            try:
                self.tasks.put(None)
            except (OSError, ValueError):
                pass
            self.process.join(2)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(2)
        self.tasks.cancel_join_thread()
        self.tasks.close()
        self.results.close()

    def __enter__(self) -> DurableEvaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

