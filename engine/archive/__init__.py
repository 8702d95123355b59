"""The history of audits (SPEC 9): ``--archive TARGET``, a SQLite file or a PostgreSQL URL.

One code path for both through SQLAlchemy Core; the schema is made and changed by the Alembic
migrations shipped in engine/archive/migrations, and the archive records its revision. An archive
whose revision this release does not know was written by a newer release: it is refused before
anything is written to it. An audit is stored in one transaction (all of it or nothing), and the
schema is brought up to date in that same transaction, under a lock (SQLite's write lock,
PostgreSQL's advisory lock), so two audits archiving at once both land.

SQLAlchemy and Alembic are imported here only: a run without ``--archive`` never loads them.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, insert, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from engine.archive.tables import audit_inputs, audit_packs, audits, findings, rule_results
from engine.errors import ArchiveError, UsageError
from engine.results import Report
from engine.version import __version__

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_SECONDS = 60  # how long a SQLite writer waits for another audit's transaction to end
_LOCK_ID = 0x70617564  # PostgreSQL advisory lock taken by a transaction that writes the archive
_SQLITE_HEADER = b"SQLite format 3\x00"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class ArchivedAudit:
    """One audit as the archive keeps it (what a comparison and a trend read)."""

    id: int
    as_of: str
    archived_at: str
    tool_version: str
    pack_set: str
    period_from: str | None
    period_until: str | None
    first_record: str | None
    last_record: str | None
    key_check: str

    @property
    def span(self) -> tuple[str, str]:
        return audited_days(self.period_from, self.period_until, self.first_record, self.last_record)

    @property
    def start(self) -> str:
        return first_day(self.period_from, self.first_record)


def audited_days(period_from: str | None, period_until: str | None, first: str | None,
                 last: str | None) -> tuple[str, str]:
    """The days an audit audited: the period given, else the days of its first and last judged
    records ("" for an open end)."""
    if period_from or period_until:
        return period_from or "", period_until or ""
    return (first or "")[:10], (last or "")[:10]


def first_day(period_from: str | None, first: str | None) -> str:
    """The first day an audit audited: its period's start, else (none given, or an open start) its
    first judged record's day."""
    return period_from or (first or "")[:10]


@dataclass(frozen=True, slots=True)
class ArchivedRule:
    pack: str
    rule: str
    title: str
    severity: str
    target: float | None
    applicable: int
    passed: int
    failed: int
    waived: int
    compliance_rate: float | None


@dataclass(frozen=True, slots=True)
class ArchivedFinding:
    pack: str
    rule: str
    outcome: str
    record_time: str | None
    fingerprint: str


def is_url(target: str) -> bool:
    return bool(_SCHEME.match(target))


def pack_set(report: Report) -> str:
    """The packs an audit judged, as the archive compares audits: their ids, sorted."""
    return ",".join(sorted({pack.id for pack in report.packs}))


class Archive:
    """An opened archive: checked to be one this release can read and write, not yet written."""

    def __init__(self, target: str, read_only: bool = False) -> None:
        """``read_only``: only read (trend), so a read-only archive file or folder is enough."""
        self.target = target
        self.shown = _shown(target)  # the target as messages say it (a URL without its password)
        self.sqlite_path = _sqlite_target(target, self.shown, read_only)
        self.engine = _sqlite_engine(self.sqlite_path, read_only) if self.sqlite_path is not None \
            else _server_engine(target, self.shown)
        try:
            self.revision = self._checked_revision()
        except BaseException:
            self.engine.dispose()  # the last connection closed: SQLite removes the log files it opened
            raise

    # -- reading ---------------------------------------------------------------------------
    def audits(self, packs: str | None = None) -> list[ArchivedAudit]:
        """The archived audits (of one pack set, if given), oldest first."""
        if self.revision is None:
            return []
        query = select(audits).order_by(audits.c.id)
        if packs is not None:
            query = query.where(audits.c.pack_set == packs)
        with self._reading() as connection:
            return [ArchivedAudit(row.id, row.as_of, row.archived_at, row.tool_version, row.pack_set,
                                  row.period_from, row.period_until, row.first_record, row.last_record,
                                  row.key_check) for row in connection.execute(query)]

    def rules(self, audit_id: int) -> list[ArchivedRule]:
        query = select(rule_results).where(rule_results.c.audit_id == audit_id) \
            .order_by(rule_results.c.position)
        with self._reading() as connection:
            return [_archived_rule(row) for row in connection.execute(query)]

    def all_rules(self) -> dict[int, list[ArchivedRule]]:
        """Every archived audit's rule counts, by audit id (what a trend draws)."""
        if self.revision is None:
            return {}
        made: dict[int, list[ArchivedRule]] = {}
        with self._reading() as connection:
            for row in connection.execute(select(rule_results).order_by(rule_results.c.audit_id,
                                                                         rule_results.c.position)):
                made.setdefault(row.audit_id, []).append(_archived_rule(row))
        return made

    def open_findings(self, audit_id: int) -> list[ArchivedFinding]:
        """An audit's open findings (fails; the waived ones are closed), what a comparison matches."""
        query = select(findings.c.pack, findings.c.rule, findings.c.outcome, findings.c.record_time,
                       findings.c.fingerprint).where(findings.c.audit_id == audit_id, findings.c.outcome == "fail")
        with self._reading() as connection:
            return [ArchivedFinding(*row) for row in connection.execute(query)]

    # -- writing ---------------------------------------------------------------------------
    def store(self, report: Report, key_check: str, archived_at: dt.datetime | None = None) -> int:
        """Store the audit ``report`` in one transaction; its new id. Findings must carry fingerprints."""
        archived_at = archived_at or dt.datetime.now(dt.UTC)
        try:
            with self.engine.connect().execution_options(archive_writer=True) as connection, connection.begin():
                self._lock(connection)
                self._upgrade(connection)
                audit_id = _insert_audit(connection, report, key_check, archived_at)
        except SQLAlchemyError as exc:
            raise ArchiveError(f"{self.shown}: the audit was not archived ({_reason(exc)})") from None
        self.revision = _head()
        return audit_id

    def close(self) -> None:
        self.engine.dispose()

    # -- the schema ------------------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise ArchiveError(f"{self.shown}: cannot read the archive ({_reason(exc)})") from None

    def _checked_revision(self) -> str | None:
        """The archive's schema revision (None: a new archive); refuses one this release cannot use.
        Reads only: a SQLite file that does not exist yet is not created here."""
        if self.sqlite_path is not None and (not self.sqlite_path.exists() or self.sqlite_path.stat().st_size == 0):
            return None
        with self._reading() as connection:
            return _revision_of(connection, self.shown)

    def _lock(self, connection: Connection) -> None:
        """Hold the archive for this transaction (SQLite: BEGIN IMMEDIATE did; PostgreSQL: a lock)."""
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _LOCK_ID})

    def _upgrade(self, connection: Connection) -> None:
        """Bring the schema to this release's head inside the caller's transaction (checked again
        under the lock: another audit may have made or changed it meanwhile)."""
        from alembic import command

        current = _revision_of(connection, self.shown)
        if current == _head():
            return
        config = _alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _archived_rule(row: Any) -> ArchivedRule:
    return ArchivedRule(row.pack, row.rule, row.title, row.severity, row.target, row.applicable, row.passed,
                        row.failed, row.waived, row.compliance_rate)


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


def _head() -> str:
    return str(_scripts().get_current_head())


def _revision_of(connection: Connection, shown: str) -> str | None:
    """The schema revision recorded in the archive, checked against the migrations this release ships."""
    from alembic.runtime.migration import MigrationContext

    tables = set(inspect(connection).get_table_names())
    if "alembic_version" not in tables:
        if tables:
            raise ArchiveError(f"{shown}: not a protocol-audit archive (it holds other tables: "
                               f"{', '.join(sorted(tables)[:5])}); give a new file or an archive")
        return None
    current = MigrationContext.configure(connection).get_current_revision()
    known = {script.revision for script in _scripts().walk_revisions()}
    if current is not None and current not in known:
        raise ArchiveError(f"{shown}: the archive was written by a newer protocol-audit (schema revision "
                           f'"{current}"; this release {__version__} knows up to "{_head()}"); '
                           f"upgrade protocol-audit to use it (the archive was not changed)")
    return current


def _insert_audit(connection: Connection, report: Report, key_check: str, archived_at: dt.datetime) -> int:
    summary = report.summary
    made = connection.execute(insert(audits), {
        "archived_at": archived_at.astimezone(dt.UTC).isoformat(timespec="seconds"), "as_of": report.as_of,
        "tool_version": report.tool_version, "pack_set": pack_set(report),
        "period_from": report.period_from, "period_until": report.period_until,
        "first_record": report.period_first, "last_record": report.period_last,
        "records_read": summary.records_read, "records_judged": summary.records_judged,
        "records_rejected": summary.records_rejected, "findings": summary.findings, "key_check": key_check,
    }).inserted_primary_key
    assert made is not None
    audit_id = made[0]
    connection.execute(insert(audit_packs), [
        {"audit_id": audit_id, "pack": pack.id, "version": pack.version, "sha256": pack.sha256}
        for pack in report.packs])
    if report.inputs:
        connection.execute(insert(audit_inputs), [
            {"audit_id": audit_id, "position": position, "path": item.path, "record_type": item.record_type,
             "sha256": item.sha256, "records_read": item.records_read, "records_judged": item.records_judged,
             "records_rejected": item.records_rejected} for position, item in enumerate(report.inputs)])
    if report.rules:
        connection.execute(insert(rule_results), [
            {"audit_id": audit_id, "pack": rule.pack, "rule": rule.id, "position": position, "title": rule.title,
             "severity": rule.severity, "target": rule.target, "applicable": rule.applicable,
             "passed": rule.passed, "failed": rule.failed, "waived": rule.waived,
             "not_evaluable": rule.not_evaluable, "not_applicable": rule.not_applicable,
             "compliance_rate": rule.compliance_rate} for position, rule in enumerate(report.rules)])
    rows = []
    for finding in report.findings:
        if finding.fingerprint is None:
            raise ArchiveError("a finding without its fingerprint cannot be archived")
        rows.append({"audit_id": audit_id, "pack": finding.pack, "rule": finding.rule,
                     "record_type": finding.record_type, "severity": finding.severity,
                     "outcome": finding.outcome, "record_time": finding.time, "fingerprint": finding.fingerprint})
    for start in range(0, len(rows), 5000):
        connection.execute(insert(findings), rows[start:start + 5000])
    return int(audit_id)


# -- targets -----------------------------------------------------------------------------------
def _shown(target: str) -> str:
    """The target as messages and the trend say it: a URL without its password, in the user part or
    the query (?password=...)."""
    if not is_url(target):
        return target
    try:
        url = make_url(target)
        query = {name: ("hidden" if name.lower() == "password" else value) for name, value in url.query.items()}
        return str(url.set(query=query).render_as_string(hide_password=True))
    except (ArgumentError, ValueError):
        return target.split("://", 1)[0] + "://..."


def _sqlite_file(target: str, read_only: bool = False) -> Path:
    """A SQLite archive's path: a regular file that is a SQLite database (or empty), or one to create."""
    path = Path(target)
    if path.exists():
        if not path.is_file():
            raise UsageError(f"{target}: the archive is not a regular file")
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_HEADER))
        if head and head != _SQLITE_HEADER:
            raise ArchiveError(f"{target}: not a SQLite database, so not an archive "
                               f"(give a new file name to start one)")
        if read_only and not os.access(path, os.R_OK):
            raise ArchiveError(f"{target}: the archive cannot be read (permission denied)")
        if not read_only and not os.access(path, os.R_OK | os.W_OK):
            raise ArchiveError(f"{target}: the archive cannot be read and written (permission denied)")
    elif not path.parent.is_dir():
        raise UsageError(f"{target}: no folder {path.parent} to create the archive in")
    return path


def _sqlite_engine(path: Path, read_only: bool = False) -> Engine:
    # the file named as given: a path is never read as URL text ("?", "#" and "%" are its own characters)
    writable = os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)
    if read_only and not writable:  # read through a read-only connection; in a folder that cannot be
        # written, as a file nothing changes meanwhile. (Where it can be written, the usual connection
        # only reads, and closing it removes the log files a read of a WAL database makes.)
        flags = "mode=ro" if os.access(path.parent, os.W_OK) else "mode=ro&immutable=1"
        location = f"file:{urllib.parse.quote(str(path.resolve()))}?{flags}"
        engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(location, uri=True,
                                                                             timeout=BUSY_SECONDS))
    else:
        engine = create_engine(URL.create("sqlite", database=str(path)), connect_args={"timeout": BUSY_SECONDS})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _: Any) -> None:
        # SQLAlchemy's own BEGIN (below), not the sqlite3 module's: DDL stays in the transaction
        dbapi_connection.isolation_level = None
        dbapi_connection.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")
        dbapi_connection.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        if not connection.get_execution_options().get("archive_writer"):
            connection.exec_driver_sql("BEGIN")  # a reader: changes nothing, locks nothing
            return
        # WAL: readers go on while an audit is written. A writer takes the write lock at once: two
        # audits archiving wait for each other in turn rather than both reading, then one failing
        connection.exec_driver_sql("PRAGMA journal_mode = WAL")
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _url(target: str, shown: str) -> Any:
    try:
        return make_url(target)
    except (ArgumentError, ValueError) as exc:  # ValueError: a port that is no number, a bad IPv6 host
        raise UsageError(f'--archive "{shown}" is not a database URL ({exc})'.replace(target, shown)) from None


def _sqlite_target(target: str, shown: str, read_only: bool = False) -> Path | None:
    """The SQLite file of a target (a path, or a sqlite:/// URL), None for a server URL."""
    if not is_url(target):
        return _sqlite_file(target, read_only)
    url = _url(target, shown)
    if url.get_backend_name() != "sqlite":
        return None
    if not url.database or url.database == ":memory:":
        raise UsageError(f'--archive "{shown}": a SQLite archive is a file (sqlite:///path/to/archive.db)')
    return _sqlite_file(url.database, read_only)


def _server_engine(target: str, shown: str) -> Engine:
    url = _url(target, shown)
    if url.get_backend_name() != "postgresql":
        raise UsageError(f'--archive "{shown}": an archive is a SQLite file or a postgresql:// URL')
    if url.drivername not in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2"):
        raise UsageError(f'--archive "{shown}": a PostgreSQL archive is reached through psycopg: write the URL '
                         f"as postgresql://...")
    url = url.set(drivername="postgresql+psycopg")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise UsageError("a PostgreSQL archive needs the psycopg driver: pip install 'protocol-audit[postgresql]'") \
            from None
    return create_engine(url, pool_pre_ping=False, connect_args={"connect_timeout": 10})


def _reason(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None)
    text_ = str(original if original is not None else exc).strip().splitlines()
    return (text_[0] if text_ else type(exc).__name__)[:300]
