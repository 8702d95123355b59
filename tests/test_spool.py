"""Findings and not-evaluable entries spilled to disk beyond a batch (engine/spool.py) come back in
exactly the order sorted() gives, and every report of a spilled audit is the same, byte for byte, as
the report of an audit that held them all."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli import main
from engine import spool
from engine.spool import Spool

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
FORMATS = ("json", "csv", "md", "html", "sarif", "xml", "txt")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=60), st.integers(1, 9))
def test_the_order_is_sorted_order_ties_kept_in_arrival_order(entries: list[tuple[int, int]], limit: int) -> None:
    # the key reads only the first item: equal keys must keep the order they were appended in
    tagged = [(key, tie, number) for number, (key, tie) in enumerate(entries)]
    held = Spool(lambda entry: entry[0], limit=limit)
    for entry in tagged:
        held.append(entry)
        assert len(held.held) < limit  # memory holds less than a batch
    expected = sorted(tagged, key=lambda entry: entry[0])
    merged = held.sorted()
    assert len(merged) == len(expected) and bool(merged) == bool(expected)
    assert list(merged) == expected
    assert list(merged) == expected  # read again
    assert list(held) == expected and list(held[:3]) == expected[:3]
    if len(expected) > limit:
        assert held.batches and merged[len(expected) // 2] == expected[len(expected) // 2]


def test_two_walks_at_once_each_read_at_their_own_place() -> None:
    held = Spool(lambda n: n, limit=4)
    for n in [9, 3, 7, 1, 8, 2, 6, 0, 5, 4]:
        held.append(n)
    merged = held.sorted()
    pairs = list(itertools.product(merged, merged))
    assert pairs == list(itertools.product(range(10), range(10)))


def audit(tmp_path: Path, name: str, *extra: str) -> dict[str, bytes]:
    out = tmp_path / name
    out.mkdir()
    outputs = [arg for fmt in FORMATS for arg in ("-o", str(out / f"report.{fmt}"))]
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems",
                                       *sorted(str(p) for p in SAMPLES.glob("*.csv")), "--as-of", "2026-11-26",
                                       *outputs, *extra])
    assert result.exit_code == 1, result.stderr
    return {fmt: (out / f"report.{fmt}").read_bytes() for fmt in FORMATS}


@pytest.mark.parametrize("limit", [1, 7, 250])
def test_a_spilled_audit_writes_every_report_as_one_held_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    held = audit(tmp_path, "held")
    monkeypatch.setattr(spool, "LIMIT", limit)
    spilled = audit(tmp_path, "spilled")
    assert b'"findings": [\n    {' in spilled["json"] and b'"not_evaluable": [\n    {' in spilled["json"]
    for fmt in FORMATS:
        assert spilled[fmt] == held[fmt], fmt


def test_a_spilled_audit_is_compared_with_the_archive_as_one_held_in_memory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # two archives, each with the same first audit: the second audit held in memory in one, spilled
    # in the other, each compared with its archive's first
    for name in ("a", "b"):
        audit(tmp_path, f"first-{name}", "--archive", str(tmp_path / f"{name}.db"))
    held = audit(tmp_path, "held", "--archive", str(tmp_path / "a.db"))
    monkeypatch.setattr(spool, "LIMIT", 5)
    spilled = audit(tmp_path, "spilled", "--archive", str(tmp_path / "b.db"))
    assert b'"since_last_audit": "persisting"' in spilled["json"]
    for fmt in FORMATS:
        assert spilled[fmt] == held[fmt], fmt
