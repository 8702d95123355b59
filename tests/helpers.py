"""Small builders shared by the tests: packs from YAML text, records from plain values."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import pytest

from engine import reporters
from engine.judge.tally import Result
from engine.language.model import Pack, Record
from engine.language.values import convert, is_missing, timezone
from engine.packs import load_pack_bytes
from engine.results import Report

SESSION_HEADER = """\
pack: {pack}
version: "1"
title: test pack
timezone: {timezone}
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields:
      session_id: string
      patient_id: string
      session_start: datetime
      route: {{type: enum, values: [IV, IN, IM]}}
      dose_mg: number
      weight_kg: number
      devices: integer
      escort_present: boolean
      clinician: string
      note: string
      dose_max: number
      signed_on: date
      session_date: date
      wait: duration
"""


def pack_text(rules: str, derive: str = "", pack: str = "test", timezone: str = "UTC") -> str:
    text = SESSION_HEADER.format(pack=pack, timezone=timezone)
    if derive:
        text += "derive:\n" + derive
    return text + "rules:\n" + rules


def make_pack(rules: str, derive: str = "", pack: str = "test", path: str = "pack.yaml",
              timezone: str = "UTC") -> Pack:
    text = pack_text(rules, derive, pack, timezone)
    return load_pack_bytes(text.encode(), path)


def record(pack: Pack, values: dict[str, Any], line: int = 2, type_name: str = "session") -> Record:
    """A Record of ``type_name`` from raw values, converted as a reader would convert them."""
    rtype = pack.records[type_name]
    tz = timezone(pack.timezone)
    converted = {name: convert(rtype.fields[name], raw, tz)
                 for name, raw in values.items() if not is_missing(raw)}
    when = converted.get(rtype.time)
    if isinstance(when, dt.date) and not isinstance(when, dt.datetime):
        when = dt.datetime(when.year, when.month, when.day, tzinfo=tz)
    return Record(type_name, str(converted.get(rtype.key, f"K{line}")), str(converted.get(rtype.patient, "P")),
                  when, converted, "mem", line)


def render(name: str, report: dict[str, Any]) -> str:
    """``report``, the JSON form of a report, read back as a Report and written in format ``name``
    (json, csv, txt, html, md, junit, sarif), as text."""
    out = io.StringIO(newline="")
    reporters.get(name)(Report.from_json(report), out)
    return out.getvalue()


def check_golden(got: bytes, path: Path, request: pytest.FixtureRequest) -> None:
    """``got`` equals the golden file at ``path``; ``pytest --update-golden`` rewrites it first."""
    if request.config.getoption("--update-golden"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(got)
    assert got == path.read_bytes(), f"{path} differs; review, then rerun with --update-golden"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    """``content`` written to ``tmp_path / name`` byte for byte (text as UTF-8, line ends kept)."""
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return path


def same(one: Result, other: Result) -> None:
    """Two results of one audit agree on everything a report is made of."""
    assert [vars(c) for c in one.tallies] == [vars(c) for c in other.tallies]
    assert one.strata == other.strata
    assert (one.first, one.last) == (other.first, other.last)
    key = lambda f: (f.rule, f.pack, f.record_key)  # noqa: E731
    assert sorted(one.findings, key=key) == sorted(other.findings, key=key)
    entry = lambda n: (n.rule, n.pack, n.record_key)  # noqa: E731
    assert sorted(one.not_evaluable, key=entry) == sorted(other.not_evaluable, key=entry)


def crashing_worker(*args: object) -> None:
    """An engine worker that dies at once with SIGSEGV, as the C engine can."""
    import ctypes

    ctypes.string_at(0)
