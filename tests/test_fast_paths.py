"""The fast paths of reading and tallying give what the general paths give: the quick number,
integer and datetime converters against the general conversion, the cached UTC offset of a local
hour across daylight-saving changes, and the cached month of a record time at offsets that are not
whole hours, next to a month's end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.judge.context import PackContext
from engine.judge.tally import Tally
from engine.language import values
from engine.language.model import Field
from engine.language.values import ConversionError, OutOfRange, timezone
from tests.helpers import make_pack

ROOT = Path(__file__).resolve().parent.parent
ZONES = ["America/Chicago", "Australia/Lord_Howe", "Asia/Kolkata", "Europe/London", "UTC"]


def general(kind: str, text: str, tz: dt.tzinfo) -> Any:
    """The general conversion of each type, without the fast paths."""
    spec = Field(name="f", type=kind)
    if kind == "number":
        return values._ranged(values._text_number)(text, spec, tz)
    if kind == "integer":
        return values._ranged(values._text_integer)(text, spec, tz)
    return values._ranged(lambda t, s, z: values.parse_datetime(t, z))(text, spec, tz)


def outcome(convert: Any, *args: Any) -> Any:
    try:
        return ("ok", convert(*args))
    except ConversionError as exc:
        return ("conversion", str(exc))
    except (ValueError, OutOfRange):
        return ("value",)


@pytest.mark.parametrize("kind, text", [
    ("number", "0"), ("number", "-0.0"), ("number", "1e-400"), ("number", "1e400"), ("number", "nan"),
    ("number", "inf"), ("number", "1_000"), ("number", "35.5"), ("number", "-2"), ("number", "٣"),
    ("integer", "0012"), ("integer", "9007199254740991"), ("integer", "9007199254740992"), ("integer", "²"),
    ("integer", "2.0"), ("integer", "٣"), ("integer", "999999999999999"), ("integer", "-5"),
    ("datetime", "2026-03-08T02:30:00"), ("datetime", "2026-11-01T01:30"), ("datetime", "0001-01-01T00:00:00"),
    ("datetime", "9999-12-31T23:59:59"), ("datetime", "2026-01-01T09:00:00Z"), ("datetime", "2026-01-01 09:00"),
    ("datetime", "2026-01-01T09:00:00+05:45"),
])
@pytest.mark.parametrize("zone", ZONES)
def test_the_quick_converters_agree_with_the_general_ones(kind: str, text: str, zone: str) -> None:
    tz = timezone(zone)
    quick = outcome(values.text_converter(kind), text, Field(name="f", type=kind), tz)
    assert quick == outcome(general, kind, text, tz)
    if quick[0] == "ok" and kind == "datetime":
        assert quick[1].utcoffset() == outcome(general, kind, text, tz)[1].utcoffset()


@settings(max_examples=400, deadline=None)
@given(moment=st.datetimes(min_value=dt.datetime(2025, 1, 1), max_value=dt.datetime(2027, 12, 31)),
       zone=st.sampled_from(ZONES))
def test_a_local_time_gets_the_offset_its_zone_gives(moment: dt.datetime, zone: str) -> None:
    tz = timezone(zone)
    for text in (moment.isoformat(), moment.replace(minute=0, second=0, microsecond=0).isoformat()):
        got = values.text_converter("datetime")(text, Field(name="f", type="datetime"), tz)
        assert got.utcoffset() == dt.datetime.fromisoformat(text).replace(tzinfo=tz, fold=0).utcoffset()


@settings(max_examples=300, deadline=None)
@given(minutes=st.integers(min_value=-24 * 60, max_value=24 * 60),
       offset=st.sampled_from([330, 345, -210, 0, 60, 525, -570]), zone=st.sampled_from(ZONES))
def test_a_record_time_is_counted_in_its_month_in_the_packs_zone(minutes: int, offset: int, zone: str) -> None:
    tally = Tally(PackContext([make_pack("""\
  - id: R1
    title: r
    severity: major
    for: session
    require: {dose_mg: {at_most: 1}}
""", timezone=zone)]))
    fixed = dt.timezone(dt.timedelta(minutes=offset))
    end_of_march = dt.datetime(2026, 4, 1, tzinfo=timezone(zone)).astimezone(fixed)
    for step in (0, 1, 17, 59, 61):  # the same hour of the record's offset, twice, and its neighbours
        when = end_of_march + dt.timedelta(minutes=minutes + step)
        assert tally._month(when) == when.astimezone(timezone(zone)).strftime("%Y-%m")


@pytest.mark.parametrize("zone, day", [("Australia/Lord_Howe", dt.date(2026, 10, 4)),  # +10:30 -> +11 at 02:00
                                       ("Australia/Lord_Howe", dt.date(2026, 4, 5)),  # +11 -> +10:30 at 02:00
                                       ("America/Chicago", dt.date(2026, 3, 8)),
                                       ("America/Chicago", dt.date(2026, 11, 1))])
def test_an_hour_with_a_change_of_offset_is_never_cached_whole(zone: str, day: dt.date) -> None:
    tz = timezone(zone)
    spec = Field(name="f", type="datetime")
    values._HOURS.clear()
    for minute in [*range(0, 180, 5), *range(175, -5, -5)]:  # 00:00 to 02:55 local, then back again
        moment = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minute)
        got = values.text_converter("datetime")(moment.isoformat(), spec, tz)
        assert got.utcoffset() == moment.replace(tzinfo=tz, fold=0).utcoffset(), moment


def test_a_clock_put_back_within_an_hour_keeps_the_month_right() -> None:
    # St. John's put its clocks back at 00:01 in 2009: within one UTC hour the local month goes from
    # October to November and back (the review's case); a fresh tally is the reference
    rules = "  - id: R1\n    title: r\n    severity: major\n    for: session\n    require: {dose_mg: {at_most: 1}}\n"
    tally = Tally(PackContext([make_pack(rules, timezone="America/St_Johns")]))
    for text in ("2009-11-01T02:10:00+00:00", "2009-11-01T02:30:30+00:00", "2009-11-01T02:59:00+00:00"):
        when = dt.datetime.fromisoformat(text)
        fresh = Tally(PackContext([make_pack(rules, timezone="America/St_Johns")]))
        assert tally._month(when) == fresh._month(when) == when.astimezone(timezone("America/St_Johns")).strftime(
            "%Y-%m"), text


def test_an_integer_with_a_huge_exponent_is_refused_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from engine.language import values; "
            "from engine.language.model import Field; f = Field(name='n', type='integer')\n"
            "try:\n    values.text_converter('integer')('1e500000000', f, None)\nexcept values.ConversionError as e:"
            "\n    print(e)")
    # a subprocess with a time limit: written out in full, the number would take hours
    done = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=60)
    assert "is out of range" in done.stdout, done.stderr
