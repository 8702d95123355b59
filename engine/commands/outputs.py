"""Report files written all or none, never over what the run reads, and safe from interruption:
every output is rendered to a temporary file beside it and renamed into place once all rendered."""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, TypeVar

from engine.errors import AuditError, UsageError

T = TypeVar("T")  # what is written: a report, a diff


class Outputs:
    """The report files of one run, written all or none: every one is rendered to a temporary file
    beside it first, and only when all rendered are they renamed into place; what was written is
    known at every moment, so an interruption can say it."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self.written: list[str] = []

    def check(self, inputs: Iterable[tuple[str, str]]) -> None:
        """Refuse, before anything is read, an output that would replace an input (``inputs``:
        what it is, its path) or another output, and one that cannot be written."""
        inputs = list(inputs)
        for number, path in enumerate(self.paths):
            for earlier in self.paths[:number]:
                if same_file(path, earlier):
                    raise UsageError(f"cannot write {path}: -o {earlier} names the same file")
            for what, other in inputs:
                if existingsame_file(path, other):
                    raise UsageError(f"cannot write {path}: it is {what} {other}")
            folder = folder_of(path)
            if os.path.isdir(path):
                raise UsageError(f"cannot write {path}: is a directory")
            # the one sure test that the folder takes a new file (permissions, a read-only mount)
            with signals_held():
                try:
                    handle, probe = tempfile.mkstemp(dir=folder, prefix=".protocol-audit-", suffix=".tmp")
                except OSError as exc:
                    raise UsageError(f"cannot write {path}: {reason(exc)}") from None
                os.close(handle)
                os.unlink(probe)

    def write(self, renderers: Sequence[tuple[str, Callable[[T, TextIO], None]]], report: T) -> None:
        """Render every output to its temporary file, then rename them all into place."""
        temps: dict[str, str] = {}
        path = ""
        try:
            for path, render in renderers:
                with signals_held():  # a Ctrl-C between the two would leave the file behind
                    handle, temps[path] = tempfile.mkstemp(dir=folder_of(path), prefix=f".{Path(path).name}.",
                                                           suffix=".tmp")
                with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
                    render(report, out)
            # Renames are quick and cannot all be undone: a signal waits until they are done, so
            # the message it leads to says what is on disk.
            with signals_held():
                for path, _ in renderers:
                    os.replace(temps[path], path)
                    del temps[path]
                    self.written.append(path)
        except OSError as exc:
            raise AuditError(f"cannot write {path}: {reason(exc)}; {self.what_was_written()}") from None
        finally:
            with signals_held():
                for temp in temps.values():
                    Path(temp).unlink(missing_ok=True)

    def what_was_written(self) -> str:
        """``no report was written``, ``wrote a.json, b.html``, or which were written and which not."""
        if not self.written:
            return "no report was written"
        wrote = f"wrote {', '.join(self.written)}"
        missing = [path for path in self.paths if path not in self.written]
        if not missing:
            return wrote
        return f"{wrote}; {', '.join(missing)} {'was' if len(missing) == 1 else 'were'} not written"


def write_one(path: str, render: Callable[[T, TextIO], None], report: T) -> None:
    """Write one report file whole or not at all."""
    Outputs([path]).write([(path, render)], report)


def same_file(one: str, other: str) -> bool:
    """Whether two paths name one file, whichever spelling, symlink or hard link; for a file that
    does not exist yet, whether they lead to the same place."""
    if existingsame_file(one, other):
        return True
    return os.path.normcase(os.path.realpath(one)) == os.path.normcase(os.path.realpath(other))


def existingsame_file(one: str, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except (OSError, ValueError):  # one of them does not exist (or is no path at all)
        return False


def reason(exc: OSError) -> str:
    """An OSError as a message's reason: "permission denied", "no space left on device"."""
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is done where they would leave a half state (a
    temporary file not yet known, renames half done); then they act as they would have.

    The handlers are swapped rather than the signals masked: a signal masked on this thread can
    be delivered to another one (the engine queues' feeder threads), and Python runs its handler
    here anyway."""
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous: dict[int, Any] = {}
    try:
        for number in (signal.SIGINT, signal.SIGTERM):
            previous[number] = signal.signal(number, hold)
    except ValueError:  # not the main thread, where signals are not handled anyway
        yield
        return
    try:
        yield
    finally:
        for held, handler in previous.items():
            signal.signal(held, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(caught[0])


def inputs_of(files: Iterable[str], packs: Iterable[str] = (), key_file: str | None = None,
              maps: Iterable[str] = (), waivers: Iterable[str] = ()) -> Iterator[tuple[str, str]]:
    """Everything a run reads that an output must never replace: each FILE (and the path of a
    TYPE=FILE), pack, map and waivers files, the key file."""
    for arg in files:
        yield "the input", arg
        if "=" in arg:
            yield "the input", arg.partition("=")[2]
    for what, given in (("the pack", packs), ("the map", maps), ("the waivers file", waivers)):
        for path in given:
            if os.path.isfile(path):
                yield what, path
    if key_file:
        yield "the key file", key_file


def folder_of(path: str) -> Path:
    """The existing folder an output goes to."""
    folder = Path(path).parent
    if not folder.is_dir():
        there = "is a file, not a folder" if folder.exists() else "does not exist"
        raise UsageError(f"{path}: folder {folder} {there}")
    return folder
