"""A list of an audit's entries (findings, not-evaluable records) whose memory does not grow with
them: beyond ``LIMIT`` entries, each full batch is sorted and written to a temporary file, and the
sorted whole is read back by merging the batches, one entry at a time, whenever it is iterated.

A year of sessions can hold hundreds of thousands of findings, each with its evidence (about 800
bytes in memory); the JSON and CSV reports stream them and the Markdown and terminal ones keep
only what they show, so the audit's memory stays bounded by the batch, not the findings. (The HTML
page lists every finding, and the SARIF and JUnit writers still build their document whole.)
The order is exactly that of ``sorted(entries, key=key)``: each batch is sorted stably and
heapq.merge takes equal keys from earlier batches first.
"""

from __future__ import annotations

import heapq
import io
import os
import pickle
import struct
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TypeVar, overload

T = TypeVar("T")
_LENGTH = struct.Struct("<Q")
LIMIT = 50_000  # entries held in memory; the tests lower it to force the spill


class Spool(Sequence[T]):
    """Entries appended in any order; ``sorted()`` gives them in the order of ``key`` (so does
    iterating or indexing the Spool itself)."""

    def __init__(self, key: Callable[[T], Any], limit: int | None = None) -> None:
        self.key = key
        self.limit = LIMIT if limit is None else limit
        self.held: list[T] = []
        self.batches: list[tuple[int, int]] = []  # (offset, count) of each sorted batch in the file
        self.file: IO[bytes] | None = None

    def append(self, entry: T) -> None:
        self.held.append(entry)
        if len(self.held) >= self.limit:
            self._write_batch()

    def __len__(self) -> int:
        return len(self.held) + sum(count for _, count in self.batches)

    def __iter__(self) -> Iterator[T]:
        return iter(self.sorted())

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        return self.sorted()[index]

    def __eq__(self, other: object) -> bool:
        """Equal when they hold equal entries in the report's order."""
        return isinstance(other, Spool) and len(self) == len(other) and list(self) == list(other)

    __hash__ = None  # type: ignore[assignment]

    def _write_batch(self) -> None:
        if self.file is None:
            self.file = tempfile.TemporaryFile(prefix="protocol-audit-")
        self.held.sort(key=self.key)
        offset = self.file.seek(0, 2)
        # each entry on its own (its length, then its pickle), so a reader holds one at a time
        write, dumps, protocol = self.file.write, pickle.dumps, pickle.HIGHEST_PROTOCOL
        for entry in self.held:
            data = dumps(entry, protocol)
            write(_LENGTH.pack(len(data)))
            write(data)
        self.batches.append((offset, len(self.held)))
        self.held = []

    def sorted(self) -> Sequence[T]:
        """All the entries in order: a tuple while they fit in memory, else a view that merges the
        written batches each time it is iterated."""
        self.held.sort(key=self.key)
        if not self.batches:
            return tuple(self.held)
        assert self.file is not None
        self.file.flush()
        return Merged(self.batches, tuple(self.held), self.key, self.file)


class Merged(Sequence[T]):
    """The sorted entries of a spilled Spool, read from its file whenever they are iterated. It
    keeps the file open for as long as it lives (the file has no name once closed)."""

    def __init__(self, batches: list[tuple[int, int]], held: tuple[T, ...], key: Callable[[T], Any],
                 file: IO[bytes]) -> None:
        self.batches, self.held, self.key, self.file = list(batches), held, key, file
        self.size = len(held) + sum(count for _, count in batches)

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def __iter__(self) -> Iterator[T]:
        return heapq.merge(*(self._batch(offset, count) for offset, count in self.batches), iter(self.held),
                           key=self.key)

    def _batch(self, offset: int, count: int) -> Iterator[T]:
        # Each open iterator reads at its own position (pread): a report may walk the entries
        # while another walk is under way (a writer counting the waived ones, say).
        with io.BufferedReader(_ReadAt(self.file.fileno(), offset), 1 << 16) as reader:
            read, loads, size = reader.read, pickle.loads, _LENGTH.size
            for _ in range(count):
                (length,) = _LENGTH.unpack(read(size))
                yield loads(read(length))

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        """By position, read through in order (the reports iterate; this is for completeness)."""
        entries = list(self)
        return entries[index] if isinstance(index, slice) else entries[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and len(other) == self.size and all(
            a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]


class _ReadAt(io.RawIOBase):
    """A read-only view of an open file from ``offset`` on, with its own position."""

    def __init__(self, fd: int, offset: int) -> None:
        super().__init__()
        self.fd, self.position = fd, offset

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self.fd, len(buffer), self.position)
        buffer[:len(data)] = data
        self.position += len(data)
        return len(data)


class Mapped(Sequence[T]):
    """``convert`` applied to each entry of ``entries`` as it is read, holding none of the results
    (a spilled audit's findings marked against the last audit, say)."""

    def __init__(self, entries: Sequence[Any], convert: Callable[[Any], T]) -> None:
        self.entries, self.convert = entries, convert

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[T]:
        return map(self.convert, self.entries)

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        if isinstance(index, slice):
            return [self.convert(entry) for entry in self.entries[index]]
        return self.convert(self.entries[index])
