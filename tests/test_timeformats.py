"""The compiled strptime formats of source maps give what datetime.strptime gives: the same time, no
match where it finds none, an error where it matches a day that does not exist."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from engine.inputs.timeformats import compile_format

FORMATS = ["%m/%d/%Y %I:%M %p", "%m/%d/%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%Y%m%d", "%d %b %Y %H:%M", "%m/%d/%y",
           "%B %d, %Y %I:%M:%S.%f %p", "%d/%m/%Y  %H:%M", "%Y-%m-%dT%H:%M", "%j %Y"]


def _strptime(text: str, fmt: str) -> object:
    try:
        return dt.datetime.strptime(text, fmt)
    except ValueError as exc:
        return None if str(exc).startswith(("time data", "unconverted data")) else "no such time"


def _compiled(text: str, fmt: str) -> object:
    try:
        return compile_format(fmt)(text)
    except ValueError:
        return "no such time"


def _texts(fmt: str, rng: random.Random) -> list[str]:
    """Times written in ``fmt``, some then damaged as an export damages them (a digit dropped, case
    changed, a character inserted: 9, a space, a slash, a letter, 60)."""
    texts = []
    for _ in range(1500):
        moment = dt.datetime(rng.randint(1900, 2099), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                             rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999))
        text = moment.strftime(fmt)
        if rng.random() < 0.3:
            text = text.replace("0", "", 1) if rng.random() < 0.5 else text.lower()
        if rng.random() < 0.2:
            cut = rng.randint(0, len(text))
            text = text[:cut] + rng.choice(["9", " ", "/", "x", "60", ":"]) + text[rng.randint(cut, len(text)):]
        texts.append(text)
    return texts + ["02/30/2026 10:00 AM", "13/01/2026", "00/10/2026 10:00", "2/3/26", " 2/3/2026 9:05 pm"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_compiled_formats_agree_with_strptime(fmt: str) -> None:
    rng = random.Random(fmt)
    differ = [(text, _strptime(text, fmt), _compiled(text, fmt)) for text in _texts(fmt, rng)
              if _strptime(text, fmt) != _compiled(text, fmt)]
    assert differ == []


def test_twelve_o_clock_and_two_digit_years() -> None:
    parse = compile_format("%m/%d/%y %I:%M %p")
    assert parse("03/02/26 12:05 AM") == dt.datetime(2026, 3, 2, 0, 5)
    assert parse("03/02/26 12:05 PM") == dt.datetime(2026, 3, 2, 12, 5)
    assert parse("03/02/69 01:05 pm") == dt.datetime(1969, 3, 2, 13, 5)
    assert parse("03/02/2026 01:05 PM") is None
