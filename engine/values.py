"""Conversion of text and JSON values to the declared field types (SPEC sections 2 and 4.1)."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any
from zoneinfo import ZoneInfo

from .model import Field

_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0"})
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


class ConversionError(ValueError):
    """A value that does not convert to its declared type; the message is user-facing."""


def is_missing(raw: Any) -> bool:
    """Empty CSV cells, whitespace-only text and JSON null are missing (never false or zero)."""
    return raw is None or (isinstance(raw, str) and raw.strip() == "")


def parse_duration(text: str) -> dt.timedelta | None:
    """``30m``, ``40h``, ``90d``, ``2w`` (also ``1.5h``); None when it is not a duration."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        return None
    return dt.timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(value: dt.timedelta) -> str:
    """A duration as a pack writes it: ``90d``, ``40h``, ``30m`` (or seconds when nothing fits)."""
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def parse_datetime(text: str, tz: dt.tzinfo) -> dt.datetime:
    """ISO 8601, seconds optional, ``T`` or space; a naive time is local to ``tz`` (fold=0)."""
    value = dt.datetime.fromisoformat(text.strip())
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz, fold=0)
    return value


def timezone(name: str) -> dt.tzinfo:
    return dt.UTC if name in ("UTC", "utc") else ZoneInfo(name)


def _quote(raw: Any) -> str:
    text = raw if isinstance(raw, str) else repr(raw)
    if len(text) > 40:
        text = text[:37] + "..."
    return '"' + text.replace('"', '\\"') + '"'


def _text_integer(text: str, spec: Field, tz: dt.tzinfo) -> int:
    if "_" in text:
        raise ValueError
    try:
        return int(text)
    except ValueError:
        number = float(text)
        if not number.is_integer():
            raise
        return int(number)


def _text_number(text: str, spec: Field, tz: dt.tzinfo) -> float:
    if "_" in text:  # float() would take "1_000"; an export would not mean it
        raise ValueError
    number = float(text)
    if not math.isfinite(number):
        raise ValueError
    return number


def _text_enum(text: str, spec: Field, tz: dt.tzinfo) -> str:
    if text not in spec.values:
        raise ConversionError(f"{spec.name}: {_quote(text)} is not one of {', '.join(spec.values)}")
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


# Text is what CSV gives for every cell: a direct path per type (the general one handles JSON values).
_FROM_TEXT: dict[str, Any] = {
    "string": lambda text, spec, tz: text,
    "enum": _text_enum,
    "boolean": _text_boolean,
    "integer": _text_integer,
    "number": _text_number,
    "date": lambda text, spec, tz: dt.date.fromisoformat(text),
    "datetime": lambda text, spec, tz: parse_datetime(text, tz),
    "duration": _text_duration,
}


def text_converter(kind: str) -> Any:
    """The converter of stripped, non-empty text to ``kind``: ``fn(text, spec, tz)``; raises ValueError."""
    return _FROM_TEXT[kind]


def not_a(spec: Field, raw: Any) -> ConversionError:
    article = "an" if spec.type[0] in "aeiou" else "a"
    return ConversionError(f"{spec.name}: {_quote(raw)} is not {article} {spec.type}")


def convert(spec: Field, raw: Any, tz: dt.tzinfo) -> Any:
    """Convert one present value (not missing) to ``spec``'s type or raise ConversionError."""
    kind = spec.type
    if type(raw) is str:
        try:
            return _FROM_TEXT[kind](raw.strip(), spec, tz)
        except ConversionError:
            raise
        except (ValueError, TypeError, OverflowError):
            raise not_a(spec, raw) from None
    if isinstance(raw, (dict, list)):
        raise ConversionError(f"{spec.name}: a {type(raw).__name__} is not a {kind}")
    text = raw.strip() if isinstance(raw, str) else raw
    try:
        if kind == "string":
            if isinstance(text, bool) or not isinstance(text, (str, int, float)):
                raise ValueError
            return text if isinstance(text, str) else str(text)
        if kind == "enum":
            value = text if isinstance(text, str) else str(text)
            if value not in spec.values:
                allowed = ", ".join(spec.values)
                raise ConversionError(f"{spec.name}: {_quote(raw)} is not one of {allowed}")
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
                return text
            if isinstance(text, float) and text.is_integer():
                return int(text)
            if isinstance(text, str) and _INTEGER.fullmatch(text):
                return int(text)
            if isinstance(text, str) and _NUMBER.fullmatch(text) and float(text).is_integer():
                return int(float(text))
            raise ValueError
        if kind == "number":
            if isinstance(text, bool):
                raise ValueError
            if isinstance(text, str):
                if not _NUMBER.fullmatch(text):
                    raise ValueError
                number = float(text)
            else:
                number = float(text)
            if not math.isfinite(number):
                raise ValueError
            return number
        if kind == "date":
            if not isinstance(text, str):
                raise ValueError
            return dt.date.fromisoformat(text)
        if kind == "datetime":
            if not isinstance(text, str):
                raise ValueError
            return parse_datetime(text, tz)
        if kind == "duration":
            if not isinstance(text, str):
                raise ValueError
            duration = parse_duration(text)
            if duration is None:
                raise ValueError
            return duration
    except ConversionError:
        raise
    except (ValueError, TypeError, OverflowError):
        pass
    raise not_a(spec, raw)
