"""The evaluator against a real durable_rules engine: every known engine hazard, pinned by a test."""

from __future__ import annotations

import ctypes
import json
import time
from typing import Any

import durable_rules_engine as dre
import pytest

from engine.errors import EngineError
from engine.judge.durable import DurableEvaluator
from engine.judge.pipeline import judge
from engine.language.model import Outcome
from tests.helpers import make_pack, record

RULE = """\
  - id: {id}
    title: {id}
    severity: major
    for: session
{body}
"""


def rule(rule_id: str, body: str) -> str:
    return RULE.format(id=rule_id, body=body)


def outcomes(pack: Any, rows: list[dict[str, Any]], **kwargs: Any) -> dict[str, list[str]]:
    """Outcome per rule id, in record order, as the engine judged them."""
    records = [record(pack, dict(row, session_id=f"S{i}", patient_id="P1"), line=i + 2)
               for i, row in enumerate(rows)]
    result = judge([pack], records, **kwargs)
    by_key: dict[str, dict[str, str]] = {r.id: {} for r in pack.rules}
    for finding in result.findings:
        by_key[finding.rule][finding.record_key] = "fail"
    for entry in result.not_evaluable:
        by_key[entry.rule][entry.record_key] = "not_evaluable"
    table: dict[str, list[str]] = {}
    for r, tally in zip(pack.rules, result.tallies):
        got = [by_key[r.id].get(rec.key, "?") for rec in records]
        table[r.id] = got
        assert tally.passed + tally.not_applicable == got.count("?")
    return table


def test_a_post_event_reaches_one_rule_but_every_rule_judges_every_record() -> None:
    # durable itself: an event is consumed by the first matching rule only
    ruleset = {f"r{i}": {"all": [{"m": {"$and": [{"_a": 1}, {"kind": "s"}]}}]} for i in range(3)}
    handle = dre.create_ruleset("consume_demo", json.dumps(ruleset))
    _, offset = dre.assert_event(handle, json.dumps({"id": "e1", "sid": "0", "_a": 1, "kind": "s"}))
    fired = []
    result = dre.start_action_for_state(handle, offset)
    while result is not None:
        fired.extend(json.loads(result[1] if isinstance(result, tuple) else result))
        result = dre.complete_and_start_action(handle, offset)
    assert len(fired) == 1
    # the audit: three rules that all match one record all get their outcome
    pack = make_pack(rule("A", "    require: {dose_mg: {at_least: 1}}")
                     + rule("B", "    require: {dose_mg: {at_least: 2}}")
                     + rule("C", "    require: {dose_mg: {at_least: 99}}"))
    result = judge([pack], [record(pack, {"session_id": "S1", "patient_id": "P", "dose_mg": "35"})])
    assert [(t.passed, t.failed) for t in result.tallies] == [(1, 0), (1, 0), (0, 1)]


def test_a_batch_with_unmatched_facts_is_not_an_error() -> None:
    # durable reports "no rule matched" for the whole batch (MessageNotHandledException in the Host);
    # the raw driver treats it as the normal, compliant case
    ruleset = {"r0_f_0": {"all": [{"m": {"$and": [{"_a": 1}, {"$gt": {"v0": 5}}]}}], "cap": 1000}}
    with DurableEvaluator(ruleset, {0: ["v0"]}) as evaluator:
        evaluator.submit([(0, 1), (0, 9)], "two facts")
        _, matches = evaluator.receive()
    assert [(rule, outcome, list(ids)) for rule, outcome, ids in matches] == [(0, 1, [1])]


@pytest.mark.parametrize("require", [
    "{escort_present: {present: false}}",
    "{not: {escort_present: {present: true}}}",
    "{session_id: {present: true}}",
], ids=["absent", "not-present", "present-on-key"])
def test_absence_tests_cannot_loop(require: str) -> None:
    # `-m.x` alone, or `+m.id`, fires forever in durable on its own state document; every
    # compiled pattern carries the _a guard that document never has
    pack = make_pack(rule("ABS", f"    require: {require}"))
    table = outcomes(pack, [{"escort_present": "yes"}, {}], timeout=20)
    assert len(table["ABS"]) == 2


def test_numbers_compare_as_numbers_not_strings() -> None:
    # durable compares a mistyped value as a string ("10" > 9 is false); readers convert first
    pack = make_pack(rule("N", "    require: {dose_mg: {greater_than: 9}}")
                     + rule("I", "    require: {devices: {at_least: 9}}"))
    table = outcomes(pack, [{"dose_mg": "10"}, {"dose_mg": "9"}, {"dose_mg": "100", "devices": "10"}])
    assert table["N"] == ["?", "fail", "?"]
    assert table["I"] == ["fail", "fail", "?"]


@pytest.mark.parametrize("value", ["1e16", "-1e17", "1e300", "1e-5", "-2.5e-7", "12345678901234567", "0.0001"])
def test_numbers_python_writes_with_an_exponent_are_judged(value: str) -> None:
    """repr() writes 1e+16 and 1e-05 without a decimal point; durable_rules' parser misreads such a
    number and the fact matches no rule (an engine error that stopped the audit). Sent as 1.0e+16."""
    pack = make_pack(rule("BIG", "    require: {dose_mg: {at_most: 5}}")
                     + rule("SMALL", "    require: {dose_mg: {greater_than: 0}}"))
    table = outcomes(pack, [{"dose_mg": value}, {"dose_mg": "1"}])
    number = float(value)
    assert table["BIG"] == ["?" if number <= 5 else "fail", "?"]
    assert table["SMALL"] == ["?" if number > 0 else "fail", "?"]


def test_field_to_field_comparison_with_a_missing_side_fails_with_the_missing_field() -> None:
    # durable reads an uninitialised result when one side is absent and can MATCH
    pack = make_pack(rule("X", "    require: {dose_mg: {at_most: {field: dose_max}}}"))
    records = [record(pack, {"session_id": "S1", "patient_id": "P", "dose_mg": "90"}),
               record(pack, {"session_id": "S2", "patient_id": "P", "dose_mg": "90", "dose_max": "100"})]
    result = judge([pack], records)
    assert result.tallies[0].passed == 1
    assert [(f.record_key, f.missing) for f in result.findings] == [("S1", ("dose_max",))]


def test_regex_uses_re2_not_durables_dialect() -> None:
    # durable's DFA misses ".*[a-z][a-z].*" on "abcd"
    pack = make_pack(rule("RE", '    require: {note: {matches: ".*[a-z][a-z].*"}}'))
    table = outcomes(pack, [{"note": "abcd"}, {"note": "follow up"}, {"note": "12"}])
    assert table["RE"] == ["?", "?", "fail"]


def test_the_global_host_limit_does_not_apply_two_audits_in_one_process() -> None:
    # durable's global Host registers a ruleset name once; each audit has its own engine
    pack = make_pack(rule("A", "    require: {dose_mg: {at_least: 50}}"))
    first = outcomes(pack, [{"dose_mg": "10"}, {"dose_mg": "60"}])
    second = outcomes(pack, [{"dose_mg": "10"}, {"dose_mg": "60"}])
    assert first == second == {"A": ["fail", "?"]}


def test_many_batches_reuse_one_state_well_below_the_1024_sid_limit() -> None:
    pack = make_pack(rule("A", "    require: {dose_mg: {at_least: 50}}"))
    rows = [{"dose_mg": str(i % 100)} for i in range(1500)]
    table = outcomes(pack, rows, batch_size=1)  # 1500 batches, one state each, deleted after use
    assert table["A"].count("fail") == 750


def _raising_worker(ruleset_json: str, keys_json: str, tasks: Any, results: Any) -> None:
    batch_id, _ = tasks.get()
    results.put((batch_id, b"", "ValueError: an action raised"))


def _crashing_worker(ruleset_json: str, keys_json: str, tasks: Any, results: Any) -> None:
    tasks.get()
    ctypes.string_at(0)  # a segmentation fault, as the C engine can produce


def _hanging_worker(ruleset_json: str, keys_json: str, tasks: Any, results: Any) -> None:
    tasks.get()
    time.sleep(60)


# Only the hang waits out its timeout; the others have ample time to start on a busy machine (the
# tests may run beside another worker of pytest-xdist).
@pytest.mark.parametrize("target, timeout, message", [
    (_raising_worker, 60, "the rule engine failed: ValueError: an action raised; not judged: batch one"),
    (_crashing_worker, 60, "the rule engine crashed (SIGSEGV); not judged: batch one"),
    (_hanging_worker, 2, "the rule engine did not answer within 2 s (hung); not judged: batch one"),
], ids=["error-not-swallowed", "segfault", "hang"])
def test_engine_failures_stop_the_audit_naming_what_was_not_judged(target: Any, timeout: float, message: str) -> None:
    evaluator = DurableEvaluator({}, {0: []}, timeout=timeout, target=target)
    evaluator.submit([(0,)], "batch one")
    with pytest.raises(EngineError) as caught:
        evaluator.receive()
    assert str(caught.value) == message
    assert not evaluator.process.is_alive()


def _colliding_worker(*args: Any) -> None:
    """The real worker, but every fact of a batch gets the same id, as a hash collision would."""
    from engine.judge import durable

    real_json = durable._facts_json

    def same_ids(payload: bytes, templates: dict[int, str]) -> str:
        return real_json(payload, templates).replace('"id":"1"', '"id":"0"').replace('"id":"2"', '"id":"0"')

    durable._facts_json = same_ids
    durable.worker_main(*args)


def test_a_fact_the_engine_drops_is_an_error_not_a_silent_pass() -> None:
    # durable keys facts by a 32-bit hash of their id and drops a "seen" one without a word when
    # it is not the last of a batch; whatever the cause, a record left without an outcome stops the audit
    pack = make_pack(rule("A", "    require: {dose_mg: {at_least: 50}}"))
    with pytest.raises(EngineError, match=r"already seen \(id collision\)|gave no outcome for rule A"):
        outcomes(pack, [{"dose_mg": "10"}, {"dose_mg": "60"}, {"dose_mg": "70"}], worker=_colliding_worker)


@pytest.mark.parametrize("when, rows, expected", [
    ("{route: IV}", [{"route": "IV"}, {"route": "IN"}, {}], ["?", "na", "not_evaluable"]),
    ("{any: [{route: IV}, {dose_mg: {greater_than: 10}}]}",
     [{"route": "IN", "dose_mg": "5"}, {"dose_mg": "50"}, {"dose_mg": "5"}, {"route": "IV", "dose_mg": "50"}],
     ["na", "?", "not_evaluable", "?"]),
    ("{all: [{route: IV}, {dose_mg: {greater_than: 10}}]}",
     [{"route": "IN"}, {"route": "IV"}, {"dose_mg": "5"}, {"route": "IV", "dose_mg": "50"}],
     ["na", "not_evaluable", "na", "?"]),
    ("{not: {route: IV}}", [{"route": "IV"}, {"route": "IN"}, {}], ["na", "?", "not_evaluable"]),
], ids=["leaf", "any", "all", "not"])
def test_three_valued_applicability(when: str, rows: list[dict[str, Any]], expected: list[str]) -> None:
    pack = make_pack(rule("W", f"    when: {when}\n    require: {{escort_present: {{present: false}}}}"))
    result_rows = [dict(r, escort_present="") for r in rows]
    records = [record(pack, dict(row, session_id=f"S{i}", patient_id="P")) for i, row in enumerate(result_rows)]
    seen: dict[str, str] = {}
    result = judge([pack], records)
    for entry in result.not_evaluable:
        seen[entry.record_key] = "not_evaluable"
    tally = result.tallies[0]
    got = [seen.get(f"S{i}", "?") for i in range(len(rows))]
    assert [g for g in got if g == "not_evaluable"] == [e for e in expected if e == "not_evaluable"]
    assert tally.not_applicable == expected.count("na")
    assert tally.passed == expected.count("?")
    assert tally.failed == 0


@pytest.mark.parametrize("require, values, outcome, missing", [
    ("{any: [{dose_mg: {at_least: 10}}, {escort_present: true}]}", {"escort_present": "no"}, "fail", ["dose_mg"]),
    ("{any: [{dose_mg: {at_least: 10}}, {escort_present: true}]}", {"escort_present": "yes"}, "pass", []),
    ("{all: [{dose_mg: {at_least: 10}}, {escort_present: true}]}", {"escort_present": "no"}, "fail", []),
    ("{all: [{dose_mg: {at_least: 10}}, {escort_present: true}]}", {"escort_present": "yes"}, "fail", ["dose_mg"]),
    ("{not: {dose_mg: {at_least: 10}}}", {}, "fail", ["dose_mg"]),
    ("{dose_mg: {present: false}}", {}, "pass", []),
], ids=["any-unknown", "any-true", "all-false", "all-unknown", "not-unknown", "present-never-unknown"])
def test_require_unknown_fails_listing_the_missing_fields(require: str, values: dict[str, str], outcome: str,
                                                          missing: list[str]) -> None:
    pack = make_pack(rule("R", f"    require: {require}"))
    result = judge([pack], [record(pack, dict(values, session_id="S1", patient_id="P"))])
    if outcome == "pass":
        assert result.tallies[0].passed == 1 and not result.findings
    else:
        assert result.tallies[0].failed == 1
        assert list(result.findings[0].missing) == missing


def test_outcome_hook_sees_every_pair_once() -> None:
    pack = make_pack(rule("A", "    when: {route: IV}\n    require: {dose_mg: {at_least: 50}}")
                     + rule("B", "    require: {escort_present: true}"))
    seen: list[tuple[str, str, Outcome]] = []
    from engine.judge.audit import Auditor

    auditor = Auditor([pack], on_outcome=lambda r, rec, o: seen.append((r.id, rec.key, o)))
    try:
        for i, row in enumerate([{"route": "IV", "dose_mg": "60"}, {"route": "IN"}, {}]):
            auditor.add(record(pack, dict(row, session_id=f"S{i}", patient_id="P")))
        auditor.finish()
    finally:
        auditor.close()
    assert sorted(seen) == sorted([
        ("A", "S0", Outcome.PASS), ("A", "S1", Outcome.NOT_APPLICABLE), ("A", "S2", Outcome.NOT_EVALUABLE),
        ("B", "S0", Outcome.FAIL), ("B", "S1", Outcome.FAIL), ("B", "S2", Outcome.FAIL)])
