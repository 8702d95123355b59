"""RE2 regular expressions (linear time: no pattern in a pack can hang an audit)."""

from __future__ import annotations

from typing import Any

import re2

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors reach the user as validation problems, not as log lines


class PatternError(ValueError):
    """A pattern RE2 cannot compile; ``offset`` is where in the pattern (0-based, best effort)."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


def compile_pattern(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        reason, _, fragment = detail.partition(": ")
        offset = pattern.find(fragment) if fragment else -1
        raise PatternError(reason or detail, max(offset, 0)) from None


def full_match(compiled: Any, text: str) -> bool:
    return compiled.fullmatch(text) is not None
