"""Conversion of text and JSON values to the declared field types (SPEC sections 2 and 4.1)."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from engine.language.model import Field

_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_NONZERO = re.compile(r"[1-9]")


_NO_VALUE: Any = object()


class ConversionError(ValueError):
    """A value that does not convert to its declared type; the message is user-facing.

    It keeps the field, the raw value and what was expected apart, so that the privacy gate can
    quote an identifying value by its pseudonym (``render``).
    """

    def __init__(self, field: str, expected: str, raw: Any = _NO_VALUE, column: str | None = None) -> None:
        self.field, self.expected, self.raw = field, expected, raw
        self.column = column  # the export's column, when a source map reads the field from another name
        super().__init__(self.render(quote))

    def render(self, show: Callable[[Any], str]) -> str:
        """The message with the raw value written by ``show`` (``quote`` for the plain message)."""
        name = self.field if self.column is None else f'{self.field} (column "{self.column}")'
        if self.raw is _NO_VALUE:
            return f"{name}: {self.expected}"
        return f"{name}: {show(self.raw)} {self.expected}"


def is_missing(raw: Any) -> bool:
    """Empty CSV cells, whitespace-only text and JSON null are missing (never false or zero)."""
    return raw is None or (isinstance(raw, str) and raw.strip() == "")


class OutOfRange(ValueError):
    """A value of the right form that no calendar or comparison can hold; the message says why."""


# Durations and windows are bounded so that every window around every record time stays inside
# the calendar (years 1-9999) and every count of seconds is exact in a double.
MAX_DURATION = dt.timedelta(days=3_650_000)
# Integers beyond 2**53 are not exact as doubles, the rule engine's numbers: refused, not misjudged.
MAX_INTEGER = 2 ** 53 - 1
# Record times keep a day from the calendar's ends, so that any time zone can show them.
_EARLIEST = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)


def parse_duration(text: str) -> dt.timedelta | None:
    """``30m``, ``40h``, ``90d``, ``2w`` (also ``1.5h``); None when it is not a duration.

    Raises OutOfRange for a duration longer than MAX_DURATION.
    """
    match = _DURATION.fullmatch(text.strip())
    if not match:
        return None
    seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not seconds <= MAX_DURATION.total_seconds():
        raise OutOfRange(f"is longer than {format_duration(MAX_DURATION)}")
    return dt.timedelta(seconds=seconds)


def duration_words(text: str) -> str:
    """A duration as written (``90d``) in words (``90 days``); any other text as it is."""
    number, unit = text[:-1], text[-1:]
    word = {"w": "week", "d": "day", "h": "hour", "m": "minute", "s": "second"}.get(unit)
    if word is None or not number.isdigit():
        return text
    return f"{number} {word}{'' if number == '1' else 's'}"


def format_duration(value: dt.timedelta) -> str:
    """A duration as a pack writes it: ``90d``, ``40h``, ``30m`` (or seconds when nothing fits)."""
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@functools.lru_cache(maxsize=256)
def fixed_zone(offset: dt.timedelta) -> dt.timezone:
    """The zone of a fixed UTC offset, one object per offset."""
    return dt.UTC if not offset else dt.timezone(offset)


def in_zone(value: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """``value`` (naive: local to ``tz``, fold=0 in a gap or fold) with its UTC offset fixed.

    A fixed offset makes Python's datetime arithmetic exact elapsed time: two datetimes that share
    a zone object subtract and compare as wall-clock times, which is wrong across a daylight-saving
    change (SPEC 4.1). Raises OutOfRange for a time at the calendar's ends, which no zone can show.
    """
    if value.tzinfo is None:
        fixed = value.replace(tzinfo=_local_offset(value, tz), fold=0)
    elif type(value.tzinfo) is dt.timezone:  # an offset written in the text: fixed already
        fixed = value
    else:
        offset = value.utcoffset()
        assert offset is not None
        fixed = value.replace(tzinfo=fixed_zone(offset), fold=0)
    if 1 < fixed.year < 9999:  # more than a day from either end whatever the offset (at most 24 h)
        return fixed
    try:
        inside = _EARLIEST <= fixed <= _LATEST
    except OverflowError:
        inside = False
    if not inside:
        raise OutOfRange("is too close to the ends of the calendar (years 1 and 9999)")
    return fixed


_HOURS: dict[tuple[dt.tzinfo, int, int, int, int], dt.timezone] = {}  # (zone, local hour) -> its one offset


def _local_offset(value: dt.datetime, tz: dt.tzinfo) -> dt.timezone:
    """The fixed zone of the naive local time ``value`` in ``tz`` (fold=0 in a gap or fold).

    An export's times fall in a few thousand hours a year, nearly all without a change of offset: an
    hour whose first and last microsecond have one offset has it throughout, and is looked up once
    (a zone's rules are asked, in Python, for every other time; that was a quarter of reading a CSV).
    """
    key = (tz, value.year, value.month, value.day, value.hour)
    found = _HOURS.get(key)
    if found is not None:
        return found
    offset = value.replace(tzinfo=tz, fold=0).utcoffset()
    assert offset is not None
    zone = fixed_zone(offset)
    start = value.replace(minute=0, second=0, microsecond=0, tzinfo=tz, fold=0)
    if start.utcoffset() == offset == start.replace(minute=59, second=59, microsecond=999999).utcoffset():
        if len(_HOURS) >= 100_000:
            _HOURS.clear()
        _HOURS[key] = zone
    return zone


def parse_datetime(text: str, tz: dt.tzinfo) -> dt.datetime:
    """ISO 8601, seconds optional, ``T`` or space; a naive time is local to ``tz`` (fold=0).

    The result carries a fixed UTC offset (see ``in_zone``).
    """
    return in_zone(dt.datetime.fromisoformat(text.strip()), tz)


def record_time(value: Any, tz: dt.tzinfo) -> dt.datetime | None:
    """A record's moment from its time field: a datetime, or a date's midnight in ``tz``.

    Raises OutOfRange when a date's midnight falls outside the calendar in UTC.
    """
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.date):
        return in_zone(dt.datetime.combine(value, dt.time()), tz)
    return None


def timezone(name: str) -> dt.tzinfo:
    return dt.UTC if name in ("UTC", "utc") else ZoneInfo(name)


def quote(raw: Any) -> str:
    text = raw if isinstance(raw, str) else repr(raw)
    if len(text) > 40:
        text = text[:37] + "..."
    return '"' + text.replace('"', '\\"') + '"'


def _in_range(number: int) -> int:
    if abs(number) > MAX_INTEGER:
        raise OutOfRange(f"is out of range (at most {MAX_INTEGER:,} either side of 0)")
    return number


def _text_integer(text: str, spec: Field, tz: dt.tzinfo) -> int:
    if "_" in text:
        raise ValueError
    try:
        return _in_range(int(text))
    except OutOfRange:
        raise
    except ValueError:
        # "2.0" or "1e3" is an integer; "2.00000000000000001" is not, though float() rounds it to 2
        try:
            exact = decimal.Decimal(text)
        except decimal.InvalidOperation:
            raise ValueError from None
        if not exact.is_finite():
            raise ValueError from None
        if exact and exact.adjusted() >= 16:  # 1e500000: out of range, said before it is written out in full
            raise OutOfRange(f"is out of range (at most {MAX_INTEGER:,} either side of 0)") from None
        if exact != exact.to_integral_value():
            raise ValueError from None
        return _in_range(int(exact))


def _text_number(text: str, spec: Field, tz: dt.tzinfo) -> float:
    if "_" in text:  # float() would take "1_000"; an export would not mean it
        raise ValueError
    return _finite(float(text), text)


def _finite(number: float, text: str) -> float:
    """``number`` read from ``text``, refused when it is not finite or when a value that is not
    zero became 0 (1e-400): a number is exact or refused."""
    if not math.isfinite(number):
        raise ValueError
    if lost_to_zero(number, text):
        raise OutOfRange("is too small for a number (it would read as 0)")
    return number


def lost_to_zero(number: float, text: str) -> bool:
    """Whether ``text``, a number that is not zero (1e-400), was read as 0."""
    return number == 0.0 and bool(_NONZERO.search(text.lower().partition("e")[0]))


def _text_enum(text: str, spec: Field, tz: dt.tzinfo) -> str:
    if text not in spec.values:
        raise ConversionError(spec.name, f"is not one of {', '.join(spec.values)}", text)
    return text


def _text_boolean(text: str, spec: Field, tz: dt.tzinfo) -> bool:
    word = text.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError


def _text_duration(text: str, spec: Field, tz: dt.tzinfo) -> dt.timedelta:
    duration = parse_duration(text)
    if duration is None:
        raise ValueError
    return duration


def _ranged(from_text: Callable[[str, Field, dt.tzinfo], Any]) -> Callable[[str, Field, dt.tzinfo], Any]:
    """``from_text`` with an out-of-range value reported as such (not as "is not a ...")."""
    def checked(text: str, spec: Field, tz: dt.tzinfo) -> Any:
        try:
            return from_text(text, spec, tz)
        except OutOfRange as exc:
            raise ConversionError(spec.name, str(exc), text) from None
    return checked


def _text_datetime(text: str, spec: Field, tz: dt.tzinfo) -> dt.datetime:
    """``parse_datetime`` of stripped text, its usual case in one step: every cell of a datetime
    column of every record comes through here."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        zone = _HOURS.get((tz, value.year, value.month, value.day, value.hour)) or _local_offset(value, tz)
        value = value.replace(tzinfo=zone, fold=0)
    if 1 < value.year < 9999 and type(value.tzinfo) is dt.timezone:
        return value
    try:
        return in_zone(value, tz)
    except OutOfRange as exc:
        raise ConversionError(spec.name, str(exc), text) from None


_RANGED_NUMBER, _RANGED_INTEGER = _ranged(_text_number), _ranged(_text_integer)  # the general paths


def _text_quick_number(text: str, spec: Field, tz: dt.tzinfo) -> float:
    """``_text_number`` with its usual case (a finite number that is not 0) first."""
    if "_" in text:
        raise ValueError
    number = float(text)
    if number and number - number == 0.0:  # not 0, not inf, not nan
        return number
    return _RANGED_NUMBER(text, spec, tz)  # type: ignore[no-any-return]


def _text_quick_integer(text: str, spec: Field, tz: dt.tzinfo) -> int:
    """``_text_integer`` with its usual case (digits within range) first."""
    if text.isdigit() and len(text) < 16:
        return int(text)
    return _RANGED_INTEGER(text, spec, tz)  # type: ignore[no-any-return]


# Text is what CSV gives for every cell: a direct path per type (the general one handles JSON values).
_FROM_TEXT: dict[str, Any] = {
    "string": lambda text, spec, tz: text,
    "enum": _text_enum,
    "boolean": _text_boolean,
    "integer": _text_quick_integer,
    "number": _text_quick_number,
    "date": lambda text, spec, tz: dt.date.fromisoformat(text),
    "datetime": _text_datetime,
    "duration": _ranged(_text_duration),
}


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_day(text: str) -> dt.date:
    """A calendar day written YYYY-MM-DD (periods, effective windows, waivers); ValueError for any
    other text, week dates (2026-W01-1), which fromisoformat also reads, included."""
    if not _DAY.fullmatch(text):
        raise ValueError(f"{text!r} is not YYYY-MM-DD")
    return dt.date.fromisoformat(text)


def text_converter(kind: str) -> Any:
    """The converter of stripped, non-empty text to ``kind``: ``fn(text, spec, tz)``; raises ValueError."""
    return _FROM_TEXT[kind]


def a_kind(kind: str) -> str:
    """The type's name with its article: "an integer", "a date"."""
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"


def not_a(spec: Field, raw: Any) -> ConversionError:
    return ConversionError(spec.name, f"is not {a_kind(spec.type)}", raw)


def convert(spec: Field, raw: Any, tz: dt.tzinfo) -> Any:
    """Convert one present value (not missing) to ``spec``'s type or raise ConversionError."""
    kind = spec.type
    if isinstance(raw, str):  # text, from CSV or JSON: one path, the one the readers take
        try:
            return _FROM_TEXT[kind](raw.strip(), spec, tz)
        except ConversionError:
            raise
        except (ValueError, TypeError, OverflowError):
            raise not_a(spec, raw) from None
    if isinstance(raw, (dict, list)):
        raise ConversionError(spec.name, f"a {type(raw).__name__} is not {a_kind(kind)}")
    text = raw  # a JSON number or boolean (a pack's YAML value)
    try:
        if kind == "string":
            if isinstance(text, bool) or not isinstance(text, (str, int, float)):
                raise ValueError
            return text if isinstance(text, str) else str(text)
        if kind == "enum":
            value = text if isinstance(text, str) else str(text)
            if value not in spec.values:
                allowed = ", ".join(spec.values)
                raise ConversionError(spec.name, f"is not one of {allowed}", raw)
            return value
        if kind == "boolean":
            if isinstance(text, bool):
                return text
            word = str(text).lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
            raise ValueError
        if kind == "integer":
            if isinstance(text, bool):
                raise ValueError
            if isinstance(text, int):
                return _in_range(text)
            if isinstance(text, float) and text.is_integer():
                return _in_range(int(text))
            raise ValueError
        if kind == "number":
            if isinstance(text, bool):
                raise ValueError
            number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
        # a date, datetime or duration is only ever written as text
    except ConversionError:
        raise
    except OutOfRange as exc:
        raise ConversionError(spec.name, str(exc), raw) from None
    except (ValueError, TypeError, OverflowError):
        pass
    raise not_a(spec, raw)
