"""The report formats: an explicit registry from format name and file extension to renderer."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from typing import TextIO

from engine.errors import UsageError
from engine.reporters import csv_report, html_report, json_report, junit_xml, md_report, sarif_log, terminal_report
from engine.results import Report

# Every renderer takes the one Report (SPEC section 7; its to_json is the JSON report), so formats
# cannot drift apart; a new format is one module plus one line in each dict below.
Renderer = Callable[[Report, TextIO], None]

FORMATS: dict[str, Renderer] = {
    "json": json_report.render,
    "csv": csv_report.render,
    "txt": terminal_report.render,
    "html": html_report.render,
    "md": md_report.render,
    "junit": junit_xml.render,
    "sarif": sarif_log.render,
}

EXTENSIONS: dict[str, str] = {
    ".json": "json",
    ".csv": "csv",
    ".txt": "txt",
    ".html": "html",
    ".htm": "html",
    ".md": "md",
    ".xml": "junit",
    ".sarif": "sarif",
}


def get(name: str) -> Renderer:
    """The renderer of format ``name``; an unknown name is a usage error with a suggestion."""
    try:
        return FORMATS[name]
    except KeyError:
        pass
    close = difflib.get_close_matches(name.lower(), sorted(FORMATS), n=1)
    known = ", ".join(sorted(FORMATS))
    hint = f'did you mean "{close[0]}"?' if close else f"known formats: {known}"
    raise UsageError(f'unknown report format "{name}" ({hint})')


def for_path(path: str) -> Renderer:
    """The renderer for an output file, chosen by its extension (any case)."""
    ext = os.path.splitext(path)[1].lower()
    if path.lower().endswith(".sarif.json"):  # the other name code-scanning tools look for
        ext = ".sarif"
    if ext not in EXTENSIONS:
        known = ", ".join(sorted(EXTENSIONS))
        raise UsageError(f'cannot tell the report format of "{path}" from its extension '
                         f"(known extensions: {known})")
    return get(EXTENSIONS[ext])
