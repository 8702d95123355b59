"""Pseudonyms for patient identifiers, and the one gate every identifying value passes on its way
into a report: patients, record keys, fields marked ``phi``, and what is derived from them."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from engine.language.model import RecordType

KEY_VARIABLE = "PROTOCOL_AUDIT_KEY"


class Pseudonymiser:
    """Maps an identifier to a prefix and 12 hex digits of its HMAC under the key (``pt-`` for patients).

    The same key gives the same pseudonym in every run and format, so an officer holding the key
    can find a patient's findings; without it the pseudonym reveals nothing.
    """

    def __init__(self, key: bytes, source: str, random: bool = False) -> None:
        self.key = key
        self.source = source  # where the key came from, said in the report
        self.random = random  # a key made for this run: its pseudonyms match no other run
        self._known: dict[tuple[str, str], str] = {}

    @classmethod
    def for_this_run(cls) -> Pseudonymiser:
        """A random key: pseudonyms that say nothing and match no other run."""
        return cls(secrets.token_bytes(32), "a random key for this run only", random=True)

    def __call__(self, identifier: str, prefix: str = "pt") -> str:
        found = self._known.get((prefix, identifier))
        if found is None:
            digest = hmac.new(self.key, identifier.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
            found = self._known[(prefix, identifier)] = f"{prefix}-{digest[:12]}"
        return found

    def fingerprint(self, pack: str, rule: str, record_type: str, record_key: str) -> str:
        """A finding's fingerprint in the archive (SPEC 9): the HMAC of pack, rule, record type and
        record key, so one audit's findings can be matched with the next's without keeping the key."""
        message = "\x1f".join((pack, rule, record_type, record_key)).encode("utf-8", "surrogatepass")
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()[:32]

    @property
    def key_check(self) -> str:
        """Names the key without revealing it: two audits whose fingerprints can be matched share it."""
        return hmac.new(self.key, b"protocol-audit archive key", hashlib.sha256).hexdigest()[:16]

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


def identifying_fields(rtype: RecordType) -> frozenset[str]:
    """The fields of a record type that identify a person: those marked ``phi`` or ``staff``, the
    patient link, and every derived field computed (directly or not) from one of them."""
    hidden = {name for name, spec in rtype.fields.items() if spec.phi or spec.staff} | {rtype.patient}
    grew = True
    while grew:  # derived fields may read derived fields
        grew = False
        for derived in rtype.derived.values():
            if derived.name not in hidden and hidden.intersection(derived.inputs):
                hidden.add(derived.name)
                grew = True
    return frozenset(hidden)


class Privacy:
    """The privacy gate. Every value that can reach a report (finding, message, evidence, strata,
    rejection reason, not-evaluable entry, record key, explain line, error message) goes through it.

    With a pseudonymiser, identifying values are replaced by keyed pseudonyms: the patient link
    as ``pt-...`` (the same as a finding's ``patient``), staff identifiers (fields marked ``staff``)
    as ``st-...`` (one clinician has one pseudonym across fields and records, so per-clinician
    strata still add up), other identifying fields as ``phi-...``.
    Without one (``--reveal-identifiers``), values pass unchanged.
    """

    def __init__(self, types: Mapping[str, RecordType], pseudonymise: Pseudonymiser | None) -> None:
        self.pseudonymise = pseudonymise
        self._patients = {name: rtype.patient for name, rtype in types.items()}
        self._keys = {name: rtype.key for name, rtype in types.items()}
        self._hidden: dict[str, frozenset[str]] = {}
        self._staff = {name: frozenset(f for f, spec in rtype.fields.items() if spec.staff and not spec.phi)
                       for name, rtype in types.items()}
        if pseudonymise is not None:
            self._hidden = {name: identifying_fields(rtype) for name, rtype in types.items()}

    @property
    def reveals(self) -> bool:
        return self.pseudonymise is None

    def hides(self, type_name: str, field: str) -> bool:
        """Whether values of ``field`` of ``type_name`` are replaced on their way out."""
        return field in self._hidden.get(type_name, ())

    def patient(self, identifier: str | None) -> str | None:
        if identifier is None or self.pseudonymise is None:
            return identifier
        return self.pseudonymise(identifier)

    def value(self, type_name: str, field: str, value: Any) -> Any:
        """``value`` of ``field`` as a report may show it: itself, or its pseudonym (None stays None)."""
        if value is None or self.pseudonymise is None or field not in self._hidden.get(type_name, ()):
            return value
        text = value if isinstance(value, str) else str(value)
        if field == self._patients.get(type_name):
            return self.pseudonymise(text)
        if field in self._staff.get(type_name, ()):
            return self.pseudonymise(text, "st")
        return self.pseudonymise(text, "phi")

    def key(self, type_name: str, key: str) -> str:
        """A record key as a report may show it (a pseudonym when the key field is identifying)."""
        field = self._keys.get(type_name)
        return key if field is None else str(self.value(type_name, field, key))

    def quoted(self, type_name: str, field: str, raw: Any, quote: Any) -> str:
        """A raw input value as a rejection reason quotes it: ``quote(raw)`` or its pseudonym."""
        if self.pseudonymise is None or field not in self._hidden.get(type_name, ()):
            return str(quote(raw))
        text = raw.strip() if isinstance(raw, str) else repr(raw)
        return f"{self.value(type_name, field, text)} (pseudonymised)"


REVEAL_ALL = Privacy({}, None)  # for records built in memory (rule examples): nothing to hide
