"""The audit period (SPEC 9): only records of the given days are judged; the others are read,
checked and used as history, and counted per input as outside_period; the period is printed in
every format's header."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine.judge.period import Period
from tests.helpers import write

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted(str(path) for path in (ROOT / "samples").glob("*.csv"))
AS_OF = "2026-12-01T00:00:00+00:00"
Q1 = "2026-01-01..2026-03-31"


def audit(tmp_path: Path, *args: str, name: str = "r") -> dict:  # type: ignore[type-arg]
    out = tmp_path / f"{name}.json"
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems", *SAMPLES,
                                       "--as-of", AS_OF, "--key-file", str(key(tmp_path)), "-o", str(out), *args])
    assert result.exit_code in (0, 1), result.output
    data: dict = json.loads(out.read_text())  # type: ignore[type-arg]
    return data


def key(tmp_path: Path) -> Path:
    return write(tmp_path, "key.txt", "a pseudonym key for the period tests\n")


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:  # type: ignore[type-arg]
    folder = tmp_path_factory.mktemp("period")
    return audit(folder, name="year"), audit(folder, "--period", Q1, name="q1")


def test_the_period_judges_its_records_exactly_as_the_whole_export_does(both: tuple[dict, dict]) -> None:  # type: ignore[type-arg]
    # history from before the period (screenings, earlier sessions) still counts: every rule gives each
    # record of the quarter the outcome the whole year's audit gave it
    # (rules counted per course are not: a course that began before the quarter is counted by what its
    # sessions in the quarter show, and once per audit)
    year, q1 = both
    per_unit = {r["id"] for r in year["rules"] if "per" in r}
    assert per_unit
    months = {"2026-01", "2026-02", "2026-03"}
    in_q1 = [row for row in year["by_month"] if row["month"] in months and row["rule"] not in per_unit]
    assert [row for row in q1["by_month"] if row["rule"] not in per_unit] == in_q1 and in_q1
    quarter = {(f["rule"], f["record_key"]) for f in q1["findings"] if f["rule"] not in per_unit}
    assert quarter == {(f["rule"], f["record_key"]) for f in year["findings"]
                       if f["time"] and f["time"][:7] in months and f["rule"] not in per_unit}
    assert q1["findings"] and len(q1["findings"]) < len(year["findings"])


def test_records_outside_are_read_and_counted_per_input(both: tuple[dict, dict]) -> None:  # type: ignore[type-arg]
    year, q1 = both
    for whole, part in zip(year["inputs"], q1["inputs"]):
        assert part["records_read"] == whole["records_read"] and part["records_rejected"] == whole["records_rejected"]
        assert part["records_read"] == part["records_judged"] + part["records_rejected"] + part["outside_period"]
        assert part["outside_period"] > 0
        assert "outside_period" not in whole
    summary = q1["summary"]
    assert summary["records_read"] == summary["records_judged"] + summary["records_rejected"] + \
        summary["records_outside_period"]
    assert "records_outside_period" not in year["summary"]
    assert q1["period"]["from"] == "2026-01-01" and q1["period"]["until"] == "2026-03-31"
    assert "2026-01-01" <= q1["period"]["first"][:10] and q1["period"]["last"][:10] <= "2026-03-31"
    assert set(year["period"]) == {"first", "last"}


def test_the_period_is_in_every_format(tmp_path: Path) -> None:
    outputs = [str(tmp_path / f"r.{ext}") for ext in ("md", "html", "xml", "sarif", "csv")]
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", str(ROOT / "samples" / "sessions.csv"),
                                       "--as-of", AS_OF, "--period", "2026-02-01..", *sum((["-o", o] for o in outputs),
                                                                                          [])])
    assert result.exit_code in (0, 1), result.output
    for output in outputs[:-1]:
        assert "from 2026-02-01" in Path(output).read_text() or '"from": "2026-02-01"' in Path(output).read_text(), \
            output
    rows = Path(outputs[-1]).read_text().splitlines()  # the CSV: the period in two columns of every row
    assert rows[0].endswith('"period_from","period_until"') and len(rows) > 1
    assert all(row.endswith('"2026-02-01",""') for row in rows[1:])
    terminal = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", str(ROOT / "samples" / "sessions.csv"),
                                         "--as-of", AS_OF, "--period", "2026-02-01.."])
    assert "period   from 2026-02-01 (as given)" in terminal.stdout
    assert " outside the period" in terminal.stdout


PACK = """\
pack: p
version: "1"
title: period pack
timezone: America/Los_Angeles
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, dose_mg: number}
rules:
  - id: D
    title: dose at most 10
    severity: major
    for: session
    require: {dose_mg: {at_most: 10}}
"""


def test_period_days_are_whole_days_in_the_packs_zone_across_dst(tmp_path: Path) -> None:
    # 2026-03-08 is the spring-forward day in Los Angeles: 23:30 local is inside the day, 00:00 of the
    # 9th is not; a time written in UTC counts where it falls in the pack's zone; no time: judged
    rows = ["S1,P,2026-03-08T23:30:00,50", "S2,P,2026-03-09T00:00:00,50", "S3,P,2026-03-08T08:30:00Z,50",
            "S4,P,2026-03-01T07:59:59Z,50", "S5,P,,50"]
    sessions = write(tmp_path, "sessions.csv", "session_id,patient_id,session_start,dose_mg\n" + "\n".join(rows))
    pack = write(tmp_path, "pack.yaml", PACK)
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(sessions), "--period",
                                       "2026-03-01..2026-03-08", "--as-of", AS_OF, "--reveal-identifiers",
                                       "-o", str(out)])
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    # S3 is 00:30 local on the 8th; S4 is 23:59:59 local on 28 February: outside
    assert sorted(f["record_key"] for f in data["findings"]) == ["S1", "S3", "S5"]
    assert data["inputs"][0]["outside_period"] == 2


@pytest.mark.parametrize("text, message", [
    ("2026-01-01", 'is not FROM..TO'),
    ("..", "gives neither end"),
    ("2026-03-01..2026-02-01", "ends before it begins"),
    ("2026-02-30..", 'FROM "2026-02-30" is not a date (YYYY-MM-DD)'),
    ("..20260301", 'TO "20260301" is not a date (YYYY-MM-DD)'),
])
def test_a_bad_period_is_a_usage_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Period.parse(text)
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", str(ROOT / "samples" / "sessions.csv"),
                                       "--period", text])
    assert result.exit_code == 2 and message in result.stderr and "Traceback" not in result.output


def test_a_period_no_record_lies_in_is_said(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", str(ROOT / "samples" / "sessions.csv"),
                                       "--period", "2036-01-01..2036-03-31", "-o", str(tmp_path / "r.json")])
    assert "no record of the inputs lies in the period 2036-01-01..2036-03-31: nothing was judged" in result.stderr


def test_week_dates_are_not_days() -> None:
    with pytest.raises(ValueError, match="is not a date"):
        Period.parse("2026-W01-1..2026-W14-1")


def test_two_map_entries_of_one_type_on_one_file_count_their_own_outside_records(tmp_path: Path) -> None:
    # vitals split over two entries of the FHIR map (ids ending in 1, and the others): each entry's
    # records outside the period are its own, so read = judged + rejected + outside for both
    import yaml

    source = yaml.safe_load((ROOT / "maps" / "fhir-r4.yaml").read_text())
    vital = next(entry for entry in source["inputs"] if entry["type"] == "vital")
    other = json.loads(json.dumps(vital))
    vital["view"]["where"].append({"path": "id.substring(id.length() - 1) != '1'"})
    other["view"]["where"].append({"path": "id.substring(id.length() - 1) = '1'"})
    source["inputs"].append(other)
    split = write(tmp_path, "split.map.yaml", yaml.safe_dump(source, sort_keys=False))
    out = tmp_path / "r.json"
    files = sorted(str(path) for path in (ROOT / "samples" / "fhir").glob("*.ndjson"))
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems", "--map",
                                       str(split), *files, "--period", Q1, "-o", str(out)])
    assert result.exit_code in (0, 1), result.output
    vitals = [entry for entry in json.loads(out.read_text())["inputs"] if entry["record_type"] == "vital"]
    assert len(vitals) == 2
    for entry in vitals:
        assert entry["records_judged"] >= 0 and entry["outside_period"] > 0
        assert entry["records_read"] == entry["records_judged"] + entry["records_rejected"] + entry["outside_period"]
