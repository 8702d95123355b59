"""The trend of an archive (``protocol-audit trend``) as JSON, Markdown, HTML or terminal lines.

The HTML page follows the audit report's rules: one self-contained file, no network, no script,
every value escaped by the template, the same small-multiple charts (one per rule, its target a
dashed line).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TextIO

from engine.reporters import json_report
from engine.reporters.common import by_extension
from engine.reporters.html_report import environment, panel, rate, target
from engine.reporters.md_report import md, table

TrendRenderer = Callable[[dict[str, Any], TextIO], None]


def for_path(path: str) -> TrendRenderer:
    """The renderer for a trend output file, by its extension: .json, .md or .html."""
    renderers: dict[str, TrendRenderer] = {".json": json_report.dump, ".md": render_markdown,
                                           ".html": render_html, ".htm": render_html}
    return by_extension(path, renderers, "a trend", ".json, .md or .html")


def _rates(data: dict[str, Any], row: dict[str, Any]) -> list[dict[str, Any] | None]:
    """A rule's entry in each audit of the trend, in order (None where it was not judged)."""
    by_audit = {entry["audit"]: entry for entry in row["audits"]}
    return [by_audit.get(audit["audit"]) for audit in data["audits"]]


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "—"
    return f"{rate(entry['compliance_rate'])} ({entry['passed']}/{entry['passed'] + entry['failed']})"


def lines(data: dict[str, Any]) -> Iterator[str]:
    """The terminal form: the audits, then a line per rule with its rate in each."""
    audits = data["audits"]
    yield f"protocol-audit trend of {data['archive']}: {len(audits)} audit{'s' if len(audits) != 1 else ''}"
    for audit in audits:
        yield f"  #{audit['audit']}  {audit['label']}  as of {audit['as_of']}  ({', '.join(audit['packs'])})"
    for row in data["rules"]:
        shown = " -> ".join(rate(e["compliance_rate"]) if e else "—" for e in _rates(data, row))
        yield f"{row['rule']} ({row['pack']}, {row['severity']}, target {target(row['target'])}): {shown}"


def render_markdown(data: dict[str, Any], out: TextIO) -> None:
    audits = data["audits"]
    parts = ["# Compliance over archived audits", "", f"Archive: {md(data['archive'])}", "", "## Audits", ""]
    parts += table(["Audit", "Period", "As of", "Packs"],
                   ([f"#{a['audit']}", a["label"], a["as_of"], ", ".join(a["packs"])] for a in audits))
    parts += ["", "## Compliance per rule", "", "Each cell: compliance rate (passed / decided); — where the audit "
              "did not judge the rule.", ""]
    parts += table(["Rule", "Pack", "Severity", "Target", *(f"#{a['audit']} {a['label']}" for a in audits)],
                   ([row["rule"], row["pack"], row["severity"], target(row["target"]),
                     *(_cell(e) for e in _rates(data, row))] for row in data["rules"]))
    out.write("\n".join(parts) + "\n")


def render_html(data: dict[str, Any], out: TextIO) -> None:
    audits = data["audits"]
    panels = []
    for row in data["rules"]:
        series = [None if e is None else (f"#{a['audit']} {a['label']}", e["passed"], e["failed"],
                                          e["compliance_rate"])
                  for a, e in zip(audits, _rates(data, row), strict=True)]
        panels.append(panel(row["rule"], row["pack"], row["target"], series))
    rows = [{"row": row, "cells": [_cell(e) for e in _rates(data, row)]} for row in data["rules"]]
    template = environment().get_template("trend.html.j2")
    out.writelines(template.generate(data=data, audits=audits, panels=panels, rows=rows, target=target,
                                     first=audits[0]["label"].split("..")[0] if audits else "",
                                     last=audits[-1]["label"].split("..")[-1] if audits else ""))
