"""The JSON report: the canonical form of SPEC section 7, written as the engine built it."""

from __future__ import annotations

import json
from typing import Any, TextIO

import orjson

from engine.results import Report

_INDENT = orjson.OPT_INDENT_2


def render(report: Report, out: TextIO) -> None:
    """Write ``report`` as indented UTF-8 JSON, keys in the report's (SPEC's readable) order."""
    dump(report.to_json(lazy=True), out)


def dump(data: dict[str, Any], out: TextIO) -> None:
    """Write ``data`` as the JSON report is written (the SARIF log is written the same way).

    The bytes are exactly those of ``json.dump(data, out, indent=2, ensure_ascii=False,
    allow_nan=False)`` plus a newline: keys in insertion order (the documented order, already
    deterministic), NaN/Infinity refused. The standard library's encoder walks an indented
    document in Python (1.2 s of a 42 MB report); orjson writes each top-level value, and each
    entry of a top-level list, in C. Streamed entry by entry, not built as one string (a report of
    100,000 findings is ~75 MB of text; the findings lists are lazy); the command line writes every
    report to a temporary file renamed into place only when rendering succeeded, so a failure
    leaves no partial file."""
    if not isinstance(data, dict) or not data or any(type(key) is not str for key in data):
        out.write(_encoded(data, 0))
        out.write("\n")
        return
    lead = "{\n  "
    for key, value in data.items():
        out.write(lead)
        out.write(json.dumps(key, ensure_ascii=False))
        out.write(": ")
        if isinstance(value, list) and value:
            inner = "[\n    "
            for entry in value:
                out.write(inner)
                out.write(_encoded(entry, 2))
                inner = ",\n    "
            out.write("\n  ]")
        else:
            out.write(_encoded(value, 1))
        lead = ",\n  "
    out.write("\n}\n")


def _encoded(value: Any, depth: int) -> str:
    """``value`` as json.dumps(indent=2, ensure_ascii=False, allow_nan=False) writes it when it
    stands ``depth`` levels deep. orjson where its bytes are the same; the standard library for
    what orjson writes differently (floats Python writes with an exponent: 1e-05, 1e+16) or not
    at all (integers beyond 64 bits, lone surrogates), or for types JSON has no form for, so the
    standard library's own error is raised."""
    if _orjson_writes_alike(value):
        try:
            text = orjson.dumps(value, option=_INDENT).decode()
        except orjson.JSONEncodeError:
            text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    else:
        text = json.dumps(value, indent=2, ensure_ascii=False, allow_nan=False)
    # A raw newline only ever stands between tokens: inside a string it is written \n.
    return text.replace("\n", "\n" + "  " * depth) if depth else text


def _orjson_writes_alike(value: Any) -> bool:
    """Whether ``value`` holds only what orjson writes byte for byte as json.dumps does: str keys;
    str, int, bool and None; finite floats Python writes without an exponent (1e-4 <= |x| < 1e16,
    or 0); lists, tuples and dicts of those."""
    stack = [value]
    pop, push = stack.pop, stack.extend
    containers: set[int] = set()  # a value holding itself: the standard library says so
    while stack:
        item = pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float:
            magnitude = abs(item)
            if magnitude and not 1e-4 <= magnitude < 1e16:  # also False for NaN and infinities
                return False
        elif kind is dict or kind is list or kind is tuple:
            if id(item) in containers:
                return False
            containers.add(id(item))
            if kind is not dict:
                push(item)
                continue
            for key in item:
                if type(key) is not str:
                    return False
            push(item.values())
        else:
            return False
    return True
