"""``protocol-audit test``: examples and scenario files, strictness, positions of problems, coverage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli import main
from engine.commands import coverage, packtest
from engine.errors import PackError
from engine.language.loader import load_yaml
from engine.language.model import Pack
from engine.language.schema import build_pack
from engine.packs import load_pack_bytes, load_packs, resolve, shipped_packs
from tests.test_diff import DOSE_CEILING

PACK = """\
pack: sched
version: "1"
timezone: America/Los_Angeles
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime,
             route: {type: enum, values: [IV, IN]}, cancelled: boolean, escort: boolean}
  screening:
    key: screening_id
    patient: patient_id
    time: screened_at
    fields: {screening_id: string, patient_id: string, screened_at: datetime, score: integer}
rules:
  - id: SCREEN
    title: Screened in the 30 days before
    severity: major
    for: session
    when: {route: IV}
    require:
      exists: {of: screening, where: {score: {present: true}}, within: {before: 30d}}
    tests:
      - {record: {route: IV, session_start: "2026-03-02 09:00"}, expect: fail}
      - record: {route: IV, session_start: "2026-03-02 09:00"}
        history: [{type: screening, record: {screened_at: "2026-02-20 09:00", score: 1}}]
        expect: pass
      - {record: {route: IN, session_start: "2026-03-02 09:00"}, expect: not_applicable}
  - id: SPACING
    title: 40 hours between IV sessions
    severity: major
    for: session
    when: {route: IV, cancelled: false}
    require:
      since_previous: {of: session, where: {route: IV, cancelled: false}, at_least: 40h}
  - id: ESCORT
    title: Escort at discharge
    severity: critical
    for: session
    when: {any: [{route: IV}, {route: IN}]}
    require: {escort: true}
    tests:
      - {record: {route: IV, escort: true}, expect: pass}
      - {record: {route: IV, escort: false}, expect: fail}
"""

SCENARIOS = """\
pack: sched
scenarios:
  - name: two sessions a day apart
    rules: [SPACING, SCREEN]
    records:
      - {type: screening, record: {screening_id: C-1, screened_at: "2026-02-25 09:00", score: 0}}
      - {type: session, record: {session_id: S-1, session_start: "2026-03-02 09:00", route: IV, cancelled: false}}
      - {type: session, record: {session_id: S-2, session_start: "2026-03-03 09:00", route: IV, cancelled: false}}
    expect:
      S-1: {SPACING: pass, SCREEN: pass}
      S-2: {SPACING: fail}
  - name: a cancelled session in between does not count
    rules: [SPACING]
    records:
      - {type: session, record: {session_id: S-1, session_start: "2026-03-02 09:00", route: IV, cancelled: false}}
      - {type: session, record: {session_id: S-2, session_start: "2026-03-03 09:00", route: IV, cancelled: true}}
      - {type: session, record: {session_id: S-3, session_start: "2026-03-04 09:00", route: IV, cancelled: false}}
    expect:
      S-2: {SPACING: not_applicable}
      S-3: {SPACING: pass}
"""


def write(folder: Path, pack: str = PACK, scenarios: str | None = SCENARIOS) -> Path:
    path = folder / "sched.yaml"
    path.write_text(pack, encoding="utf-8")
    if scenarios is not None:
        (folder / "sched.tests.yaml").write_text(scenarios, encoding="utf-8")
    return path


def load(path: Path) -> Pack:
    text = path.read_text(encoding="utf-8")
    return build_pack(load_yaml(text, str(path)), str(path), text.encode())


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["test", *args])


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1) if text in line)


# -- running cases -------------------------------------------------------------------------

def test_examples_and_scenarios_pass(tmp_path: Path) -> None:
    result = packtest.run_pack(load(write(tmp_path)))
    assert result.examples == 5 and result.scenarios == 2
    assert result.files == [tmp_path / "sched.tests.yaml"]
    assert result.failed == []
    # examples: 5; scenario 1: 2 sessions x 2 rules; scenario 2: 3 sessions x 1 rule
    assert len(result.cases) == 5 + 4 + 3
    actual = {(c.rule.id, c.record.key, c.label.split(",")[0]): c.actual for c in result.cases if "scenario" in c.label}
    assert actual == {
        ("SPACING", "S-1", 'scenario "two sessions a day apart"'): "pass",
        ("SCREEN", "S-1", 'scenario "two sessions a day apart"'): "pass",
        ("SPACING", "S-2", 'scenario "two sessions a day apart"'): "fail",
        ("SCREEN", "S-2", 'scenario "two sessions a day apart"'): "pass",   # no expectation: a pass is fine
        ("SPACING", "S-1", 'scenario "a cancelled session in between does not count"'): "pass",
        ("SPACING", "S-2", 'scenario "a cancelled session in between does not count"'): "not_applicable",
        ("SPACING", "S-3", 'scenario "a cancelled session in between does not count"'): "pass",
    }
    out = run(str(tmp_path / "sched.yaml"))
    assert out.exit_code == 0, out.output
    assert "12 cases, 0 failed" in out.output


def test_scenarios_are_separate_patients(tmp_path: Path) -> None:
    """Both scenarios have a session S-1 of one patient; the second's S-1 must not see the first's sessions."""
    scenarios = SCENARIOS.replace('S-3: {SPACING: pass}', 'S-3: {SPACING: pass}\n      S-1: {SPACING: pass}')
    result = packtest.run_pack(load(write(tmp_path, scenarios=scenarios)))
    assert result.failed == []


def test_records_without_a_patient_belong_to_the_scenarios_patient(tmp_path: Path) -> None:
    """The screening names no patient: it is P-1's, the patient the sessions name, so S-1 passes
    SCREEN; for P-2 (named on S-2 only) it is someone else's screening, so S-2 fails."""
    scenarios = """\
pack: sched
scenarios:
  - name: patients
    rules: [SCREEN]
    records:
      - {type: screening, record: {screening_id: C-1, screened_at: "2026-02-25 09:00", score: 0}}
      - {type: session, record: {session_id: S-1, patient_id: P-1, session_start: "2026-03-02 09:00", route: IV}}
      - {type: session, record: {session_id: S-2, patient_id: P-2, session_start: "2026-03-02 09:00", route: IV}}
    expect:
      S-1: {SCREEN: pass}
      S-2: {SCREEN: fail}
"""
    result = packtest.run_pack(load(write(tmp_path, scenarios=scenarios)))
    assert result.failed == []
    patients = {c.record.key: c.record.patient for c in result.cases if "scenario" in c.label}
    assert patients == {"S-1": "scenario-1/P-1", "S-2": "scenario-1/P-2"}


def test_a_wrong_expectation_fails_with_position_and_evidence(tmp_path: Path) -> None:
    scenarios = SCENARIOS.replace("S-2: {SPACING: fail}", "S-2: {SPACING: pass}")
    path = write(tmp_path, scenarios=scenarios)
    out = run(str(path))
    assert out.exit_code == 1
    tests = tmp_path / "sched.tests.yaml"
    line = line_of(tests, "S-2: {SPACING: pass}")
    assert (f'FAIL {tests}:{line}: SPACING scenario "two sessions a day apart", session S-2: '
            "expected pass, got fail") in out.output
    # the evidence: the history condition with the previous session and the hours since
    assert "since_previous session where (route = IV and cancelled = false) at least 40h -> false" in out.output
    assert "hours_since: 24.0" in out.output
    assert "previous: S-1 at 2026-03-02T09:00:00-08:00" in out.output
    assert "1 case failed" in out.output


def test_an_unexpected_finding_fails(tmp_path: Path) -> None:
    """Strict: S-2's SPACING failure with no expectation for it is a failing case at the record's line."""
    scenarios = SCENARIOS.replace("      S-2: {SPACING: fail}\n", "")
    path = write(tmp_path, scenarios=scenarios)
    result = packtest.run_pack(load(path))
    (case,) = result.failed
    assert (case.rule.id, case.record.key, case.expect, case.actual) == ("SPACING", "S-2", None, "fail")
    assert case.mark.line == line_of(tmp_path / "sched.tests.yaml", "session_id: S-2")
    assert "expected pass or not_applicable (no expectation given), got fail" in run(str(path)).output


def test_rules_out_of_scope_are_not_checked(tmp_path: Path) -> None:
    """ESCORT would fail every scenario session (no escort recorded), but no scenario lists it."""
    result = packtest.run_pack(load(write(tmp_path)))
    assert not [c for c in result.cases if c.rule.id == "ESCORT" and "scenario" in c.label]
    unscoped = SCENARIOS.replace("    rules: [SPACING]\n", "")
    result = packtest.run_pack(load(write(tmp_path, scenarios=unscoped)))
    # every session of the second scenario is IV, so ESCORT and SCREEN apply, and fail, on all three
    assert {(c.rule.id, c.record.key) for c in result.failed} == {
        (rule, key) for rule in ("ESCORT", "SCREEN") for key in ("S-1", "S-2", "S-3")}


def test_a_failing_example_names_its_line(tmp_path: Path) -> None:
    pack = PACK.replace("{route: IV, escort: false}, expect: fail}", "{route: IV, escort: false}, expect: pass}")
    path = write(tmp_path, pack=pack, scenarios=None)
    out = run(str(path))
    assert out.exit_code == 1
    line = line_of(path, "escort: false}, expect: pass")
    assert f"FAIL {path}:{line}: ESCORT example 2: expected pass, got fail" in out.output
    assert "escort = true: escort = false -> false" in out.output


def test_a_folder_of_packs_skips_test_files(tmp_path: Path) -> None:
    write(tmp_path)
    assert resolve(str(tmp_path)) == [str(tmp_path / "sched.yaml")]
    assert "ketamine-iv.tests" not in shipped_packs()
    assert [p.id for p in load_packs([str(tmp_path)])] == ["sched"]


def test_scenarios_of_different_files_are_different_patients(tmp_path: Path) -> None:
    """The first scenario of each file must not share a patient with the other file's first: here
    a screening in one file would otherwise make an unscreened session of the other pass."""
    path = write(tmp_path, scenarios="""\
pack: sched
scenarios:
  - name: screened
    rules: [SCREEN]
    records:
      - {type: screening, record: {screening_id: C-1, patient_id: P-1, screened_at: "2026-03-01 09:00", score: 1}}
      - {type: session, record: {session_id: S-1, patient_id: P-1, session_start: "2026-03-02 09:00", route: IV}}
    expect:
      S-1: {SCREEN: pass}
""")
    (tmp_path / "sched.tests").mkdir()
    (tmp_path / "sched.tests" / "more.yaml").write_text("""\
pack: sched
scenarios:
  - name: never screened
    rules: [SCREEN]
    records:
      - {type: session, record: {session_id: S-2, patient_id: P-1, session_start: "2026-03-02 10:00", route: IV}}
    expect:
      S-2: {SCREEN: fail}
""", encoding="utf-8")
    result = packtest.run_pack(load(path))
    assert result.scenarios == 2 and result.failed == []


def test_a_rule_listed_twice_in_scope(tmp_path: Path) -> None:
    write(tmp_path, scenarios=SCENARIOS.replace("rules: [SPACING, SCREEN]", "rules: [SPACING, SPACING]"))
    with pytest.raises(PackError) as caught:
        packtest.run_pack(load(tmp_path / "sched.yaml"))
    assert [(p.line, p.message) for p in caught.value.problems] == [
        (4, '"SPACING" is listed twice'),
        (10, '"SCREEN" is not in this scenario\'s rules (SPACING): add it there to check it')]


def test_min_coverage_must_be_a_number(tmp_path: Path) -> None:
    out = run(str(write(tmp_path)), "--min-coverage", "nan")
    assert out.exit_code == 2 and "--min-coverage must be a number" in out.output


def test_scenarios_without_their_pack_stop_the_run(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / "sched.tests.yaml").rename(tmp_path / "renamed.tests.yaml")
    out = run(str(tmp_path))
    assert out.exit_code == 2
    assert f"{tmp_path / 'renamed.tests.yaml'}: scenarios with no pack of that name beside them" in out.output


def test_a_scenario_file_given_as_a_pack(tmp_path: Path) -> None:
    write(tmp_path)
    out = run(str(tmp_path / "sched.tests.yaml"))
    assert out.exit_code == 2
    assert "sched.tests.yaml is a scenario file (the tests of sched.yaml), not a pack" in out.output


def test_problems_in_scenario_files_are_not_called_pack_problems(tmp_path: Path) -> None:
    write(tmp_path, scenarios="pack: sched\nscenarios: {}\n")
    out = run(str(tmp_path / "sched.yaml"))
    assert out.exit_code == 2 and "protocol-audit: 1 problem in 1 file" in out.output


def test_a_tests_folder_beside_the_pack(tmp_path: Path) -> None:
    path = write(tmp_path, scenarios=None)
    (tmp_path / "sched.tests").mkdir()
    (tmp_path / "sched.tests" / "spacing.yaml").write_text(SCENARIOS, encoding="utf-8")
    result = packtest.run_pack(load(path))
    assert result.files == [tmp_path / "sched.tests" / "spacing.yaml"] and result.scenarios == 2
    assert result.failed == []


# -- problems in test files: every one with its position, exit 2 -------------------------------------

BAD = """\
pack: other
scenarios:
  - name: bad
    rules: [SPACNG]
    records:
      - {type: sesion, record: {session_id: S-1}}
      - {type: session, record: {session_id: S-1, session_start: "2026-03-02 09:00", rout: IV}}
      - {type: session, record: {session_id: S-1, session_start: "2026-03-03 09:00"}}
      - {type: screening, record: {screening_id: C-1, score: many}}
    expect:
      S-9: {SPACING: fail}
      S-1: {SPACING: failed}
  - name: bad expectations
    rules: [SPACING, SCREEN]
    records:
      - {type: session, record: {session_id: S-1}}
      - {type: screening, record: {screening_id: C-1}}
    expect:
      S-1: {SPACING: failed, ESCORT: pass, ESCRT: pass}
      C-1: {SCREEN: pass}
"""


def test_problems_in_a_test_file_have_positions(tmp_path: Path) -> None:
    write(tmp_path, scenarios=BAD)
    with pytest.raises(PackError) as caught:
        packtest.run_pack(load(tmp_path / "sched.yaml"))
    got = [(p.path, p.line, p.column, p.message) for p in caught.value.problems]
    tests = str(tmp_path / "sched.tests.yaml")
    assert got == [(tests, line, column, message) for line, column, message in [
        (1, 7, 'this file tests pack "other", but it is beside pack "sched"'),
        (4, 13, 'no rule "SPACNG" in pack sched (did you mean "SPACING"?)'),
        (6, 16, 'unknown record type "sesion" (did you mean "session"?)'),
        (7, 86, 'scenario record sets undeclared field "rout" (did you mean "route"?)'),
        (8, 9, 'a second session with key "S-1" in this scenario'),
        (9, 62, 'score: "many" is not an integer'),
        (11, 7, 'no record with key "S-9" in this scenario (did you mean "S-1"?)'),
        # line 12: SPACING is left alone, the scenario's rules: list being already wrong
        (19, 22, 'unknown outcome "failed" (did you mean "fail"?)'),
        (19, 30, '"ESCORT" is not in this scenario\'s rules (SPACING, SCREEN): add it there to check it'),
        (19, 44, '"ESCRT" is not a rule of sched (did you mean "ESCORT"?)'),
        (20, 13, 'SCREEN judges session records; "C-1" is a screening'),
    ]]


def test_cli_exit_2_lists_test_file_problems(tmp_path: Path) -> None:
    write(tmp_path, scenarios="pack: sched\nscenarios:\n  - name: x\n    records: []\n    expect: {}\n")
    out = run(str(tmp_path / "sched.yaml"))
    assert out.exit_code == 2
    assert f"{tmp_path / 'sched.tests.yaml'}:4:14: records must be a non-empty list" in out.output


# -- coverage ------------------------------------------------------------------------------

def test_coverage_of_the_small_pack(tmp_path: Path) -> None:
    result = packtest.run_pack(load(write(tmp_path)))
    by_rule = {c.rule.id: c for c in result.coverage}
    # SCREEN: pass, fail, route = IV decisive (the IN example), the exists decisive: full
    assert by_rule["SCREEN"].full
    # SPACING, from scenarios only: a pass and a fail; route = IV decisive where both parts of
    # `when` hold (false would make it not applicable), cancelled = false by the cancelled session
    # too, since_previous by the session a day after another
    assert by_rule["SPACING"].full
    # ESCORT: `any` of route IV or IN with IV examples only: route = IN is never decisive (route = IV
    # already makes the `any` true), route = IV is (false would make the rule not apply)
    escort = by_rule["ESCORT"]
    assert (escort.has_pass, escort.has_fail) == (True, True)
    assert [(coverage.describe_branch(b), part) for b, part in escort.uncovered] == [("route = IN", "when")]
    assert escort.total == 5 and escort.percent == pytest.approx(80.0)


def test_min_coverage_fails_the_run_and_names_the_branch(tmp_path: Path) -> None:
    path = write(tmp_path)
    out = run(str(path), "--min-coverage", "90")
    assert out.exit_code == 1
    line = line_of(path, "when: {any: [{route: IV}, {route: IN}]}")
    assert f"never decisive (when): route = IN at {path}:{line}:" in out.output
    assert "ESCORT: 80% (below --min-coverage)" in out.output
    assert "1 rule below 90% coverage" in out.output
    assert run(str(path), "--min-coverage", "75").exit_code == 0
    assert run(str(path)).exit_code == 0  # no floor: coverage is reported, not enforced


def test_a_rule_without_a_failing_case(tmp_path: Path) -> None:
    pack = PACK.replace("      - {record: {route: IV, escort: false}, expect: fail}\n", "")
    result = packtest.run_pack(load(write(tmp_path, pack=pack, scenarios=None)))
    escort = next(c for c in result.coverage if c.rule.id == "ESCORT")
    assert (escort.has_pass, escort.has_fail) == (True, False)
    # escort = true is still decisive in the passing case: false would fail it
    assert [coverage.describe_branch(b) for b, _ in escort.uncovered] == ["route = IN"]
    lines = list(packtest.report_lines(result, 100))
    assert any(line.startswith("  ESCORT: ") and "no failing case" in line for line in lines)


@pytest.mark.parametrize(("require", "values", "decisive"), [
    # all: with every part true, each part is decisive; with one false, only that one; with two false, none
    ("{all: [{a: 1}, {b: 1}]}", {"a": 1, "b": 1}, [True, True]),
    ("{all: [{a: 1}, {b: 1}]}", {"a": 0, "b": 1}, [True, False]),
    ("{all: [{a: 1}, {b: 1}]}", {"a": 0, "b": 0}, [False, False]),
    # any: the mirror image
    ("{any: [{a: 1}, {b: 1}]}", {"a": 0, "b": 0}, [True, True]),
    ("{any: [{a: 1}, {b: 1}]}", {"a": 1, "b": 0}, [True, False]),
    ("{any: [{a: 1}, {b: 1}]}", {"a": 1, "b": 1}, [False, False]),
    # not passes decisiveness through; a branch left unknown by a missing field was not compared,
    # so it is never decisive; b is not either when a is unknown (false or unknown: a fail either way)
    ("{not: {a: 1}}", {"a": 1}, [True]),
    ("{all: [{a: 1}, {b: 1}]}", {"b": 1}, [False, False]),
    ("{all: [{a: 1}, {b: 1}]}", {"b": 0}, [False, False]),
])
def test_decisive_branches(require: str, values: dict[str, int], decisive: list[bool]) -> None:
    text = ("pack: d\nversion: '1'\ntimezone: UTC\nrecords:\n  r:\n    key: k\n    patient: p\n    time: t\n"
            "    fields: {k: string, p: string, t: datetime, a: integer, b: integer}\n"
            f"rules:\n  - id: D\n    title: D\n    severity: minor\n    for: r\n    require: {require}\n")
    (rule,) = load_pack_bytes(text.encode(), "d.yaml").rules
    got = [coverage.decisive(rule, values, branch) for branch in coverage.branches(rule.require)]
    assert got == decisive


def test_decisive_in_when_tells_unknown_from_false() -> None:
    """In `when`, unknown (not evaluable) differs from false (not applicable): with `a` missing and
    b = 1 the record is not evaluable, and b alone turns it not applicable, so b is decisive; `a`,
    never compared, is not."""
    text = ("pack: d\nversion: '1'\ntimezone: UTC\nrecords:\n  r:\n    key: k\n    patient: p\n    time: t\n"
            "    fields: {k: string, p: string, t: datetime, a: integer, b: integer, c: integer}\n"
            "rules:\n  - id: D\n    title: D\n    severity: minor\n    for: r\n"
            "    when: {all: [{a: 1}, {b: 1}]}\n    require: {c: 1}\n")
    (rule,) = load_pack_bytes(text.encode(), "d.yaml").rules
    assert [coverage.decisive(rule, {"b": 1, "c": 1}, b) for b in coverage.branches(rule.when)] == [False, True]


def test_a_not_evaluable_example_does_not_cover_the_branch_it_leaves_unknown(tmp_path: Path) -> None:
    """An example without route makes ESCORT's `when` unknown: route = IN was never compared, so it
    stays uncovered however the forced values would have come out."""
    pack = PACK.replace("      - {record: {route: IV, escort: false}, expect: fail}\n",
                        "      - {record: {route: IV, escort: false}, expect: fail}\n"
                        "      - {record: {escort: true}, expect: not_evaluable}\n")
    result = packtest.run_pack(load(write(tmp_path, pack=pack, scenarios=None)))
    assert result.failed == []
    escort = next(c for c in result.coverage if c.rule.id == "ESCORT")
    assert [coverage.describe_branch(b) for b, _ in escort.uncovered] == ["route = IN"]


# -- the shipped packs: what CI requires of every pack change -------------------------------------

def test_shipped_packs_pass_with_full_coverage() -> None:
    out = run(*sorted(shipped_packs()), "--min-coverage", "100")
    assert out.exit_code == 0, out.output
    assert out.output.count("fully covered") == len(shipped_packs())
    assert "ketamine-iv.tests.yaml" in out.output


def test_the_dose_threshold_change_of_the_ci_recipe(tmp_path: Path) -> None:
    """The documented example: the dose maximum (parameter dose_ceiling_mg_per_kg) 1.0 -> 0.8 fails the
    example at exactly 1.0 mg/kg."""
    source = shipped_packs()["ketamine-iv"]
    shutil.copy(source.with_name("ketamine-iv.tests.yaml"), tmp_path)
    text = source.read_text(encoding="utf-8")
    assert text.count(DOSE_CEILING) == 1
    (tmp_path / "ketamine-iv.yaml").write_text(text.replace(DOSE_CEILING, DOSE_CEILING.replace("1.0", "0.8")),
                                               encoding="utf-8")
    out = run(str(tmp_path / "ketamine-iv.yaml"), "--min-coverage", "100")
    assert out.exit_code == 1
    assert "DOSE-01 example 2: expected pass, got fail" in out.output
    assert "dose_mg_per_kg = 1.0 (derived: dose_mg / dosing_weight_kg" in out.output
