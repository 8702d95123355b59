"""``protocol-audit diff``: the impact of a rule change on the same records, from files and from git."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cli import main
from engine.packs import load_pack, shipped_packs

ROOT = Path(__file__).resolve().parent.parent
SESSIONS = ROOT / "samples" / "sessions.csv"
AS_OF = "2026-11-26T00:00:00+00:00"


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["diff", "--as-of", AS_OF, *args])


def lowered_dose_max(folder: Path) -> Path:
    """The CI recipe's example change: DOSE-01's maximum 1.0 -> 0.8 mg/kg, nothing else."""
    text = shipped_packs()["ketamine-iv"].read_text(encoding="utf-8")
    assert text.count(DOSE_CEILING) == 1
    path = folder / "ketamine-iv.yaml"
    path.write_text(text.replace(DOSE_CEILING, DOSE_CEILING.replace("1.0", "0.8")),
                    encoding="utf-8")
    return path


# the shipped IV pack's rule ids (a rule with versions is one rule)
IV_RULES = len({rule.id for rule in load_pack(str(shipped_packs()["ketamine-iv"])).rules})
# DOSE-01's maximum: the pack's local parameter, written once
DOSE_CEILING = "  dose_ceiling_mg_per_kg:\n    value: 1.0\n"


def between_08_and_10() -> set[str]:
    """Sessions the lower maximum newly flags, read straight from the CSV: accepted IV infusions
    (first occurrence of a key; every value of the row readable) with 0.8 < mg/kg <= 1.0."""
    keys: set[str] = set()
    seen: set[str] = set()
    with open(SESSIONS, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            first = row["session_id"] not in seen
            seen.add(row["session_id"])
            try:
                dose, weight = float(row["dose_mg"]), float(row["dosing_weight_kg"])
            except ValueError:
                continue
            if first and row["route"] == "IV" and row["cancelled"] == "false" and weight and 0.8 < dose / weight <= 1.0:
                keys.add(row["session_id"])
    return keys


def test_the_dose_change_flags_exactly_the_sessions_between_0_8_and_1_0(tmp_path: Path) -> None:
    head = lowered_dose_max(tmp_path)
    out = run("--base", "ketamine-iv", "--head", str(head), str(SESSIONS), "-o", str(tmp_path / "d.json"))
    assert out.exit_code == 0, out.output
    diff = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    (row,) = [r for r in diff["rules"] if r["status"] != "unchanged"]
    assert (row["id"], row["status"], row["changes"]) == ("DOSE-01", "changed", ["require", "message", "title"])
    newly = {item["record_key"] for item in row["newly_flagged"]}
    expected = between_08_and_10()
    assert expected and newly == expected
    assert row["no_longer_flagged"] == []
    assert row["failed_after"] - row["failed_before"] == len(expected)
    assert row["compliance_change"] == pytest.approx(row["compliance_after"] - row["compliance_before"], abs=1e-4)
    assert row["compliance_change"] < 0
    # every other rule: same definition, same results
    assert diff["summary"] == {"rules_added": 0, "rules_removed": 0, "rules_changed": 1,
                               "rules_unchanged": IV_RULES - 1, "newly_flagged": len(expected),
                               "no_longer_flagged": 0, "now_rejected": 0,
                               "records_rejected_before": 10, "records_rejected_after": 10, "fail_on_new": None,
                               "newly_flagged_at_or_above": None}
    # source lines point at the CSV rows of those sessions
    with open(SESSIONS, encoding="utf-8", newline="") as handle:
        lines = {r["session_id"]: n for n, r in enumerate(csv.DictReader(handle), start=2)}
    assert all(item["source"] == {"path": str(SESSIONS), "line": lines[item["record_key"]]}
               for item in row["newly_flagged"])
    assert not any("patient" in item for item in row["newly_flagged"])


def test_fail_on_new_by_severity(tmp_path: Path) -> None:
    head = lowered_dose_max(tmp_path)
    args = ["--base", "ketamine-iv", "--head", str(head), str(SESSIONS)]
    assert run(*args, "--fail-on-new", "critical").exit_code == 0   # DOSE-01 is major
    out = run(*args, "--fail-on-new", "major")
    assert out.exit_code == 1
    assert "DOSE-01 (ketamine-iv, major) changed: require, message, title: failed " in out.output
    assert run("--base", "ketamine-iv", "--head", "ketamine-iv", str(SESSIONS), "--fail-on-new", "info").exit_code == 0


def test_no_change(tmp_path: Path) -> None:
    out = run("--base", "ketamine-iv", "--head", "ketamine-iv", str(SESSIONS))
    assert out.exit_code == 0
    assert "0 rules changed, 0 added, 0 removed; 0 records newly flagged" in out.output
    assert "no rule's definition or results changed" in out.output


PACK = """\
pack: small
version: "{version}"
timezone: UTC
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {{session_id: string, patient_id: string, session_start: datetime, dose_mg: number, weight_kg: number,
             escort: boolean, note: string}}
derive:
  per_kg: "{derive}"
rules:
{rules}"""

RULES = {
    "DOSE": """\
  - id: DOSE
    title: Dose at most 1 mg/kg
    severity: major
    for: session
    require: {per_kg: {at_most: 1}}
    message: "dose {per_kg} mg/kg"
""",
    "ESCORT": """\
  - id: ESCORT
    title: Escort present
    severity: {severity}
    for: session
    require: {escort: true}
    message: "{text}"
""",
    "NOTE": """\
  - id: NOTE
    title: Note written
    severity: minor
    for: session
    require: {note: {present: true}}
""",
}


def small_pack(path: Path, version: str, derive: str, rules: list[str], severity: str = "critical",
               text: str = "no escort") -> Path:
    body = "".join(RULES[r].replace("{severity}", severity).replace("{text}", text) for r in rules)
    path.write_text(PACK.format(version=version, derive=derive, rules=body), encoding="utf-8")
    return path


def small_sessions(path: Path) -> Path:
    path.write_text("session_id,patient_id,session_start,dose_mg,weight_kg,escort,note\n"
                    "S-1,P-1,2026-03-02 09:00,70,70,true,ok\n"
                    "S-2,P-2,2026-03-02 10:00,90,70,false,\n"
                    'S-3,P-3,2026-03-02 11:00,60,70,true,"=HYPERLINK(""http://x"")"\n', encoding="utf-8")
    return path


def test_added_removed_and_changed_parts(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "head").mkdir()
    base = small_pack(tmp_path / "base" / "small.yaml", "1", "dose_mg / weight_kg", ["DOSE", "ESCORT", "NOTE"])
    # head: the dose now per 10 kg of weight (a derive change only), ESCORT major with a new
    # message, NOTE removed, and nothing added under the old ids
    head = small_pack(tmp_path / "head" / "small.yaml", "2", "dose_mg / weight_kg * 10", ["DOSE", "ESCORT"],
                      severity="major", text="escort missing")
    data = small_sessions(tmp_path / "sessions.csv")
    out = run("--base", str(base), "--head", str(head), str(data), "-o", str(tmp_path / "d.json"))
    assert out.exit_code == 0, out.output
    diff = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    rows = {r["id"]: r for r in diff["rules"]}
    assert rows["DOSE"]["status"] == "changed" and rows["DOSE"]["changes"] == ["derived fields"]
    # 1.0 and 0.857 mg/kg become 10 and 8.57 "per 10 kg": S-1 and S-3 newly flagged; S-2 was already
    assert [i["record_key"] for i in rows["DOSE"]["newly_flagged"]] == ["S-1", "S-3"]
    assert rows["ESCORT"]["changes"] == ["severity", "message"]
    assert (rows["ESCORT"]["severity"], rows["ESCORT"]["severity_before"]) == ("major", "critical")
    assert rows["ESCORT"]["newly_flagged"] == [] and rows["ESCORT"]["failed_before"] == rows["ESCORT"]["failed_after"]
    assert rows["NOTE"]["status"] == "removed" and rows["NOTE"]["failed_after"] is None
    assert diff["summary"]["rules_removed"] == 1 and diff["summary"]["rules_changed"] == 2
    # and back: NOTE added, flagging S-2 (no note) as new
    out = run("--base", str(head), "--head", str(base), str(data), "-o", str(tmp_path / "back.json"))
    back = {r["id"]: r for r in json.loads((tmp_path / "back.json").read_text(encoding="utf-8"))["rules"]}
    assert back["NOTE"]["status"] == "added"
    assert [i["record_key"] for i in back["NOTE"]["newly_flagged"]] == ["S-2"]
    assert [i["record_key"] for i in back["DOSE"]["no_longer_flagged"]] == ["S-1", "S-3"]


def test_a_record_type_only_one_side_declares(tmp_path: Path) -> None:
    """Head adds a screening type and a rule on it: the base audit leaves screenings.csv out (and says
    so) instead of failing, and the new rule's findings are newly flagged."""
    base = small_pack(tmp_path / "base.yaml", "1", "dose_mg / weight_kg", ["DOSE"])
    text = small_pack(tmp_path / "head.yaml", "2", "dose_mg / weight_kg", ["DOSE"]).read_text(encoding="utf-8")
    text = text.replace("derive:", """\
  screening:
    key: screening_id
    patient: patient_id
    time: screened_at
    fields: {screening_id: string, patient_id: string, screened_at: datetime, score: integer}
derive:""") + """\
  - id: SCORE
    title: Screen scored
    severity: critical
    for: screening
    require: {score: {present: true}}
"""
    head = tmp_path / "head.yaml"
    head.write_text(text, encoding="utf-8")
    data = small_sessions(tmp_path / "sessions.csv")
    screenings = tmp_path / "screenings.csv"
    screenings.write_text("screening_id,patient_id,screened_at,score\nC-1,P-1,2026-03-01 09:00,\n", encoding="utf-8")
    out = run("--base", str(base), "--head", str(head), str(data), str(screenings), "-o", str(tmp_path / "d.json"),
              "--fail-on-new", "critical")
    assert out.exit_code == 1, out.output
    diff = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    assert diff["base"]["inputs_not_read"] == [{"path": str(screenings), "record_type": "screening"}]
    assert diff["head"]["inputs_not_read"] == []
    (score,) = [r for r in diff["rules"] if r["id"] == "SCORE"]
    assert score["status"] == "added" and [i["record_key"] for i in score["newly_flagged"]] == ["C-1"]
    shown = run("--base", str(base), "--head", str(head), str(data), str(screenings)).output
    assert f"note: {screenings} was not read with the base rules: they declare no screening records" in shown
    # and the other way round: the base reads screenings, the head does not
    back = run("--base", str(head), "--head", str(base), str(data), f"screening={screenings}")
    assert back.exit_code == 0, back.output
    assert "was not read with the head rules" in back.output


def test_records_now_rejected_are_not_an_improvement(tmp_path: Path) -> None:
    """Head declares weight_kg an integer: S-2 (70) still reads, S-3's 70.5 is rejected. S-3 leaves
    the DOSE findings because it is no longer judged, and the diff says so."""
    base = small_pack(tmp_path / "base.yaml", "1", "dose_mg / weight_kg", ["DOSE"])
    head = small_pack(tmp_path / "head.yaml", "2", "dose_mg / weight_kg", ["DOSE"])
    head.write_text(head.read_text(encoding="utf-8").replace("weight_kg: number", "weight_kg: integer"),
                    encoding="utf-8")
    data = small_sessions(tmp_path / "sessions.csv")
    data.write_text(data.read_text(encoding="utf-8").replace("S-3,P-3,2026-03-02 11:00,60,70,",
                                                            "S-3,P-3,2026-03-02 11:00,90,70.5,"), encoding="utf-8")
    out = run("--base", str(base), "--head", str(head), str(data), "-o", str(tmp_path / "d.json"))
    assert out.exit_code == 0, out.output
    diff = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    (row,) = diff["rules"]
    assert row["changes"] == ["field declarations"]
    (gone,) = row["no_longer_flagged"]
    assert gone["record_key"] == "S-3" and "not an integer" in gone["now_rejected"]
    assert (diff["summary"]["records_rejected_before"], diff["summary"]["records_rejected_after"]) == (0, 1)
    shown = run("--base", str(base), "--head", str(head), str(data)).output
    assert "0 no longer flagged, 1 no longer judged (now rejected); records rejected 0 -> 1" in shown
    assert "no longer judged: now rejected on reading: 1" in shown


def test_a_rule_moved_to_another_pack_is_not_new(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "head").mkdir()
    base = small_pack(tmp_path / "base" / "small.yaml", "1", "dose_mg / weight_kg", ["DOSE", "ESCORT"])
    small_pack(tmp_path / "head" / "small.yaml", "2", "dose_mg / weight_kg", ["DOSE"])
    moved = small_pack(tmp_path / "head" / "other.yaml", "1", "dose_mg / weight_kg", ["ESCORT"])
    moved.write_text(moved.read_text(encoding="utf-8").replace("pack: small", "pack: other"), encoding="utf-8")
    data = small_sessions(tmp_path / "sessions.csv")
    out = run("--base", str(base), "--head", str(tmp_path / "head"), str(data), "-o", str(tmp_path / "d.json"),
              "--fail-on-new", "info")
    assert out.exit_code == 0, out.output   # nothing is newly flagged
    diff = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    escort = next(r for r in diff["rules"] if r["id"] == "ESCORT")
    assert (escort["status"], escort["changes"], escort["pack"], escort["pack_before"]) == (
        "changed", ["pack"], "other", "small")
    assert escort["newly_flagged"] == escort["no_longer_flagged"] == []
    assert diff["summary"]["rules_added"] == diff["summary"]["rules_removed"] == 0
    shown = run("--base", str(base), "--head", str(tmp_path / "head"), str(data)).output
    assert "ESCORT (other, critical) changed: moved from pack small" in shown


def test_markdown_for_a_pull_request(tmp_path: Path) -> None:
    base = small_pack(tmp_path / "base.yaml", "1", "dose_mg / weight_kg", ["DOSE"])
    head = small_pack(tmp_path / "head.yaml", "2", "dose_mg / weight_kg", ["DOSE", "NOTE"])
    (tmp_path / "data").mkdir()
    data = small_sessions(tmp_path / "data" / "sessions.csv")
    text = data.read_text(encoding="utf-8").replace("S-2,P-2", "<b>S-2</b>|x,P-2").replace("true,ok", "true,")
    data.write_text(text, encoding="utf-8")  # S-1 and S-2 now lack a note
    out = run("--base", str(base), "--head", str(head), str(data), "-o", str(tmp_path / "d.md"), "--max-records", "1")
    assert out.exit_code == 0, out.output
    text = (tmp_path / "d.md").read_text(encoding="utf-8")
    assert text.startswith("## protocol-audit: impact of the rule change\n")
    assert "| NOTE | small | minor | added | - | 2 | n/a | 33.3% |  | 2 | 0 |" in text
    assert "### NOTE: 2 newly flagged" in text
    assert "| session S-1 | 2026-03-02T09:00:00+00:00 |" in text
    assert "(+1 more in the JSON diff)" in text   # --max-records 1: S-2 is only in the JSON


def test_markdown_escapes_record_values(tmp_path: Path) -> None:
    base = small_pack(tmp_path / "base.yaml", "1", "dose_mg / weight_kg", ["DOSE"])
    head = small_pack(tmp_path / "head.yaml", "2", "dose_mg / weight_kg", ["NOTE"])
    data = small_sessions(tmp_path / "sessions.csv")
    data.write_text(data.read_text(encoding="utf-8").replace("S-2,P-2", "<b>S-2</b>|x,P-2")
                    .replace("S-1,P-1", "S-1 @clinic/compliance,P-1").replace("true,ok", "true,"), encoding="utf-8")
    out = run("--base", str(base), "--head", str(head), str(data), "-o", str(tmp_path / "d.md"))
    assert out.exit_code == 0, out.output
    text = (tmp_path / "d.md").read_text(encoding="utf-8")
    assert "session &lt;b&gt;S-2&lt;/b&gt;\\|x |" in text and "<b>" not in text  # the pipe cannot split the row
    assert "@\u2060clinic/compliance" in text and "@clinic" not in text  # no one is notified


def test_a_missing_output_folder_stops_before_any_output(tmp_path: Path) -> None:
    out = run("--base", "ketamine-iv", "--head", "ketamine-iv", str(SESSIONS), "-o", str(tmp_path / "d.json"),
              "-o", str(tmp_path / "nowhere" / "d.md"))
    assert out.exit_code == 2 and "folder" in out.output and "does not exist" in out.output
    assert list(tmp_path.iterdir()) == []


def test_unknown_output_format_and_bad_packs(tmp_path: Path) -> None:
    out = run("--base", "ketamine-iv", "--head", "ketamine-iv", str(SESSIONS), "-o", str(tmp_path / "d.html"))
    assert out.exit_code == 2 and "use .json or .md" in out.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: x\n", encoding="utf-8")
    out = run("--base", "ketamine-iv", "--head", str(bad), str(SESSIONS))
    assert out.exit_code == 2 and f"{bad}:1:1:" in out.output


# -- git revisions ---------------------------------------------------------------------------

GIT = shutil.which("git")


def git(folder: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(folder), "-c", "user.name=ci", "-c", "user.email=ci@example.org", *args],
                   check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    if GIT is None:
        pytest.skip("git is not installed: git: pack references cannot be tested")
    folder = tmp_path / "packs"
    (folder / "rules").mkdir(parents=True)
    small_pack(folder / "rules" / "small.yaml", "1", "dose_mg / weight_kg", ["DOSE", "ESCORT"])
    (folder / "rules" / "small.tests.yaml").write_text("pack: small\nscenarios: []\n", encoding="utf-8")
    git(folder, "init", "-q")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "rules")
    small_pack(folder / "rules" / "small.yaml", "2", "dose_mg / weight_kg", ["DOSE", "ESCORT", "NOTE"])
    small_sessions(folder / "sessions.csv")
    monkeypatch.chdir(folder)
    return folder


@pytest.mark.parametrize("base", ["git:HEAD:rules/small.yaml", "git:HEAD:rules", "git:HEAD:./rules/"])
def test_base_from_git(repo: Path, base: str, tmp_path: Path) -> None:
    out = run("--base", base, "--head", "rules", "sessions.csv", "-o", str(tmp_path / "d.json"))
    assert out.exit_code == 0, out.output
    diff = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    assert [(r["id"], r["status"]) for r in diff["rules"]] == [("DOSE", "unchanged"), ("ESCORT", "unchanged"),
                                                               ("NOTE", "added")]
    assert diff["base"]["packs"][0]["version"] == "1" and diff["head"]["packs"][0]["version"] == "2"


def test_git_folder_with_a_non_ascii_pack_name(repo: Path, tmp_path: Path) -> None:
    (repo / "rules" / "small.yaml").rename(repo / "rules" / "règles.yaml")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "renamed")
    out = run("--base", "git:HEAD:rules", "--head", "rules", "sessions.csv", "-o", str(tmp_path / "d.json"))
    assert out.exit_code == 0, out.output
    diff = json.loads((tmp_path / "d.json").read_text(encoding="utf-8"))
    assert diff["base"]["packs"][0]["path"] == "git:HEAD:rules/règles.yaml"
    assert diff["summary"]["rules_added"] == 0 and diff["summary"]["rules_changed"] == 0


def test_git_problems_are_clear(repo: Path) -> None:
    out = run("--base", "git:--output=/tmp/x:rules", "--head", "rules", "sessions.csv")
    assert out.exit_code == 2 and 'a revision cannot start with "-"' in out.output
    out = run("--base", "git:HEAD:nothing.yaml", "--head", "rules", "sessions.csv")
    assert out.exit_code == 2 and "does not exist in 'HEAD'" in out.output
    out = run("--base", "git:no-such-branch:rules", "--head", "rules", "sessions.csv")
    assert out.exit_code == 2 and "protocol-audit: git cat-file" in out.output
    out = run("--base", "git:HEAD", "--head", "rules", "sessions.csv")
    assert out.exit_code == 2 and "git:REVISION:PATH" in out.output
    (repo / "rules" / "small.yaml").write_text("pack: [\n", encoding="utf-8")
    git(repo, "commit", "-q", "-am", "broken")
    out = run("--base", "git:HEAD:rules", "--head", "ketamine-iv", "sessions.csv")
    assert out.exit_code == 2 and "git:HEAD:rules/small.yaml:" in out.output

