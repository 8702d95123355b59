"""The forms of ``protocol-audit diff``: JSON (the diff as built), Markdown (a pull-request
comment) and terminal lines, with a registry from output file extension to renderer."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from engine.reporters import json_report
from engine.reporters.common import by_extension
from engine.reporters.md_report import md, table

Diff = dict[str, Any]
DiffRenderer = Callable[[Diff, TextIO], None]


def for_path(path: str, max_records: int) -> DiffRenderer:
    """The renderer for a diff output file, by its extension: .json or .md."""
    renderers: dict[str, DiffRenderer] = {".json": json_report.dump,
                                          ".md": functools.partial(render_markdown, max_records=max_records)}
    return by_extension(path, renderers, "a diff", ".json or .md")


def affected(diff: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules worth showing: every one whose definition or flagged records changed."""
    return [r for r in diff["rules"] if r["status"] != "unchanged" or r["newly_flagged"] or r["no_longer_flagged"]
            or r["failed_before"] != r["failed_after"] or r["not_evaluable_before"] != r["not_evaluable_after"]]


# -- text forms ----------------------------------------------------------------------------

def percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def signed_points(change: float | None) -> str:
    return "" if change is None else f"{change * 100:+.1f} pts"


def count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _n(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def headline(diff: dict[str, Any]) -> str:
    s = diff["summary"]
    text = (f"{_n(s['rules_changed'], 'rule')} changed, {s['rules_added']} added, {s['rules_removed']} removed; "
            f"{_n(s['newly_flagged'], 'record')} newly flagged, {s['no_longer_flagged'] - s['now_rejected']} "
            "no longer flagged")
    if s["now_rejected"]:
        text += f", {s['now_rejected']} no longer judged (now rejected)"
    if s["records_rejected_before"] != s["records_rejected_after"]:
        text += f"; records rejected {s['records_rejected_before']} -> {s['records_rejected_after']}"
    return text


def notices(diff: dict[str, Any]) -> list[str]:
    """Inputs a side could not read: their record type is declared by the other side only."""
    said = []
    for side in ("base", "head"):
        for item in diff[side]["inputs_not_read"]:
            said.append(f"{item['path']} was not read with the {side} rules: they declare no {item['record_type']} "
                        "records")
    return said


def rule_change(row: dict[str, Any]) -> str:
    if row["status"] in ("added", "removed"):
        return str(row["status"])
    if row["status"] == "changed":
        parts = [f"moved from pack {row['pack_before']}" if part == "pack" else part for part in row["changes"]]
        return "changed: " + ", ".join(parts)
    return "unchanged (results differ)"


def _groups(row: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    gone = row["no_longer_flagged"]
    return [("newly flagged", row["newly_flagged"]),
            ("no longer flagged", [i for i in gone if "now_rejected" not in i]),
            ("no longer judged: now rejected on reading", [i for i in gone if "now_rejected" in i])]


def lines(diff: dict[str, Any], max_records: int) -> Iterator[str]:
    """The terminal form."""
    yield f"protocol-audit diff: {headline(diff)}"
    yield from (f"note: {notice}" for notice in notices(diff))
    for row in affected(diff):
        yield ""
        change = row["compliance_change"]
        yield (f"{row['id']} ({row['pack']}, {row['severity']}) {rule_change(row)}: failed "
               f"{count(row['failed_before'])} -> {count(row['failed_after'])}, compliance "
               f"{percent(row['compliance_before'])} -> {percent(row['compliance_after'])}"
               f"{f' ({signed_points(change)})' if change is not None else ''}")
        for label, items in _groups(row):
            if not items:
                continue
            yield f"  {label}: {len(items)}"
            for item in items[:max_records]:
                yield f"    {record_line(item)}"
            if len(items) > max_records:
                yield f"    (+{len(items) - max_records} more in the JSON diff)"
    if not affected(diff):
        yield "no rule's definition or results changed"


def record_line(item: dict[str, Any]) -> str:
    source = item["source"]
    reason = f" [rejected: {item['now_rejected']}]" if "now_rejected" in item else ""
    return (f"{item['record_type']} {item['record_key']} at {item['time'] or 'no time'} "
            f"({source['path']}:{source['line']}): {item['message']}{reason}")


def render_markdown(diff: dict[str, Any], out: TextIO, max_records: int = 20) -> None:
    out.write(markdown(diff, max_records))


def markdown(diff: dict[str, Any], max_records: int) -> str:
    """GitHub-flavoured Markdown for a pull-request comment: every value escaped, long lists cut."""
    out: list[str] = ["## protocol-audit: impact of the rule change", "", md(headline(diff)) + ".", ""]
    out += [f"- {md(notice)}" for notice in notices(diff)] + ([""] if notices(diff) else [])
    rows = affected(diff)
    if not rows:
        return "\n".join([*out, "No rule's definition or results changed.", ""])
    out += table(["Rule", "Pack", "Severity", "Change", "Failed before", "Failed after", "Compliance before",
                  "Compliance after", "Change (pts)", "Newly flagged", "No longer flagged"],
                 ([r["id"], r["pack"], r["severity"], rule_change(r), count(r["failed_before"]),
                   count(r["failed_after"]), percent(r["compliance_before"]), percent(r["compliance_after"]),
                   signed_points(r["compliance_change"]), len(r["newly_flagged"]), len(r["no_longer_flagged"])]
                  for r in rows), right=frozenset(range(4, 11)))
    for row in rows:
        for label, items in _groups(row):
            if not items:
                continue
            out += ["", f"### {md(row['id'])}: {len(items)} {label}", ""]
            out += table(["Record", "Time", "Source", "Message"],
                         ([f"{i['record_type']} {i['record_key']}", i["time"],
                           f"{i['source']['path']}:{i['source']['line']}",
                           i["message"] + (f" [rejected: {i['now_rejected']}]" if "now_rejected" in i else "")]
                          for i in items[:max_records]))
            if len(items) > max_records:
                out.append(f"(+{len(items) - max_records} more in the JSON diff)")
    base = ", ".join(f"{p['id']} {p['version']}" for p in diff["base"]["packs"])
    head = ", ".join(f"{p['id']} {p['version']}" for p in diff["head"]["packs"])
    read = sum(i["records_read"] for i in diff["inputs"])
    out += ["", md(f"Base: {base}. Head: {head}. Records: {read} read from {_n(len(diff['inputs']), 'file')}."), ""]
    return "\n".join(out)
