"""Every row and line of an input is accounted for: records read = judged + rejected, each at its own
physical line (SPEC 5), whatever the quoting, size, encoding, kind of file or duplicate keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.errors import InputError
from engine.model import Field, Record, RecordType, Rejected
from engine.records import InputStats, Seen, read_input
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
