"""The command line through click's CliRunner: exit codes, outputs, errors, golden reports."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from tests.helpers import crashing_worker

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "audit"
SAMPLES = ROOT / "samples"
AS_OF = "2026-11-26T00:00:00+00:00"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def in_golden(monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(GOLDEN)
    return GOLDEN


@pytest.mark.parametrize("name", ["report.json", "findings.csv", "summary.txt"])
def test_golden_reports(in_golden: Path, tmp_path: Path, name: str, request: pytest.FixtureRequest) -> None:
    out = tmp_path / name
    code, _, _ = run("audit", "--pack", "pack.yaml", "sessions.csv", "--as-of", AS_OF, "-o", str(out))
    assert code == 1
    golden = in_golden / f"expected_{name}"
    if request.config.getoption("--update-golden"):
        golden.write_bytes(out.read_bytes())
    assert out.read_bytes() == golden.read_bytes()


def test_reruns_are_byte_identical(in_golden: Path, tmp_path: Path) -> None:
    outputs = []
    for n in range(2):
        paths = [str(tmp_path / f"r{n}.json"), str(tmp_path / f"r{n}.csv")]
        code, _, _ = run("audit", "--pack", "pack.yaml", "sessions.csv", "--as-of", AS_OF,
                         "-o", paths[0], "-o", paths[1])
        assert code == 1
        outputs.append([Path(p).read_bytes() for p in paths])
    assert outputs[0] == outputs[1]


def test_samples_report_reconciles(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    files = sorted(str(p) for p in SAMPLES.glob("*.csv"))
    code, _, stderr = run("audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems", *files,
                          "--as-of", AS_OF, "-o", str(out))
    assert code == 1, stderr
    report = json.loads(out.read_text())
    assert len(report["inputs"]) == len(files) >= 5
    for item in report["inputs"]:
        assert item["records_read"] == item["records_judged"] + item["records_rejected"]
        # every sample file has a planted bad row but the list of consent forms (five rows, all good)
        assert (item["records_rejected"] > 0) == (item["record_type"] != "consent_form"), item["path"]
    assert len(report["rejected"]) == sum(i["records_rejected"] for i in report["inputs"])
    judged: dict[str, int] = {}
    for item in report["inputs"]:
        judged[item["record_type"]] = judged.get(item["record_type"], 0) + item["records_judged"]
    # a rule counted per FIELD (per course, per session) counts each (patient, value) of its judged records once
    rejected = {(r["source"]["path"], r["source"]["line"]) for r in report["rejected"]}

    def per_units(record_type: str, per: str) -> int:
        units = set()
        for item in report["inputs"]:
            if item["record_type"] != record_type:
                continue
            with open(item["path"], encoding="utf-8", newline="") as handle:
                units |= {(row["patient_id"], row[per]) for line, row in enumerate(csv.DictReader(handle), start=2)
                          if (item["path"], line) not in rejected}
        return len(units)

    for rule in report["rules"]:
        assert rule["applicable"] == rule["passed"] + rule["failed"] + rule["waived"]
        units = judged.get(rule["for"], 0) if "per" not in rule else per_units(rule["for"], rule["per"])
        assert rule["applicable"] + rule["not_evaluable"] + rule["not_applicable"] == units, rule["id"]
        failed = [f for f in report["findings"] if f["rule"] == rule["id"]]
        assert len(failed) == rule["failed"]
        assert len([n for n in report["not_evaluable"] if n["rule"] == rule["id"]]) == rule["not_evaluable"]
    keys = [(f["rule"], f["record_key"]) for f in report["findings"]]
    assert len(keys) == len(set(keys))
    assert report["findings"] == sorted(report["findings"], key=lambda f: f["rule"])


@pytest.mark.parametrize("fail_on, expected", [("critical", 1), ("info", 1)])
def test_fail_on_threshold(in_golden: Path, fail_on: str, expected: int) -> None:
    code, _, _ = run("audit", "--pack", "pack.yaml", "sessions.csv", "--as-of", AS_OF, "--fail-on", fail_on)
    assert code == expected


def test_fail_on_exits_zero_when_only_lower_findings(tmp_path: Path) -> None:
    data = tmp_path / "sessions.csv"
    data.write_text("session_id,patient_id,session_start,route,dose_mg,weight_kg,escort_present,clinician,"
                    "dose_end,discharged_at\n"
                    "S-1,P-1,2026-03-02 09:15,IV,35,70,yes,CL,2026-03-02 09:55,2026-03-02 10:05\n")
    pack = str(GOLDEN / "pack.yaml")
    assert run("audit", "--pack", pack, str(data), "--as-of", AS_OF)[0] == 0  # one minor finding only
    assert run("audit", "--pack", pack, str(data), "--as-of", AS_OF, "--fail-on", "minor")[0] == 1


def test_terminal_summary_without_output(in_golden: Path) -> None:
    code, stdout, stderr = run("audit", "--pack", "pack.yaml", "sessions.csv", "--as-of", AS_OF)
    assert code == 1
    assert "ESC-01" in stdout and "3 records rejected" in stdout
    assert stderr == ""  # no progress noise when not on a terminal


@pytest.mark.parametrize("args, message", [
    (["audit", "--pack", "pack.yaml", "nope.csv"], "protocol-audit: nope.csv: no such file\n"),
    (["audit", "--pack", "ketamine-vi", "sessions.csv"],
     'protocol-audit: ketamine-vi: no such pack file, folder or shipped pack (did you mean "ketamine-iv"?)'),
    (["audit", "--pack", "pack.yaml", "sessions.csv", "-o", "out.pdf"],
     'protocol-audit: cannot tell the report format of "out.pdf" from its extension'),
    (["audit", "--pack", "pack.yaml", "sesion=sessions.csv"], 'unknown record type "sesion"'),
    (["audit", "--pack", "pack.yaml", "sessions.csv", "-o", "no/such/dir/r.json"],
     "protocol-audit: no/such/dir/r.json: folder no/such/dir does not exist\n"),
    (["audit", "--pack", "pack.yaml", "sessions.csv", "./sessions.csv"],
     "protocol-audit: ./sessions.csv: the same file is given twice (also as sessions.csv)\n"),
    (["audit", "--pack", "pack.yaml", "sessions.csv", "session=sessions.csv"],
     "protocol-audit: sessions.csv: the same file is given twice\n"),
], ids=["missing-file", "unknown-pack", "unknown-format", "unknown-type", "missing-folder", "input-twice",
        "input-twice-bound"])
def test_usage_errors_exit_2_with_one_line(in_golden: Path, args: list[str], message: str) -> None:
    code, stdout, stderr = run(*args)
    assert code == 2
    assert message in stderr
    assert "Traceback" not in stderr and stdout == ""


def test_inputs_that_are_not_regular_files_are_named_for_what_they_are(tmp_path: Path) -> None:
    fifo = tmp_path / "sessions.csv"
    os.mkfifo(fifo)  # reading it would wait for a writer for ever
    for path, kind in ((fifo, "a named pipe"), (Path("/dev/null"), "a character device")):
        code, stdout, stderr = run("audit", "--pack", str(GOLDEN / "pack.yaml"), f"session={path}")
        assert (code, stdout) == (2, "")
        assert stderr == f"protocol-audit: {path}: not a regular file ({kind})\n"


def test_packs_and_maps_that_are_not_regular_files_are_named_for_what_they_are(tmp_path: Path) -> None:
    fifo = tmp_path / "clinic.yaml"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    sessions = str(GOLDEN / "sessions.csv")
    for path, kind in ((fifo, "a named pipe"), (Path("/dev/null"), "a character device")):
        for args, what in ((("validate", str(path)), "pack"), (("test", str(path)), "pack"),
                           (("audit", "--pack", str(path), sessions), "pack"),
                           (("audit", "--pack", str(GOLDEN / "pack.yaml"), "--map", str(path), sessions), "map")):
            code, stdout, stderr = run(*args)
            assert (code, stdout) == (2, ""), args
            assert stderr == f"protocol-audit: {path}: not a regular file ({kind}); a {what} is a YAML file\n", args


def test_bad_pack_exits_2_listing_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (GOLDEN / "pack.yaml").read_text()
    text = text.replace("{between: [0.1, 1.0]}", "{betwen: [0.1, 1.0]}").replace("{escort_present: true}",
                                                                                  "{escort_presnt: true}")
    bad.write_text(text)
    code, _, stderr = run("audit", "--pack", str(bad), str(GOLDEN / "sessions.csv"))
    assert code == 2
    lines = stderr.splitlines()
    assert lines[0] == f'{bad}:31:32: unknown operator "betwen" (did you mean "between"?)'
    assert lines[1].startswith(f'{bad}:38:15: field "escort_presnt" is not declared for record type "session"')
    assert lines[-1] == "protocol-audit: 2 problems in 1 rule pack"


def test_input_that_is_not_utf8_exits_2(tmp_path: Path) -> None:
    data = tmp_path / "sessions.csv"
    data.write_bytes((GOLDEN / "sessions.csv").read_bytes() + b"S-9,P-1,\xff\xfe,IV,1,1,yes,x,,\n")
    code, _, stderr = run("audit", "--pack", str(GOLDEN / "pack.yaml"), str(data))
    assert code == 2
    assert "not UTF-8" in stderr and "Traceback" not in stderr


def test_validate_and_rules_and_version() -> None:
    code, stdout, _ = run("validate", "ketamine-iv")
    assert code == 0 and "ok (ketamine-iv" in stdout
    code, stdout, _ = run("rules", "ketamine-iv")
    assert code == 0 and "DOSE-01" in stdout and "applies when: route = IV" in stdout
    code, stdout, _ = run("--version")
    assert code == 0 and stdout.startswith("protocol-audit, version ")


@pytest.mark.parametrize("command", ["audit", "validate", "rules"])
def test_help(command: str) -> None:
    code, stdout, _ = run(command, "--help")
    assert code == 0 and "Usage: " in stdout


def test_pack_folder_and_repeated_pack(tmp_path: Path) -> None:
    code, stdout, _ = run("validate", str(ROOT / "rules"))
    packs = [p for p in (ROOT / "rules").glob("*.yaml") if not p.stem.endswith(".tests")]  # not scenario files
    assert code == 0 and stdout.count(": ok (") == len(packs) == 2
    code, _, stderr = run("audit", "--pack", "ketamine-iv", "--pack", "ketamine-iv", str(SAMPLES / "sessions.csv"))
    assert code == 2 and "is given twice" in stderr


def test_an_engine_crash_exits_2_naming_what_was_not_judged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.judge import pipeline

    real_run = pipeline.run
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: real_run(*a, **k, worker=crashing_worker))
    out = tmp_path / "report.json"
    # a pack without history conditions: records stream to the engine while later files wait unread
    # (the golden pack's field names made the sample export's)
    pack = tmp_path / "pack.yaml"
    pack.write_text(re.sub(r"\bweight_kg", "dosing_weight_kg", (GOLDEN / "pack.yaml").read_text())
                    .replace("dose_end", "dose_end_time")
                    .replace("discharged_at", "discharge_time"))
    code, stdout, stderr = run("audit", "--pack", str(pack), str(SAMPLES / "sessions.csv"),
                               f"session={SAMPLES / 'sessions.ndjson'}", "-o", str(out))
    assert code == 2
    # not judged: the batch with the engine, and the records waiting for its answers (those that read
    # like a record of the batch: engine/judge/verdicts.py), at most a batch of them (500)
    found = re.match(r"protocol-audit: the rule engine crashed \(SIGSEGV\); not judged: (\d+) records \(.*\), "
                     r"and (\d+) records that read like them, waiting for the answers \(", stderr)
    assert found and int(found[1]) < 500 and int(found[2]) == 500, stderr
    assert "sessions.ndjson were not read; the audit is incomplete and no report was written" in stderr
    assert not out.exists()


@pytest.mark.parametrize("as_of", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+14:00"])
def test_an_as_of_at_the_calendars_ends_is_a_usage_error(in_golden: Path, as_of: str) -> None:
    code, stdout, stderr = run("audit", "--pack", "pack.yaml", "sessions.csv", "--as-of", as_of, "-o", "r.xml")
    assert (code, stdout) == (2, "")
    assert f'"{as_of}" is too close to the ends of the calendar (years 1 and 9999)' in stderr
    assert not Path("r.xml").exists()
