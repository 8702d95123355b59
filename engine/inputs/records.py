"""Inputs bound to record types and read as a stream of records or rejections (CSV, JSON, NDJSON)."""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import PurePath
from typing import BinaryIO

from engine.errors import InputError, UsageError
from engine.inputs.builder import InputStats, RecordBuilder, Seen, did_you_mean
from engine.inputs.csv_reader import read_csv
from engine.inputs.files import MAX_LINE, check_input, open_input, regular_file, wide_encoding
from engine.inputs.json_reader import read_json, read_ndjson
from engine.language.model import Record, RecordType, Rejected
from engine.privacy import REVEAL_ALL, Privacy

FORMATS = {".csv": "csv", ".json": "json", ".ndjson": "ndjson", ".jsonl": "ndjson"}
_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def bind_inputs(args: list[str], types: Mapping[str, RecordType]) -> list[tuple[str | None, str]]:
    """``TYPE=PATH`` binds explicitly; else the stem names the type (``sessions.csv``); else None."""
    bound: list[tuple[str | None, str]] = []
    for arg in args:
        prefix, sep, path = arg.partition("=")
        if sep and prefix in types:
            if not path:
                raise UsageError(f'no file after "{arg}"')
            bound.append((prefix, path))
        elif sep and _TYPE_NAME.fullmatch(prefix) and not os.path.isfile(arg):
            raise UsageError(f'unknown record type "{prefix}" in "{arg}"{did_you_mean(prefix, types)}; '
                             f"known types: {', '.join(sorted(types)) or 'none'}")
        else:
            bound.append((_type_of_stem(arg, types), arg))
    return bound


def _type_of_stem(path: str, types: Mapping[str, RecordType]) -> str | None:
    stem = PurePath(path).stem
    if stem in types:
        return stem
    if stem.endswith("s") and stem[:-1] in types:
        return stem[:-1]
    return None



def read_input(path: str, record_type: str | None, types: Mapping[str, RecordType], tz: dt.tzinfo,
               seen: Seen, stats: InputStats, privacy: Privacy = REVEAL_ALL,
               builder: RecordBuilder | None = None) -> Iterator[Record | Rejected]:
    """Stream the records of one file; raises InputError (eagerly for a missing file or format).

    Rejection reasons quote identifying values through ``privacy``.
    """
    fmt = check_format(path)
    if record_type is not None and record_type not in types:
        raise UsageError(f'unknown record type "{record_type}"{did_you_mean(record_type, types)}')
    handle = open_text(path, fmt)
    builder = builder or RecordBuilder(path, record_type, types, tz, seen, stats, privacy)
    readers = {"csv": read_csv, "json": read_json, "ndjson": read_ndjson}
    return readers[fmt](handle, builder)


def check_format(path: str) -> str:
    """The format of a file read without a map, from its extension; InputError for any other."""
    regular_file(path)
    suffix = PurePath(path).suffix.lower()
    if suffix not in FORMATS:
        shown = f'"{suffix}"' if suffix else "no extension"
        raise InputError(f"{path}: unknown input format ({shown}; expected .csv, .json, .ndjson or .jsonl)")
    return FORMATS[suffix]


def open_text(path: str, fmt: str) -> BinaryIO:
    """The file opened at its start, refused when it is UTF-16 or UTF-32 or its lines end in CR alone."""
    handle = open_input(path)
    wide = wide_encoding(handle.read(64))
    if wide:
        handle.close()
        raise InputError(f"{path}: {wide} text; save the export as UTF-8")
    handle.seek(0)
    if fmt != "json" and b"\r" in handle.readline(MAX_LINE).rstrip(b"\r\n"):
        # lines ended by CR alone (classic Mac OS) would read as one line: one row, or one bad record
        handle.close()
        raise InputError(f"{path}: lines end in a carriage return alone; save the export with LF or CRLF "
                         "line endings")
    handle.seek(0)
    return handle


__all__ = ["InputStats", "Seen", "bind_inputs", "check_input", "read_input"]
