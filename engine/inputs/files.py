"""Opening an export: refusing what is not a regular UTF-8 file, and reading physical lines
bounded in length and hashed as they go (every reader's accounting starts here)."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO, Self

from engine.errors import InputError

MAX_LINE = 1024 * 1024  # bytes in one physical line (and one CSV cell); SPEC 5: no hang on huge input
BOM = b"\xef\xbb\xbf"
# Byte-order marks of encodings read as UTF-8 only line by line, each line failing: refused as a file.
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
              (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_FILE_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_input(path: str) -> tuple[int, int]:
    """Raise InputError unless ``path`` is a regular file this process may read; return the file's
    identity (device, inode), which tells two spellings of one file apart from two files.

    Missing, a directory, a named pipe, a device or a socket, or not readable: each is named. A pipe
    is refused rather than read: reading it could wait for a writer forever, or never end.
    """
    with open_input(path) as handle:
        found = os.fstat(handle.fileno())
    return found.st_dev, found.st_ino


def regular_file(path: str) -> None:
    """Raise InputError unless ``path`` names a regular file (it is not opened: opening a device can act)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise _unreadable(path, exc) from None
    _check_mode(path, mode)


def _unreadable(path: str, exc: OSError) -> InputError:
    if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
        return InputError(f"{path}: no such file")
    if isinstance(exc, PermissionError):
        return InputError(f"{path}: permission denied")
    return InputError(f"{path}: cannot be read ({exc.strerror or exc})")


def _check_mode(path: str, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a directory, not a file")
    if not stat.S_ISREG(mode):
        raise InputError(f"{path}: not a regular file ({_kind(mode)})")


def _kind(mode: int) -> str:
    return next((name for test, name in _FILE_KINDS if test(mode)), "an unknown kind of file")


def special_file(path: str) -> str | None:
    """What ``path`` is when it exists as neither a regular file nor a folder ("a named pipe"), else
    None: a pack or map named so is said to be that, not to be missing (and is never opened)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else _kind(mode)


_READING: dict[str, BinaryIO] = {}  # the handle each input was last opened with: how far it is read


def bytes_read(path: str) -> int:
    """How far the input at ``path`` has been read (its handle's position; its size once closed)."""
    handle = _READING.get(path)
    if handle is None:
        return 0
    if handle.closed:
        return size_of(path)
    try:
        return handle.tell()
    except (OSError, ValueError):
        return 0


def size_of(path: str) -> int:
    """The size of the file at ``path`` in bytes (0 when it cannot be known)."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def open_input(path: str) -> BinaryIO:
    regular_file(path)
    try:
        # without blocking: a file swapped for a pipe since the check must not hang the open
        fd = os.open(path, os.O_RDONLY | _NONBLOCK)
    except OSError as exc:
        raise _unreadable(path, exc) from None
    handle = os.fdopen(fd, "rb")
    try:
        _check_mode(path, os.fstat(fd).st_mode)  # what was opened: the path may have changed since the check
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        handle.close()
        raise
    _READING[path] = handle
    return handle


def wide_encoding(head: bytes) -> str | None:
    """The encoding, UTF-16 or UTF-32, of a file whose first bytes are its byte-order mark, or have
    the NUL bytes ASCII text has between its characters in it; None for any other file."""
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            return name
    sample = head[:len(head) // 4 * 4]
    if not sample:
        return None
    nul = [sample[k::4].count(0) / len(sample[k::4]) for k in range(4)]  # NUL share per position mod 4
    for name, high in (("UTF-32", (1, 2, 3)), ("UTF-32", (0, 1, 2)), ("UTF-16", (1, 3)), ("UTF-16", (0, 2))):
        if all(nul[k] >= 0.75 if k in high else nul[k] <= 0.25 for k in range(4)):
            return name
    return None


class LineTooLong(Exception):
    """A physical line over MAX_LINE: ``head`` is its first MAX_LINE + 1 bytes, the rest is unread."""

    def __init__(self, head: bytes) -> None:
        super().__init__("line is longer than 1 MiB")
        self.head = head


class Lines:
    """Physical lines of a binary file, bounded in length and hashed as they are read."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.number = 0
        self.digest = hashlib.sha256()
        self.unfinished = False  # the last line was too long, and the rest of it is unread

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        if self.unfinished:
            for _ in self.rest():  # skip the rest without holding it
                pass
        line = self.handle.readline(MAX_LINE + 1)
        if not line:
            raise StopIteration
        self.digest.update(line)
        self.number += 1
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            self.unfinished = True
            raise LineTooLong(line)
        return line[3:] if self.number == 1 and line.startswith(BOM) else line

    def rest(self) -> Iterator[bytes]:
        """The rest of a line too long to return, in pieces of at most MAX_LINE bytes; the last ends it."""
        while self.unfinished:
            piece = self.handle.readline(MAX_LINE)
            self.digest.update(piece)
            self.unfinished = bool(piece) and not piece.endswith(b"\n")
            yield piece


class TextLines(Lines):
    """Decoded per line so a bad byte is reported at its physical line."""

    def __init__(self, handle: BinaryIO, path: str, encoding: str = "utf-8") -> None:
        super().__init__(handle)
        self.path = path
        self.encoding = encoding  # ASCII-compatible (a source map's encodings are checked for it)

    def __next__(self) -> str:  # type: ignore[override]
        line = super().__next__()
        try:
            return line.decode(self.encoding)
        except UnicodeDecodeError:
            name = "UTF-8" if self.encoding == "utf-8" else self.encoding
            raise InputError(f"{self.path}: not {name} (invalid byte at line {self.number})") from None
