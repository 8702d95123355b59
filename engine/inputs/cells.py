"""A mapped cell to a typed value, in SPEC section 8's order: missing markers, split/part, unit,
value labels, then conversion with the map entry's separators, formats, spellings and time zone.
Typed cells (XLSX dates and numbers, JSON values, FHIR collections) convert as their kind allows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from engine.inputs.maps import ColumnSpec, MapEntry
from engine.inputs.xlsx_reader import CellError, excel_serial
from engine.language.model import Field
from engine.language.values import (
    ConversionError,
    convert,
    in_zone,
    not_a,
    parse_datetime,
    text_converter,
)

_TRUE = ("true", "yes", "y", "1")
_FALSE = ("false", "no", "n", "0")
_MISSING = object()
_JOIN = "|"


class CellReader:
    """Reads one field from a row (a mapping of column -> raw cell) under one map entry."""

    def __init__(self, entry: MapEntry, spec: ColumnSpec, field: Field, tz: dt.tzinfo, serials: bool) -> None:
        self.entry, self.spec, self.field, self.tz = entry, spec, field, tz
        self.serials = serials  # a number in a date or datetime field is an Excel serial (XLSX)
        self.markers = frozenset(entry.missing)
        self.labels = dict(spec.values)
        self.true = frozenset(v.lower() for v in entry.true_values) | frozenset(_TRUE)
        self.false = frozenset(v.lower() for v in entry.false_values) | frozenset(_FALSE)
        self.unit = spec.unit.lower() if spec.unit else None
        kinds: dict[str, Callable[[str], Any]] = {
            "number": self._number, "integer": self._number, "boolean": self._boolean,
            "datetime": self._datetime, "date": self._date}
        self.from_text = kinds.get(field.type) or self._default

    def __call__(self, row: Mapping[str, Any]) -> Any:
        """The field's value, or None when missing; raises ConversionError naming the column."""
        spec = self.spec
        try:
            if spec.join:
                parts = [self._text(row.get(name)) for name in spec.join]
                if any(part is _MISSING for part in parts):
                    return None
                return self._convert(_JOIN.join(parts))
            raw = row.get(spec.column) if spec.column is not None else None
            if isinstance(raw, list):  # a FHIR column's collection
                if not raw:
                    return None
                if len(raw) > 1:
                    raise ConversionError(self.field.name, f"{len(raw)} values")
                raw = raw[0]
            if isinstance(raw, str):
                text = self._text(raw)
                return None if text is _MISSING else self._convert(text)
            return None if raw is None else self._typed(raw)
        except ConversionError as exc:
            if spec.column is not None and spec.column != self.field.name:
                exc.column = spec.column
            raise

    def _text(self, raw: Any) -> Any:
        """The cell's text after missing markers, split/part and unit; _MISSING when it is missing."""
        if raw is None:
            return _MISSING
        text = (raw if isinstance(raw, str) else str(raw)).strip()
        if not text or text in self.markers:
            return _MISSING
        spec = self.spec
        if spec.split is not None:
            parts = text.split(spec.split)
            text = parts[spec.part - 1].strip() if spec.part <= len(parts) else ""
            if not text or text in self.markers:
                return _MISSING
        if self.unit is not None:
            head = text[:len(text) - len(self.unit)].rstrip()
            if text.lower().endswith(self.unit) and head:
                text = head
        return self.labels.get(text, text)

    def _convert(self, text: str) -> Any:
        try:
            return self.from_text(text)
        except ConversionError:
            raise
        except (ValueError, TypeError, OverflowError):
            raise not_a(self.field, text) from None

    def _default(self, text: str) -> Any:
        return text_converter(self.field.type)(text, self.field, self.tz)

    def _number(self, text: str) -> Any:
        entry = self.entry
        if entry.thousands is not None:
            text = text.replace(entry.thousands, "")
        if entry.decimal != ".":
            if "." in text:
                raise ConversionError(self.field.name, f'is not a number (the decimal separator is "{entry.decimal}")',
                                      text)
            text = text.replace(entry.decimal, ".")
        return self._default(text)

    def _boolean(self, text: str) -> bool:
        word = text.lower()
        if word in self.true:
            return True
        if word in self.false:
            return False
        raise ValueError

    def _datetime(self, text: str) -> dt.datetime:
        try:
            return parse_datetime(text, self.tz)
        except ValueError:
            pass
        for fmt in self.entry.datetime_formats:
            try:
                parsed = dt.datetime.strptime(text, fmt)
            except ValueError:
                continue
            return self._placed(parsed)
        raise self._unreadable(text, self.entry.datetime_formats)

    def _date(self, text: str) -> dt.date:
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            pass
        for fmt in self.entry.date_formats:
            try:
                return dt.datetime.strptime(text, fmt).date()
            except ValueError:
                continue
        raise self._unreadable(text, self.entry.date_formats)

    def _unreadable(self, text: str, formats: tuple[str, ...]) -> ConversionError:
        tried = "ISO 8601" + "".join(f', "{fmt}"' for fmt in formats)
        return ConversionError(self.field.name, f"is not a {self.field.type} (tried {tried})", text)

    def _placed(self, value: dt.datetime) -> dt.datetime:
        from engine.language.values import OutOfRange

        try:
            return in_zone(value, self.tz)
        except OutOfRange as exc:
            raise ConversionError(self.field.name, str(exc), value.isoformat()) from None

    def _typed(self, raw: Any) -> Any:
        """A cell that is not text: a spreadsheet's date, time, number or error, or a JSON value."""
        kind = self.field.type
        if isinstance(raw, CellError):
            raise ConversionError(self.field.name, "is a spreadsheet error, not a value", raw.text)
        if isinstance(raw, dt.datetime):
            if kind == "datetime":
                return self._placed(raw)
            if kind == "date" and raw.time() == dt.time():
                return raw.date()
            raise ConversionError(self.field.name, f"is a date and time, not a {kind}", raw.isoformat(sep=" "))
        if isinstance(raw, dt.date):
            if kind == "date":
                return raw
            if kind == "datetime":
                return self._placed(dt.datetime.combine(raw, dt.time()))
            raise ConversionError(self.field.name, f"is a date, not a {kind}", raw.isoformat())
        if isinstance(raw, (dt.time, dt.timedelta)):
            if kind == "duration" and isinstance(raw, dt.timedelta):
                return raw
            raise ConversionError(self.field.name, f"is a time, not a {kind}", str(raw))
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            if self.serials and kind in ("date", "datetime"):
                try:
                    moment = excel_serial(float(raw))
                except ValueError:
                    raise ConversionError(self.field.name, f"is not a {kind} (not a day of Excel's calendar)",
                                          raw) from None
                return moment.date() if kind == "date" else self._placed(moment)
            if isinstance(raw, float) and raw.is_integer() and kind in ("string", "enum"):
                raw = int(raw)  # an identifier stored as a number: 12345, not 12345.0
            if kind in ("string", "enum"):
                return self._convert(self.labels.get(str(raw), str(raw)))
        return convert(self.field, raw, self.tz)
