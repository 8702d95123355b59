"""The archive of audits (SPEC 9): --archive stores each audit in one transaction, in a SQLite file
or on a PostgreSQL server (a throwaway one here, skipped where its binaries are absent), with no
identifier from the inputs; the report compares the audit with the last archived one of the same
packs (rates, findings new / persisting / resolved) in every format; `trend` shows each rule over
the archived audits."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import URL, MetaData, create_engine, make_url, select, text

from cli import main
from engine.archive import Archive
from engine.archive.tables import metadata
from engine.errors import ArchiveError
from engine.results import Report
from tests.helpers import write

ROOT = Path(__file__).resolve().parent.parent
PACK = """\
pack: arch
version: "1"
title: archive pack
timezone: America/Chicago
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, dose_mg: number, escort: boolean}
rules:
  - id: DOSE
    title: dose at most 10
    severity: major
    for: session
    require: {dose_mg: {at_most: 10}}
  - id: ESCORT
    title: left with an escort
    severity: critical
    for: session
    require: {escort: true}
"""
HEADER = "session_id,patient_id,session_start,dose_mg,escort\n"
# the first quarter as first exported: DOSE fails SESS-0001 and SESS-0003, ESCORT fails SESS-0002 and SESS-0003
FIRST = HEADER + """\
SESS-0001,PAT-0001,2026-01-10T09:00:00,50,true
SESS-0002,PAT-0001,2026-02-10T09:00:00,5,false
SESS-0003,PAT-0002,2026-03-01T09:00:00,50,false
SESS-0004,PAT-0002,2026-03-20T09:00:00,5,true
SESS-0005,PAT-0003,2026-04-10T09:00:00,50,true
SESS-0006,PAT-0003,2026-05-10T09:00:00,5,true
"""
# corrected: SESS-0001's dose was 5 (DOSE passes now); SESS-0004 left without an escort (a new fail)
SECOND = FIRST.replace("2026-01-10T09:00:00,50,true", "2026-01-10T09:00:00,5,true") \
    .replace("2026-03-20T09:00:00,5,true", "2026-03-20T09:00:00,5,false")
WAIVER = """\
waivers:
  - id: W-1
    rule: ESCORT
    records: [SESS-0002]
    reason: escort waited outside; confirmed by phone
    approved_by: Medical Director
    approved_on: 2026-04-02
"""
Q1, Q2 = "2026-01-01..2026-03-31", "2026-04-01..2026-06-30"
IDENTIFIERS = [f"SESS-000{n}" for n in range(1, 7)] + [f"PAT-000{n}" for n in range(1, 4)]


@pytest.fixture(params=["sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An archive that does not exist yet: a SQLite file, or an empty database on a real server."""
    if request.param == "sqlite":
        return str(tmp_path / "audits.db")
    return str(request.getfixturevalue("postgres_url"))


def audit(tmp_path: Path, target: str, sessions: str, period: str, *more: str,
          pack: str = PACK, name: str = "r") -> tuple[int, dict[str, Any], str]:
    pack_path = write(tmp_path, "pack.yaml", pack)
    data = write(tmp_path, f"{name}-sessions.csv", sessions)
    out = tmp_path / f"{name}.json"
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack_path), f"session={data}", "--period", period,
                                       "--archive", target, "-o", str(out), *more])
    report = json.loads(out.read_text()) if out.exists() else {}
    return result.exit_code, report, result.output


def stored(target: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table of the archive (read directly, whatever its schema revision)."""
    url = make_url(target).set(drivername="postgresql+psycopg") if "://" in target else \
        URL.create("sqlite", database=target)
    engine = create_engine(url)
    try:
        tables = MetaData()
        with engine.connect() as connection:
            tables.reflect(connection)
            return {name: [dict(row._mapping) for row in connection.execute(select(table))]
                    for name, table in tables.tables.items()}
    finally:
        engine.dispose()


def rule(report: dict[str, Any], rule_id: str) -> dict[str, Any]:
    return next(r for r in report["compared_to"]["rules"] if r["rule"] == rule_id)


def test_first_audit_is_stored_whole_without_an_identifier(tmp_path: Path, target: str) -> None:
    code, report, output = audit(tmp_path, target, FIRST, Q1)
    assert code == 1, output  # critical and major fails
    assert report["compared_to"] is None  # nothing to compare with yet
    assert "archived as audit 1" in output
    rows = stored(target)
    assert len(rows["audits"]) == 1
    run = rows["audits"][0]
    assert (run["as_of"], run["period_from"], run["period_until"]) == (report["as_of"], "2026-01-01", "2026-03-31")
    assert (run["records_read"], run["records_judged"], run["findings"]) == (6, 4, 4)
    assert {(r["rule"], r["passed"], r["failed"], r["compliance_rate"]) for r in rows["rule_results"]} == \
        {("DOSE", 2, 2, 0.5), ("ESCORT", 2, 2, 0.5)}
    assert sorted((f["rule"], f["outcome"], f["record_time"]) for f in rows["findings"]) == sorted(
        (f["rule"], f["outcome"], f["time"]) for f in report["findings"])
    assert {f["fingerprint"] for f in rows["findings"]} == {f["fingerprint"] for f in report["findings"]}
    assert rows["audit_packs"][0]["pack"] == "arch" and rows["audit_inputs"][0]["records_read"] == 6
    everything = json.dumps(rows, default=str)
    leaked = [identifier for identifier in IDENTIFIERS if identifier in everything]
    assert not leaked, f"raw identifiers in the archive: {leaked}"


def test_the_next_audit_is_compared_with_the_last(tmp_path: Path, target: str) -> None:
    audit(tmp_path, target, FIRST, Q1, name="first")
    waivers = write(tmp_path, "waivers.yaml", WAIVER)
    code, report, output = audit(tmp_path, target, SECOND, Q1, "--waivers", str(waivers), name="second")
    assert code == 1, output
    compared = report["compared_to"]
    assert compared["audit"] == 1 and compared["period"]["from"] == "2026-01-01"
    # DOSE: SESS-0003 still fails, SESS-0001 passes now. ESCORT: SESS-0003 still fails, SESS-0004 fails
    # for the first time, SESS-0002 is waived (no longer an open finding)
    assert compared["findings"] == {"new": 1, "persisting": 2, "resolved": 2}
    assert rule(report, "DOSE") == {"rule": "DOSE", "pack": "arch", "in_last_audit": True, "compliance_rate": 0.5,
                                    "change": 0.25,
                                    "new": 0, "persisting": 1, "resolved": 1}
    assert rule(report, "ESCORT") == {"rule": "ESCORT", "pack": "arch", "in_last_audit": True, "compliance_rate": 0.5,
                                      "change": round(1 / 3 - 0.5, 4), "new": 1, "persisting": 1, "resolved": 1}
    since = {(f["rule"], f["record_key"]): f.get("since_last_audit") for f in report["findings"]}
    assert since == {("DOSE", "SESS-0003"): "persisting", ("ESCORT", "SESS-0003"): "persisting",
                     ("ESCORT", "SESS-0004"): "new", ("ESCORT", "SESS-0002"): None}  # the waived one
    assert len(stored(target)["audits"]) == 2


def test_findings_of_the_last_audit_outside_this_period_are_not_resolved(tmp_path: Path, target: str) -> None:
    audit(tmp_path, target, FIRST, Q1, name="first")
    _, report, _ = audit(tmp_path, target, FIRST, Q2, name="second")
    # the first quarter's four open findings are about records this audit does not judge
    assert report["compared_to"]["findings"] == {"new": 1, "persisting": 0, "resolved": 0}
    assert rule(report, "DOSE")["new"] == 1 and rule(report, "ESCORT")["new"] == 0


def test_the_audit_compared_with_is_the_previous_one_in_time(tmp_path: Path, target: str) -> None:
    q3 = "2026-07-01..2026-09-30"
    assert audit(tmp_path, target, FIRST, Q2, name="a")[1]["compared_to"] is None  # audit 1
    # the first quarter archived after the second: nothing before it to compare with
    assert audit(tmp_path, target, FIRST, Q1, name="b")[1]["compared_to"] is None  # audit 2
    # the third quarter: the second (the one that began last before it), not the last archived
    assert audit(tmp_path, target, FIRST, q3, name="c")[1]["compared_to"]["audit"] == 1  # audit 3
    # the first quarter again (a re-audit after corrections): the first quarter's last audit
    _, report, _ = audit(tmp_path, target, SECOND, Q1, name="d")  # audit 4
    assert report["compared_to"]["audit"] == 2
    assert report["compared_to"]["findings"] == {"new": 1, "persisting": 3, "resolved": 1}


def test_an_audit_of_other_packs_is_not_compared(tmp_path: Path, target: str) -> None:
    audit(tmp_path, target, FIRST, Q1, name="first")
    other = PACK.replace("pack: arch", "pack: other")
    _, report, _ = audit(tmp_path, target, FIRST, Q1, pack=other, name="second")
    assert report["compared_to"] is None
    _, report, _ = audit(tmp_path, target, FIRST, Q1, name="third")
    assert report["compared_to"]["audit"] == 1  # the last audit of the same packs


def test_another_pseudonym_key_compares_rates_but_not_findings(tmp_path: Path, target: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    audit(tmp_path, target, FIRST, Q1, name="first")
    monkeypatch.setenv("PROTOCOL_AUDIT_KEY", "another-key-entirely-0123456789")
    _, report, _ = audit(tmp_path, target, SECOND, Q1, name="second")
    compared = report["compared_to"]
    assert compared["findings"] is None and "another pseudonym key" in compared["note"]
    assert rule(report, "DOSE")["change"] == 0.25 and rule(report, "DOSE")["new"] is None


def test_an_archive_needs_a_lasting_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROTOCOL_AUDIT_KEY")
    archive = tmp_path / "audits.db"
    code, _, output = audit(tmp_path, str(archive), FIRST, Q1)
    assert code == 2 and "--archive needs a pseudonym key" in output
    assert not archive.exists() and not (tmp_path / "r.json").exists()
    code, _, output = audit(tmp_path, str(archive), FIRST, Q1, "--reveal-identifiers")
    assert code == 2 and "--archive needs a pseudonym key" in output  # revealed or not, findings need it


def test_an_archive_from_a_newer_release_is_refused_and_never_written(tmp_path: Path) -> None:
    archive = tmp_path / "audits.db"
    audit(tmp_path, str(archive), FIRST, Q1, name="first")
    with sqlite3.connect(archive) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'f00d'")
    connection.close()
    files = sorted(tmp_path.glob("audits.db*"))  # the database and any write-ahead log beside it
    before = [hashlib.sha256(path.read_bytes()).hexdigest() for path in files]
    code, _, output = audit(tmp_path, str(archive), FIRST, Q1, name="second")
    assert code == 2
    assert 'written by a newer protocol-audit (schema revision "f00d"' in output
    assert sorted(tmp_path.glob("audits.db*")) == files
    assert [hashlib.sha256(path.read_bytes()).hexdigest() for path in files] == before
    assert not (tmp_path / "second.json").exists()  # refused before anything was judged


def test_a_newer_archive_on_the_server_is_refused(tmp_path: Path, postgres_url: str) -> None:
    audit(tmp_path, postgres_url, FIRST, Q1, name="first")
    archive = Archive(postgres_url)
    with archive.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    archive.close()
    before = stored(postgres_url)
    code, _, output = audit(tmp_path, postgres_url, FIRST, Q1, name="second")
    assert code == 2 and "written by a newer protocol-audit" in output
    assert stored(postgres_url) == before  # not one row added or changed, the revision left as it was
    with pytest.raises(ArchiveError):
        Archive(postgres_url)


def test_an_audit_is_stored_whole_or_not_at_all(tmp_path: Path, target: str) -> None:
    _, first, _ = audit(tmp_path, target, FIRST, Q1, name="first")
    report = Report.from_json(first)
    broken = report.findings[-1].__class__(**{**{name: getattr(report.findings[-1], name) for name in
                                                 report.findings[-1].__slots__}, "fingerprint": None})
    archive = Archive(target)
    try:
        with pytest.raises(ArchiveError):  # fails after the run, packs, inputs and rules were written
            archive.store(report.__class__(**{**{n: getattr(report, n) for n in report.__slots__},
                                              "findings": (*report.findings[:-1], broken)}), "k" * 16)
    finally:
        archive.close()
    rows = stored(target)
    assert len(rows["audits"]) == 1 and len(rows["rule_results"]) == 2 and len(rows["findings"]) == 4


def test_two_audits_archiving_at_once_both_land(tmp_path: Path) -> None:
    archive = tmp_path / "audits.db"  # new: both also race to make the schema
    pack = write(tmp_path, "pack.yaml", PACK)
    data = write(tmp_path, "sessions.csv", FIRST)
    env = {**os.environ, "PROTOCOL_AUDIT_KEY": "test-key-not-a-secret-0123456789"}
    for round_ in range(2):
        runs = [subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "audit", "--pack", str(pack), str(data),
                                  "--archive", str(archive), "-o", str(tmp_path / f"r{round_}{n}.json")],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for n in range(2)]
        results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
        for run in runs:
            run.stdout.close()  # type: ignore[union-attr]
            run.stderr.close()  # type: ignore[union-attr]
        assert all(code == 1 for code, _ in results), results
    with sqlite3.connect(archive) as connection:
        assert connection.execute("SELECT count(*) FROM audits").fetchone() == (4,)
        assert connection.execute("SELECT count(*) FROM findings").fetchone() == (4 * 5,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    connection.close()


def test_a_run_without_an_archive_never_loads_a_database(tmp_path: Path) -> None:
    pack = write(tmp_path, "pack.yaml", PACK)
    data = write(tmp_path, "sessions.csv", FIRST)
    probe = ("import sys; from cli import main\n"
             "try:\n    main(sys.argv[1:])\nexcept SystemExit as done:\n    code = done.code\n"
             "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'sqlite3', "
             "'psycopg'))\nprint(code, loaded)")
    run = subprocess.run([sys.executable, "-c", probe, "audit", "--pack", str(pack), str(data), "-o",
                          str(tmp_path / "r.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.stdout.strip() == "1 []", run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pack.yaml", "r.json", "sessions.csv"]


@pytest.mark.parametrize(("content", "message"), [
    (b"session_id\nS1\n", "not a SQLite database"),
    (None, "not a protocol-audit archive"),
])
def test_a_file_that_is_not_an_archive_is_left_alone(tmp_path: Path, content: bytes | None, message: str) -> None:
    archive = tmp_path / "audits.db"
    if content is None:
        with sqlite3.connect(archive) as connection:
            connection.execute("CREATE TABLE patients (mrn TEXT)")
        connection.close()
    else:
        archive.write_bytes(content)
    before = archive.read_bytes()
    code, _, output = audit(tmp_path, str(archive), FIRST, Q1)
    assert code == 2 and message in output
    assert archive.read_bytes() == before


def test_a_server_that_cannot_be_reached_is_one_line_without_the_password(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    code, _, output = audit(tmp_path, "postgresql://auditor:s3cret-pw@127.0.0.1:9/audits", FIRST, Q1)
    assert code == 2, output
    assert "cannot read the archive" in output and "s3cret-pw" not in output
    assert "Traceback" not in output


def test_the_migrations_make_the_tables_the_code_reads(tmp_path: Path, target: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    audit(tmp_path, target, FIRST, Q1)
    archive = Archive(target)
    try:
        with archive.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), metadata)
    finally:
        archive.close()
    assert differences == []


def test_every_format_shows_the_comparison(tmp_path: Path) -> None:
    archive = str(tmp_path / "audits.db")
    audit(tmp_path, archive, FIRST, Q1, name="first")
    pack = write(tmp_path, "pack.yaml", PACK)
    data = f"session={write(tmp_path, 'second-sessions.csv', SECOND)}"
    outputs = [tmp_path / f"r.{ext}" for ext in ("csv", "md", "html", "xml", "sarif")]
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(data), "--period", Q1, "--archive",
                                       archive, *(arg for out in outputs for arg in ("-o", str(out)))])
    assert result.exit_code == 1, result.output
    csv_text, md, html, junit, sarif = (out.read_text() for out in outputs)
    assert '"since_last_audit","fingerprint"' in csv_text.splitlines()[0]
    assert '"ESCORT","critical","fail","session","SESS-0004"' in csv_text and '"new"' in csv_text
    assert "vs last audit" in md and "+25.0 pp; 0 new, 1 persisting, 1 resolved" in md
    assert "Compared with archived audit 1" in md
    assert "<th>vs last audit</th>" in html and "+25.0 pp; 0 new, 1 persisting, 1 resolved" in html
    assert 'name="compared_to"' in junit and "vs last audit: +25.0 pp" in junit
    states = sorted(r.get("baselineState") for r in json.loads(sarif)["runs"][0]["results"])
    # new: SESS-0004's escort; unchanged: SESS-0002's escort, SESS-0003's dose and escort (no waiver here)
    assert states == ["new", "unchanged", "unchanged", "unchanged"]
    terminal = CliRunner().invoke(main, ["audit", "--pack", str(pack), str(data), "--period", Q1, "--archive",
                                         archive])
    # the same export again, compared with the audit just archived: nothing moved
    assert "vs last audit" in terminal.output and "  0.0 pp, 0 new" in terminal.output
    sentence = " ".join(terminal.output.split())  # the sentence under the table is wrapped at 100 columns
    assert "compared with archived audit 2" in sentence and "0 new findings, 4 persisting, 0 resolved" in sentence


def test_trend_shows_each_rule_over_the_audits(tmp_path: Path, target: str) -> None:
    _, second_quarter, _ = audit(tmp_path, target, FIRST, Q2, name="q2")  # archived first, audits later days
    _, first_quarter, _ = audit(tmp_path, target, FIRST, Q1, name="q1")
    outputs = [tmp_path / f"trend.{ext}" for ext in ("json", "md", "html")]
    result = CliRunner().invoke(main, ["trend", target, *(arg for out in outputs for arg in ("-o", str(out)))])
    assert result.exit_code == 0, result.output
    data = json.loads(outputs[0].read_text())
    assert [a["label"] for a in data["audits"]] == ["2026-01-01..2026-03-31", "2026-04-01..2026-06-30"]
    assert [r["rule"] for r in data["rules"]] == ["DOSE", "ESCORT"]
    dose = data["rules"][0]
    expected = [next(r["compliance_rate"] for r in report["rules"] if r["id"] == "DOSE")
                for report in (first_quarter, second_quarter)]
    assert [a["compliance_rate"] for a in dose["audits"]] == expected == [0.5, 0.5]
    assert dose["target"] == 0.95
    md, html = outputs[1].read_text(), outputs[2].read_text()
    assert "| DOSE | arch | major | 95% | 50.0% (2/4) | 50.0% (1/2) |" in md
    assert html.count("<figure>") == 2 and "<script" not in html and "http" not in html.replace(
        "http-equiv", "").replace("http://www.w3.org/2000/svg", "")
    terminal = CliRunner().invoke(main, ["trend", target])
    assert "DOSE (arch, major, target 95%): 50.0% -> 50.0%" in terminal.output


def test_trend_of_no_archive_is_an_error_and_makes_none(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    result = CliRunner().invoke(main, ["trend", str(missing)])
    assert result.exit_code == 2 and "no such archive" in result.output
    assert not missing.exists()


def test_a_grown_export_or_a_longer_period_is_compared_with_the_audit_from_the_same_day(
        tmp_path: Path, target: str) -> None:
    january = HEADER + FIRST.splitlines()[1] + "\n"  # SESS-0001 alone: fails DOSE
    audit(tmp_path, target, january, "2026-01-01..2026-01-31", name="a")  # audit 1
    _, report, _ = audit(tmp_path, target, FIRST, "..2026-06-30", name="b")  # open start: its first record's day
    assert report["compared_to"]["audit"] == 1
    assert report["compared_to"]["findings"]["persisting"] == 1  # SESS-0001's dose, still open
    pack = write(tmp_path, "pack.yaml", PACK)
    for name, text_ in (("c", january), ("d", FIRST)):  # no period: the same export, grown since
        data = write(tmp_path, f"{name}-sessions.csv", text_)
        out = tmp_path / f"{name}.json"
        CliRunner().invoke(main, ["audit", "--pack", str(pack), f"session={data}", "--archive", target,
                                  "-o", str(out)])
    assert json.loads(out.read_text())["compared_to"]["audit"] == 3


def test_rules_added_or_removed_since_the_last_audit(tmp_path: Path, target: str) -> None:
    dose_only = PACK[:PACK.index("  - id: ESCORT")]
    audit(tmp_path, target, FIRST, Q1, pack=dose_only, name="a")
    _, report, _ = audit(tmp_path, target, FIRST, Q1, name="b")  # ESCORT is new: not in the last audit
    escort = rule(report, "ESCORT")
    assert (escort["in_last_audit"], escort["compliance_rate"], escort["change"], escort["new"]) == \
        (False, None, None, 2)
    md = tmp_path / "c.md"
    pack = write(tmp_path, "pack.yaml", PACK)
    CliRunner().invoke(main, ["audit", "--pack", str(pack), f"session={write(tmp_path, 'c.csv', FIRST)}",
                              "--period", Q1, "--archive", target, "-o", str(md)])
    assert "| ESCORT |" in md.read_text() and "0.0 pp; 0 new, 2 persisting, 0 resolved" in md.read_text()
    # ESCORT removed again: its two open findings are not "resolved", and the totals are the rows'
    _, report, _ = audit(tmp_path, target, FIRST, Q1, pack=dose_only, name="d")
    assert report["compared_to"]["findings"] == {"new": 0, "persisting": 2, "resolved": 0}


def test_a_new_rule_is_said_so_in_the_tables(tmp_path: Path) -> None:
    archive = str(tmp_path / "audits.db")
    audit(tmp_path, archive, FIRST, Q1, pack=PACK[:PACK.index("  - id: ESCORT")], name="a")
    pack = write(tmp_path, "pack.yaml", PACK)
    data = write(tmp_path, "b.csv", FIRST)
    result = CliRunner().invoke(main, ["audit", "--pack", str(pack), f"session={data}", "--period", Q1,
                                       "--archive", archive])
    escort = next(line for line in result.output.splitlines() if line.startswith("ESCORT"))
    assert escort.endswith("new rule, 2 new")


def test_a_sqlite_path_is_a_path_never_url_text(tmp_path: Path) -> None:
    other = tmp_path / "other.db"  # another application's database beside the archive
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE patients (mrn TEXT)")
    connection.close()
    before = other.read_bytes()
    for name in ("other.db?x=1", "p%41.db"):
        code, _, output = audit(tmp_path, str(tmp_path / name), FIRST, Q1, name=name.replace("?", "_"))
        assert code == 1, output
        assert (tmp_path / name).is_file()  # the file named, as named
    assert not (tmp_path / "pA.db").exists()
    assert other.read_bytes() == before
    with sqlite3.connect(other) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    connection.close()
    url = f"sqlite:///{tmp_path / 'by-url.db'}"  # a sqlite:/// URL names a file too
    assert audit(tmp_path, url, FIRST, Q1, name="u")[0] == 1
    assert (tmp_path / "by-url.db").is_file()


@pytest.mark.parametrize(("url", "said"), [
    ("postgresql://auditor:pw-123@host:notaport/audits", "is not a database URL"),
    ("postgresql+asyncpg://auditor:pw-123@127.0.0.1/audits", "reached through psycopg"),
    ("mysql://auditor:pw-123@127.0.0.1/audits", "a SQLite file or a postgresql:// URL"),
    ("postgresql://auditor@127.0.0.1:9/audits?password=pw-123", "cannot read the archive"),
])
def test_a_bad_archive_url_is_one_line_without_its_password(tmp_path: Path, url: str, said: str) -> None:
    pytest.importorskip("psycopg")
    code, _, output = audit(tmp_path, url, FIRST, Q1)
    assert code == 2 and said in output, output
    assert "pw-123" not in output and "internal error" not in output and "Traceback" not in output


def test_two_audits_archiving_at_once_on_the_server_both_land(tmp_path: Path, postgres_url: str) -> None:
    pack = write(tmp_path, "pack.yaml", PACK)
    data = write(tmp_path, "sessions.csv", FIRST)
    env = {**os.environ, "PROTOCOL_AUDIT_KEY": "test-key-not-a-secret-0123456789"}
    started = [subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "audit", "--pack", str(pack), str(data),
                                 "--archive", postgres_url, "-o", str(tmp_path / f"r{n}.json")],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for n in range(3)]  # a new database: all three also race to make the schema
    results = [(run.wait(timeout=120), run.stderr.read()) for run in started]
    for run in started:
        run.stderr.close()  # type: ignore[union-attr]
    assert all(code == 1 for code, _ in results), results
    rows = stored(postgres_url)
    assert len(rows["audits"]) == 3 and len(rows["findings"]) == 3 * 5


def test_trend_keeps_one_pack(tmp_path: Path, target: str) -> None:
    audit(tmp_path, target, FIRST, Q1, name="a")
    audit(tmp_path, target, FIRST, Q1, pack=PACK.replace("pack: arch", "pack: other"), name="b")
    out = tmp_path / "trend.json"
    result = CliRunner().invoke(main, ["trend", target, "--pack", "other", "-o", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert [a["packs"] for a in data["audits"]] == [["other"]]
    assert {r["pack"] for r in data["rules"]} == {"other"}


def test_trend_reads_an_archive_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "audits.db"
    audit(tmp_path, str(archive), FIRST, Q1)
    before = archive.read_bytes()
    # as a user with read access only, to the file and its folder (root's own access is never denied)
    monkeypatch.setattr(os, "access", lambda path, mode, **_: not mode & os.W_OK)
    result = CliRunner().invoke(main, ["trend", str(archive)])
    assert result.exit_code == 0 and "DOSE (arch, major, target 95%): 50.0%" in result.output, result.output
    assert sorted(p.name for p in tmp_path.glob("audits.db*")) == ["audits.db"] and archive.read_bytes() == before
    code, _, output = audit(tmp_path, str(archive), FIRST, Q1, name="again")
    assert code == 2 and "the archive cannot be read and written (permission denied)" in output
