"""Properties over generated inputs, one per class of defect: no identifier leaks into any report
format; every duration (derived, windows, since_previous) is exact elapsed time in any zone; the
engine judges any finite number as Python does; no CSV row is lost; what validate accepts, the audit
runs; no control character reaches the terminal."""

from __future__ import annotations

import csv
import datetime as dt
import io
import tempfile
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from cli import main
from engine import reporters
from engine.errors import InputError, PackError
from engine.inputs.records import InputStats, Seen, read_input
from engine.judge.pipeline import judge, run
from engine.language.expressions import compile_expression
from engine.language.model import Field, Outcome, Record, RecordType
from engine.packs import load_packs
from engine.privacy import Pseudonymiser
from engine.reporters import report as report_builder
from tests.helpers import make_pack, pack_text, record
from tests.test_privacy_gate import PACK

# Identifiers are drawn from letters a pseudonym (hex digits) and the report's own words never use.
IDENTIFIER = st.text(alphabet="GHJKQVWXZ", min_size=10, max_size=14)
FORMATS = ("json", "csv", "html", "md", "txt", "junit", "sarif")


@st.composite
def exports(draw: st.DrawFn) -> list[tuple[str, ...]]:
    patients = draw(st.lists(IDENTIFIER, min_size=1, max_size=4, unique=True))
    keys = draw(st.lists(IDENTIFIER, min_size=2, max_size=10, unique=True))
    rows = []
    for key in keys:
        start = dt.datetime(2026, 1, 1) + dt.timedelta(hours=draw(st.integers(0, 24 * 20)))
        mrn = draw(st.one_of(st.integers(10 ** 8, 10 ** 9).map(str), IDENTIFIER))  # a bad value is rejected
        rows.append((draw(st.sampled_from([key, keys[0]])),  # duplicate keys too
                     draw(st.sampled_from(patients)), start.isoformat(" "), mrn,
                     str(draw(st.integers(0, 20))), draw(st.sampled_from(["A", "B", ""])),
                     draw(st.one_of(st.just(""), IDENTIFIER))))
    return rows


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=exports())
def test_no_identifier_from_the_export_appears_in_any_format(rows: list[tuple[str, ...]], tmp_path: Path) -> None:
    pack_path = tmp_path / "clinic.yaml"
    pack_path.write_text(PACK)
    export = tmp_path / "sessions.csv"
    export.write_text("session_id,patient_id,start,mrn,dose,site,note\n" + "".join(",".join(r) + "\n" for r in rows))
    packs = load_packs([str(pack_path)])
    result, stats = run(packs, [str(export)], group_by=["patient_id", "mrn", "note"],
                        pseudonymise=Pseudonymiser(b"property-key-0123456789abcdef", "test"))
    report = report_builder.build(result, stats, packs, dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    identifiers = {value for row in rows for value in (row[0], row[1], row[3], row[6]) if value}
    for name in FORMATS:
        out = io.StringIO()
        reporters.get(name)(report, out)
        text = out.getvalue()
        assert not [value for value in identifiers if value in text], name


TIMES = st.datetimes(min_value=dt.datetime(2024, 1, 1), max_value=dt.datetime(2028, 12, 31))
ZONES = ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Europe/London", "Australia/Lord_Howe"]


def elapsed_seconds(start: dt.datetime, end: dt.datetime, zone: str) -> float:
    """The reference: both naive times placed in the zone (fold=0), then UTC instants subtracted."""
    tz = ZoneInfo(zone)
    return end.replace(tzinfo=tz).timestamp() - start.replace(tzinfo=tz).timestamp()


@settings(max_examples=300, deadline=None)
@given(start=TIMES, end=TIMES, zone=st.sampled_from(ZONES))
@example(start=dt.datetime(2026, 3, 8, 1, 50), end=dt.datetime(2026, 3, 8, 3, 5), zone="America/Los_Angeles")
@example(start=dt.datetime(2026, 11, 1, 0, 50), end=dt.datetime(2026, 11, 1, 2, 10), zone="America/Los_Angeles")
def test_derived_durations_are_elapsed_time(start: dt.datetime, end: dt.datetime, zone: str) -> None:
    # fold=0: the text the reader gets cannot carry hypothesis's fold=1 (in a gap it meant another instant)
    start, end = start.replace(second=0, microsecond=0, fold=0), end.replace(second=0, microsecond=0, fold=0)
    derive = ("  m: minutes(session_start, discharged)\n  h: hours(session_start, discharged)\n"
              "  d: days(session_start, discharged)\n")
    rule = "  - id: R\n    title: R\n    severity: major\n    for: session\n    require: {m: {at_least: 0}}\n"
    from tests.test_exact_values import pack_of
    pack = pack_of(rule, derive, "      discharged: datetime\n", tz=zone)
    rec = record(pack, {"session_id": "S", "patient_id": "P", "session_start": start.isoformat(" "),
                        "discharged": end.isoformat(" ")})
    seconds = elapsed_seconds(start, end, zone)
    derived = pack.records["session"].derived
    for name, unit in (("m", 60), ("h", 3600), ("d", 86400)):
        assert abs(compile_expression(derived[name].expr)(rec.values) - seconds / unit) < 1e-9
    if zone in ("UTC", "Asia/Tokyo"):  # no daylight saving: the naive difference is the answer
        assert seconds == (end - start).total_seconds()


@settings(max_examples=30, deadline=None)
@given(times=st.lists(TIMES, min_size=2, max_size=8), zone=st.sampled_from(ZONES),
       hours=st.integers(1, 72))
@example(times=[dt.datetime(2026, 3, 7, 9, 30), dt.datetime(2026, 3, 8, 9)], zone="America/Los_Angeles", hours=24)
@example(times=[dt.datetime(2026, 10, 31, 8, 30), dt.datetime(2026, 11, 1, 9)], zone="America/Los_Angeles",
         hours=25)
@example(times=[dt.datetime(2026, 3, 29, 0, 30), dt.datetime(2026, 3, 29, 1, 30)], zone="Europe/London", hours=1)
def test_windows_and_gaps_are_elapsed_time(times: list[dt.datetime], zone: str, hours: int) -> None:
    rules = f"""\
  - id: WINDOW
    title: W
    severity: major
    for: session
    require:
      count: {{of: session, within: {{before: {hours}h}}, at_most: 0}}
  - id: GAP
    title: G
    severity: major
    for: session
    require:
      since_previous: {{of: session, at_least: {hours}h}}
"""
    pack = make_pack(rules, timezone=zone)
    naive = [t.replace(second=0, microsecond=0, fold=0) for t in times]  # as the text the reader gets
    records = [record(pack, {"session_id": f"S{n}", "patient_id": "P", "session_start": t.isoformat(" ")}, line=n + 2)
               for n, t in enumerate(naive)]
    got: dict[tuple[str, str], str] = {}
    judge([pack], records, on_outcome=lambda rule, rec, outcome: got.__setitem__((rule.id, rec.key), outcome.value))
    instants = [t.replace(tzinfo=ZoneInfo(zone)).timestamp() for t in naive]
    window = hours * 3600
    for n, moment in enumerate(instants):
        others = [m for k, m in enumerate(instants) if k != n]
        in_window = [m for m in others if moment - window <= m <= moment]
        earlier = [m for m in others if m <= moment]
        # since_previous looks at the latest other record at or before this one
        gap_ok = not earlier or moment - max(earlier) >= window
        assert got[("WINDOW", f"S{n}")] == (Outcome.PASS if not in_window else Outcome.FAIL).value
        assert got[("GAP", f"S{n}")] == (Outcome.PASS if gap_ok else Outcome.FAIL).value


FINITE = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=15, deadline=None)
@given(threshold=FINITE, values=st.lists(FINITE, min_size=1, max_size=12))
@example(threshold=1e-05, values=[1e-06, 1e-04])
@example(threshold=1e16, values=[1e15, 2e16])
@example(threshold=5e-324, values=[0.0, -5e-324, 5e-324])
def test_the_engine_judges_any_finite_number_as_python_does(threshold: float, values: list[float]) -> None:
    rule = ("  - id: N\n    title: N\n    severity: major\n    for: session\n"
            f"    require: {{dose_mg: {{at_least: {threshold!r}}}}}\n")
    pack = make_pack(rule)
    records = [record(pack, {"session_id": f"S{n}", "patient_id": f"P{n}", "dose_mg": repr(value)}, line=n + 2)
               for n, value in enumerate(values)]
    got: dict[str, str] = {}
    judge([pack], records, on_outcome=lambda rule, rec, outcome: got.__setitem__(rec.key, outcome.value))
    for n, value in enumerate(values):
        assert got[f"S{n}"] == ("pass" if value >= threshold else "fail"), (threshold, value)


CELL = st.text(alphabet='ab,"\n\r ', max_size=6)


CSV_TYPES = {"session": RecordType("session", "session_id", "patient_id", "session_start", {
    "session_id": Field("session_id", "string"), "patient_id": Field("patient_id", "string"),
    "session_start": Field("session_start", "datetime"), "note": Field("note", "string")})}


@settings(max_examples=200, deadline=None)
@given(rows=st.lists(st.lists(CELL, min_size=1, max_size=4), max_size=8), quoted=st.booleans())
def test_every_csv_row_is_read_or_rejected_never_lost(rows: list[list[str]], quoted: bool) -> None:
    """Written by a CSV writer, every row is one record; written raw (stray quotes, bare line breaks),
    every item is accounted for: read = judged + rejected, one item per line at most, in order."""
    header = ["session_id", "patient_id", "session_start", "note"]
    data = [[f"S{n}", "P", "2026-01-01T10:00:00", " ".join(cells)] for n, cells in enumerate(rows)]
    text = io.StringIO(newline="")
    if quoted:  # QUOTE_ALL: the minimal quoting leaves a carriage return alone in a cell unquoted
        csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows([header, *data])
    else:
        text.write(",".join(header) + "\n" + "".join(",".join(row) + "\n" for row in data))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sessions.csv"
        path.write_text(text.getvalue(), encoding="utf-8", newline="")
        stats = InputStats(str(path), "session")
        try:
            items = list(read_input(str(path), "session", CSV_TYPES, dt.UTC, Seen(), stats))
        except InputError:  # refused whole, with its reason (a carriage return alone ends the header line)
            return
    assert stats.records_read == stats.records_judged + stats.records_rejected == len(items)
    lines = [item.line for item in items]
    assert lines == sorted(set(lines)) and all(line >= 2 for line in lines)
    if quoted:
        assert [item.key for item in items if isinstance(item, Record)] == [row[0] for row in data]


# Numbers as a pack author or an export writes them, the extreme ones included.
NUMBER_TEXT = st.one_of(
    FINITE.map(repr), st.integers(-(10 ** 30), 10 ** 30).map(str),
    st.sampled_from(["1e-400", "1e400", "5e-324", "9007199254740993", "-9007199254740991", "1e16", "0.00001",
                     "1e-7", "179769313486231570000000000000000000000000000000000000000000000000000000000000000"
                     "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                     "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                     "0000000000000000000000000000000000000000000000000000000000000000000000000000000000000"]))
MOMENT_TEXT = st.builds(lambda year, rest, offset: f"{year:04d}{rest}{offset}",
                        st.sampled_from([1, 2, 1970, 2026, 9998, 9999]),
                        st.sampled_from(["-01-01T00:00:00", "-12-31T23:59:59", "-03-08T02:30:00"]),
                        st.sampled_from(["", "Z", "+14:00", "-12:00", "+01:00", "-00:30"]))


@settings(max_examples=15, deadline=None)
@given(threshold=NUMBER_TEXT, literal=NUMBER_TEXT, values=st.lists(NUMBER_TEXT, min_size=1, max_size=6),
       moments=st.lists(MOMENT_TEXT, min_size=1, max_size=6))
@example(threshold="0.00001", literal="1e200", values=["1e200"], moments=["0001-01-01T00:00:00+01:00"])
def test_what_validate_accepts_the_audit_runs(threshold: str, literal: str, values: list[str],
                                               moments: list[str]) -> None:
    """A pack is refused with each problem at its line, or every record of any values is judged or
    rejected with a reason: never an internal error in between (class: valid values that aborted
    the audit, thresholds validate accepted and the engine refused)."""
    rules = ("  - id: N\n    title: N\n    severity: major\n    for: session\n"
             f"    require: {{dose_mg: {{at_least: {threshold}}}}}\n"
             "  - id: D\n    title: D\n    severity: major\n    for: session\n"
             "    require: {scaled: {at_most: 1}}\n")
    try:
        pack = make_pack(rules, derive=f"  scaled: dose_mg * weight_kg + {literal}\n")
    except PackError as exc:
        assert exc.problems and all(problem.line > 1 and problem.column >= 1 for problem in exc.problems)
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sessions.csv"
        rows = [f"S{n},P{n},{moments[n % len(moments)]},{value},{values[-1 - n]}"
                for n, value in enumerate(values)]
        path.write_text("session_id,patient_id,session_start,dose_mg,weight_kg\n" + "\n".join(rows) + "\n")
        result, _ = run([pack], [str(path)])
    judged = [counts.passed + counts.failed + counts.not_applicable + counts.not_evaluable for counts in result.tallies]
    assert all(len(result.rejected) + count == len(values) for count in judged), (judged, result.rejected)


CONTROLS = "".join(map(chr, [*range(0, 9), *range(11, 32), 127, *range(0x80, 0xA0)])) + "\u202e\u2028"


@settings(max_examples=60, deadline=None)
@given(tail=st.text(alphabet=CONTROLS + "ab[;]", min_size=1, max_size=12))
@example(tail="\x1b[31m")
def test_no_control_character_from_a_header_reaches_the_terminal(tail: str, tmp_path_factory: Any) -> None:
    """A header cell like the column the rules read, with control characters: the stop that quotes it
    as a closest header name prints each one visibly (class: escape sequences reaching a terminal)."""
    folder = tmp_path_factory.mktemp("header")
    pack = folder / "pack.yaml"
    pack.write_text(pack_text("  - id: N\n    title: N\n    severity: major\n    for: session\n"
                              "    require: {dose_mg: {at_least: 1}}\n"))
    sessions = folder / "sessions.csv"
    header = ["session_id", "patient_id", "session_start", "dose_mg" + tail]
    text = io.StringIO(newline="")
    csv.writer(text, lineterminator="\n", quoting=csv.QUOTE_ALL).writerows([header, ["S1", "P1", "2026-01-01", "1"]])
    sessions.write_bytes(text.getvalue().encode("utf-8"))
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions)])
    if tail == "\x1b[31m":
        assert result.exit_code == 2 and "closest header names" in result.stderr, result.output
    shown = result.stdout + result.stderr
    assert not [char for char in shown if char in CONTROLS], shown
