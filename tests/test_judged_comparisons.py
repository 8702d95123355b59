"""Comparing two records of a patient: an end-of-induction rating against the baseline on the same
scale (OUT-02). A history condition's ``where`` reads the judged record's own fields, derived ones
included (``total_score: {at_least: {judged: response_bar}}`` with ``response_bar`` derived as
``total_score * 2``), and a field alone followed by a reference is an equality, as a value alone is
(``instrument: {judged: instrument}``)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from cli import main
from engine.language.conditions import describe
from engine.packs import load_pack_bytes
from tests.helpers import write
from tests.test_loader import problems

PACK = """\
pack: r
version: "1"
title: response
timezone: UTC
records:
  rating:
    key: rating_id
    patient: patient_id
    time: rated_at
    fields: {rating_id: string, patient_id: string, rated_at: datetime, scale: string, score: integer,
             kind: string, rated_by: string, checked_by: string}
derive:
  response_bar: "score * 2"
rules:
  - id: RESP
    title: an end rating is a 50% response from a baseline on the same scale
    severity: major
    for: rating
    when: {kind: end}
    require:
      exists:
        of: rating
        where: {kind: baseline, scale: {judged: scale}, score: {at_least: {judged: response_bar}}}
        within: {before: 60d}
    message: "{scale} {score} on {rated_at}: no baseline of {response_bar} or more"
  - id: TWO
    title: a rating is checked by someone other than the rater
    severity: minor
    for: rating
    require:
      not:
        checked_by: {field: rated_by}
    message: "rated and checked by the same person; second check done: {kind}"
"""

RATINGS = """\
rating_id,patient_id,rated_at,scale,score,kind,rated_by,checked_by
B1,P1,2026-01-10T10:00:00,PHQ9,18,baseline,CL-1,CL-2
E1,P1,2026-02-20T10:00:00,PHQ9,9,end,CL-1,CL-2
B2,P2,2026-01-10T10:00:00,PHQ9,17,baseline,CL-1,CL-2
E2,P2,2026-02-20T10:00:00,PHQ9,9,end,CL-1,CL-2
B3,P3,2026-01-10T10:00:00,MADRS,36,baseline,CL-1,CL-2
E3,P3,2026-02-20T10:00:00,PHQ9,8,end,CL-1,CL-2
B4,P4,2025-12-01T10:00:00,PHQ9,26,baseline,CL-1,CL-2
E4,P4,2026-02-20T10:00:00,PHQ9,8,end,CL-1,CL-1
E5,P5,2026-02-20T10:00:00,,8,end,CL-1,CL-2
B5,P5,2026-01-10T10:00:00,PHQ9,20,baseline,CL-1,CL-2
"""


def audit(tmp_path: Path) -> dict:
    pack = write(tmp_path, "pack.yaml", PACK)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), f"rating={write(tmp_path, 'r.csv', RATINGS)}",
                                       "--reveal-identifiers", "-o", str(out)])
    assert result.exit_code == 1, result.output
    return json.loads(out.read_text())


def test_the_end_rating_is_compared_with_the_baseline_on_its_own_scale(tmp_path: Path) -> None:
    """E1: 18 is twice 9. E2: 17 is not. E3: the baseline is a MADRS. E4: the baseline is 81 days
    old. E5: which scale the end rating used is not known, so no baseline can be shown to be on it:
    a finding that names the missing field, as a roster check on a session without its date is."""
    report = audit(tmp_path)
    findings = {f["record_key"]: f for f in report["findings"] if f["rule"] == "RESP"}
    assert sorted(findings) == ["E2", "E3", "E4", "E5"]
    assert findings["E2"]["message"] == "PHQ9 9 on 2026-02-20T10:00:00+00:00: no baseline of 18 or more"
    assert findings["E5"]["missing"] == ["scale"] and "missing" not in findings["E2"]
    resp = {r["id"]: r for r in report["rules"]}["RESP"]
    assert (resp["applicable"], resp["passed"], resp["failed"], resp["not_evaluable"]) == (5, 1, 4, 0)


def test_a_field_reference_alone_is_an_equality(tmp_path: Path) -> None:
    report = audit(tmp_path)
    assert [f["record_key"] for f in report["findings"] if f["rule"] == "TWO"] == ["E4"]


def test_the_comparison_reads_in_words() -> None:
    pack = load_pack_bytes(PACK.encode(), "pack.yaml")
    assert describe(pack.rules[0].require) == (
        "exists rating where (kind = baseline and scale = the judged record's scale and "
        "score \u2265 the judged record's response_bar) within 60d before")
    assert describe(pack.rules[1].require) == "not (checked_by = rated_by)"


def test_a_reference_alone_is_checked_as_a_reference() -> None:
    outside = PACK.replace("    when: {kind: end}\n", "    when: {kind: end, scale: {judged: scale}}\n")
    assert any("{judged: NAME} compares with the judged record's field" in p for p in problems(outside))
    unknown = PACK.replace("scale: {judged: scale}", "scale: {judged: scales}")
    assert any('field "scales" is not declared for record type "rating"' in p for p in problems(unknown))
    mismatch = PACK.replace("scale: {judged: scale}", "scale: {judged: rated_at}")
    assert any('cannot compare string field "scale" with datetime field "rated_at"' in p
               for p in problems(mismatch))


def test_a_boolean_in_a_message_reads_as_the_export_writes_it(tmp_path: Path) -> None:
    pack = PACK.replace("fields: {rating_id: string,", "fields: {done: boolean, rating_id: string,").replace(
        "second check done: {kind}", "second check done: {done}")
    write(tmp_path, "pack.yaml", pack)
    ratings = RATINGS.replace("rating_id,", "done,rating_id,", 1).replace("\nE4,", "\ntrue,E4,")
    ratings = "\n".join(line if line.startswith(("done", "true")) or not line else "false," + line
                        for line in ratings.splitlines()) + "\n"
    out = tmp_path / "r.json"
    CliRunner().invoke(main, ["audit", "--pack", str(tmp_path / "pack.yaml"),
                              f"rating={write(tmp_path, 'r.csv', ratings)}", "-o", str(out)])
    [finding] = [f for f in json.loads(out.read_text())["findings"] if f["rule"] == "TWO"]
    assert finding["message"] == "rated and checked by the same person; second check done: true"
