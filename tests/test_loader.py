"""Pack validation: each bad pack gives exactly the expected problems, as path:line:column: message."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine.errors import PackError
from engine.language.loader import load_yaml
from engine.language.model import Leaf
from engine.language.schema import build_pack
from engine.packs import load_pack, load_pack_bytes, shipped_dirs
from tests.helpers import pack_text

PATH = "pack.yaml"
RULES_DIR = Path(__file__).resolve().parent.parent / "rules"

# With pack_text() and no derive, "rules:" is line 25 and the first rule starts on line 26;
# rule() below puts id / severity / for on lines 26-28, so its body starts on line 29.
# With a derive of N lines, every rule line moves down by N + 1.


def rule(body: str, derive: str = "") -> str:
    """A pack with one rule R1 of type session whose remaining keys are ``body``."""
    return pack_text("  - id: R1\n    severity: major\n    for: session\n" + body, derive=derive)


def problems(text: str, path: str = PATH) -> list[str]:
    """Every problem of a pack given as text, in the order PackError sorts them."""
    try:
        load_pack_bytes(text.encode(), path)
    except PackError as exc:
        return [str(p) for p in exc.problems]
    return []


def at(*expected: str) -> list[str]:
    """Expected problems written as "line:column: message", for pack.yaml."""
    return [f"{PATH}:{e}" for e in expected]


CASES = [
    # ---------------------------------------------------------------- YAML itself
    pytest.param("pack: x\nrules: [\n",
                 at('3:1: syntax error: expected the node content, but found "<stream end>"'),
                 id="yaml-unclosed-flow-list"),
    pytest.param('pack: "abc\nrules: 1\n',
                 at("3:1: syntax error: found unexpected end of stream "
                    "(while scanning a quoted scalar started at line 1)"),
                 id="yaml-unclosed-quote"),
    pytest.param("pack: x\n  rules: 1\n",
                 at("2:8: syntax error: mapping values are not allowed here"),
                 id="yaml-bad-indentation"),
    pytest.param("pack: x\nrules:\n\t- a\n",
                 at('3:1: syntax error: found character "\\t" that cannot start any token'),
                 id="yaml-tab-indentation"),
    pytest.param("pack: x\n---\npack: y\n",
                 at("2:1: syntax error: expected a single document in the stream, but found another document"),
                 id="yaml-two-documents"),
    pytest.param("", at("1:1: empty pack"), id="yaml-empty-file"),
    pytest.param("# only a comment\n", at("1:1: empty pack"), id="yaml-only-comment"),
    pytest.param("- pack: x\n", at("1:1: pack must be a mapping"), id="yaml-top-level-list"),
    # A duplicate key is reported together with the pack's other problems, not alone.
    pytest.param(rule("    severity: minor\n    require: {dose_mg: {grater_than: 3}}\n"),
                 at('29:5: duplicate key "severity" (first at line 27)',
                    '30:25: unknown operator "grater_than" (did you mean "greater_than"?)'),
                 id="duplicate-key-and-other-problems"),
    pytest.param(rule("    require: {dose_mg: 1, dose_mg: 2}\n"),
                 at('29:27: duplicate key "dose_mg" (first at line 29)'),
                 id="duplicate-key-in-flow-mapping"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("route: {", "route: &r {").replace(
                     "      dose_mg: number\n", "      dose_mg: number\n      <<: *r\n"),
                 at('16:7: merge keys ("<<") are not supported'),
                 id="merge-key"),
    pytest.param(rule("    require: {dose_mg: !!binary AAAA}\n"),
                 at('29:24: unsupported tag "!!binary"'),
                 id="binary-tag"),
    pytest.param(rule("    require: {dose_mg: !custom 3}\n"),
                 at('29:24: unsupported tag "!custom"'),
                 id="custom-tag"),

    # ---------------------------------------------------------------- unknown keys
    pytest.param(rule("    require: {dose_mg: 3}\n").replace("title: test pack", "titel: test pack"),
                 at('3:1: unknown key "titel" in pack (did you mean "title"?)'),
                 id="unknown-top-level-key"),
    pytest.param(rule("    require: {dose_mg: 3}\n").replace("rules:", "rule:"),
                 at('1:1: pack is missing "rules"', '25:1: unknown key "rule" in pack (did you mean "rules"?)'),
                 id="misspelt-rules-key"),
    pytest.param(rule("    require: {dose_mg: 3}\n    mesage: dose too high\n"),
                 at('30:5: unknown key "mesage" in rule (did you mean "message"?)'),
                 id="unknown-rule-key"),
    pytest.param(rule("    require: {dose_mg: 3}\n").replace("patient: patient_id", "patien: patient_id"),
                 at('8:5: unknown key "patien" in record type "session" (did you mean "patient"?)'),
                 id="unknown-record-type-key"),
    pytest.param(rule("    require: {dose_mg: 3}\n").replace("dose_mg: number", "dose_mg: {type: number, unti: mg}"),
                 at('15:31: unknown key "unti" in field "dose_mg" (did you mean "unit"?)'),
                 id="unknown-field-key"),

    # ---------------------------------------------------------------- operators
    pytest.param(rule("    require: {dose_mg: {grater_than: 3}}\n"),
                 at('29:25: unknown operator "grater_than" (did you mean "greater_than"?)'),
                 id="unknown-operator-did-you-mean"),
    pytest.param(rule("    require:\n      dose_mg:\n        above: 3\n"),
                 at('31:9: unknown operator "above" (known operators: equals, not_equals, less_than, at_most, '
                    'greater_than, at_least, between, one_of, none_of, present, matches)'),
                 id="unknown-operator-block-style"),
    pytest.param(rule("    require: {clinician: {less_than: Dr A}}\n"),
                 at('29:27: operator "less_than" does not fit string field "clinician" '
                    "(strings compare for equality only)"),
                 id="less-than-on-string"),
    pytest.param(rule("    require: {route: {at_least: IV}}\n"),
                 at('29:23: operator "at_least" does not fit enum field "route" (enums compare for equality only)'),
                 id="at-least-on-enum"),
    pytest.param(rule('    require: {dose_mg: {matches: "[0-9]+"}}\n'),
                 at('29:25: operator "matches" does not fit number field "dose_mg" '
                    "(matches needs a string or enum field)"),
                 id="matches-on-number"),
    pytest.param(rule("    require: {escort_present: {between: [0, 1]}}\n"),
                 at('29:32: operator "between" does not fit boolean field "escort_present" '
                    "(booleans compare for equality only)"),
                 id="between-on-boolean"),

    # ---------------------------------------------------------------- fields a rule uses
    pytest.param(rule("    when: {rout: IV}\n    require:\n      dose_mgg: {at_most: 3}\n"),
                 at('29:12: field "rout" is not declared for record type "session" (did you mean "route"?)',
                    '31:7: field "dose_mgg" is not declared for record type "session" (did you mean "dose_mg"?)'),
                 id="undeclared-field-in-when-and-require"),
    pytest.param(rule("    require:\n      any:\n        - not: {weigth_kg: 3}\n"),
                 at('31:17: field "weigth_kg" is not declared for record type "session" '
                    '(did you mean "weight_kg"?)'),
                 id="undeclared-field-nested"),
    pytest.param(rule("    require: {dose_mg: {at_most: {field: dose_maximum}}}\n"),
                 at('29:42: field "dose_maximum" is not declared for record type "session" '
                    '(did you mean "dose_max"?)'),
                 id="undeclared-field-in-field-reference"),
    pytest.param(rule("    require: {dose_mg: {at_most: {feld: dose_max}}}\n"),
                 at('29:35: unknown key "feld" in a field reference (did you mean "field"?): '
                    "write at_most: {field: NAME}"),
                 id="field-reference-bad-key"),

    # ---------------------------------------------------------------- values of the wrong type
    pytest.param(rule('    require:\n      dose_mg: {at_least: "abc"}\n'),
                 at('30:27: dose_mg: "abc" is not a number'),
                 id="number-operand-not-a-number"),
    pytest.param(rule("    require:\n      route: PO\n"),
                 at('30:14: route: "PO" is not one of IV, IN, IM'),
                 id="enum-value-not-declared"),
    pytest.param(rule("    require:\n      route: {one_of: [IV, NO]}\n"),
                 at('30:28: route: "NO" is not one of IV, IN, IM'),
                 id="enum-value-no-is-not-false"),
    pytest.param(rule("    require:\n      weight_kg: {between: [1, 2, 3]}\n"),
                 at("30:28: between takes a list of two values [low, high], not 3 values"),
                 id="between-three-values"),
    pytest.param(rule("    require:\n      wait: {between: 3h}\n"),
                 at("30:23: between takes a list of two values [low, high], not one value"),
                 id="between-one-value"),
    pytest.param(rule("    require:\n      devices: {between: [5, 2]}\n"),
                 at('30:26: between: low "5" is greater than high "2"'),
                 id="between-low-above-high"),
    pytest.param(rule("    require:\n      session_date: {between: [2026-02-01, 2026-01-01]}\n"),
                 at('30:31: between: low "2026-02-01" is greater than high "2026-01-01"'),
                 id="between-dates-reversed"),
    pytest.param(rule("    require:\n      wait: {at_least: 3}\n"),
                 at('30:24: wait: "3" is not a duration'),
                 id="duration-without-unit"),
    pytest.param(rule('    require:\n      session_start: {less_than: "2026-02-30 09:00"}\n'),
                 at('30:34: session_start: "2026-02-30 09:00" is not a datetime'),
                 id="impossible-datetime"),
    pytest.param(rule("    require:\n      devices: {one_of: 3}\n"),
                 at("30:25: one_of takes a list of values"),
                 id="one-of-not-a-list"),
    pytest.param(rule("    require:\n      note: {present: maybe}\n"),
                 at("30:23: present takes true or false"),
                 id="present-not-boolean"),
    pytest.param(rule("    require:\n      weight_kg: {equals: [70, 80]}\n"),
                 at("30:27: equals takes one value; use one_of for a list"),
                 id="equals-a-list"),
    pytest.param(rule("    require:\n      clinician: ~\n"),
                 at("30:18: no value given: write clinician: {present: false} for an undocumented field"),
                 id="field-without-value"),
    pytest.param(rule("    require: {}\n"),
                 at("29:14: a condition must be a non-empty mapping"),
                 id="empty-require"),
    pytest.param(rule("    require:\n      any: []\n"),
                 at("30:12: any needs a non-empty list of conditions"),
                 id="any-empty"),

    # ---------------------------------------------------------------- fields of different kinds
    pytest.param(rule("    require: {dose_mg: {at_most: {field: clinician}}}\n"),
                 at('29:42: cannot compare number field "dose_mg" with string field "clinician"'),
                 id="compare-number-with-string-field"),
    pytest.param(rule("    require: {signed_on: {less_than: {field: session_start}}}\n"),
                 at('29:46: cannot compare date field "signed_on" with datetime field "session_start"'),
                 id="compare-date-with-datetime-field"),

    # ---------------------------------------------------------------- rules
    pytest.param(pack_text("  - id: R1\n    severity: major\n    for: session\n    require: {dose_mg: 1}\n"
                           "  - id: R1\n    severity: minor\n    for: session\n    require: {dose_mg: 2}\n"),
                 at('30:9: duplicate rule id "R1" (first at line 26)'),
                 id="duplicate-rule-id"),
    pytest.param(pack_text("  []\n"), at("26:3: pack has no rules"), id="empty-rules-list"),
    pytest.param(pack_text(""), at("25:1: pack has no rules"), id="rules-key-without-value"),
    pytest.param(pack_text("  - title: no keys at all\n"),
                 at('26:5: rule is missing "for"', '26:5: rule is missing "id"',
                    '26:5: rule is missing "require"', '26:5: rule is missing "severity"'),
                 id="rule-missing-required-keys"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("severity: major", "severity: majr"),
                 at('27:15: unknown severity "majr" (did you mean "major"?)'),
                 id="unknown-severity-did-you-mean"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("severity: major", "severity: high"),
                 at('27:15: unknown severity "high" (known severities: critical, major, minor, info)'),
                 id="unknown-severity-listed"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("for: session", "for: sessions"),
                 at('28:10: unknown record type "sessions" (did you mean "session"?)'),
                 id="unknown-record-type-in-for"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("  - id: R1", "  - id: R 1"),
                 at('26:9: rule id "R 1" may use letters, digits, "-", "_" and "." only'),
                 id="rule-id-with-space"),
    pytest.param(pack_text("  rule: 1\n"), at("26:3: rules must be a list of rules"), id="rules-not-a-list"),
    pytest.param("pack: empty\nrecords: {}\nrules: []\n",
                 at("2:10: records declares no record type", "3:8: pack has no rules"),
                 id="pack-with-nothing-in-it"),
    pytest.param("title: no pack id\n",
                 at('1:1: pack is missing "pack"', '1:1: pack is missing "records"', '1:1: pack is missing "rules"'),
                 id="pack-missing-top-level-keys"),

    # ---------------------------------------------------------------- record types and fields
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("devices: integer", "devices: integr"),
                 at('17:16: unknown field type "integr" (did you mean "integer"?)'),
                 id="unknown-field-type-did-you-mean"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("note: string", "note: {type: text}"),
                 at('20:20: unknown field type "text" (known types: string, integer, number, boolean, date, '
                    "datetime, enum, duration)"),
                 id="unknown-field-type-listed"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("note: string", "note: enum"),
                 at('20:13: enum field "note" needs values: write {type: enum, values: [...]}'),
                 id="enum-without-values"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("note: string", "note: {type: enum, values: []}"),
                 at('20:34: enum field "note" needs a non-empty list of values'),
                 id="enum-with-empty-values"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("note: string", "note: 3"),
                 at('20:13: field "note" needs a type: write note: number or note: {type: number, unit: mg}'),
                 id="field-type-not-a-name"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("key: session_id", "key: session_ix").replace(
                     "patient: patient_id", "patient: patient").replace("time: session_start", "time: start"),
                 at('7:10: key field "session_ix" is not declared in fields (did you mean "session_id"?)',
                    '8:14: patient field "patient" is not declared in fields (did you mean "patient_id"?)',
                    '9:11: time field "start" is not declared in fields'),
                 id="key-patient-time-not-declared"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("time: session_start", "time: clinician"),
                 at('9:11: time field "clinician" must be a datetime or date, not string'),
                 id="time-field-not-a-time"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("      note: string\n",
                                                          "      count: integer\n      all: string\n"),
                 at('20:7: field name "count" is a condition keyword; rename the field',
                    '21:7: field name "all" is a condition keyword; rename the field'),
                 id="field-named-like-a-condition-keyword"),
    # A refused declaration is reported once: the rules and examples that use it are not told it is undeclared.
    pytest.param(rule("    require: {route: IV}\n    tests:\n      - {record: {route: IV}, expect: pass}\n")
                 .replace("route: {type: enum", "route: {typ: enum"),
                 at('14:14: field "route" is missing "type"',
                    '14:15: unknown key "typ" in field "route" (did you mean "type"?)'),
                 id="field-without-type-used-by-a-rule"),
    pytest.param(rule("    require: {devices: {at_most: 2}}\n").replace("devices: integer", "devices: int"),
                 at('17:16: unknown field type "int" (did you mean "integer"?)'),
                 id="field-of-unknown-type-used-by-a-rule"),
    pytest.param(rule('    require: {per_kg: {at_most: 1}}\n    message: "{per_kg} mg/kg"\n',
                      derive="  per_kg: dose_mg // weight_kg\n"),
                 at('26:19: derive "per_kg": "//" is not allowed '
                    "(only + - * /, numbers, field names and minutes, hours, days, coalesce)"),
                 id="refused-derive-used-by-a-rule"),
    pytest.param(rule("    require: {dose_mg: 1}\n").replace("timezone: UTC", "timezone: Europe/Pariss"),
                 at('4:11: unknown time zone "Europe/Pariss" (did you mean "Europe/Paris"?)'),
                 id="unknown-time-zone"),

    # ---------------------------------------------------------------- derive (lines 26.. hold it)
    pytest.param(rule("    require: {dose_mg: 1}\n", derive='  per_kg: "dose_mg / (weight_kg"\n'),
                 at('26:22: derive "per_kg": expression does not parse: "(" was never closed'),
                 id="derive-syntax-error"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  per_kg: dose_mg +\n"),
                 at('26:20: derive "per_kg": expression ends too early'),
                 id="derive-ends-too-early"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  squared: weight_kg ** 2\n"),
                 at('26:22: derive "squared": "**" is not allowed '
                    "(only + - * /, numbers, field names and minutes, hours, days, coalesce)"),
                 id="derive-power"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  real: dose_mg.real\n"),
                 at('26:16: derive "real": an attribute (".real") is not allowed '
                    "(only + - * /, numbers, field names and minutes, hours, days, coalesce)"),
                 id="derive-attribute"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive='  f: "(lambda: 1)()"\n'),
                 at('26:8: derive "f": a lambda is not allowed '
                    "(only + - * /, numbers, field names and minutes, hours, days, coalesce)"),
                 id="derive-lambda"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  leak: open('/etc/passwd')\n"),
                 at('26:9: derive "leak": unknown function "open" (allowed: minutes, hours, days, coalesce)'),
                 id="derive-open"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  leak: __import__('os')\n"),
                 at('26:9: derive "leak": unknown function "__import__" (allowed: minutes, hours, days, coalesce)'),
                 id="derive-import"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  leak: __import__('os').system('id')\n"),
                 at('26:25: derive "leak": an attribute (".system") is not allowed '
                    "(only + - * /, numbers, field names and minutes, hours, days, coalesce)"),
                 id="derive-import-attribute-call"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  waited: minute(session_start, session_start)\n"),
                 at('26:11: derive "waited": unknown function "minute" (did you mean "minutes"?)'),
                 id="derive-function-did-you-mean"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive='  big: "1 if dose_mg else 2"\n'),
                 at('26:9: derive "big": "if ... else" is not allowed '
                    "(only + - * /, numbers, field names and minutes, hours, days, coalesce)"),
                 id="derive-conditional"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  per_kg: dose_mg / weigth_kg\n"),
                 at('26:21: derive "per_kg" reads undeclared field "weigth_kg" (did you mean "weight_kg"?)'),
                 id="derive-undeclared-field"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  double: per_kg * 2\n  per_kg: dose_mg / weight_kg\n"),
                 at('26:11: derive "double" reads "per_kg", which is derived further down; move it above'),
                 id="derive-reads-a-later-derive"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  lag: minutes(dose_mg, weight_kg)\n"),
                 at('26:16: derive "lag": minutes() needs two datetimes or dates; "dose_mg" is a number'),
                 id="derive-minutes-of-numbers"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  lag: days(signed_on, session_start)\n"),
                 at('26:8: derive "lag": days() needs two values of one type, not date and datetime'),
                 id="derive-days-of-date-and-datetime"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  odd: dose_mg * (weight_kg - route)\n"),
                 at('26:31: derive "odd": arithmetic needs numbers; "route" is an enum'),
                 id="derive-arithmetic-on-enum"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive="  dose_mg: weight_kg * 2\n"),
                 at('26:3: derive "dose_mg" clashes with a field of record type "session"'),
                 id="derive-clashes-with-field"),
    pytest.param(rule("    require: {dose_mg: 1}\n", derive='  nothing: ""\n'),
                 at('26:13: derive "nothing": empty expression'),
                 id="derive-empty"),

    # ---------------------------------------------------------------- messages
    pytest.param(rule('    require: {dose_mg: 1}\n    message: "dose {dose_mgg} mg by {clinician}"\n'),
                 at('30:20: message uses undeclared field "dose_mgg" (did you mean "dose_mg"?)'),
                 id="message-placeholder-undeclared"),

    # ---------------------------------------------------------------- RE2 patterns (column of the offending part)
    pytest.param(rule('    require: {clinician: {matches: "(a)\\\\1"}}\n'),
                 at('29:40: invalid regular expression "(a)\\1": '
                    'back-reference "\\1" is not supported (RE2 has no back-references)'),
                 id="regex-back-reference"),
    pytest.param(rule("    require: {clinician: {matches: 'Dr (?=[A-Z])'}}\n"),
                 at('29:40: invalid regular expression "Dr (?=[A-Z])": '
                    'look-ahead "(?=" is not supported (RE2 has no look-around)'),
                 id="regex-look-ahead"),
    pytest.param(rule("    require:\n      clinician:\n        matches: x(?<!y)z\n"),
                 at('31:19: invalid regular expression "x(?<!y)z": '
                    'look-behind "(?<!" is not supported (RE2 has no look-around)'),
                 id="regex-look-behind-plain-scalar"),
    pytest.param(rule('    require: {note: {matches: "\\\\d+ (?P<n>a)\\\\2"}}\n'),
                 at('29:45: invalid regular expression "\\d+ (?P<n>a)\\2": '
                    'back-reference "\\2" is not supported (RE2 has no back-references)'),
                 id="regex-column-counts-escapes"),
    pytest.param(rule('    require: {note: {matches: "[a-z"}}\n'),
                 at('29:32: invalid regular expression "[a-z": missing ] at "[a-z"'),
                 id="regex-unclosed-class"),

    # ---------------------------------------------------------------- tests: examples
    pytest.param(rule("    require: {dose_mg: {at_most: 3}}\n    tests:\n"
                      "      - {record: {dose_mg: 3, dose: 4}, expect: pass}\n"
                      "      - {record: {dose_mg: abc, route: PO, escort_present: maybe}, expect: fail}\n"
                      "      - {record: {dose_mg: 3, mg_per_kg: 1}, expect: passed}\n",
                      derive="  mg_per_kg: dose_mg / weight_kg\n"),
                 at('33:31: example sets undeclared field "dose" (did you mean "dose_mg"?)',
                    '34:28: dose_mg: "abc" is not a number',
                    '34:40: route: "PO" is not one of IV, IN, IM',
                    '34:60: escort_present: "maybe" is not a boolean',
                    '35:31: example sets undeclared field "mg_per_kg" (derived fields are computed, give their inputs)',
                    '35:54: unknown outcome "passed" (did you mean "pass"?)'),
                 id="examples-unknown-field-and-bad-values"),
    pytest.param(rule("    require: {dose_mg: 1}\n    tests:\n      - {record: {dose_mg: 1}}\n"),
                 at('31:9: test example is missing "expect"'),
                 id="example-without-expect"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_bad_pack_reports_exactly_these_problems(text: str, expected: list[str]) -> None:
    assert problems(text) == expected


# ---------------------------------------------------------------- bad packs (SPEC section 5)


def test_python_tag_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = rule("    require: {dose_mg: 1}\n").replace(
        "title: test pack", f'title: !!python/object/apply:os.system ["touch {marker}"]')
    assert problems(text) == at('3:8: unsupported tag "!!python/object/apply:os.system"')
    assert not marker.exists()


def test_python_tags_in_every_position_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    text = (f'pack: !!python/object/new:os.system ["touch {marker}"]\n'
            f"records: !!python/object:collections.OrderedDict {{a: 1}}\n"
            f"rules: !!python/name:os.system\n")
    assert problems(text) == at('1:7: unsupported tag "!!python/object/new:os.system"',
                                '2:10: unsupported tag "!!python/object:collections.OrderedDict"',
                                '3:8: unsupported tag "!!python/name:os.system"')
    assert not marker.exists()


def test_alias_bomb_is_refused_fast() -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    start = time.monotonic()
    assert problems("\n".join(lines) + "\n") == at("1:1: pack has more than 200000 values (or too many aliases)")
    assert time.monotonic() - start < 5


def test_deeply_nested_pack_is_refused_at_the_deep_node() -> None:
    nested = "".join("  " * depth + f"k{depth}:\n" for depth in range(1, 71)) + "  " * 71 + "leaf\n"
    text = "pack: x\nrules:\n" + nested
    # the 65th level is the mapping under "k64", on the line of "k65"
    assert problems(text) == at("67:131: pack is nested more than 64 levels deep")


def test_deeply_nested_flow_pack_is_refused() -> None:
    assert problems("pack: x\nrules: " + "[" * 70 + "]" * 70 + "\n") == at(
        "2:72: pack is nested more than 64 levels deep")


def test_absurdly_nested_pack_is_refused_fast() -> None:
    start = time.monotonic()
    assert problems("a: " + "[" * 1_000_000 + "]" * 1_000_000 + "\n") == at(
        "1:68: pack is nested more than 64 levels deep")
    assert time.monotonic() - start < 5


def test_many_nested_lists_are_refused_fast() -> None:
    # stock PyYAML rescans one pending key per open "[" for every token: this took 20 s
    start = time.monotonic()
    text = "a:\n" + ("- " + "[" * 300 + "]" * 300 + "\n") * 400
    assert problems(text) == at("2:66: pack is nested more than 64 levels deep")
    assert time.monotonic() - start < 5


def test_oversized_pack_is_refused() -> None:
    text = "pack: x\n" + "# padding\n" * 500_000
    assert problems(text) == at("1:1: pack is larger than 4 MiB")


def test_nul_byte_is_refused_with_its_position() -> None:
    text = rule("    require: {dose_mg: 1}\n").replace("title: test pack", "title: test\x00pack")
    assert problems(text) == at("3:12: NUL byte in pack")


def test_control_character_is_refused_with_its_position() -> None:
    text = rule("    require: {dose_mg: 1}\n").replace("title: test pack", "title: test\x07pack")
    assert problems(text) == at("3:12: control character U+0007 in pack")


def test_pack_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    text = rule("    require: {dose_mg: 1}\n").replace("title: test pack", "title: caf\xe9")
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(PackError) as caught:
        load_pack(str(path))
    assert [str(p) for p in caught.value.problems] == [f"{path}:3:11: pack is not UTF-8 (byte 0xe9)"]


def test_pack_file_with_bom_and_crlf_loads(tmp_path: Path) -> None:
    path = tmp_path / "windows.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + rule("    require: {dose_mg: 1}\n").replace("\n", "\r\n").encode())
    assert [r.id for r in load_pack(str(path)).rules] == ["R1"]


def test_a_lone_surrogate_in_a_pack_is_a_problem() -> None:
    text = pack_text('  - id: R1\n    severity: major\n    for: session\n    title: "dose \\ud800"\n'
                     '    require: {escort_present: true}\n')
    line = text.splitlines().index('    title: "dose \\ud800"') + 1
    assert problems(text) == [f"{PATH}:{line}:12: a lone surrogate (\\ud800) is not a character"]


def test_pack_file_problems_carry_its_path(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(rule("    require: {dose_mg: {grater_than: 3}}\n"))
    with pytest.raises(PackError) as caught:
        load_pack(str(path))
    assert [str(p) for p in caught.value.problems] == [
        f'{path}:29:25: unknown operator "grater_than" (did you mean "greater_than"?)']


# ---------------------------------------------------------------- the acceptance case


ACCEPTANCE = pack_text("""\
  - id: DOSE-01
    title: dose within limits
    severity: major
    for: session
    when: {route: IV}
    require:
      dose_mg: {grater_than: 0}
  - id: ESCORT-01
    severity: minor
    for: session
    require:
      escort_presnt: true
  - id: DOSE-01
    severity: minor
    for: session
    require: {dose_mg: {at_most: 100}}
""")


def test_cli_validate_reports_all_three_problems_with_positions(tmp_path: Path) -> None:
    path = tmp_path / "acceptance.yaml"
    path.write_text(ACCEPTANCE)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    *found, summary = result.stderr.splitlines()
    assert found == [
        f'{path}:32:17: unknown operator "grater_than" (did you mean "greater_than"?)',
        f'{path}:37:7: field "escort_presnt" is not declared for record type "session" '
        '(did you mean "escort_present"?)',
        f'{path}:38:9: duplicate rule id "DOSE-01" (first at line 26)',
    ]
    # cli.py owns this line's wording ("packs" follows the problem count); only the count is pinned here
    assert summary == "protocol-audit: 3 problems in 1 rule pack"


def test_cli_validate_accepts_a_good_pack(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(VALID)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == f"{path}: ok (test 1, 1 rule)\n"


# ---------------------------------------------------------------- packs that must load


VALID = pack_text("""\
  - id: ALL-FORMS
    title: every condition form of the rule language
    severity: minor
    for: session
    when:
      route: IV
      escort_present: {equals: true}
      clinician: {not_equals: "nobody"}
    require:
      all:
        - dose_mg: {greater_than: 0, less_than: 500}
        - weight_kg: {at_least: 30, at_most: 250}
        - devices: {between: [0, 3]}
        - signed_on: {at_most: 2026-12-31}
        - session_date: {between: [2026-01-01, "2026-12-31"]}
        - session_start: {at_least: "2026-01-01T00:00", less_than: "2027-01-01 00:00+00:00"}
        - wait: {at_most: 2h, greater_than: 30m}
        - wait: {between: [30m, 1w]}
        - route: {one_of: [IV, IN]}
        - clinician: {none_of: [x, y]}
        - note: {present: false}
        - patient_id: {present: true}
        - session_id: {matches: "S-[0-9]+"}
        - dose_mg: {at_most: {field: dose_max}}
        - signed_on: {at_most: {field: session_date}}
        - devices: {at_most: {field: weight_kg}}
        - any:
            - not: {route: IM}
            - mg_per_kg: {between: [0.1, 1.0]}
        - observed_min: {at_least: 0}
        - waited_h: {at_most: 48}
        - age_days: {at_least: 0}
        - dose_or_max: {greater_than: 0}
    message: "dose {dose_mg} mg ({mg_per_kg} mg/kg) by {clinician}"
    rationale: covers the whole condition language
    cite: SPEC section 3
    tests:
      - {record: {route: IV, escort_present: yes, dose_mg: 35, weight_kg: 70}, expect: fail}
""", derive="""\
  mg_per_kg: dose_mg / weight_kg
  observed_min: minutes(session_start, session_start)
  waited_h: "hours(session_start, session_start) * 2 + (1 - -1) / 2"
  age_days: days(signed_on, session_date)
  dose_or_max: coalesce(dose_mg, dose_max)
""")


def test_every_condition_form_loads_without_problems() -> None:
    pack = build_pack(load_yaml(VALID, PATH), PATH, VALID.encode())
    (only,) = pack.rules
    assert only.id == "ALL-FORMS" and only.severity == "minor" and only.for_type == "session"
    assert set(pack.records["session"].derived) == {"mg_per_kg", "observed_min", "waited_h", "age_days",
                                                    "dose_or_max"}
    assert only.examples[0].expect == "fail"


def test_yaml_11_booleans_stay_text_for_enum_and_string_fields() -> None:
    text = pack_text("""\
  - id: ANSWER
    severity: info
    for: session
    when: {consent: no}
    require: {clinician: {one_of: [yes, "on"]}}
    tests:
      - {record: {consent: no, clinician: yes}, expect: pass}
""").replace("      note: string\n", "      consent: {type: enum, values: [yes, no, unknown]}\n")
    pack = load_pack_bytes(text.encode(), PATH)
    assert pack.records["session"].fields["consent"].values == ("yes", "no", "unknown")
    (only,) = pack.rules
    assert only.when == Leaf("consent", "equals", "no", mark=only.when.mark)
    assert isinstance(only.require, Leaf) and only.require.value == ("yes", "on")
    assert only.examples[0].record == {"consent": "no", "clinician": "yes"}


def test_every_shipped_pack_validates() -> None:
    shipped = sorted(p for p in RULES_DIR.glob("*.y*ml") if not p.stem.endswith(".tests"))  # not scenario files
    assert shipped, "rules/ holds no pack"
    assert RULES_DIR in shipped_dirs()
    for path in shipped:
        pack = load_pack(str(path))
        assert pack.rules, f"{path} has no rules"


def test_cli_validate_accepts_the_shipped_rules_folder() -> None:
    result = CliRunner().invoke(main, ["validate", str(RULES_DIR)])
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert all(line.endswith(")") and ": ok (" in line for line in result.stdout.splitlines())
