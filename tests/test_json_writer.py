"""The JSON writer (orjson where its bytes match) writes exactly what json.dump(indent=2,
ensure_ascii=False, allow_nan=False) writes, and refuses what it refuses."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from cli import main
from engine.reporters import json_report
from engine.results import _Lazy
from tests.test_reporters import sample_report

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def reference(data: Any) -> str:
    out = io.StringIO()
    json.dump(data, out, indent=2, ensure_ascii=False, allow_nan=False)
    return out.getvalue() + "\n"


def written(data: Any) -> str:
    out = io.StringIO()
    json_report.dump(data, out)
    return out.getvalue()


# Floats over the whole range (the exponent forms 1e-05 and 1e+16 are where orjson differs), the
# boundaries of Python's exponent notation, integers beyond 64 bits, every character (control
# characters, U+2028, lone surrogates, astral) in keys and values.
EDGE_FLOATS = [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e16, 9999999999999998.0, 1e-05, 5e-324,
               1.7976931348623157e308, 0.1, -2.5e-07, 123456.789]
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=-2**70, max_value=2**70)
           | st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(EDGE_FLOATS)
           | st.text() | st.text(st.characters(max_codepoint=0x9F)))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=20)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.text(max_size=6), values | st.lists(values, max_size=5), max_size=6))
def test_same_bytes_as_the_standard_library(data: dict[str, Any]) -> None:
    try:
        expected = reference(data)
    except (ValueError, TypeError) as error:  # e.g. a lone surrogate cannot be written
        with pytest.raises(type(error)):
            written(data)
        return
    assert written(data) == expected


@pytest.mark.parametrize("data", [{}, [], {"a": []}, {"a": {}}, {"a": ()}, {"x": [[], {}, [1]]}, [1, [2]],
                                  "text", 3, None, {"a": [1e-05, 1e+16, 2**64, "\ud800"]}])
def test_edge_shapes(data: Any) -> None:
    try:
        expected = reference(data)
    except ValueError:
        with pytest.raises(ValueError):
            written(data)
        return
    assert written(data) == expected


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_numbers_are_refused(bad: float) -> None:
    for data in ({"a": bad}, {"a": [{"b": bad}]}):
        with pytest.raises(ValueError, match="not JSON compliant"):
            written(data)


@pytest.mark.parametrize("data", [{"a": [object()]}, {"a": {"k": [b"bytes"]}}, {"a": {3.5, 4}}, {"a": Path("x")}])
def test_what_json_cannot_write_is_refused_as_json_refuses_it(data: Any) -> None:
    with pytest.raises(TypeError):
        reference(data)
    with pytest.raises(TypeError):
        written(data)


@pytest.mark.parametrize("data", [{1: "int key"}, {"a": [{2.5: 1, None: 2, True: 3}]}, {"a": {7: [1e-7]}}])
def test_keys_json_turns_into_text_are_written_as_json_writes_them(data: Any) -> None:
    assert written(data) == reference(data)


def test_lazy_lists_are_written_entry_by_entry() -> None:
    made: list[int] = []

    def convert(item: int) -> dict[str, int]:
        made.append(item)
        return {"n": item}

    data = {"findings": _Lazy((1, 2, 3), convert), "empty": _Lazy((), convert)}
    assert written(data) == reference({"findings": [{"n": 1}, {"n": 2}, {"n": 3}], "empty": []})
    assert made == [1, 2, 3]


def test_a_real_audit_report_is_written_as_the_standard_library_writes_it(tmp_path: Path) -> None:
    """The samples' report (both packs, findings, strata, rejected records): read back and written by
    the standard library, it is the same text (floats, integers, strings and key order all survive
    json.loads exactly)."""
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems",
                                       *sorted(str(p) for p in SAMPLES.glob("*.csv")), "-o", str(out)])
    assert result.exit_code == 1, result.stderr
    text = out.read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["findings"] and data["rejected"]
    assert reference(data) == text


def test_the_hand_written_report_too() -> None:
    data = sample_report()
    assert written(data) == reference(data)


def test_a_value_holding_itself_is_refused_as_the_standard_library_refuses_it() -> None:
    looped: list[Any] = []
    looped.append(looped)
    with pytest.raises(ValueError, match="Circular reference"):
        written({"a": [looped]})
    shared = {"x": 1.5}
    assert written({"a": [shared, shared]}) == reference({"a": [shared, shared]})  # shared, not circular
