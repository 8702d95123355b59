"""Local parameters: a clinic's choice (a dose ceiling, a window, the credentials allowed to
supervise) written once under ``parameters:`` and used by rules as ``{param: NAME}``, and in their
titles, messages, rationales and source notes as ``{param.NAME}``."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cli import main
from engine.commands.examples import run_examples
from engine.handbook import render_markdown
from engine.language.conditions import describe
from engine.packs import load_pack_bytes
from tests.helpers import write
from tests.test_loader import problems

PACK = """\
pack: p
version: "1"
title: parameters
timezone: UTC
sources:
  LOCAL: {ref: "Clinic SOP", evidence: local}
parameters:
  ceiling: {value: CEILING, means: "highest dose per kg", source: LOCAL}
  roles: {value: [MD, DO], means: "who may supervise"}
  window: {value: 30d, means: "how long before the dose a screen may be"}
  most: {value: 2, means: "other sessions in a rolling week"}
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, dose: number, role: string}
  screening:
    key: screening_id
    patient: patient_id
    time: screened_at
    fields: {screening_id: string, patient_id: string, screened_at: datetime, score: integer}
rules:
  - id: DOSE
    title: "Dose at most {param.ceiling} mg/kg"
    severity: major
    for: session
    require:
      dose: {between: [0, {param: ceiling}]}
    message: "dose {dose} above {param.ceiling}"
    rationale: "The ceiling ({param.ceiling}) is the clinic's."
    sources:
      LOCAL: "A ceiling of {param.ceiling} mg/kg."
    tests:
      - {record: {dose: 0.9}, expect: pass}
      - {record: {dose: 1.2}, expect: fail}
  - id: ROLE
    severity: major
    for: session
    require:
      role: {one_of: {param: roles}}
  - id: SCREEN
    title: "Screened within {param.window} before"
    severity: major
    for: session
    require:
      exists: {of: screening, where: {score: {present: true}}, within: {before: {param: window}}}
      count: {of: session, within: {before: 6d}, at_most: {param: most}}
"""


def pack(ceiling: str = "1.0", text: str = PACK):  # type: ignore[no-untyped-def]
    return load_pack_bytes(text.replace("CEILING", ceiling).encode(), "pack.yaml")


def test_a_parameter_reads_as_the_value_written_in_its_place() -> None:
    with_params = pack()
    rules = {rule.id: rule for rule in with_params.rules}
    assert describe(rules["DOSE"].require) == "dose between [0, 1]"
    assert describe(rules["ROLE"].require) == "role one of [MD, DO]"
    assert "within 30d before" in describe(rules["SCREEN"].require)
    assert "at most 2" in describe(rules["SCREEN"].require)


def test_texts_say_the_value_and_durations_in_words() -> None:
    rule = {r.id: r for r in pack("0.8").rules}
    assert rule["DOSE"].title == "Dose at most 0.8 mg/kg"
    assert rule["DOSE"].message == "dose {dose} above 0.8"
    assert rule["DOSE"].rationale == "The ceiling (0.8) is the clinic's."
    assert rule["DOSE"].sources == (("LOCAL", "A ceiling of 0.8 mg/kg."),)
    assert rule["SCREEN"].title == "Screened within 30 days before"


def test_the_pack_lists_each_parameter_with_the_rules_using_it() -> None:
    params = pack().parameters
    assert list(params) == ["ceiling", "roles", "window", "most"]
    assert params["ceiling"].value == "1.0" and params["ceiling"].source == "LOCAL"
    assert params["ceiling"].uses == ("DOSE",)
    assert params["roles"].value == ["MD", "DO"] and params["roles"].uses == ("ROLE",)
    assert params["window"].uses == params["most"].uses == ("SCREEN",)


def test_changing_the_one_value_changes_the_outcome(tmp_path: Path) -> None:
    """The same session judged under two ceilings: the pack's examples (written for 1.0) pass under
    1.0 and the 1.2 mg/kg example, expected to fail, passes under 1.5."""
    assert all(case.ok for case in run_examples(pack("1.0")))
    under_higher = {case.name: case.actual for case in run_examples(pack("1.5"))}
    assert under_higher["DOSE-fail-2"] == "pass"
    sessions = write(tmp_path, "sessions.csv", "session_id,patient_id,session_start,dose,role\n"
                                               "S1,P1,2026-01-05T09:00:00,1.2,MD\n")
    outcomes = []
    for ceiling in ("1.0", "1.5"):
        path = write(tmp_path, f"pack{ceiling}.yaml", PACK.replace("CEILING", ceiling))
        out = tmp_path / f"r{ceiling}.json"
        result = CliRunner().invoke(main, ["audit", "--pack", str(path), str(sessions), "-o", str(out)])
        assert result.exit_code in (0, 1), result.output
        report = json.loads(out.read_text())
        outcomes.append({r["id"]: r["failed"] for r in report["rules"]}["DOSE"])
    assert outcomes == [1, 0]


def test_problems_point_at_the_reference_or_the_value() -> None:
    text = PACK.replace("CEILING", "1.0")
    found = problems(text.replace("{param: ceiling}]}", "{param: cieling}]}"))
    assert any(p.endswith('unknown parameter "cieling" (did you mean "ceiling"?)') for p in found)
    # "ceiling" is still used by the title, message and rationale: not reported as unused
    assert not any("not used by any rule" in p for p in found)
    found = problems(text.replace("role: {one_of: {param: roles}}", "role: {one_of: [MD]}"))
    assert found == ['pack.yaml:9:3: parameter "roles" is not used by any rule (write {param: roles} '
                     "where a rule needs it, or remove it)"]
    found = problems(text.replace("window: {value: 30d", "window: {value: 30x"))
    assert found == ['pack.yaml:10:19: "30x" is not a duration (write 30m, 40h, 90d or 2w) '
                     '(parameter "window", used as a duration by rule SCREEN)']
    found = problems(text.replace("ceiling: {value: 1.0", "ceiling: {value: lots"))
    assert found and all(p.startswith("pack.yaml:8:20: ") and '(parameter "ceiling", used for field "dose" '
                         "by rule DOSE)" in p for p in found)
    found = problems(text.replace("at_most: {param: most}", "at_most: {param: roles}"))
    assert found == ['pack.yaml:9:18: "a list" is not a count (a whole number, 0 or more) '
                     '(parameter "roles", used as a count by rule SCREEN)',
                     'pack.yaml:11:3: parameter "most" is not used by any rule (write {param: most} where a rule '
                     "needs it, or remove it)"]
    found = problems(text.replace('title: "Dose at most {param.ceiling} mg/kg"', 'title: "Dose at most {param.cap}"'))
    assert found == ['pack.yaml:25:26: title uses unknown parameter "cap" (known parameters: ceiling, roles, '
                     "window, most)"]
    found = problems(text.replace("{param: ceiling}]}", "{param: ceiling, default: 1}]}"))
    assert found == ['pack.yaml:29:44: unknown key "default" in a parameter reference: write {param: NAME}']
    found = problems(text.replace("source: LOCAL}", "source: LOCL}"))
    assert found == ["pack.yaml:8:63: source \"LOCL\" is not in the pack's sources (did you mean \"LOCAL\"?)"]
    found = problems(text.replace("ceiling: {value: 1.0, means:", "ceiling: {value: {a: 1}, means:"))
    assert found == ['pack.yaml:8:20: parameter "ceiling" takes a value or a list of values']


def test_the_handbook_shows_the_parameters_and_each_rules_values(tmp_path: Path) -> None:
    out = tmp_path / "h.md"
    with out.open("w") as fh:
        render_markdown([pack("0.8")], fh)
    text = out.read_text()
    assert "| `ceiling` | 0.8 | highest dose per kg | LOCAL | DOSE |" in text
    assert "| `roles` | MD, DO | who may supervise | — | ROLE |" in text
    assert "Local parameters: `ceiling = 0.8`." in text
    assert "`dose` is between 0 and 0.8 (both included)" in text


def test_the_shipped_packs_state_their_local_choices_once() -> None:
    """Every parameter of the shipped packs is used, and no rule text still states a value that one
    of its parameters holds in words it no longer reads from (a spot check of the usual values)."""
    for name in ("ketamine-iv", "esketamine-rems"):
        path = Path("rules") / f"{name}.yaml"
        shipped = load_pack_bytes(path.read_bytes(), str(path))
        assert shipped.parameters
        assert all(p.uses for p in shipped.parameters.values())
    iv = load_pack_bytes(Path("rules/ketamine-iv.yaml").read_bytes(), "rules/ketamine-iv.yaml")
    changed = load_pack_bytes(Path("rules/ketamine-iv.yaml").read_bytes()
                              .replace(b"value: 160\n", b"value: 170\n"), "rules/ketamine-iv.yaml")
    before = {r.id: r for r in iv.rules}
    after = {r.id: r for r in changed.rules}
    for rule_id in ("VIT-02", "VIT-02B"):
        assert "160" in describe(before[rule_id].when) + describe(before[rule_id].require)
        assert "160" not in describe(after[rule_id].when) + describe(after[rule_id].require)
        assert "170" in describe(after[rule_id].when) + describe(after[rule_id].require)
    assert "170/100" in after["VIT-02"].title and "170/100" in after["VIT-02"].message


def test_a_parameter_alone_is_an_equality() -> None:
    text = PACK.replace("CEILING", "1.0").replace("role: {one_of: {param: roles}}", "role: {param: chief}")
    text = text.replace("  roles: {value: [MD, DO], means: \"who may supervise\"}\n", "")
    text = text.replace("  most: {value: 2,", '  chief: {value: MD, means: "the chief\'s role"}\n  most: {value: 2,')
    rules = {rule.id: rule for rule in load_pack_bytes(text.encode(), "pack.yaml").rules}
    assert describe(rules["ROLE"].require) == "role = MD"
