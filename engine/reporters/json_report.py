"""The JSON report: the canonical form of SPEC section 7, written as the engine built it."""

from __future__ import annotations

import json
from typing import Any, TextIO

from engine.results import Report


def render(report: Report, out: TextIO) -> None:
    """Write ``report`` as indented UTF-8 JSON, keys in the report's (SPEC's readable) order."""
    dump(report.to_json(lazy=True), out)


def dump(data: dict[str, Any], out: TextIO) -> None:
    """Write ``data`` as the JSON report is written (the SARIF log is written the same way)."""
    # Keys are not sorted: insertion order is the documented order and is already deterministic.
    # allow_nan=False: NaN/Infinity are not JSON and other tools would choke on them; failing
    # here is better. Streamed, not built as one string (a report of 100,000 findings is ~75 MB
    # of text); the command line writes every report to a temporary file renamed into place
    # only when rendering succeeded, so a failure leaves no partial file.
    json.dump(data, out, indent=2, ensure_ascii=False, allow_nan=False)
    out.write("\n")
