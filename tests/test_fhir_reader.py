"""FHIR exports are bounded like every input (SPEC 5 and 8): a Bundle is parsed whole only up to a
size, a resource line over 1 MiB or nested too deeply is rejected at its line, and the other lines
are read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import InputError
from engine.inputs import fhir_reader
from engine.inputs.builder import InputStats, Seen
from engine.inputs.maps import load_map_bytes
from engine.inputs.sources import bind, read_binding
from engine.judge.context import PackContext
from engine.language.model import Record, Rejected
from engine.packs import load_pack_bytes

PACK = b"""\
pack: p
version: "1"
records:
  vital:
    key: vital_id
    patient: patient_id
    time: taken_at
    fields: {vital_id: string, patient_id: string, taken_at: datetime, sbp: number}
rules:
  - {id: BP, title: BP, severity: major, for: vital, require: {sbp: {less_than: 180}}}
"""
MAP = b"""\
map: m
version: "1"
inputs:
  - type: vital
    files: "Observation*"
    format: fhir
    view:
      resource: Observation
      select:
        - column:
            - {name: vital_id, path: id}
            - {name: patient_id, path: "subject.getReferenceKey(Patient)"}
            - {name: taken_at, path: effectiveDateTime}
            - {name: sbp, path: "valueQuantity.value"}
"""


def _observation(number: int, **extra: object) -> dict[str, object]:
    return {"resourceType": "Observation", "id": f"V{number}", "subject": {"reference": "Patient/P1"},
            "effectiveDateTime": "2026-03-02T10:00:00Z", "valueQuantity": {"value": 120 + number}, **extra}


def _read(path: Path) -> list[Record | Rejected]:
    pack = load_pack_bytes(PACK, "pack.yaml")
    context = PackContext([pack])
    source = load_map_bytes(MAP, "m.yaml", context.types)
    (binding,) = bind([str(path)], context.types, [source])
    return list(read_binding(binding, context.types, context.tz, Seen(), InputStats(str(path), "vital")))


def test_a_resource_line_too_long_or_too_deep_is_rejected_at_its_line(tmp_path: Path) -> None:
    lines = [json.dumps(_observation(1)),
             json.dumps(_observation(2, note=[{"text": "x" * (1024 * 1024)}])),
             "[" * 100_000 + "]" * 100_000,
             json.dumps(_observation(4))]
    path = tmp_path / "Observation.ndjson"
    path.write_text("\n".join(lines) + "\n")
    items = _read(path)
    assert [(type(i).__name__, i.line) for i in items] == [("Record", 1), ("Rejected", 2), ("Rejected", 3),
                                                           ("Record", 4)]
    reasons = [i.reason for i in items if isinstance(i, Rejected)]
    assert "longer than 1 MiB" in reasons[0]
    assert reasons[1] == "JSON nested too deeply"


def test_a_bundle_over_the_size_limit_is_refused_with_the_way_out(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": _observation(n)} for n in range(1, 4)] + [{"fullUrl": "x"}]}
    path = tmp_path / "Observation-bundle.json"
    path.write_text(json.dumps(bundle))
    items = _read(path)
    assert [(type(i).__name__, i.line) for i in items] == [("Record", 1), ("Record", 2), ("Record", 3),
                                                           ("Rejected", 4)]
    monkeypatch.setattr(fhir_reader, "MAX_BUNDLE", path.stat().st_size - 1)
    with pytest.raises(InputError, match="export the resources as bulk NDJSON"):
        _read(path)
