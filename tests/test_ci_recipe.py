"""The CI recipe of docs/ci.md, run locally on a sample rule-pack repository.

The repository has the shipped ketamine-iv pack and its scenarios on ``main`` and, on a branch,
the documented change (DOSE-01's maximum 1.0 -> 0.8 mg/kg). The GitHub Actions workflow's own
steps run with bash as the runner would run them (installing and commenting aside), and the
pre-commit configuration runs through pre-commit itself, which installs this project from its
git checkout into a hook environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.test_diff import DOSE_CEILING, IV_RULES, between_08_and_10

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "docs" / "ci" / "github-actions.yml"
PRE_COMMIT_CONFIG = ROOT / "docs" / "ci" / "pre-commit-config.yaml"
GIT = shutil.which("git")
if GIT is None:  # pragma: no cover - depends on the environment
    pytest.skip("git is not installed: the CI recipe needs it", allow_module_level=True)

DOSE = DOSE_CEILING


def git(folder: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(folder), "-c", "user.name=ci", "-c", "user.email=ci@example.org", *args],
                          check=True, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rule-pack repository: main with the shipped packs, branch dose-max-0.8 with the change checked out."""
    folder = tmp_path_factory.mktemp("rule-packs")
    (folder / "rules").mkdir()
    (folder / "audit-data").mkdir()
    for pack in (ROOT / "rules").glob("*.yaml"):  # both shipped packs and the scenarios
        shutil.copy(pack, folder / "rules" / pack.name)
    for export in (ROOT / "samples").glob("*.csv"):
        shutil.copy(export, folder / "audit-data" / export.name)
    git(folder, "init", "-q", "-b", "main")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "protocol rules")
    git(folder, "update-ref", "refs/remotes/origin/main", "main")  # as actions/checkout leaves it
    git(folder, "checkout", "-q", "-b", "dose-max-0.8")
    pack = folder / "rules" / "ketamine-iv.yaml"
    text = pack.read_text(encoding="utf-8")
    assert text.count(DOSE) == 1
    pack.write_text(text.replace(DOSE, DOSE.replace("1.0", "0.8")), encoding="utf-8")
    git(folder, "commit", "-q", "-am", "DOSE-01: maximum 0.8 mg/kg")
    return folder


def tool_path() -> str:
    """PATH with this interpreter's scripts first, where pip put the protocol-audit command."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    if shutil.which("protocol-audit", path=path) is None:
        pytest.skip("the protocol-audit command is not installed (pip install '.[test]'): the workflow runs it")
    return path


# -- the GitHub Actions workflow -------------------------------------------------------------

def steps() -> dict[str, dict[str, Any]]:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    (job,) = workflow["jobs"].values()
    return {step["id"]: step for step in job["steps"] if "id" in step}


def run_step(repo: Path, step: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    env = {**os.environ, **{k: str(v) for k, v in workflow["env"].items()}, "BASE_REF": "main", "PATH": tool_path()}
    # GitHub runs `run:` with bash -e {0}; so does this
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_workflow_reads_the_target_branch_from_github() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    assert workflow["env"]["BASE_REF"] == "${{ github.base_ref }}"
    assert list(steps()) == ["validate", "test", "impact"]
    assert "git merge-base" in steps()["impact"]["run"]


def test_the_workflow_on_the_dose_change(repo: Path) -> None:
    validate, test, impact = steps().values()
    done = run_step(repo, validate)
    assert done.returncode == 0, done.stderr
    assert "rules/ketamine-iv.yaml: ok (ketamine-iv" in done.stdout

    # the failing test, with its evidence, and the coverage report
    done = run_step(repo, test)
    assert done.returncode == 1
    assert "FAIL rules/ketamine-iv.yaml:" in done.stdout
    assert "DOSE-01 example 2: expected pass, got fail" in done.stdout
    assert "dose_mg_per_kg between [0.1, 0.8]: dose_mg_per_kg = 1.0" in done.stdout
    assert f"coverage: {IV_RULES} of {IV_RULES} rules fully covered" in done.stdout
    assert "1 case failed" in done.stderr

    # the impact: exactly the sessions between 0.8 and 1.0 mg/kg, against the merge base
    done = run_step(repo, impact)
    assert done.returncode == 0, done.stderr   # --fail-on-new critical; DOSE-01 is major
    markdown = (repo / "impact.md").read_text(encoding="utf-8")
    flagged = {line.split(" | ")[0].removeprefix("| session ") for line in markdown.splitlines()
               if line.startswith("| session ")}
    expected = between_08_and_10()
    shown = min(len(expected), 20)  # the Markdown lists 20 per rule; the JSON has them all
    assert len(flagged) == shown and flagged <= expected
    assert f"### DOSE-01: {len(expected)} newly flagged" in markdown
    import json

    diff = json.loads((repo / "impact.json").read_text(encoding="utf-8"))
    (row,) = [r for r in diff["rules"] if r["newly_flagged"]]
    assert {i["record_key"] for i in row["newly_flagged"]} == expected


# -- pre-commit ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pre_commit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The pre-commit command, with a hook cache of its own for this test run."""
    pytest.importorskip("pre_commit", reason="pre-commit is not installed (pip install '.[test]')")
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout: pre-commit installs hooks from a git repository")
    os.environ["PRE_COMMIT_HOME"] = str(tmp_path_factory.mktemp("pre-commit-home"))
    try:
        yield [sys.executable, "-m", "pre_commit"]
    finally:
        del os.environ["PRE_COMMIT_HOME"]


def hook_config(repo: Path) -> Path:
    """docs/ci/pre-commit-config.yaml pointed at this checkout (the hooks as committed here)."""
    config = yaml.safe_load(PRE_COMMIT_CONFIG.read_text(encoding="utf-8"))
    (entry,) = config["repos"]
    entry["repo"] = str(ROOT)
    entry["rev"] = git(ROOT, "rev-parse", "HEAD")
    path = repo / ".pre-commit-config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_hooks(repo: Path, command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": tool_path()}
    return subprocess.run([*command, "run", "--config", str(hook_config(repo)), "--all-files", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=900)


def test_pre_commit_hooks_on_the_sample_repository(repo: Path, pre_commit: list[str]) -> None:
    git(repo, "checkout", "-q", "main")
    try:
        done = run_hooks(repo, pre_commit)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "protocol-audit validate (rule packs)" in done.stdout and "Passed" in done.stdout
    finally:
        git(repo, "checkout", "-q", "dose-max-0.8")
    done = run_hooks(repo, pre_commit)
    assert done.returncode == 1
    assert "protocol-audit test (examples, scenarios, coverage)" in done.stdout
    assert "DOSE-01 example 2: expected pass, got fail" in done.stdout
    # the manual diff hook: the impact on the export against origin/main
    done = run_hooks(repo, pre_commit, "--hook-stage", "manual", "protocol-audit-diff")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(between_08_and_10())} records newly flagged" in done.stdout
