"""The terminal side of every command: messages made printable, exit codes, a closed pipe or a
signal ended cleanly, every AuditError turned into one line and exit 2 (never a traceback), and the
progress line."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any, NoReturn

import click

from engine.commands.outputs import Outputs
from engine.errors import AuditError, MapError, MissingColumns, PackError, WaiverError
from engine.packs import is_tests_path
from engine.privacy import KEY_VARIABLE, Pseudonymiser
from engine.reporters.common import printable

EXIT_SUCCESS = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2
# The reader of our output went away (`... | head -1`): what a tool killed by SIGPIPE reports in
# the shell. Not 0: for audit and test that would claim a verdict the reader never got (a
# `set -o pipefail` CI step would pass); not 2 with a message: nobody is left to read it.
EXIT_CLOSED_PIPE = 128 + 13


class ReaderGone(Exception):
    """stdout or stderr is a pipe whose reader has gone: a normal end for a command-line tool."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the same clean-up (worker stopped, no temporary file left)."""


def terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def echo(text: str, err: bool = False) -> None:
    """Print one message: every control character of it made visible (an escape sequence from a
    CSV header or a pack could rewrite the user's terminal; a line break could forge a line)."""
    print_out(lambda: click.echo(printable(text, absent=""), err=err))


def echo_lines(lines: Iterable[str]) -> None:
    """Print lines on stdout, each made visible like a message."""
    text = "".join(printable(line, absent="") + "\n" for line in lines)
    print_out(lambda: click.echo(text, nl=False))


def print_out(write: Callable[[], None]) -> None:
    """Run ``write`` and flush stdout; a closed pipe there is a ReaderGone, so that only a closed
    stdout or stderr, never the engine's own pipes, ends the run quietly."""
    try:
        write()
        sys.stdout.flush()
    except BrokenPipeError:
        raise ReaderGone from None


def silence(*streams: Any) -> None:
    """Point closed pipes at the null device, so the interpreter's last flush does not fail again."""
    for stream in streams:
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (click's test runner)
            continue
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


def fail(message: str) -> NoReturn:
    try:
        echo(f"protocol-audit: {message}", err=True)
    except ReaderGone:
        silence(sys.stderr)
    sys.exit(EXIT_ERROR)


def guard(action: Callable[[], int], outputs: Outputs | None = None) -> None:
    """Run a command; every AuditError becomes a clear message and exit 2, never a traceback."""
    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: SIGTERM keeps its meaning
        previous = None
    try:
        code = action()
    except PackError as exc:
        for problem in exc.problems:
            echo(str(problem), err=True)
        count = len(exc.problems)
        files = len({problem.path for problem in exc.problems})
        noun = "file" if any(is_tests_path(problem.path) for problem in exc.problems) else "rule pack"
        noun = "map" if isinstance(exc, MapError) else "waivers file" if isinstance(exc, WaiverError) else noun
        fail(f"{count} problem{'s' if count != 1 else ''} in {files} {noun}{'s' if files != 1 else ''}")
    except MissingColumns as exc:
        for line in exc.lines:
            echo(line, err=True)
        fail(exc.advice)
    except AuditError as exc:
        fail(str(exc))
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, Terminated) else "interrupted"
        fail(f"{what}; {outputs.what_was_written() if outputs else 'no report was written'}")
    except ReaderGone:
        silence(sys.stdout, sys.stderr)
        sys.exit(EXIT_CLOSED_PIPE)
    except Exception as exc:  # a bug: say so plainly; the traceback is there when asked for
        if os.environ.get("PROTOCOL_AUDIT_DEBUG"):
            raise
        fail(f"internal error: {type(exc).__name__}: {exc} (set PROTOCOL_AUDIT_DEBUG=1 for details)")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


class Progress:
    """The run's progress on a terminal (nothing when stderr is not one): a bar of the bytes read of
    all the inputs, with records/s and the time left, then one of the judging (of patients' records,
    when rules look at history), through click's progress bar."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.phase = ""
        self.bar: Any = None
        self.started = time.monotonic()
        self.records = 0

    def __call__(self, phase: str, done: int, total: int, records: int) -> None:
        if not self.enabled:
            return
        if phase != self.phase:
            self._close()
            self.phase, self.started = phase, time.monotonic()
            self.bar = click.progressbar(length=max(total, 1), label=f"{phase:<8}", file=sys.stderr, width=30,
                                         show_eta=True, show_percent=True, item_show_func=self._rate)
            self.bar.__enter__()
        self.records = records
        self.bar.update(max(0, done - self.bar.pos), records)

    def _rate(self, records: int | None) -> str | None:
        if records is None:
            return None
        seconds = max(time.monotonic() - self.started, 1e-6)
        return f"{records:,} records, {records / seconds:,.0f}/s"

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def writing(self) -> None:
        """The reports are being written (the last phase)."""
        self._close()
        if self.enabled and self.phase:
            click.echo("writing the reports...", err=True, nl=False)
            self.phase = "writing"

    def done(self) -> None:
        self._close()
        if self.enabled and self.phase == "writing":
            click.echo("\r" + " " * 40 + "\r", err=True, nl=False)
            self.phase = "done"


@contextlib.contextmanager
def visible_usage_errors() -> Iterator[None]:
    """click's own usage errors quote what was typed (an option, a value): made visible too."""
    try:
        yield
    except click.ClickException as exc:
        # click declares the attribute final; it is only read when click shows the error
        exc.message = printable(exc.message, absent="")  # type: ignore[misc]
        raise


def pseudonymiser(reveal_identifiers: bool, key_file: str | None) -> Pseudonymiser | None:
    """The run's pseudonym key, or None when identifiers are revealed; a random key is announced."""
    if reveal_identifiers:
        return None
    pseudonymise = Pseudonymiser.from_settings(key_file)
    if pseudonymise.random:
        echo(f"protocol-audit: patient identifiers are pseudonymised with a random key for this run; "
              f"set {KEY_VARIABLE} or --key-file for pseudonyms that stay the same between runs", err=True)
    return pseudonymise


