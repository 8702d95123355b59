"""strptime formats compiled once to a regular expression: the same answers as ``datetime.strptime``
(C locale) for the directives exports use, at a tenth of its cost (strptime re-reads its format and
locale on every call: about 15 µs a value, a dozen times a session record).

A format with a directive not listed here is left to strptime itself. tests/test_timeformats.py
checks the two agree on generated times and texts.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Callable

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_FULL_MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september",
                "october", "november", "december")
# directive -> (group name, pattern): what _strptime's TimeRE accepts for each in the C locale
_DIRECTIVES = {
    "Y": ("Y", r"\d\d\d\d"),
    "y": ("y", r"\d\d"),
    "m": ("m", r"1[0-2]|0[1-9]|[1-9]"),
    "d": ("d", r"3[01]|[12]\d|0[1-9]|[1-9]| [1-9]"),
    "H": ("H", r"2[0-3]|[0-1]\d|\d"),
    "I": ("I", r"1[0-2]|0[1-9]|[1-9]"),
    "M": ("M", r"[0-5]\d|\d"),
    "S": ("S", r"6[0-1]|[0-5]\d|\d"),
    "f": ("f", r"[0-9]{1,6}"),
    "p": ("p", r"am|pm"),
    "b": ("b", "|".join(_MONTHS)),
    "B": ("B", "|".join(_FULL_MONTHS)),
}

Parser = Callable[[str], "dt.datetime | None"]


@functools.lru_cache(maxsize=64)
def compile_format(fmt: str) -> Parser:
    """A parser of ``fmt``: None where strptime finds no match; ValueError where it matches a date that
    does not exist (02/30/2026), as strptime raises."""
    pattern = _pattern(fmt)
    if pattern is None:
        return functools.partial(_strptime, fmt)
    regex = re.compile(pattern, re.IGNORECASE)
    names = list(regex.groupindex)
    build = _builder(names)

    def parse(text: str) -> dt.datetime | None:
        found = regex.match(text)
        return None if found is None else build(found.groups())

    return parse


def _strptime(fmt: str, text: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text, fmt)
    except ValueError as exc:
        if str(exc).startswith(("time data", "unconverted data")):
            return None
        raise


def _pattern(fmt: str) -> str | None:
    """The regular expression of ``fmt`` (None when it has a directive left to strptime, or one twice)."""
    out: list[str] = []
    used: set[str] = set()
    index = 0
    while index < len(fmt):
        char = fmt[index]
        if char == "%":
            directive = fmt[index + 1:index + 2]
            index += 2
            if directive == "%":
                out.append("%")
                continue
            if directive not in _DIRECTIVES or directive in used:
                return None
            used.add(directive)
            name, body = _DIRECTIVES[directive]
            out.append(f"(?P<{name}>{body})")
            continue
        out.append(r"\s+" if char.isspace() else re.escape(char))
        index += 1
        while char.isspace() and index < len(fmt) and fmt[index].isspace():
            index += 1  # strptime reads a run of whitespace in the format as one
    if "I" in used and "H" in used:
        return None
    return "".join(out) + r"\Z"


def _builder(names: list[str]) -> Callable[[tuple[str, ...]], dt.datetime]:
    """The datetime from a match's groups, with each directive's group position found once."""
    at = {name: index for index, name in enumerate(names)}
    year4, year2, month, month_abbr, month_name = (at.get(k) for k in ("Y", "y", "m", "b", "B"))
    day, hour24, hour12, meridian, minute, second, fraction = (at.get(k) for k in "dHIpMSf")

    def build(groups: tuple[str, ...]) -> dt.datetime:
        year = 1900
        if year4 is not None:
            year = int(groups[year4])
        elif year2 is not None:
            short = int(groups[year2])
            year = short + (1900 if short >= 69 else 2000)
        number = 1
        if month is not None:
            number = int(groups[month])
        elif month_abbr is not None:
            number = _MONTHS.index(groups[month_abbr].lower()) + 1
        elif month_name is not None:
            number = _FULL_MONTHS.index(groups[month_name].lower()) + 1
        hours = int(groups[hour24]) if hour24 is not None else 0
        if hour12 is not None:
            hours = int(groups[hour12])
            half = groups[meridian].lower() if meridian is not None else ""
            if half == "am" and hours == 12:
                hours = 0
            elif half == "pm" and hours != 12:
                hours += 12
        seconds = int(groups[second]) if second is not None else 0
        if seconds > 59:  # strptime accepts 60 and 61 and then fails to build the time
            raise ValueError("second must be in 0..59")
        micro = int(groups[fraction].ljust(6, "0")) if fraction is not None else 0
        return dt.datetime(year, number, int(groups[day]) if day is not None else 1, hours,
                           int(groups[minute]) if minute is not None else 0, seconds, micro)

    return build
