"""The audit period (SPEC 9): ``--period FROM..TO``, whole days in the pack's time zone, inclusive;
either end may be left open. Records outside it are read, checked and kept as history, not judged."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from engine.language.values import parse_day


@dataclass(frozen=True, slots=True)
class Period:
    start: dt.date | None  # the first day judged
    end: dt.date | None  # the last day judged

    @classmethod
    def parse(cls, text: str) -> Period:
        """``2025-10-01..2026-09-30``, ``2025-10-01..`` or ``..2026-09-30``; ValueError says what is wrong."""
        first, dots, last = text.strip().partition("..")
        if not dots:
            raise ValueError(f'"{text}" is not FROM..TO (two dates joined by "..", e.g. 2026-01-01..2026-03-31)')
        start, end = _day(first, "FROM"), _day(last, "TO")
        if start is None and end is None:
            raise ValueError(f'"{text}" gives neither end: leave --period out to judge every record')
        if start is not None and end is not None and end < start:
            raise ValueError(f'"{text}" ends before it begins')
        return cls(start, end)

    def bounds(self, tz: dt.tzinfo) -> tuple[dt.datetime | None, dt.datetime | None]:
        """The first moment judged and the first moment after the period (None: open), in UTC: two
        times of one zone object compare as wall clocks in Python, which a DST change makes wrong."""
        low = None if self.start is None else dt.datetime.combine(self.start, dt.time(), tz).astimezone(dt.UTC)
        high = None
        if self.end is not None and self.end < dt.date.max:
            high = dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.UTC)
        return low, high

    def __str__(self) -> str:
        return f"{self.start.isoformat() if self.start else ''}..{self.end.isoformat() if self.end else ''}"


def _day(text: str, what: str) -> dt.date | None:
    text = text.strip()
    if not text:
        return None
    try:
        return parse_day(text)
    except ValueError:
        raise ValueError(f'{what} "{text}" is not a date (YYYY-MM-DD)') from None


def within(time: dt.datetime | None, bounds: tuple[dt.datetime | None, dt.datetime | None]) -> bool:
    """Whether a record at ``time`` is judged: in the period, or without a time (it cannot be placed
    outside, and a missing time must never hide a record from the audit)."""
    if time is None:
        return True
    low, high = bounds
    return (low is None or time >= low) and (high is None or time < high)
