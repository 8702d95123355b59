"""FHIRPath functions a SQL-on-FHIR view adds to fhirpathpy's: resource and reference keys, bounded text functions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from engine.language.patterns import PatternError, compile_pattern

MAX_TEXT = 1_000_000  # characters a text function may build; beyond this a path is an attack, not a query

_REFERENCE = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?\Z")
_URN = re.compile(r"urn:(?:uuid|oid):(.+)\Z")


def reference_key(reference: Mapping[str, Any], of_type: str | None) -> str | None:
    """The id a Reference points at ("Patient/123" -> "123"); None if it points at another type or nowhere.

    Relative, absolute (``http://host/fhir/Patient/123``) and versioned (``.../_history/2``) references
    name their type; a ``urn:uuid:`` reference names only its id, its type coming from ``Reference.type``.
    """
    text = reference.get("reference")
    if not isinstance(text, str):
        return None
    found = _REFERENCE.match(text)
    if found:
        target_type, key = found.group(1), found.group(2)
    else:
        urn = _URN.match(text)
        if not urn:
            return None
        declared = reference.get("type")
        target_type, key = (declared if isinstance(declared, str) else None), urn.group(1)
    if of_type is not None and target_type != of_type:
        return None
    return key


def get_resource_key(inputs: list[Any]) -> list[Any]:
    return [r["id"] for r in inputs if isinstance(r, Mapping) and isinstance(r.get("id"), str)]


def get_reference_key(inputs: list[Any], of_type: Any = None) -> list[Any]:
    type_name = getattr(of_type, "name", None) if of_type is not None else None
    keys = (reference_key(r, type_name) for r in inputs if isinstance(r, Mapping))
    return [k for k in keys if k is not None]


def check_regex(pattern: str) -> str | None:
    """Why RE2 refuses ``pattern`` (RE2 runs in linear time: no path can hang on a crafted value), else None."""
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return f'regular expression "{pattern}": {exc}'
    return None


def _single_text(inputs: list[Any]) -> str | None:
    if len(inputs) != 1 or not isinstance(inputs[0], str):
        if len(inputs) > 1:
            raise ValueError(f"expected one text value, got {len(inputs)}")
        return None
    text: str = inputs[0]
    return text


def matches(inputs: list[Any], regex: Any) -> list[Any]:
    text = _single_text(inputs)
    if text is None or not isinstance(regex, str):
        return []
    return [_compiled("(?s)" + regex).search(text) is not None]


def replace_matches(inputs: list[Any], regex: Any, substitution: Any) -> list[Any]:
    text = _single_text(inputs)
    if text is None or not isinstance(regex, str) or not isinstance(substitution, str):
        return []
    result: str = _compiled(regex).sub(re.sub(r"\$(\d+)", r"\\\1", substitution), text)
    return [_bounded(result)]


def replace(inputs: list[Any], pattern: Any, substitution: Any) -> list[Any]:
    text = _single_text(inputs)
    if text is None or not isinstance(pattern, str) or not isinstance(substitution, str):
        return []
    if pattern == "":
        if (len(text) + 1) * (len(substitution) + 1) > MAX_TEXT:
            raise ValueError(f"replace() would build more than {MAX_TEXT} characters")
        return [substitution + substitution.join(text) + substitution]
    if len(substitution) > len(pattern) and text.count(pattern) * len(substitution) > MAX_TEXT:
        raise ValueError(f"replace() would build more than {MAX_TEXT} characters")
    return [_bounded(text.replace(pattern, substitution))]


@lru_cache(maxsize=256)
def _compiled(regex: str) -> Any:
    return compile_pattern(regex)


def join(inputs: list[Any], separator: Any = "") -> list[Any]:
    # the spec's join gives "" for an empty collection, where fhirpathpy gives nothing
    if not all(isinstance(i, str) for i in inputs):
        raise ValueError("join() takes text values only")
    return [_bounded((separator if isinstance(separator, str) else "").join(inputs))]


def _bounded(text: str) -> str:
    if len(text) > MAX_TEXT:
        raise ValueError(f"a text function built more than {MAX_TEXT} characters")
    return text


# fhirpathpy's user-invocation table: these override its own matches/replace (Python's re can
# backtrack for ever on a crafted pattern; replace('', x) can multiply a text's length).
USER_FUNCTIONS: dict[str, dict[str, Any]] = {
    "getResourceKey": {"fn": get_resource_key},
    "getReferenceKey": {"fn": get_reference_key, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "matches": {"fn": matches, "arity": {1: ["String"]}, "nullable_input": True},
    "replaceMatches": {"fn": replace_matches, "arity": {2: ["String", "String"]}, "nullable_input": True},
    "join": {"fn": join, "arity": {0: [], 1: ["String"]}},
    "replace": {"fn": replace, "arity": {2: ["String", "String"]}, "nullable_input": True},
}
