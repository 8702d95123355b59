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
from engine.model import Field, Record, RecordType, Rejected
from engine.records import InputStats, Seen, check_input, read_input
from engine.values import timezone

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


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def row(n: int, note: str = "ok") -> str:
    return f"S-{n},P-1,2026-03-02 09:00,{n},{note}\n"


def rows(first: int, last: int) -> str:
    return "".join(row(n) for n in range(first, last + 1))


def rejected(items: Items) -> list[tuple[int, str]]:
    return [(item.line, item.reason) for item in items if isinstance(item, Rejected)]


def accepted(items: Items) -> list[tuple[str, int]]:
    return [(item.key, item.line) for item in items if isinstance(item, Record)]


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
