"""Report statistics and identifiers: Wilson intervals, targets and status, strata, pseudonyms, phi fields."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine.errors import PackError
from engine.language.loader import load_yaml
from engine.language.schema import build_pack
from engine.privacy import Pseudonymiser
from engine.reporters.report import status, wilson
from tests.helpers import pack_text

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "audit"
SAMPLES = ROOT / "samples"


@pytest.mark.parametrize("passed, total, expected", [
    (0, 0, None),
    (10, 10, [0.7225, 1.0]),
    (0, 10, [0.0, 0.2775]),
    (95, 100, [0.8882, 0.9785]),
    (1, 2, [0.0945, 0.9055]),
], ids=["none", "all-10", "none-of-10", "95-of-100", "1-of-2"])
def test_wilson_interval(passed: int, total: int, expected: list[float] | None) -> None:
    assert wilson(passed, total) == expected


@pytest.mark.parametrize("rate, applicable, target, expected", [
    (None, 0, 1.0, "no data"),
    (1.0, 9, 1.0, "too few records"),
    (1.0, 10, 1.0, "met"),
    (0.99, 200, 1.0, "not met"),
    (0.95, 200, 0.95, "met"),
    (0.5, 200, None, "no target"),
], ids=["no-data", "nine", "ten-all-pass", "critical-miss", "major-at-target", "info"])
def test_status(rate: float | None, applicable: int, target: float | None, expected: str) -> None:
    assert status(rate, applicable, target) == expected


def test_pack_targets() -> None:
    rule = "  - id: A\n    title: A\n    severity: major\n    for: session\n    require: {dose_mg: {present: true}}\n"
    text = pack_text(rule).replace("rules:\n", "targets: {critical: 100, major: 90}\nrules:\n")
    pack = build_pack(load_yaml(text, "p.yaml"), "p.yaml", text.encode())
    assert pack.targets == {"critical": 1.0, "major": 0.9}
    bad = pack_text(rule).replace("rules:\n", "targets: {major: 190, mayor: 90}\nrules:\n")
    with pytest.raises(PackError) as caught:
        build_pack(load_yaml(bad, "p.yaml"), "p.yaml", bad.encode())
    assert [str(p) for p in caught.value.problems] == [
        'p.yaml:25:18: target "190" is not a percentage from 0 to 100',
        'p.yaml:25:23: unknown key "mayor" in targets (did you mean "major"?)']


def audit(tmp_path: Path, *extra: str) -> tuple[dict, str, str]:
    out = tmp_path / "report.json"
    csv_out = tmp_path / "findings.csv"
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", "--pack", "esketamine-rems",
                                       *sorted(str(p) for p in SAMPLES.glob("*.csv")), "--as-of", "2026-11-26",
                                       "-o", str(out), "-o", str(csv_out), *extra])
    assert result.exit_code == 1, result.stderr
    return json.loads(out.read_text()), csv_out.read_text(), result.stderr


@pytest.fixture(scope="module")
def default_audit(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    """The samples audited once with the test key, shared by the tests that only read the result."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROTOCOL_AUDIT_KEY", "test-key-not-a-secret-0123456789")  # as conftest sets it per test
        return audit(tmp_path_factory.mktemp("default-audit"))


def raw_patients() -> set[str]:
    text = (SAMPLES / "sessions.csv").read_text().splitlines()
    column = text[0].split(",").index("patient_id")
    return {line.split(",")[column] for line in text[1:] if line.count(",") >= column}


def test_identifiers_are_pseudonymised_by_default(default_audit: tuple[dict, str, str]) -> None:
    report, csv_text, _ = default_audit
    assert report["pseudonymised"] is True
    patients = {f["patient"] for f in report["findings"]}
    assert patients and all(p.startswith("pt-") and len(p) == 15 for p in patients)
    for raw in raw_patients():
        assert raw not in csv_text and f'"{raw}"' not in json.dumps(report["findings"])
    # fields a pack marks phi (patient_id) stay out of the evidence
    assert not any("patient_id" in f["evidence"] for f in report["findings"])


def test_the_same_key_gives_the_same_pseudonyms_and_reveal_shows_the_identifiers(
        tmp_path: Path, default_audit: tuple[dict, str, str]) -> None:
    first, _, _ = default_audit
    again, _, _ = audit(tmp_path)
    assert first == again
    revealed, _, _ = audit(tmp_path, "--reveal-identifiers")
    assert revealed["pseudonymised"] is False
    assert {f["patient"] for f in revealed["findings"]} <= raw_patients()
    pseudonym = Pseudonymiser(b"test-key-not-a-secret-0123456789", "test")
    assert {pseudonym(f["patient"]) for f in revealed["findings"]} == {f["patient"] for f in first["findings"]}


def test_without_a_key_a_random_one_is_used_and_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROTOCOL_AUDIT_KEY")
    report, _, stderr = audit(tmp_path)
    assert "pseudonymised with a random key for this run" in stderr
    assert report["identifiers"] == ("patient identifiers pseudonymised with HMAC-SHA256 under "
                                     "a random key for this run only")
    key = tmp_path / "key"
    key.write_text("a-key-file-with-enough-bytes\n")
    with_file, _, stderr = audit(tmp_path, "--key-file", str(key))
    assert "random key" not in stderr and with_file["identifiers"].endswith(f"key file {key}")


def test_rules_carry_target_interval_and_status(default_audit: tuple[dict, str, str]) -> None:
    report, _, _ = default_audit
    for rule in report["rules"]:
        assert rule["target"] == {"critical": 1.0, "major": 0.95, "minor": 0.9}.get(rule["severity"])
        if rule["applicable"]:
            low, high = rule["ci95"]
            assert low <= rule["compliance_rate"] <= high
        assert rule["status"] in ("met", "not met", "too few records", "no data", "no target")
    assert report["period"] == {"first": report["period"]["first"], "last": report["period"]["last"]}
    assert report["period"]["first"] < report["period"]["last"]


def test_by_month_and_strata_add_up_to_the_rule_counts(tmp_path: Path) -> None:
    report, _, _ = audit(tmp_path, "--group-by", "supervising_role", "--group-by", "month")
    assert report["strata"]["by"] == ["supervising_role", "month"]
    for rule in report["rules"]:
        months = [m for m in report["by_month"] if (m["rule"], m["pack"]) == (rule["id"], rule["pack"])]
        rows = [r for r in report["strata"]["rows"] if (r["rule"], r["pack"]) == (rule["id"], rule["pack"])]
        for group in (months, rows):
            assert sum(m["passed"] for m in group) == rule["passed"]
            assert sum(m["failed"] for m in group) == rule["failed"]
        assert sum(r["not_evaluable"] for r in rows) == rule["not_evaluable"]
    roles = {r["stratum"]["supervising_role"] for r in report["strata"]["rows"]}
    assert {"MD", "NP", "CRNA"} <= roles


def test_group_by_an_unknown_field(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["audit", "--pack", "ketamine-iv", str(SAMPLES / "sessions.csv"),
                                       "--group-by", "rout"])
    assert result.exit_code == 2
    assert '--group-by "rout" is not a field of any record type (did you mean "route"?)' in result.stderr


def _patients_by_rule(findings: list[dict]) -> dict[tuple[str, str], set[str]]:  # type: ignore[type-arg]
    patients: dict[tuple[str, str], set[str]] = {}
    for finding in findings:
        if finding["outcome"] == "fail":
            patients.setdefault((finding["pack"], finding["rule"]), set()).add(finding["patient"])
    return patients


def test_patients_affected_counts_each_patient_once_per_rule(default_audit: tuple[dict, str, str]) -> None:
    """Per rule, the distinct patients among its unwaived fails, in the JSON and the CSV: a rule with
    many findings from few patients says so (the pseudonyms are one per patient under the key)."""
    report, csv_text, _ = default_audit
    patients = _patients_by_rule(report["findings"])
    assert any(len(found) < rule["failed"] for rule in report["rules"]
               for found in [patients.get((rule["pack"], rule["id"]), set())])  # the samples repeat patients
    for rule in report["rules"]:
        assert rule["patients_affected"] == len(patients.get((rule["pack"], rule["id"]), set())), rule["id"]
        assert (rule["patients_affected"] == 0) == (rule["failed"] == 0)
    by_rule = {(r["pack"], r["id"]): r["patients_affected"] for r in report["rules"]}
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    for row, finding in zip(rows, report["findings"], strict=True):
        assert row["rule_patients_affected"] == str(by_rule[(finding["pack"], finding["rule"])])


def test_waived_fails_do_not_make_a_patient_affected(tmp_path: Path) -> None:
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text((SAMPLES / "waivers-2026Q1.yaml").read_text())
    report, _, _ = audit(tmp_path, "--waivers", str(waivers))
    waived = [f for f in report["findings"] if f["outcome"] == "waived"]
    assert waived
    patients = _patients_by_rule(report["findings"])
    for rule in report["rules"]:
        assert rule["patients_affected"] == len(patients.get((rule["pack"], rule["id"]), set())), rule["id"]


def _raw_clinicians() -> set[str]:
    with open(SAMPLES / "sessions.csv", encoding="utf-8", newline="") as handle:
        return {row[name] for row in csv.DictReader(handle)
                for name in ("supervising_clinician_id", "second_bls_staff_id") if row.get(name)}


def test_staff_identifiers_are_pseudonymised_in_findings_and_strata(tmp_path: Path) -> None:
    """Fields marked staff (clinician IDs) reach no report as written: a staffing finding names the
    clinician by a keyed pseudonym, per-clinician strata are per pseudonym and add up to the rule's
    counts; --reveal-identifiers shows the roster IDs."""
    report, csv_text, _ = audit(tmp_path, "--group-by", "supervising_clinician_id")
    text = json.dumps(report)
    clinicians = _raw_clinicians()
    assert len(clinicians) > 10
    leaked = {c for c in clinicians if f'"{c}"' in text or f"{c}:" in text or f'"{c}"' in csv_text}
    assert not leaked
    lapsed = [f for f in report["findings"] if f["rule"] == "STAFF-02"]
    assert lapsed and all(f["message"].startswith("supervising clinician st-") for f in lapsed)
    rows = [r for r in report["strata"]["rows"] if r["rule"] == "STAFF-02"]
    assert {r["stratum"]["supervising_clinician_id"][:3] for r in rows} <= {"st-", "mis"}
    staff02 = next(r for r in report["rules"] if r["id"] == "STAFF-02")
    assert sum(r["failed"] for r in rows) == staff02["failed"]
    revealed, _, _ = audit(tmp_path, "--group-by", "supervising_clinician_id", "--reveal-identifiers")
    shown = {r["stratum"]["supervising_clinician_id"] for r in revealed["strata"]["rows"]}
    assert shown & clinicians and not any(s.startswith("st-") for s in shown)


def test_the_samples_group_by_site(tmp_path: Path) -> None:
    report, _, _ = audit(tmp_path, "--group-by", "site_id")
    sites = {r["stratum"]["site_id"] for r in report["strata"]["rows"]}
    assert {"SITE-01", "SITE-02"} <= sites
    for rule in report["rules"]:
        rows = [r for r in report["strata"]["rows"] if (r["rule"], r["pack"]) == (rule["id"], rule["pack"])]
        assert sum(r["failed"] for r in rows) == rule["failed"], rule["id"]
