"""A mapped cell to a typed value, in SPEC section 8's order: missing markers, split/part, unit,
value labels, then conversion with the map entry's separators, formats, spellings and time zone.
Typed cells (XLSX dates and numbers, JSON values, FHIR collections) convert as their kind allows."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from engine.inputs.maps import ColumnSpec, MapEntry
from engine.inputs.timeformats import compile_format
from engine.inputs.xlsx_reader import CellError, excel_serial
from engine.language.model import Field
from engine.language.values import (
    ConversionError,
    a_kind,
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
        self.date1904 = False  # ... counted in the 1904 date system (set by the sheet being read)
        self.markers = frozenset(entry.missing)
        self.labels = dict(spec.values)
        self.true = frozenset(v.lower() for v in entry.true_values) | frozenset(_TRUE)
        self.false = frozenset(v.lower() for v in entry.false_values) | frozenset(_FALSE)
        self.unit = spec.unit.lower() if spec.unit else None
        self.column = spec.column
        # the plain cell (no split, unit or labels) is most cells: one test skips the steps
        self.plain = spec.split is None and self.unit is None and not self.labels
        self.datetime_parsers = [compile_format(fmt) for fmt in entry.datetime_formats]
        self.date_parsers = [compile_format(fmt) for fmt in entry.date_formats]
        self.grouped = None if entry.thousands is None else re.compile(
            rf"[+-]?\d{{1,3}}(?:{re.escape(entry.thousands)}\d{{3}})+(?:{re.escape(entry.decimal)}\d*)?")
        convert_text = text_converter(field.type)
        kinds: dict[str, Callable[[str], Any]] = {
            "boolean": self._boolean, "datetime": self._datetime, "date": self._date,
            "string": lambda text: text}
        if field.type in ("number", "integer") and (entry.decimal != "." or entry.thousands is not None):
            kinds[field.type] = self._number
        # a plain cell of a type read as the canonical reader reads it: the builder calls this itself
        self.canonical = convert_text if self.plain and field.type not in kinds else None
        self.from_text = kinds.get(field.type) or (lambda text: convert_text(text, field, tz))

    def __call__(self, row: Mapping[str, Any]) -> Any:
        """The field's value, or None when missing; raises ConversionError naming the column."""
        raw = row.get(self.column) if self.column is not None else None
        if type(raw) is list:  # a FHIR column's collection: nothing is missing, one value is the value
            if not raw:
                return None
            if len(raw) == 1:
                raw = raw[0]
        if type(raw) is str and self.plain:  # the common case, in one step
            text = raw.strip()
            if not text or text in self.markers:
                return None
            try:
                return self.from_text(text)
            except ConversionError as exc:
                raise self._named(exc) from None
            except (ValueError, TypeError, OverflowError):
                raise self._named(not_a(self.field, text)) from None
        try:
            return self._read(row, raw)
        except ConversionError as exc:
            raise self._named(exc) from None

    def _named(self, exc: ConversionError) -> ConversionError:
        if self.column is not None and self.column != self.field.name:
            exc.column = self.column
        return exc

    def _read(self, row: Mapping[str, Any], raw: Any) -> Any:
        spec = self.spec
        if spec.join:
            parts = [self._text(row.get(name)) for name in spec.join]
            if any(part is _MISSING for part in parts):
                return None
            return self._convert(_JOIN.join(part.replace("\\", "\\\\").replace(_JOIN, "\\" + _JOIN)
                                            if _JOIN in part or "\\" in part else part for part in parts))
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

    @staticmethod
    def _iso_like(text: str) -> bool:
        """Text that may be ISO 8601 (2026-03-02..., 20260302...): tried as ISO first; other text is
        tried against the entry's formats first and as ISO last (a failed ISO parse costs more)."""
        return text[4:5] == "-" or text[:8].isdigit()

    def _number(self, text: str) -> Any:
        entry = self.entry
        if entry.thousands is not None and entry.thousands in text:
            if self.grouped is None or not self.grouped.fullmatch(text):  # "1.5" is not 15 under thousands "."
                why = (f'the decimal separator is "{entry.decimal}"' if entry.thousands == "." else
                       f'the thousands separator "{entry.thousands}" groups three digits')
                raise ConversionError(self.field.name, f"is not a number ({why})", text)
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
        return self._moment(text, self._iso_datetime, self.datetime_parsers, self._placed,  # type: ignore[no-any-return]
                            self.entry.datetime_formats)

    def _date(self, text: str) -> dt.date:
        return self._moment(text, dt.date.fromisoformat, self.date_parsers, dt.datetime.date,  # type: ignore[no-any-return]
                            self.entry.date_formats)

    def _iso_datetime(self, text: str) -> dt.datetime:
        return parse_datetime(text, self.tz)

    def _moment(self, text: str, iso: Callable[[str], Any], parsers: list[Any], finish: Callable[[Any], Any],
                formats: tuple[str, ...]) -> Any:
        """A date or datetime: ISO 8601 first when the text looks like it, else the entry's formats in
        order first and ISO last; ``finish`` makes a parsed format's naive datetime the value."""
        looks_iso = self._iso_like(text)
        if looks_iso:
            try:
                return iso(text)
            except ValueError:
                pass
        for parse in parsers:
            try:
                parsed = parse(text)
            except ValueError:
                continue
            if parsed is not None:
                return finish(parsed)
        if not looks_iso:
            try:
                return iso(text)
            except ValueError:
                pass
        raise self._unreadable(text, formats)

    def _unreadable(self, text: str, formats: tuple[str, ...]) -> ConversionError:
        tried = "ISO 8601" + "".join(f', "{fmt}"' for fmt in formats)
        return ConversionError(self.field.name, f"is not {a_kind(self.field.type)} (tried {tried})", text)

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
            raise ConversionError(self.field.name, f"is a date and time, not {a_kind(kind)}", raw.isoformat(sep=" "))
        if isinstance(raw, dt.date):
            if kind == "date":
                return raw
            if kind == "datetime":
                return self._placed(dt.datetime.combine(raw, dt.time()))
            raise ConversionError(self.field.name, f"is a date, not {a_kind(kind)}", raw.isoformat())
        if isinstance(raw, (dt.time, dt.timedelta)):
            if kind == "duration" and isinstance(raw, dt.timedelta):
                return raw
            raise ConversionError(self.field.name, f"is a time, not {a_kind(kind)}", str(raw))
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            if self.serials and kind in ("date", "datetime"):
                try:
                    moment = excel_serial(float(raw), self.date1904)
                except ValueError:
                    raise ConversionError(self.field.name, f"is not {a_kind(kind)} (not a day of Excel's calendar)",
                                          raw) from None
                return moment.date() if kind == "date" else self._placed(moment)
            if isinstance(raw, float) and raw.is_integer() and kind in ("string", "enum"):
                raw = int(raw)  # an identifier stored as a number: 12345, not 12345.0
            if kind in ("string", "enum"):
                return self._convert(self.labels.get(str(raw), str(raw)))
        return convert(self.field, raw, self.tz)
