"""Values at the edges: exact elapsed time across daylight-saving changes, numbers the rule engine
must represent, times at the calendar's ends, long windows, many records at one moment, and pack
text that YAML would read as something else. Each is judged (or refused with a reason), never an
internal error or a wrong outcome."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine.errors import PackError
from engine.judge.pipeline import judge
from engine.language.loader import load_yaml
from engine.language.model import Outcome, Pack
from engine.language.schema import build_pack
from engine.language.values import MAX_INTEGER, parse_datetime, timezone
from tests.helpers import make_pack, record

LA = "America/Los_Angeles"
OBSERVED = "  observed: minutes(session_start, discharged)\n"
DERIVE_FIELDS = "      discharged: datetime\n"


def with_fields(text: str, extra: str) -> str:
    return text.replace("      wait: duration\n", "      wait: duration\n" + extra)


def pack_of(rules: str, derive: str = "", extra_fields: str = "", tz: str = "UTC") -> Pack:
    from tests.helpers import pack_text
    text = with_fields(pack_text(rules, derive, timezone=tz), extra_fields)
    return build_pack(load_yaml(text, "pack.yaml"), "pack.yaml", text.encode())


def outcomes(pack: Pack, rows: list[dict[str, object]]) -> list[str]:
    records = [record(pack, dict(row, patient_id=row.get("patient_id", "P")), line=n + 2) for n, row in enumerate(rows)]
    found: dict[str, str] = {}

    def keep(rule: object, rec: object, outcome: Outcome) -> None:
        found[rec.key] = outcome.value  # type: ignore[attr-defined]

    judge([pack], records, on_outcome=keep)
    return [found[r.key] for r in records]


OBSERVATION_RULE = """\
  - id: OBS
    title: observed at least 60 minutes
    severity: major
    for: session
    require: {observed: {at_least: 60}}
"""


@pytest.mark.parametrize("start, end, minutes", [
    ("2026-03-08 01:50", "2026-03-08 03:05", 15),     # spring forward: 02:00 -> 03:00
    ("2026-11-01 00:50", "2026-11-01 02:10", 140),    # fall back: 01:00-02:00 happens twice
    ("2026-03-07 12:00", "2026-03-08 12:00", 23 * 60),
    ("2026-07-01 10:00", "2026-07-01 11:00", 60),
], ids=["spring-forward", "fall-back", "day-with-23-hours", "summer"])
def test_derived_minutes_are_elapsed_time_across_dst(start: str, end: str, minutes: int) -> None:
    pack = pack_of(OBSERVATION_RULE, OBSERVED, DERIVE_FIELDS, tz=LA)
    rec = record(pack, {"session_id": "S1", "patient_id": "P", "session_start": start, "discharged": end})
    from engine.language.expressions import compile_expression
    compute = compile_expression(pack.records["session"].derived["observed"].expr)
    assert compute(rec.values) == minutes
    expected = "pass" if minutes >= 60 else "fail"
    assert outcomes(pack, [{"session_id": "S1", "session_start": start, "discharged": end}]) == [expected]


def test_comparing_two_local_times_in_a_dst_gap_agrees_with_the_engine() -> None:
    # 02:30 does not exist on 2026-03-08 in Los Angeles; it resolves as 02:30 PST = 03:30 PDT,
    # after 03:15 PDT: as wall-clock times the order is the other way round
    rule = """\
  - id: ORDER
    title: discharge after start
    severity: major
    for: session
    require: {session_start: {at_most: {field: discharged}}}
"""
    pack = pack_of(rule, extra_fields=DERIVE_FIELDS, tz=LA)
    rows = [{"session_id": "S1", "session_start": "2026-03-08 02:30", "discharged": "2026-03-08 03:15"},
            {"session_id": "S2", "session_start": "2026-03-08 01:30", "discharged": "2026-03-08 03:15"}]
    assert outcomes(pack, rows) == ["fail", "pass"]


def test_times_carry_a_fixed_offset() -> None:
    value = parse_datetime("2026-03-08 01:50", timezone(LA))
    later = parse_datetime("2026-03-08 03:05", timezone(LA))
    assert value.isoformat() == "2026-03-08T01:50:00-08:00" and later.isoformat() == "2026-03-08T03:05:00-07:00"
    assert later - value == dt.timedelta(minutes=15)


def test_a_derived_value_too_large_for_a_number_is_missing_not_an_aborted_audit() -> None:
    rule = """\
  - id: SQ
    title: square small
    severity: major
    for: session
    require: {square: {at_most: 100}}
"""
    pack = pack_of(rule, "  square: dose_mg * dose_mg\n")
    rows = [{"session_id": "S1", "session_start": "2026-01-01 10:00", "dose_mg": "1e200"},
            {"session_id": "S2", "session_start": "2026-01-01 11:00", "dose_mg": "9"},
            {"session_id": "S3", "session_start": "2026-01-01 12:00", "dose_mg": "1e154"}]
    assert outcomes(pack, rows) == ["fail", "pass", "fail"]


@pytest.mark.parametrize("threshold, below, above", [
    ("0.00001", "0.000001", "0.0001"),
    ("1e-7", "1e-8", "1e-6"),
    ("1e16", "1e15", "2e16"),
    ("1.5e300", "1e300", "1e301"),
    ("5e-324", "0", "1e-300"),
], ids=["1e-05", "1e-07", "1e16", "1.5e300", "smallest-double"])
def test_thresholds_validate_accepts_the_engine_runs(threshold: str, below: str, above: str) -> None:
    rule = f"""\
  - id: T
    title: threshold
    severity: major
    for: session
    require: {{dose_mg: {{at_least: {threshold}}}}}
    tests:
      - {{record: {{dose_mg: {above}}}, expect: pass}}
      - {{record: {{dose_mg: {below}}}, expect: fail}}
"""
    pack = pack_of(rule)
    rows = [{"session_id": "S1", "session_start": "2026-01-01 10:00", "dose_mg": above},
            {"session_id": "S2", "session_start": "2026-01-01 11:00", "dose_mg": below},
            {"session_id": "S3", "session_start": "2026-01-01 12:00", "dose_mg": threshold}]
    assert outcomes(pack, rows) == ["pass", "fail", "pass"]


def audit_rejections(tmp_path: Path, header: str, rows: list[str], tz: str = "UTC") -> list[str]:
    rule = "  - id: R\n    title: R\n    severity: major\n    for: session\n    require: {dose_mg: {present: true}}\n"
    from tests.helpers import pack_text
    (tmp_path / "pack.yaml").write_text(pack_text(rule, timezone=tz))
    if "dose_mg" not in header.split(","):  # the rule reads it: an export without the column stops the run
        header, rows = f"{header},dose_mg", [f"{row}," for row in rows]
    (tmp_path / "sessions.csv").write_text("\n".join([header, *rows]) + "\n")
    result = CliRunner().invoke(main, ["audit", "--pack", str(tmp_path / "pack.yaml"), str(tmp_path / "sessions.csv"),
                                       "--reveal-identifiers", "-o", str(tmp_path / "r.json")])
    assert result.exit_code in (0, 1), result.output
    report = json.loads((tmp_path / "r.json").read_text())
    return [r["reason"] for r in report["rejected"]]


def test_times_at_the_ends_of_the_calendar_are_rejected_with_a_reason(tmp_path: Path) -> None:
    reasons = audit_rejections(tmp_path, "session_id,patient_id,session_start,signed_on", [
        "S1,P,0001-01-01T00:00:00+01:00,",
        "S2,P,9999-12-31T23:59:59-12:00,",
        "S3,P,2026-01-01T10:00:00,",
        "S4,P,2026-01-02T10:00:00,0001-01-01",
    ], tz="Asia/Tokyo")
    assert reasons == [
        'session_start: "0001-01-01T00:00:00+01:00" is too close to the ends of the calendar (years 1 and 9999)',
        'session_start: "9999-12-31T23:59:59-12:00" is too close to the ends of the calendar (years 1 and 9999)',
    ]


def test_integers_beyond_exact_doubles_are_rejected(tmp_path: Path) -> None:
    reasons = audit_rejections(tmp_path, "session_id,patient_id,session_start,devices", [
        f"S1,P,2026-01-01T10:00:00,{MAX_INTEGER}",
        f"S2,P,2026-01-01T11:00:00,{MAX_INTEGER + 1}",
        f"S3,P,2026-01-01T12:00:00,-{'9' * 4000}",
    ])
    assert reasons == [f'devices: "{MAX_INTEGER + 1}" is out of range (at most {MAX_INTEGER:,} either side of 0)',
                       f'devices: "-{"9" * 36}..." is out of range (at most {MAX_INTEGER:,} either side of 0)']


@pytest.mark.parametrize("fragment, message", [
    ("derive:\n  big: dose_mg * " + "9" * 400 + "\n", "the number is too large"),
    ("derive:\n  big: dose_mg * 1e400\n", "the number is too large"),
    ("derive:\n  big: dose_mg + 9007199254740993\n", "the integer is larger than 9,007,199,254,740,991: it would "
                                                     "not be exact"),
    ("derive:\n  big: dose_mg + 1e-400\n", "the number is too small (it would read as 0)"),
], ids=["400-digit-integer", "infinite-literal", "integer-beyond-exact", "literal-lost-to-zero"])
def test_derive_literals_too_large_are_validation_errors(fragment: str, message: str) -> None:
    rule = "  - id: R\n    title: R\n    severity: major\n    for: session\n    require: {big: {at_most: 1}}\n"
    from tests.helpers import pack_text
    text = pack_text(rule).replace("rules:\n", fragment + "rules:\n")
    with pytest.raises(PackError) as caught:
        build_pack(load_yaml(text, "pack.yaml"), "pack.yaml", text.encode())
    assert [p.message for p in caught.value.problems] == [f'derive "big": {message}']


@pytest.mark.parametrize("window", ["9999999999999999d", "999999999d", "3650001d"])
def test_windows_longer_than_the_calendar_are_validation_errors(window: str) -> None:
    rule = f"""\
  - id: W
    title: W
    severity: major
    for: session
    require:
      count: {{of: session, within: {{before: {window}}}, at_most: 3}}
"""
    with pytest.raises(PackError) as caught:
        make_pack(rule)
    assert [str(p) for p in caught.value.problems] == [f'pack.yaml:31:45: "{window}" is longer than 3650000d']


def test_the_longest_window_audits() -> None:
    rule = """\
  - id: W
    title: W
    severity: major
    for: session
    require:
      count: {of: session, within: {before: 3650000d, after: 3650000d}, at_most: 0}
"""
    pack = make_pack(rule)
    rows = [{"session_id": "S1", "session_start": "0002-01-01 10:00"},   # the window reaches past year 1
            {"session_id": "S2", "session_start": "0003-01-01 11:00"}]
    assert outcomes(pack, rows) == ["fail", "fail"]


def test_many_records_at_one_moment_count_each_other_and_never_themselves() -> None:
    rule = """\
  - id: C
    title: at most 2 others in the day
    severity: major
    for: session
    require:
      count: {of: session, within: {before: 1d}, at_most: 2}
"""
    pack = make_pack(rule)
    few = [{"session_id": f"S{n}", "session_start": "2026-01-01 10:00"} for n in range(3)]
    assert outcomes(pack, few) == ["pass"] * 3
    many = [{"session_id": f"S{n}", "session_start": "2026-01-01 10:00"} for n in range(3000)]
    records = [record(pack, dict(row, patient_id="P"), line=n + 2) for n, row in enumerate(many)]
    result = judge([pack], records)
    assert result.tallies[0].failed == 3000
    (evidence,) = [v for k, v in result.findings[0].evidence.items() if k.startswith("count")]
    assert evidence["count"] == 2999 and len(evidence["matched"]) == 20


@pytest.mark.parametrize("line, replacement, message", [
    ("  - id: R", "  - id: 12", 'id must be text: put it in quotes ("12")'),
    ("    message: m", "    message: 42", 'message must be text: put it in quotes ("42")'),
    ('version: "1"', "version: 2026.10", 'version must be text: put it in quotes ("2026.10")'),
    ("      note: string", '      note: {type: string, phi: "yes"}', "phi must be true or false"),
], ids=["id", "message", "version", "phi"])
def test_pack_text_that_yaml_reads_as_a_number_is_a_problem(line: str, replacement: str, message: str) -> None:
    rule = "  - id: R\n    title: R\n    severity: major\n    for: session\n    require: {dose_mg: {present: true}}\n" \
           "    message: m\n"
    from tests.helpers import pack_text
    text = pack_text(rule)
    assert line in text
    text = text.replace(line, replacement)
    with pytest.raises(PackError) as caught:
        build_pack(load_yaml(text, "pack.yaml"), "pack.yaml", text.encode())
    assert [p.message for p in caught.value.problems] == [message]


@pytest.mark.parametrize("earlier, later, rule, expected", [
    ("2026-03-07 09:00", "2026-03-08 09:00", "since_previous: {of: session, at_least: 24h}", "fail"),  # 23 h
    ("2026-10-31 09:00", "2026-11-01 09:00", "since_previous: {of: session, at_least: 25h}", "pass"),  # 25 h
    ("2026-03-07 09:30", "2026-03-08 09:00", "count: {of: session, within: {before: 1d}, at_most: 0}", "fail"),
    ("2026-10-31 08:30", "2026-11-01 09:00", "count: {of: session, within: {before: 1d}, at_most: 0}", "pass"),
    ("2026-03-08 09:00", "2026-03-07 09:30", "count: {of: session, within: {after: 1d}, at_most: 0}", "fail"),
    ("2026-11-01 09:00", "2026-10-31 08:30", "count: {of: session, within: {after: 1d}, at_most: 0}", "pass"),
], ids=["gap-spring", "gap-fall", "before-spring", "before-fall", "after-spring", "after-fall"])
def test_history_windows_are_elapsed_time_across_both_dst_changes(earlier: str, later: str, rule: str,
                                                                    expected: str) -> None:
    pack = make_pack(f"  - id: H\n    title: H\n    severity: major\n    for: session\n    require: {{{rule}}}\n",
                     timezone=LA)
    rows = [{"session_id": "S1", "session_start": earlier}, {"session_id": "S2", "session_start": later}]
    assert outcomes(pack, rows)[1] == expected


def test_months_of_the_report_are_the_packs_local_months(tmp_path: Path) -> None:
    rule = "  - id: R\n    title: R\n    severity: major\n    for: session\n    require: {dose_mg: {present: true}}\n"
    from tests.helpers import pack_text
    (tmp_path / "pack.yaml").write_text(pack_text(rule, timezone=LA))
    (tmp_path / "sessions.csv").write_text("session_id,patient_id,session_start,dose_mg\n"
                                           "S1,P,2026-03-31 23:30,5\nS2,P,2026-11-30T23:30:00-08:00,\n")
    result = CliRunner().invoke(main, ["audit", "--pack", str(tmp_path / "pack.yaml"), str(tmp_path / "sessions.csv"),
                                       "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.output
    months = [(row["month"], row["passed"], row["failed"])
              for row in json.loads((tmp_path / "r.json").read_text())["by_month"]]
    assert months == [("2026-03", 1, 0), ("2026-11", 0, 1)]


@pytest.mark.parametrize("written, expected", [
    ("010", 10.0), ("1.50", 1.5), ("-.5", -0.5), ("1e3", 1000.0),
    ("1:30", 'dose_mg: "1:30" is not a number'), ("0x1F", 'dose_mg: "0x1F" is not a number'),
    ("0b101", 'dose_mg: "0b101" is not a number'), ("1_000", 'dose_mg: "1_000" is not a number'),
    ("1.0e-400", 'dose_mg: "1.0e-400" is too small for a number (it would read as 0)'),
], ids=["leading-zero", "trailing-zero", "bare-point", "exponent", "sexagesimal", "hex", "binary", "underscore",
        "underflow"])
def test_pack_numbers_read_as_written_like_export_text(written: str, expected: float | str) -> None:
    rule = ("  - id: N\n    title: N\n    severity: major\n    for: session\n"
            f"    require: {{dose_mg: {{at_most: {written}}}}}\n")
    if isinstance(expected, float):
        (leaf,) = [make_pack(rule).rules[0].require]
        assert leaf.value == expected  # type: ignore[union-attr]
    else:
        with pytest.raises(PackError) as caught:
            make_pack(rule)
        assert [p.message for p in caught.value.problems] == [expected]


def test_one_of_numbers_read_as_written() -> None:
    rule = ("  - id: N\n    title: N\n    severity: major\n    for: session\n"
            "    require: {devices: {one_of: [010, 2]}}\n")
    assert make_pack(rule).rules[0].require.value == (10, 2)  # type: ignore[union-attr]


@pytest.mark.parametrize("header, cell, reason", [
    ("devices", "2.00000000000000001", 'devices: "2.00000000000000001" is not an integer'),
    ("devices", "9007199254740991.4", 'devices: "9007199254740991.4" is not an integer'),
    ("dose_mg", "1e-400", 'dose_mg: "1e-400" is too small for a number (it would read as 0)'),
], ids=["almost-two", "almost-max", "underflow"])
def test_export_numbers_are_exact_or_refused(tmp_path: Path, header: str, cell: str, reason: str) -> None:
    reasons = audit_rejections(tmp_path, f"session_id,patient_id,session_start,{header}",
                               [f"S1,P,2026-01-01T10:00:00,{cell}", "S2,P,2026-01-01T11:00:00,2.0"])
    assert reasons == [reason]


def test_an_example_date_time_at_the_calendars_ends_is_a_pack_problem() -> None:
    # a date-typed record time is its midnight in the pack's zone: 0001-01-01 in Tokyo is year 0 in UTC
    text = """\
pack: p
version: "1"
timezone: Asia/Tokyo
records:
  screening:
    key: screening_id
    patient: patient_id
    time: screened_on
    fields: {screening_id: string, patient_id: string, screened_on: date}
rules:
  - id: D
    title: D
    severity: major
    for: screening
    require: {screened_on: {present: true}}
    tests:
      - {record: {screened_on: "9999-12-31"}, expect: pass}
      - {record: {screened_on: "2026-01-01"}, expect: pass,
         history: [{type: screening, record: {screened_on: "0001-01-01"}}]}
"""
    with pytest.raises(PackError) as caught:
        build_pack(load_yaml(text, "p.yaml"), "p.yaml", text.encode())
    assert [str(p) for p in caught.value.problems] == [
        f'p.yaml:{line}: screened_on: "{value}" is too close to the ends of the calendar (years 1 and 9999)'
        for line, value in (("17:32", "9999-12-31"), ("19:60", "0001-01-01"))]


@pytest.mark.parametrize("earlier, later, rule", [
    ("2004-01-10T13:36:04.000014Z", "2004-01-10T13:37:04.000014Z",
     "exists: {of: session, within: {before: 1m}}"),                     # the window edge crosses 2**30 s
    ("2038-01-19T03:13:08.000003Z", "2038-01-19T03:14:08.000003Z",
     "exists: {of: session, within: {before: 1m}}"),                     # and 2**31 s
    ("2004-01-08T13:37:04.000014Z", "2004-01-10T13:37:04.000014Z", "since_previous: {of: session, at_least: 48h}"),
], ids=["window-2**30", "window-2**31", "gap-2**30"])
def test_a_record_exactly_on_a_window_edge_is_inside(earlier: str, later: str, rule: str) -> None:
    pack = make_pack(f"  - id: E\n    title: E\n    severity: major\n    for: session\n    require: {{{rule}}}\n")
    rows = [{"session_id": "A", "session_start": earlier}, {"session_id": "B", "session_start": later}]
    assert outcomes(pack, rows)[1] == "pass"


@pytest.mark.parametrize("value, shown", [(1e-5, 1e-5), (-0.0031415, -0.003142), (5e-324, 5e-324), (0.0, 0.0),
                                          (1234.56789, 1234.5679), (0.012345, 0.0123)])
def test_evidence_shows_small_numbers_as_the_rule_judged_them(value: float, shown: float) -> None:
    from engine.judge.evidence import display
    assert display(value) == shown  # four places would show 0.00001, judged against 0.00001, as 0.0


class _CountingList(list):  # type: ignore[type-arg]
    """A list that counts the items read from it."""

    reads = 0

    def __getitem__(self, index):  # type: ignore[no-untyped-def]
        _CountingList.reads += len(range(*index.indices(len(self)))) if isinstance(index, slice) else 1
        return super().__getitem__(index)

    def __iter__(self):  # type: ignore[no-untyped-def]
        _CountingList.reads += len(self)
        return super().__iter__()


@pytest.mark.parametrize("form", ["count", "exists", "first", "since_previous"])
def test_records_at_one_moment_are_answered_without_walking_each_other(form: str) -> None:
    # each record's answer and evidence look at a bounded number of the tied records, not all of
    # them (counting every tied record for each one made 100,000 of them take minutes)
    from engine.judge.context import PackContext
    from engine.judge.timeline import MAX_LISTED, Timeline

    spec = {"count": "{of: session, within: {before: 1d}, at_most: 2}", "exists": "{of: session, within: {before: 1d}}",
            "first": "{of: session}", "since_previous": "{of: session, at_least: 1h}"}[form]
    rule = f"  - id: C\n    title: C\n    severity: major\n    for: session\n    require:\n      {form}: {spec}\n"
    pack = make_pack(rule)
    [cond] = PackContext([pack]).histories[0]
    many = [record(pack, {"session_id": f"S{n}", "patient_id": "P", "session_start": "2026-01-01 10:00"}, line=n)
            for n in range(2000)]
    timeline = Timeline(many)
    timeline.truth(cond, many[0])
    group = timeline._index[id(cond)][None]
    group.records = _CountingList(group.records)
    _CountingList.reads = 0
    for each in many:
        timeline.truth(cond, each)
        timeline.evidence(cond, each)
    # at most the listed ones (each read twice) and a neighbour per record: 88,000 here, where walking
    # the ties would read 4,000,000
    assert _CountingList.reads <= len(many) * 2 * (MAX_LISTED + 2)
