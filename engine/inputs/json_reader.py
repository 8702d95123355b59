"""JSON (an array of objects) and NDJSON (an object a line) exports; duplicate keys and lone
surrogates reject the record."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from engine.errors import InputError
from engine.inputs.builder import RecordBuilder
from engine.inputs.files import BOM, Lines, LineTooLong
from engine.language.loader import LONE_SURROGATE
from engine.language.model import Record, Rejected
from engine.language.values import (
    quote,
)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class _Duplicated(dict[str, Any]):
    """A JSON object in which ``key`` appears more than once (json keeps the last value, silently)."""

    __slots__ = ("key",)

    def __init__(self, pairs: list[tuple[str, Any]], key: str) -> None:
        super().__init__(pairs)
        self.key = key


class _Objects:
    """The object_pairs_hook of a reader: builds each JSON object, and notes the first key seen twice
    in one object (None if none was) since ``_loads`` began. Holds the reader's decoder: json.loads
    with any option builds a new one per call, which cost more than the hook does."""

    def __init__(self) -> None:
        self.duplicated: str | None = None
        self.decode = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=self).decode

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        made = dict(pairs)
        if len(made) == len(pairs):
            return made
        keys: set[str] = set()
        for key, _ in pairs:
            if key in keys:
                break
            keys.add(key)
        if self.duplicated is None:
            self.duplicated = key
        return _Duplicated(pairs, key)


def _duplicated_key(value: Any) -> str | None:
    """The duplicated key of the first object in ``value`` (at any depth) that has one."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _Duplicated):
            return item.key
        if isinstance(item, dict):
            stack.extend(reversed(item.values()))
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return None


def _loads(text: str, objects: _Objects) -> Any:
    if text.startswith("\ufeff"):  # as json.loads says it
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    objects.duplicated = None
    value = objects.decode(text)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):  # rare: only then walk the value
        raise ValueError("a lone surrogate escape (\\ud800-\\udfff) is not a character")
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a string with a lone surrogate (a pair decodes to one character)."""
    if isinstance(value, str):
        return LONE_SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _json_problem(exc: Exception, one_line: bool = False) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply"
    if isinstance(exc, json.JSONDecodeError):
        where = f"column {exc.colno}" if one_line else f"line {exc.lineno} column {exc.colno}"
        return f"not valid JSON ({exc.msg} at {where})"
    return f"not valid JSON ({str(exc).split(':')[0]})"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return names.get(type(value), "a number")


def read_json(handle: BinaryIO, builder: RecordBuilder) -> Iterator[Record | Rejected]:
    path = builder.path
    with handle:
        data = handle.read()
    digest = hashlib.sha256(data).hexdigest()
    data = data[3:] if data.startswith(BOM) else data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{path}: not UTF-8 (invalid byte at line {line})") from None
    objects = _Objects()
    try:
        doc = _loads(text, objects)
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path}: {_json_problem(exc)}") from None
    del text, data
    duplicates = objects.duplicated is not None  # rare: only then look for the objects that have them
    if isinstance(doc, _Duplicated):
        raise InputError(f"{path}: duplicate key {quote(doc.key)} in the top-level object")
    if isinstance(doc, dict) and isinstance(doc.get("records"), list):
        doc = doc["records"]
    if not isinstance(doc, list):
        raise InputError(f'{path}: expected an array of objects or {{"records": [...]}}, got {_kind(doc)}')
    for position, item in enumerate(doc, 1):
        if not isinstance(item, dict):
            yield builder.reject(position, f"expected a JSON object, got {_kind(item)}")
        elif duplicates and (key := _duplicated_key(item)) is not None:
            yield builder.reject(position, f"duplicate key {quote(key)}")
        else:
            yield builder.build(item, position)
    builder.stats.sha256 = digest


def read_ndjson(handle: BinaryIO, builder: RecordBuilder) -> Iterator[Record | Rejected]:
    for line, item in ndjson_objects(handle, builder):
        yield item if isinstance(item, Rejected) else builder.build(item, line)


def ndjson_objects(handle: BinaryIO, builder: RecordBuilder,
                   what: str = "a JSON object") -> Iterator[tuple[int, dict[str, Any] | Rejected]]:
    """Each non-blank line's object, or its rejection (too long, a NUL byte, not UTF-8, not JSON, not
    an object, a key twice), at its line number; the file's sha256 is noted once it is read."""
    objects = _Objects()
    with handle:
        lines = Lines(handle)
        while True:
            try:
                line = next(lines)
            except StopIteration:
                break
            except LineTooLong as exc:
                yield lines.number, builder.reject(lines.number, str(exc))
                continue
            if not line.strip():
                continue
            if b"\x00" in line:
                yield lines.number, builder.reject(lines.number, "line contains a NUL byte")
                continue
            try:
                item = _loads(line.decode("utf-8").rstrip("\r\n"), objects)
            except UnicodeDecodeError as exc:
                yield lines.number, builder.reject(lines.number, f"not UTF-8 (invalid byte at column {exc.start + 1})")
                continue
            except (ValueError, RecursionError) as exc:
                yield lines.number, builder.reject(lines.number, _json_problem(exc, one_line=True))
                continue
            if not isinstance(item, dict):
                yield lines.number, builder.reject(lines.number, f"expected {what}, got {_kind(item)}")
            elif objects.duplicated is not None:
                yield lines.number, builder.reject(lines.number, f"duplicate key {quote(objects.duplicated)}")
            else:
                yield lines.number, item
        builder.stats.sha256 = lines.digest.hexdigest()
