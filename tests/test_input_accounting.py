"""Every row and line of an input is accounted for: records read = judged + rejected, each at its own
physical line (SPEC 5), whatever the quoting, size, encoding, kind of file or duplicate keys."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine.errors import InputError
from engine.inputs.csv_reader import MAX_ROW_LINES
from engine.inputs.files import MAX_LINE
from engine.inputs.records import InputStats, Seen, check_input, read_input
from engine.language.model import Field, Record, RecordType, Rejected
from engine.language.values import timezone
from tests.helpers import write

UTC = timezone("UTC")
TYPES = {"session": RecordType("session", "session_id", "patient_id", "session_start", {
    "session_id": Field("session_id", "string"),
    "patient_id": Field("patient_id", "string"),
    "session_start": Field("session_start", "datetime"),
    "dose_mg": Field("dose_mg", "number", unit="mg"),
    "note": Field("note", "string"),
})}
HEADER = "session_id,patient_id,session_start,dose_mg,note\n"
NDJSON = '{"session_id": "S-1", "patient_id": "P-1"}\n{"session_id": "S-2", "patient_id": "P-1"}\n'
JSON = '[{"session_id": "S-1", "patient_id": "P-1"}]'
CSV = "session_id,patient_id\nS-1,P-1\n"

Items = list[Record | Rejected]


def read(path: Path, record_type: str | None = "session") -> tuple[Items, InputStats]:
    stats = InputStats(str(path), record_type)
    items = list(read_input(str(path), record_type, TYPES, UTC, Seen(), stats))
    assert stats.records_read == stats.records_judged + stats.records_rejected == len(items)
    return items, stats


def row(n: int, note: str = "ok") -> str:
    return f"S-{n},P-1,2026-03-02 09:00,{n},{note}\n"


def rows(first: int, last: int) -> str:
    return "".join(row(n) for n in range(first, last + 1))


def rejected(items: Items) -> list[tuple[int, str]]:
    return [(item.line, item.reason) for item in items if isinstance(item, Rejected)]


def accepted(items: Items) -> list[tuple[str, int]]:
    return [(item.key, item.line) for item in items if isinstance(item, Record)]


# --- CSV: quotes, line breaks and sizes follow physical lines ------------------------------------

def test_stray_quote_never_closed_rejects_each_row_it_swallowed(tmp_path: Path) -> None:
    # data row 5 (line 6) opens a quote that nothing closes: rows 6-50 used to vanish into its cell
    content = HEADER + rows(1, 4) + row(5, '"approx') + rows(6, 50)
    items, stats = read(write(tmp_path, "in.csv", content))
    assert stats.records_read == 50
    assert accepted(items) == [(f"S-{n}", n + 1) for n in range(1, 5)]
    assert rejected(items) == [(line, "an opening quote at line 6 is never closed") for line in range(6, 52)]


def test_stray_quote_in_last_row_rejects_that_row(tmp_path: Path) -> None:
    items, stats = read(write(tmp_path, "in.csv", HEADER + rows(1, 3) + row(4, '"approx').rstrip("\n")))
    assert rejected(items) == [(5, "an opening quote at line 5 is never closed")]
    assert stats.records_read == 4


def test_stray_quote_closed_by_a_later_quote_rejects_every_line_between(tmp_path: Path) -> None:
    # the stray quote on line 3 closes at the quoted note of line 6; after it, rows read as usual
    content = HEADER + row(1) + row(2, '"stray') + rows(3, 4) + row(5, '"slow, steady"') + rows(6, 7)
    items, stats = read(write(tmp_path, "in.csv", content))
    reason = "a quote opened at line 3 closes at line 6: the row has 6 cells, header has 5"
    assert rejected(items) == [(line, reason) for line in range(3, 7)]
    assert accepted(items) == [("S-1", 2), ("S-6", 7), ("S-7", 8)]
    assert stats.records_read == 7


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_quoted_cell_with_line_breaks_is_one_record_at_its_first_line(tmp_path: Path, newline: str) -> None:
    content = (HEADER + row(1) + row(2, '"calm,\nthen drowsy\n\ndischarged"') + rows(3, 4)).replace("\n", newline)
    items, stats = read(write(tmp_path, "in.csv", "\ufeff" + content))
    assert accepted(items) == [("S-1", 2), ("S-2", 3), ("S-3", 7), ("S-4", 8)]
    notes = {item.key: item.values.get("note") for item in items if isinstance(item, Record)}
    assert notes["S-2"] == f"calm,{newline}then drowsy{newline}{newline}discharged"
    assert stats.records_read == 4


def test_quote_open_past_the_row_bound_rejects_each_line_to_its_close(tmp_path: Path) -> None:
    # a quote that closes 1,500 lines later, with the row's shape right: no longer one record
    swallowed = "".join(f"text {n}\n" for n in range(1, 1500))
    content = HEADER + row(1) + row(2, '"begins') + swallowed + 'ends"\n' + rows(3, 4)
    items, stats = read(write(tmp_path, "in.csv", content))
    reason = (f"a quote opened at line 3 is still open at line {3 + MAX_ROW_LINES - 1} "
              f"(a row may span {MAX_ROW_LINES:,} lines and 4 MiB)")
    assert rejected(items) == [(line, reason) for line in range(3, 1504)]  # the closing line included
    assert accepted(items) == [("S-1", 2), ("S-3", 1504), ("S-4", 1505)]
    assert stats.records_read == 1504


def test_quoted_cell_spanning_exactly_the_row_bound_is_one_record(tmp_path: Path) -> None:
    note = '"' + "\n" * (MAX_ROW_LINES - 1) + 'end"'
    items, stats = read(write(tmp_path, "in.csv", HEADER + row(1, note) + row(2)))
    assert accepted(items) == [("S-1", 2), ("S-2", 2 + MAX_ROW_LINES)]
    assert stats.records_read == 2


def test_quote_open_past_the_row_bound_to_the_end_rejects_every_line(tmp_path: Path) -> None:
    content = HEADER + row(1) + row(2, '"approx') + rows(3, 3000)
    items, stats = read(write(tmp_path, "in.csv", content))
    assert accepted(items) == [("S-1", 2)]
    assert [line for line, _ in rejected(items)] == list(range(3, 3002))
    assert {reason for _, reason in rejected(items)} == {
        f"a quote opened at line 3 is still open at line 1002 (a row may span {MAX_ROW_LINES:,} lines and 4 MiB)"}
    assert stats.records_read == 3000


def test_quoted_cell_of_exactly_the_size_limit_is_read(tmp_path: Path) -> None:
    half = MAX_LINE // 2
    note = '"' + "x" * (half - 1) + "\n" + "y" * (MAX_LINE - half) + '"'
    items, _ = read(write(tmp_path, "in.csv", HEADER + row(1, note) + row(2)))
    assert accepted(items) == [("S-1", 2), ("S-2", 4)]
    assert len(next(item for item in items if isinstance(item, Record)).values["note"]) == MAX_LINE


def test_quoted_cell_over_the_size_limit_is_one_rejected_record(tmp_path: Path) -> None:
    # 60 lines of 20,000 characters in one quoted cell: its lines used to be read as rows
    note = '"' + "\n".join(["y" * 20_000] * 60) + '"'
    items, stats = read(write(tmp_path, "in.csv", HEADER + rows(1, 2) + row(3, note) + rows(4, 11)))
    assert rejected(items) == [(4, "a cell is longer than 1 MiB")]
    assert accepted(items) == [("S-1", 2), ("S-2", 3)] + [(f"S-{n}", n + 60) for n in range(4, 12)]
    assert stats.records_read == 11


def test_quoted_cell_one_over_the_size_limit_is_rejected(tmp_path: Path) -> None:
    half = MAX_LINE // 2
    note = '"' + "x" * half + "\n" + "y" * (MAX_LINE - half) + '"'
    items, _ = read(write(tmp_path, "in.csv", HEADER + row(1, note) + row(2)))
    assert rejected(items) == [(2, "a cell is longer than 1 MiB")]
    assert accepted(items) == [("S-2", 4)]


def test_line_over_the_limit_is_one_rejected_row(tmp_path: Path) -> None:
    items, stats = read(write(tmp_path, "in.csv", HEADER + row(1, "z" * (MAX_LINE + 10)) + row(2)))
    assert rejected(items) == [(2, "line is longer than 1 MiB")]
    assert accepted(items) == [("S-2", 3)]
    assert stats.records_read == 2


def test_line_over_the_limit_inside_a_quoted_cell_ends_where_the_quote_closes(tmp_path: Path) -> None:
    note = '"short\n' + "z" * (MAX_LINE + 10) + '\nclosed"'
    items, stats = read(write(tmp_path, "in.csv", HEADER + row(1, note) + row(2)))
    assert rejected(items) == [(2, "line 3 is longer than 1 MiB")]
    assert accepted(items) == [("S-2", 5)]
    assert stats.records_read == 2


def test_quote_never_closed_after_a_line_over_the_limit_rejects_each_line(tmp_path: Path) -> None:
    content = HEADER + row(1, '"open') + "z" * (MAX_LINE + 10) + "\n" + rows(2, 3)
    items, stats = read(write(tmp_path, "in.csv", content))
    assert rejected(items) == [(line, "an opening quote at line 2 is never closed") for line in range(2, 6)]
    assert stats.records_read == 4


def test_row_over_the_size_bound_rejects_each_line(tmp_path: Path) -> None:
    # cells each under 1 MiB, a quote left open at every line's end: the row passes 4 MiB
    line = "x" * 900_000 + '","'
    content = HEADER + row(1, '"' + line) + "".join(line + "\n" for _ in range(6)) + 'end"\n' + row(2)
    items, stats = read(write(tmp_path, "in.csv", content))
    reason = f"a quote opened at line 6 is still open at line 6 (a row may span {MAX_ROW_LINES:,} lines and 4 MiB)"
    assert rejected(items) == [(line, reason) for line in range(2, 10)]
    assert accepted(items) == [("S-2", 10)]
    assert stats.records_read == 9


@pytest.mark.parametrize(("content", "message"), [
    ('session_id,"patient_id,dose_mg\n' + rows(1, 3), "header row: an opening quote at line 1 is never closed"),
    ('session_id,"patient\nid",note\n' + rows(1, 3),
     "header row: a quote opened at line 1 closes at line 2; a column name cannot hold a line break"),
], ids=["never-closed", "closed-on-a-later-line"])
def test_header_with_a_quote_across_lines_is_refused(tmp_path: Path, content: str, message: str) -> None:
    path = write(tmp_path, "in.csv", content)
    with pytest.raises(InputError) as info:
        read(path)
    assert str(info.value) == f"{path}: {message}"


# --- CSV: a wide header ------------------------------------------------------------------------------

def test_header_of_100000_columns_is_read_and_a_duplicate_named(tmp_path: Path) -> None:
    extra = [f"c{n}" for n in range(100_000)]
    header = ",".join(["session_id", "patient_id", *extra]) + "\n"
    items, _ = read(write(tmp_path, "in.csv", header + "S-1,P-1" + "," * len(extra) + "\n"))
    assert accepted(items) == [("S-1", 2)]
    duplicated = ",".join(["session_id", "patient_id", *extra, "c99998", "c7"]) + "\n"
    path = write(tmp_path, "twice.csv", duplicated)
    with pytest.raises(InputError) as info:
        read(path)
    assert str(info.value) == f'{path}: column "c7" appears twice in the header'


# --- encodings other than UTF-8 --------------------------------------------------------------------

@pytest.mark.parametrize(("name", "content", "encoding", "shown"), [
    ("in.ndjson", NDJSON, "utf-16", "UTF-16"),
    ("in.ndjson", NDJSON, "utf-16-le", "UTF-16"),
    ("in.ndjson", NDJSON, "utf-16-be", "UTF-16"),
    ("in.ndjson", NDJSON, "utf-32", "UTF-32"),
    ("in.ndjson", NDJSON, "utf-32-be", "UTF-32"),
    ("in.json", JSON, "utf-16", "UTF-16"),
    ("in.json", JSON, "utf-32-le", "UTF-32"),
    ("in.csv", CSV, "utf-16", "UTF-16"),
    ("in.csv", CSV, "utf-16-le", "UTF-16"),
    ("in.json", "[]", "utf-16-le", "UTF-16"),
], ids=["ndjson-utf16-bom", "ndjson-utf16le", "ndjson-utf16be", "ndjson-utf32-bom", "ndjson-utf32be",
        "json-utf16-bom", "json-utf32le", "csv-utf16-bom", "csv-utf16le", "json-tiny-utf16le"])
def test_utf16_and_utf32_files_are_refused_whole(tmp_path: Path, name: str, content: str, encoding: str,
                                                 shown: str) -> None:
    path = write(tmp_path, name, content.encode(encoding))
    with pytest.raises(InputError) as info:
        read(path)
    assert str(info.value) == f"{path}: {shown} text; save the export as UTF-8"


def test_utf16_input_stops_the_audit_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "sessions.ndjson", NDJSON.encode("utf-16"))
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", str(path)])
    assert result.exit_code == 2
    assert f"{path}: UTF-16 text; save the export as UTF-8" in result.stderr


def test_nul_bytes_that_are_not_utf16_are_rejected_by_line(tmp_path: Path) -> None:
    content = b'{"session_id": "S-1", "patient_id": "P\x00"}\n{"session_id": "S-2", "patient_id": "P-1"}\n'
    items, _ = read(write(tmp_path, "in.ndjson", content))
    assert rejected(items) == [(1, "line contains a NUL byte")]


# --- what kind of file an input is ----------------------------------------------------------------

@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A folder with a short path: a socket's path is limited to about 100 bytes."""
    with tempfile.TemporaryDirectory(prefix="pa-") as folder:
        yield Path(folder)


def make_fifo(folder: Path) -> Path:
    path = folder / "sessions.csv"
    os.mkfifo(path)
    return path


def make_socket(folder: Path) -> Path:
    path = folder / "sessions.csv"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the socket file stays
    return path


def make_directory(folder: Path) -> Path:
    path = folder / "sessions.csv"
    path.mkdir()
    return path


@pytest.mark.parametrize(("make", "message"), [
    (lambda folder: Path("/dev/null"), "/dev/null: not a regular file (a character device)"),
    (make_fifo, "{path}: not a regular file (a named pipe)"),
    (make_socket, "{path}: not a regular file (a socket)"),
    (make_directory, "{path}: is a directory, not a file"),
    (lambda folder: folder / "absent.csv", "{path}: no such file"),
    (lambda folder: folder / "file.csv" / "in.csv", "{path}: no such file"),
], ids=["character-device", "named-pipe", "socket", "directory", "missing", "under-a-file"])
def test_input_that_is_not_a_regular_file_is_named_for_what_it_is(short_dir: Path, make: object,
                                                                   message: str) -> None:
    (short_dir / "file.csv").write_text(CSV)
    path = make(short_dir)  # type: ignore[operator]
    expected = message.format(path=path)
    with pytest.raises(InputError) as info:
        check_input(str(path))
    assert str(info.value) == expected
    with pytest.raises(InputError) as info:  # read_input refuses it the same way, before any reading
        read_input(str(path), "session", TYPES, UTC, Seen(), InputStats(str(path), "session"))
    assert str(info.value) == expected


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_input_without_read_permission_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "sessions.csv", CSV)
    path.chmod(0)
    try:
        with pytest.raises(InputError) as info:
            check_input(str(path))
        assert str(info.value) == f"{path}: permission denied"
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_regular_file_passes_the_input_check(tmp_path: Path) -> None:
    check_input(str(write(tmp_path, "sessions.csv", CSV)))


# --- JSON objects with a key twice -----------------------------------------------------------------

def test_ndjson_object_with_a_key_twice_is_rejected(tmp_path: Path) -> None:
    content = ('{"session_id": "S-1", "patient_id": "P-1", "dose_mg": 10, "dose_mg": 1000}\n'
               '{"session_id": "S-2", "patient_id": "P-1", "dose_mg": {"value": 1, "value": 2}}\n'
               '{"session_id": "S-3", "patient_id": "P-1", "extra": [{"a": 1, "a": 1}]}\n'
               '{"session_id": "S-4", "patient_id": "P-1", "dose_mg": 10}\n'
               '{"session_id": "S-5", "patient_id": "P-1", "dose_mg": 10, "dose_mg": }\n'
               '{"session_id": "S-6", "patient_id": "P-1", "a": {"b": 1}, "c": {"b": 2}}\n')
    items, stats = read(write(tmp_path, "in.ndjson", content))
    assert rejected(items) == [
        (1, 'duplicate key "dose_mg"'),
        (2, 'duplicate key "value"'),
        (3, 'duplicate key "a"'),
        (5, "not valid JSON (Expecting value at column 70)"),
    ]
    assert accepted(items) == [("S-4", 4), ("S-6", 6)]
    assert stats.records_read == 6


def test_json_array_element_with_a_key_twice_is_rejected_by_position(tmp_path: Path) -> None:
    doc = ('{"records": [{"session_id": "S-1", "patient_id": "P-1"},'
           ' {"session_id": "S-2", "patient_id": "P-1", "patient_id": "P-2"},'
           ' {"session_id": "S-3", "patient_id": "P-1", "note": {"x": [{"y": 1, "y": 2}]}},'
           ' {"session_id": "S-4", "patient_id": "P-1"}]}')
    items, _ = read(write(tmp_path, "in.json", doc))
    assert rejected(items) == [(2, 'duplicate key "patient_id"'), (3, 'duplicate key "y"')]
    assert accepted(items) == [("S-1", 1), ("S-4", 4)]


def test_json_top_level_object_with_a_key_twice_is_refused(tmp_path: Path) -> None:
    doc = {"records": [{"session_id": "S-1", "patient_id": "P-1"}]}
    text = json.dumps(doc)[:-1] + ', "records": []}'
    path = write(tmp_path, "in.json", text)
    with pytest.raises(InputError) as info:
        read(path)
    assert str(info.value) == f'{path}: duplicate key "records" in the top-level object'


@pytest.mark.parametrize("name, content", [
    ("sessions.csv", "session_id,patient_id,session_start\r" + row(1).replace("\n", "\r") + row(2).replace("\n", "\r")),
    ("sessions.ndjson", '{"session_id": "S-1"}\r{"session_id": "S-2"}\r'),
], ids=["csv", "ndjson"])
def test_lines_ended_by_a_carriage_return_alone_refuse_the_file(tmp_path: Path, name: str, content: str) -> None:
    # read by \n, the whole file was one line: one row or one bad record where there were several
    path = write(tmp_path, name, content)
    with pytest.raises(InputError) as caught:
        read(path)
    assert str(caught.value) == (f"{path}: lines end in a carriage return alone; save the export with LF or CRLF "
                                 "line endings")


def test_crlf_files_are_read_line_by_line(tmp_path: Path) -> None:
    items, stats = read(write(tmp_path, "sessions.csv", ("session_id,patient_id,session_start,dose_mg,note\n"
                                                         + rows(1, 3)).replace("\n", "\r\n")))
    assert stats.records_read == 3 and not rejected(items)
