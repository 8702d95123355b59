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


# What RE2 leaves out on purpose (to stay linear time), said in words a pack author can act on.
_UNSUPPORTED = {"(?=": "look-ahead", "(?!": "look-ahead", "(?<=": "look-behind", "(?<!": "look-behind",
                "(?P=": "named back-reference"}


def compile_pattern(pattern: str) -> Any:
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        reason, _, fragment = detail.partition(": ")
        offset = pattern.find(fragment) if fragment else -1
        if reason == "trailing \\":
            offset = len(pattern) - 1
        if reason == "invalid escape sequence" and fragment[1:2].isdigit():
            reason = f'back-reference "{fragment}" is not supported (RE2 has no back-references)'
        elif reason == "invalid perl operator":
            lead = next((k for k in _UNSUPPORTED if pattern.startswith(k, offset)), None)
            if lead:
                lacks = "back-references" if lead == "(?P=" else "look-around"
                reason = f'{_UNSUPPORTED[lead]} "{lead}" is not supported (RE2 has no {lacks})'
            else:
                reason = f'unsupported group "{fragment}"'
        elif fragment:
            reason = f'{reason} at "{fragment}"'
        raise PatternError(reason or detail, max(offset, 0)) from None


def full_match(compiled: Any, text: str) -> bool:
    return compiled.fullmatch(text) is not None


class Matcher:
    """One compiled pattern with a bounded memo of its answers.

    google-re2's Python wrapper costs about 9 µs a call, far more than the match itself, and
    exported values (clinician ids, codes) repeat: remembering answers keeps regex rules cheap.
    """

    MEMO_LIMIT = 65536

    def __init__(self, pattern: str) -> None:
        self.compiled = compile_pattern(pattern)
        self.memo: dict[str, bool] = {}

    def __call__(self, text: str) -> bool:
        answer = self.memo.get(text)
        if answer is None:
            if len(self.memo) >= self.MEMO_LIMIT:
                self.memo.clear()
            answer = self.memo[text] = self.compiled.fullmatch(text) is not None
        return answer
