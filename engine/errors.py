"""Errors the engine raises; cli.py is the only place that turns them into exit codes."""

from __future__ import annotations


class AuditError(Exception):
    """Base class of every error a user can act on."""


class PackError(AuditError):
    """One or more problems in a rule pack, each with its position."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.path, p.line, p.column, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


class Problem:
    """One problem in a pack: ``path:line:column: message`` (1-based)."""

    __slots__ = ("path", "line", "column", "message")

    def __init__(self, path: str, line: int, column: int, message: str) -> None:
        self.path = path
        self.line = line
        self.column = column
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"

    def __repr__(self) -> str:
        return f"Problem({str(self)!r})"


class InputError(AuditError):
    """An input file that cannot be read at all (missing, not UTF-8, JSON that does not parse)."""


class MissingColumns(InputError):
    """Fields the rules read that an input's header does not provide (SPEC 8): one line each, then
    what to do; nothing was judged."""

    def __init__(self, lines: list[str], advice: str) -> None:
        self.lines, self.advice = lines, advice
        super().__init__("\n".join([*lines, advice]))


class MapError(PackError):
    """Problems in a source map, each with its position, like a pack's."""


class WaiverError(PackError):
    """Problems in a waivers file, each with its position, like a pack's."""


class UsageError(AuditError):
    """A command line that cannot be carried out (unknown pack name, unbound file...)."""


class EngineError(AuditError):
    """The rule engine crashed, hung or broke an invariant; the audit is incomplete."""


class ArchiveError(AuditError):
    """An archive of audits that cannot be used: not an archive, from a newer release, unreachable,
    or a write that failed (then nothing of the audit was stored)."""
