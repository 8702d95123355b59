"""Pseudonyms for patient identifiers: a keyed hash (HMAC-SHA256), stable for one key."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from .errors import UsageError

KEY_VARIABLE = "PROTOCOL_AUDIT_KEY"


class Pseudonymiser:
    """Maps a patient identifier to ``pt-`` and 12 hex digits of its HMAC under the key.

    The same key gives the same pseudonym in every run and format, so an officer holding the key
    can find a patient's findings; without it the pseudonym reveals nothing.
    """

    def __init__(self, key: bytes, source: str, random: bool = False) -> None:
        self.key = key
        self.source = source  # where the key came from, said in the report
        self.random = random  # a key made for this run: its pseudonyms match no other run
        self._known: dict[str, str] = {}

    @classmethod
    def for_this_run(cls) -> Pseudonymiser:
        """A random key: pseudonyms that say nothing and match no other run."""
        return cls(secrets.token_bytes(32), "a random key for this run only", random=True)

    def __call__(self, identifier: str) -> str:
        found = self._known.get(identifier)
        if found is None:
            digest = hmac.new(self.key, identifier.encode("utf-8"), hashlib.sha256).hexdigest()
            found = self._known[identifier] = f"pt-{digest[:12]}"
        return found

    @classmethod
    def from_settings(cls, key_file: str | None) -> Pseudonymiser:
        """The key from ``key_file``, else from $PROTOCOL_AUDIT_KEY, else a random key for this run only."""
        if key_file:
            try:
                key = Path(key_file).read_bytes().strip()
            except OSError as exc:
                raise UsageError(f"{key_file}: cannot read the key file ({exc.strerror or exc})") from None
            if len(key) < 16:
                raise UsageError(f"{key_file}: a pseudonym key needs at least 16 bytes")
            return cls(key, f"key file {key_file}")
        text = os.environ.get(KEY_VARIABLE, "")
        if text:
            if len(text) < 16:
                raise UsageError(f"{KEY_VARIABLE}: a pseudonym key needs at least 16 characters")
            return cls(text.encode("utf-8"), f"${KEY_VARIABLE}")
        return cls.for_this_run()
