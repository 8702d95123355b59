"""The SQL-on-FHIR v2 specification's own test cases (tests/sof/, see its NOTICE) run against the view engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.inputs.fhir_view import ViewError, compile_view

CASES_DIR = Path(__file__).parent / "sof"

# Every case the product does not pass on purpose, with the reason. Nothing else is skipped.
_BOUNDARY = "lowBoundary()/highBoundary() (experimental in the spec) are not in fhirpathpy 2.2.4"
UNSUPPORTED: dict[tuple[str, str], str] = {
    **{("fn_boundary.json", title): _BOUNDARY
       for title in ("decimal lowBoundary", "decimal highBoundary", "datetime lowBoundary", "datetime highBoundary",
                     "date lowBoundary", "date highBoundary", "time lowBoundary", "time highBoundary")},
}


def _cases() -> list[Any]:
    cases = []
    for file in sorted(CASES_DIR.glob("*.json")):
        suite = json.loads(file.read_text(encoding="utf-8"))
        for case in suite["tests"]:
            cases.append(pytest.param(file.name, suite["resources"], case, id=f"{file.name}::{case['title']}"))
    return cases


def _normal(value: Any) -> Any:
    """One spelling per value: 5 and 5.0 are the same number (fhirpathpy computes in decimals)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items()}
    return value


def _sorted_rows(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(_normal(r), sort_keys=True) for r in rows)


def test_unsupported_table_names_real_cases() -> None:
    titles = {(p.values[0], p.values[2]["title"]) for p in _cases()}
    assert set(UNSUPPORTED) <= titles


@pytest.mark.parametrize(("file", "resources", "case"), _cases())
def test_case(file: str, resources: list[dict[str, Any]], case: dict[str, Any]) -> None:
    reason = UNSUPPORTED.get((file, case["title"]))
    if reason:
        pytest.skip(reason)
    if case.get("expectError"):
        with pytest.raises(ViewError):
            compile_view(case["view"]).table(resources)
        return
    view = compile_view(case["view"])
    if "expectColumns" in case:
        assert [c.name for c in view.columns] == case["expectColumns"]
    table = view.table(resources)
    assert _sorted_rows(table) == _sorted_rows(case["expect"])
    # the compiled FHIRPath subset and fhirpathpy alone give the same table, row order included
    assert compile_view(case["view"], fast_paths=False).table(resources) == table
