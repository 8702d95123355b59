"""Shared pytest setup: command-line options used by the test modules."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the golden files under tests/golden/ instead of comparing")


@pytest.fixture(autouse=True)
def pseudonym_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed pseudonym key, so reports (and their golden files) are the same in every run."""
    monkeypatch.setenv("PROTOCOL_AUDIT_KEY", "test-key-not-a-secret-0123456789")


# -- a throwaway PostgreSQL server for the archive tests -----------------------------------------
# Our own fixture rather than pytest-postgresql: these machines run the tests as root, which
# initdb and postgres refuse, so the server runs as an unprivileged user in a folder it owns.

@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for this test process, listening on a Unix socket only; its base URL.
    Skips (with the reason) where the server binaries or the psycopg driver are not installed."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("the psycopg driver is not installed (pip install '.[test]')")
    user = None
    if os.geteuid() == 0:  # initdb refuses root: run the server as an unprivileged account
        for name in ("postgres", "nobody"):
            try:
                user = pwd.getpwnam(name)
                break
            except KeyError:
                continue
        if user is None:
            pytest.skip("running as root and no unprivileged account to run PostgreSQL as")
    home = Path(tempfile.mkdtemp(prefix="protocol-audit-pg-"))
    data, socket_dir = home / "data", home / "sock"
    socket_dir.mkdir()
    if user is not None:
        for path in (home, socket_dir):
            os.chown(path, user.pw_uid, user.pw_gid)
    run_as = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid}
    port = 20000 + os.getpid() % 20000  # names the socket file; nothing listens on TCP
    subprocess.run([initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
                   check=True, capture_output=True, cwd=home, **run_as)  # type: ignore[call-overload]
    options = f"-k {socket_dir} -p {port} -c listen_addresses='' -c fsync=off"
    started = subprocess.run([pg_ctl, "-D", str(data), "-o", options, "-l", str(home / "log"), "-w", "-t", "60",
                              "start"], capture_output=True, cwd=home, **run_as)  # type: ignore[call-overload]
    if started.returncode != 0:
        log = (home / "log").read_text(errors="replace") if (home / "log").exists() else ""
        shutil.rmtree(home, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stderr.decode(errors='replace')}\n{log}")
    try:
        yield f"postgresql://postgres@/{{database}}?host={socket_dir}&port={port}"
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, cwd=home,
                       **run_as)  # type: ignore[call-overload]
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A new, empty database on the throwaway server, as a postgresql:// URL."""
    import psycopg

    name = f"archive_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.format(database="postgres"), autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.format(database=name)
