"""Readers: conversion to declared types, rejected records with line numbers, binding, input errors."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.errors import InputError, UsageError
from engine.inputs.records import InputStats, Seen, bind_inputs, read_input
from engine.language.model import Field, Record, RecordType, Rejected
from engine.language.values import timezone
from tests.helpers import write

UTC = dt.UTC
LA = timezone("America/Los_Angeles")


def _types() -> dict[str, RecordType]:
    session = RecordType("session", "session_id", "patient_id", "session_start", {
        "session_id": Field("session_id", "string"),
        "patient_id": Field("patient_id", "string"),
        "session_start": Field("session_start", "datetime"),
        "route": Field("route", "enum", ("IV", "IM", "IN", "PO")),
        "dose_mg": Field("dose_mg", "number", unit="mg"),
        "visits": Field("visits", "integer"),
        "escort_present": Field("escort_present", "boolean"),
        "observed": Field("observed", "duration"),
    })
    screening = RecordType("screening", "screening_id", "patient_id", "screened_on", {
        "screening_id": Field("screening_id", "string"),
        "patient_id": Field("patient_id", "string"),
        "screened_on": Field("screened_on", "date"),
    })
    return {"session": session, "screening": screening}


@pytest.fixture
def types() -> dict[str, RecordType]:
    return _types()


Items = list[Record | Rejected]
Read = Callable[..., tuple[Items, InputStats]]


@pytest.fixture
def read(types: dict[str, RecordType]) -> Read:
    """Read one file to the end; ``seen`` may be shared to read several files of one run."""

    def run(path: Path, record_type: str | None = "session", tz: dt.tzinfo = UTC,
            seen: Seen | None = None) -> tuple[Items, InputStats]:
        stats = InputStats(str(path), record_type)
        items = list(read_input(str(path), record_type, types, tz, Seen() if seen is None else seen, stats))
        return items, stats

    return run


def rejected(items: Items) -> list[tuple[int, str]]:
    return [(item.line, item.reason) for item in items if isinstance(item, Rejected)]


def accepted(items: Items) -> list[Record]:
    return [item for item in items if isinstance(item, Record)]


# --- conversion -------------------------------------------------------------------------------

@pytest.mark.parametrize(("column", "cell", "expected"), [
    ("escort_present", "yes", True),
    ("escort_present", "no", False),
    ("escort_present", "Y", True),
    ("escort_present", "0", False),
    ("escort_present", "TRUE", True),
    ("dose_mg", "12.5", 12.5),
    ("dose_mg", " 84 ", 84.0),
    ("visits", "3", 3),
    ("route", "IV", "IV"),
    ("observed", "30m", dt.timedelta(minutes=30)),
    ("session_start", "2026-03-02T09:15:00+01:00",
     dt.datetime(2026, 3, 2, 9, 15, tzinfo=dt.timezone(dt.timedelta(hours=1)))),
    ("session_start", "2026-03-02T09:15:00", dt.datetime(2026, 3, 2, 9, 15, tzinfo=LA)),
    ("session_start", "2026-03-02 09:15", dt.datetime(2026, 3, 2, 9, 15, tzinfo=LA)),
], ids=["bool-yes", "bool-no", "bool-Y", "bool-0", "bool-TRUE", "number", "number-padded", "integer",
        "enum", "duration", "datetime-offset", "datetime-naive-is-pack-tz", "datetime-space-no-seconds"])
def test_csv_cell_converts_to_declared_type(tmp_path: Path, read: Read, column: str, cell: str,
                                             expected: Any) -> None:
    path = write(tmp_path, "in.csv", f"session_id,patient_id,{column}\nS-1,P-1,\"{cell}\"\n")
    items, _ = read(path, tz=LA)
    [record] = accepted(items)
    assert record.values[column] == expected
    assert type(record.values[column]) is type(expected)
    if column == "session_start":
        assert record.time == expected
        assert record.time is not None and record.time.utcoffset() == expected.utcoffset()


def test_naive_time_in_dst_gap_resolves_as_first_occurrence(tmp_path: Path, read: Read) -> None:
    # 2026-03-08 02:30 does not exist in Los Angeles; fold=0 reads it with the offset before the gap.
    path = write(tmp_path, "in.csv", "session_id,patient_id,session_start\nS-1,P-1,2026-03-08 02:30\n")
    [record] = accepted(read(path, tz=LA)[0])
    assert record.time is not None and record.time.fold == 0
    assert record.time.astimezone(UTC) == dt.datetime(2026, 3, 8, 10, 30, tzinfo=UTC)


def test_json_values_go_through_the_same_conversion(tmp_path: Path, read: Read) -> None:
    path = write(tmp_path, "in.json", '[{"session_id": 7, "patient_id": "P-1", "dose_mg": "84.0",'
                                      ' "escort_present": "yes", "visits": 2.0, "route": "PO"}]')
    [record] = accepted(read(path)[0])
    assert (record.key, record.patient) == ("7", "P-1")
    assert record.values == {"session_id": "7", "patient_id": "P-1", "dose_mg": 84.0,
                             "escort_present": True, "visits": 2, "route": "PO"}


def test_date_time_field_gives_midnight_in_pack_timezone(tmp_path: Path, read: Read) -> None:
    path = write(tmp_path, "in.csv", "screening_id,patient_id,screened_on\nC-1,P-1,2026-03-02\n")
    [record] = accepted(read(path, "screening", tz=LA)[0])
    assert record.values["screened_on"] == dt.date(2026, 3, 2)
    assert record.time == dt.datetime(2026, 3, 2, tzinfo=LA)


@pytest.mark.parametrize(("name", "content"), [
    ("in.csv", "session_id,patient_id,session_start,dose_mg,escort_present\nS-1,P-1,,,\n"),
    ("in.csv", "session_id,patient_id,session_start,dose_mg,escort_present\nS-1,P-1,  ,\t, \n"),
    ("in.ndjson", ('{"session_id": "S-1", "patient_id": "P-1", "session_start": null, "dose_mg": null,'
                  ' "escort_present": " "}\n')),
    ("in.json", '{"records": [{"session_id": "S-1", "patient_id": "P-1", "dose_mg": null}]}'),
], ids=["csv-empty-cells", "csv-whitespace-cells", "ndjson-null", "json-null-and-absent"])
def test_missing_values_are_absent_not_false_or_zero(tmp_path: Path, read: Read, name: str,
                                                     content: str) -> None:
    items, _ = read(write(tmp_path, name, content))
    [record] = accepted(items)
    assert record.values == {"session_id": "S-1", "patient_id": "P-1"}
    assert record.time is None


# --- rejected records -------------------------------------------------------------------------

CSV_WITH_PROBLEMS = (
    "session_id,patient_id,session_start,dose_mg,escort_present,note\n"  # 1
    "S-1,P-1,2026-03-02 09:15,12,yes,fine\n"                              # 2
    'S-2,P-1,2026-03-02 10:00,12,no,"a note\n'                            # 3
    'over two lines"\n'                                                   # 4
    "S-3,P-1,2026-03-02 11:00,12,5,no,extra\n"                            # 5
    "S-4,,2026-03-02 12:00,12,no,\n"                                      # 6
    ",P-1,2026-03-02 12:00,12,no,\n"                                      # 7
    'S-5,P-2,yesterday,"12,5",maybe,\n'                                   # 8
    "\n"                                                                  # 9
    "S-1,P-3,2026-03-03 09:00,10,no,\n"                                   # 10
    "S-6,P-3,2026-03-03 09:00,10,no,nul\x00here\n"                        # 11
    "S-7,P-3,2026-03-03 10:00,10,no\n"                                    # 12
    "S-8,P-3,2026-03-03 11:00,10,no,\n"                                   # 13
)


def test_csv_rejects_rows_at_their_physical_line(tmp_path: Path, read: Read) -> None:
    path = write(tmp_path, "sessions.csv", CSV_WITH_PROBLEMS)
    items, stats = read(path)
    assert rejected(items) == [
        (5, "row has 7 cells, header has 6"),
        (6, "patient_id: missing patient"),
        (7, "session_id: missing record key"),
        (8, ('session_start: "yesterday" is not a datetime; dose_mg: "12,5" is not a number; '
            'escort_present: "maybe" is not a boolean')),
        (10, f'duplicate session_id "S-1" (first at {path}:2)'),
        (11, "row contains a NUL byte"),
        (12, "row has 5 cells, header has 6"),
    ]
    assert [(r.key, r.line) for r in accepted(items)] == [("S-1", 2), ("S-2", 3), ("S-8", 13)]
    assert all(item.type == "session" and item.path == str(path) for item in items)
    assert (stats.records_read, stats.records_judged, stats.records_rejected) == (10, 3, 7)


def test_csv_oversized_cell_is_rejected_and_reading_goes_on(tmp_path: Path, read: Read) -> None:
    big = "x" * 600_000
    content = f'session_id,patient_id,note\nS-1,P-1,"{big}\n{big}"\nS-2,P-1,\n'
    items, _ = read(write(tmp_path, "in.csv", content))
    assert rejected(items) == [(2, "a cell is longer than 1 MiB")]
    assert [r.key for r in accepted(items)] == ["S-2"]


NDJSON_WITH_PROBLEMS = (
    b'{"session_id": "S-1", "patient_id": "P-1"}\n'     # 1
    b'{"session_id": "S-2", \n'                         # 2
    b"[1, 2]\n"                                         # 3
    b"\n"                                               # 4
    b'{"session_id": "S-3", "patient_id": "P\x00"}\n'   # 5
    b'{"session_id": "S-4", "patient_id": "\xff"}\n'    # 6
    b'{"session_id": "S-5", "dose_mg": {"value": 5}}\n'  # 7
    b"NaN\n"                                            # 8
    + b"[" * 100_000 + b"\n"                            # 9
    + b'{"session_id": "S-6", "patient_id": "P-1"}'     # 10, no final newline
)


def test_ndjson_rejects_bad_lines_and_goes_on(tmp_path: Path, read: Read) -> None:
    items, stats = read(write(tmp_path, "sessions.ndjson", NDJSON_WITH_PROBLEMS))
    assert rejected(items) == [
        (2, "not valid JSON (Expecting property name enclosed in double quotes at column 23)"),
        (3, "expected a JSON object, got an array"),
        (5, "line contains a NUL byte"),
        (6, "not UTF-8 (invalid byte at column 38)"),
        (7, "patient_id: missing patient; dose_mg: a dict is not a number"),
        (8, "not valid JSON (NaN is not allowed)"),
        (9, "JSON nested too deeply"),
    ]
    assert [(r.key, r.line) for r in accepted(items)] == [("S-1", 1), ("S-6", 10)]
    assert stats.records_read == stats.records_judged + stats.records_rejected == 9


def test_lone_surrogates_are_rejected_pairs_are_characters(tmp_path: Path, read: Read) -> None:
    """A "\\ud800" escape parses but is no character: no report could be written with it."""
    content = (b'{"session_id": "S-1\\ud800", "patient_id": "P-1"}\n'
               b'{"session_id": "S-2", "patient_id": "P-1", "\\udfff": 1}\n'
               b'{"session_id": "S-3 \\ud83d\\ude00", "patient_id": "P-1"}\n')
    items, _ = read(write(tmp_path, "sessions.ndjson", content))
    reason = "not valid JSON (a lone surrogate escape (\\ud800-\\udfff) is not a character)"
    assert rejected(items) == [(1, reason), (2, reason)]
    assert [r.key for r in accepted(items)] == ["S-3 \U0001f600"]
    with pytest.raises(InputError, match="a lone surrogate escape"):
        read(write(tmp_path, "sessions.json", b'[{"session_id": "S-1\\ud800", "patient_id": "P-1"}]'))


def test_ndjson_line_longer_than_limit_is_rejected(tmp_path: Path, read: Read) -> None:
    content = b'{"session_id": "S-1", "patient_id": "P-1"}\n{"note": "' + b"x" * (2 << 20) + b'"}\n' \
              b'{"session_id": "S-2", "patient_id": "P-1"}\n'
    items, _ = read(write(tmp_path, "in.jsonl", content))
    assert rejected(items) == [(2, "line is longer than 1 MiB")]
    assert [(r.key, r.line) for r in accepted(items)] == [("S-1", 1), ("S-2", 3)]


@pytest.mark.parametrize("content", [
    '[{"session_id": "S-1", "patient_id": "P-1"}, 5, null, {"session_id": "S-2", "patient_id": "P-1"}]',
    ('{"records": [{"session_id": "S-1", "patient_id": "P-1"}, 5, null,\n'
    ' {"session_id": "S-2", "patient_id": "P-1"}]}'),
], ids=["array", "records-object"])
def test_json_element_that_is_not_an_object_is_rejected_by_position(tmp_path: Path, read: Read,
                                                                     content: str) -> None:
    items, _ = read(write(tmp_path, "in.json", content))
    assert rejected(items) == [(2, "expected a JSON object, got a number"),
                               (3, "expected a JSON object, got null")]
    assert [(r.key, r.line) for r in accepted(items)] == [("S-1", 1), ("S-2", 4)]


def test_duplicate_key_across_files_names_the_first(tmp_path: Path, read: Read) -> None:
    first = write(tmp_path, "a.csv", "session_id,patient_id\nS-1,P-1\nS-2,P-1\n")
    second = write(tmp_path, "b.ndjson", '{"session_id": "S-3", "patient_id": "P-1"}\n'
                                         '{"session_id": "S-2", "patient_id": "P-2"}\n')
    other_type = write(tmp_path, "c.csv", "screening_id,patient_id\nS-2,P-1\n")
    seen = Seen()
    read(first, seen=seen)
    items, _ = read(second, seen=seen)
    assert rejected(items) == [(2, f'duplicate session_id "S-2" (first at {first}:3)')]
    assert rejected(read(other_type, "screening", seen=seen)[0]) == []


@pytest.mark.parametrize(("name", "content"), [
    ("in.csv", b"\xef\xbb\xbfsession_id,patient_id,dose_mg\r\nS-1,P-1,12\r\n\r\nS-2,P-1,\r\n"),
    ("in.ndjson", (b'\xef\xbb\xbf{"session_id": "S-1", "patient_id": "P-1", "dose_mg": 12}\r\n\r\n'
                  b'{"session_id": "S-2", "patient_id": "P-1"}\r\n')),
    ("in.json", (b'\xef\xbb\xbf[{"session_id": "S-1", "patient_id": "P-1", "dose_mg": 12},\r\n'
                b'{"session_id": "S-2", "patient_id": "P-1"}]\r\n')),
], ids=["csv", "ndjson", "json"])
def test_bom_and_crlf_are_normal_input(tmp_path: Path, read: Read, name: str, content: bytes) -> None:
    path = write(tmp_path, name, content)
    items, stats = read(path)
    assert rejected(items) == []
    assert [(r.key, r.values) for r in accepted(items)] == [
        ("S-1", {"session_id": "S-1", "patient_id": "P-1", "dose_mg": 12.0}),
        ("S-2", {"session_id": "S-2", "patient_id": "P-1"}),
    ]
    assert stats.sha256 == hashlib.sha256(content).hexdigest()


# --- binding and dispatch ---------------------------------------------------------------------

@pytest.mark.parametrize(("args", "expected"), [
    (["session=export.csv"], [("session", "export.csv")]),
    (["screening=data/sessions.csv"], [("screening", "data/sessions.csv")]),
    (["data/session.csv"], [("session", "data/session.csv")]),
    (["data/sessions.ndjson", "screenings.json"], [("session", "data/sessions.ndjson"),
                                                   ("screening", "screenings.json")]),
    (["export.csv"], [(None, "export.csv")]),
    (["data/v=2.csv"], [(None, "data/v=2.csv")]),
], ids=["type-equals", "type-equals-beats-stem", "stem", "stem-plus-s", "dispatched", "equals-in-path"])
def test_bind_inputs(types: dict[str, RecordType], args: list[str],
                     expected: list[tuple[str | None, str]]) -> None:
    assert bind_inputs(args, types) == expected


def test_bind_inputs_existing_file_with_equals_is_a_path(tmp_path: Path, types: dict[str, RecordType],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "run=3.csv", "")
    assert bind_inputs(["run=3.csv"], types) == [(None, "run=3.csv")]


@pytest.mark.parametrize(("arg", "message"), [
    ("sesion=x.csv", ('unknown record type "sesion" in "sesion=x.csv" (did you mean "session"?); '
                     "known types: screening, session")),
    ("vitals=x.csv", 'unknown record type "vitals" in "vitals=x.csv"; known types: screening, session'),
    ("session=", 'no file after "session="'),
], ids=["did-you-mean", "no-close-match", "no-path"])
def test_bind_inputs_usage_errors(types: dict[str, RecordType], arg: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        bind_inputs([arg], types)
    assert str(info.value) == message


def test_record_type_column_dispatches_each_record(tmp_path: Path, read: Read) -> None:
    content = ("record_type,session_id,screening_id,patient_id,screened_on,dose_mg\n"
               "session,S-1,,P-1,,12\n"
               "screening,,C-1,P-1,2026-03-02,\n"
               ",S-2,,P-1,,\n"
               "sesion,S-3,,P-1,,\n"
               "screening,,C-2,P-1,02/03/2026,\n")
    items, stats = read(write(tmp_path, "export.csv", content), None)
    assert [(r.type, r.key) for r in accepted(items)] == [("session", "S-1"), ("screening", "C-1")]
    assert [(r.type, r.line, r.reason) for r in items if isinstance(r, Rejected)] == [
        ("?", 4, "record_type: missing record type"),
        ("?", 5, 'record_type: unknown record type "sesion" (did you mean "session"?)'),
        ("screening", 6, 'screened_on: "02/03/2026" is not a date'),
    ]
    assert (stats.records_read, stats.records_judged, stats.records_rejected) == (5, 2, 3)


# --- whole-file errors ------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "content", "message"), [
    ("absent.csv", None, "{path}: no such file"),
    ("folder.csv", "dir", "{path}: is a directory, not a file"),
    ("in.xlsx", "", '{path}: unknown input format (".xlsx"; expected .csv, .json, .ndjson or .jsonl)'),
    ("in.csv", b"session_id,patient_id\nS-1,P-1\nS-2,P\xe9\n", "{path}: not UTF-8 (invalid byte at line 3)"),
    ("in.json", b'[{"session_id": "S-1",\n "patient_id": "P\xe9"}]',
     "{path}: not UTF-8 (invalid byte at line 2)"),
    ("in.json", '[{"session_id": "S-1"},\n {"session_id": }]',
     "{path}: not valid JSON (Expecting value at line 2 column 17)"),
    ("in.json", '{"session_id": "S-1"}',
     '{path}: expected an array of objects or {{"records": [...]}}, got an object'),
    ("in.json", "[" * 100_000 + "]" * 100_000, "{path}: JSON nested too deeply"),
    ("export.csv", "session_id,patient_id\nS-1,P-1\n",
     ("{path}: no record type: name the file after a type (sessions.csv), bind it as TYPE={path}, "
     "or add a record_type column")),
    ("in.csv", "session_id,patient_id,session_id\n",
     '{path}: column "session_id" appears twice in the header'),
], ids=["missing", "directory", "unknown-extension", "csv-not-utf8", "json-not-utf8", "json-unparseable",
        "json-not-array", "json-too-deep", "csv-unbound-without-record-type", "csv-duplicate-column"])
def test_unreadable_input_raises_input_error(tmp_path: Path, read: Read, name: str,
                                             content: str | bytes | None, message: str) -> None:
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        write(tmp_path, name, content)
    with pytest.raises(InputError) as info:
        read(path, None if name == "export.csv" else "session")
    assert str(info.value) == message.format(path=path)


def test_missing_file_fails_before_iteration(types: dict[str, RecordType], tmp_path: Path) -> None:
    path = str(tmp_path / "sessions.csv")
    with pytest.raises(InputError):
        read_input(path, "session", types, UTC, {}, InputStats(path, "session"))
