"""The protocol handbook: what a pack demands, in plain words generated from its conditions, with
each rule's rationale, sources, effective dates and examples, and the pack's bibliography. A
medical director signs the protocol from it; a surveyor checks the audit against it.

Nothing here is hand-written per rule: the words come from the conditions the engine judges, so
the handbook cannot say something the audit does not do. Markdown and self-contained HTML (no
script, printable) are written from one model.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Any, TextIO

import jinja2
from markupsafe import Markup, escape

from engine.language.model import (
    JUDGED_PREFIX,
    All,
    AnyOf,
    Condition,
    History,
    Leaf,
    Not,
    Pack,
    Parameter,
    RecordType,
    Rule,
    window_text,
)
from engine.language.values import duration_words, format_duration
from engine.reporters.common import by_extension
from engine.reporters.md_report import md
from engine.reporters.report import DEFAULT_TARGETS
from engine.version import __version__

# A clause is a line of plain words, or a heading with the clauses under it.
Clause = str | tuple[str, list["Clause"]]

_WORDS = {"equals": "is", "not_equals": "is not", "less_than": "is less than", "at_most": "is at most",
          "greater_than": "is more than", "at_least": "is at least"}
_EXPECT = {"pass": "passes", "fail": "fails", "not_applicable": "not applicable", "not_evaluable": "not evaluable"}


@dataclass
class RuleEntry:
    rule: Rule
    applies: list[Clause]
    requires: list[Clause]
    effective: str | None
    sources: list[tuple[str, str, str]]  # id, full reference, what the rule takes from it
    examples: list[dict[str, Any]]
    per: str = ""  # how a rule counted per patient or course counts, in words (empty: per record)
    parameters: list[str] = field(default_factory=list)  # "name = value" of each local parameter it uses


@dataclass
class PackEntry:
    pack: Pack
    targets: dict[str, float]
    types: list[tuple[str, list[str]]]  # record type, its fields with their types and units
    derived: list[str]
    rules: list[RuleEntry]
    sources: list[dict[str, Any]] = field(default_factory=list)  # the bibliography, each with its rules
    parameters: list[dict[str, str]] = field(default_factory=list)  # the local choices, each with its rules


def build(packs: list[Pack]) -> list[PackEntry]:
    entries = []
    for pack in packs:
        rules = [_rule(pack, rule) for rule in pack.rules]
        cited: dict[str, list[str]] = {}
        for rule in pack.rules:
            for source_id, _ in rule.sources:
                cited.setdefault(source_id, []).append(rule.id)
        sources = [{"source": source, "rules": list(dict.fromkeys(cited.get(source.id, [])))}
                   for source in pack.sources.values()]
        types = [(name, [_field_text(rtype, fname) for fname in rtype.fields]) for name, rtype in pack.records.items()]
        derived = [f"`{name}` = {d.source}" for rtype in pack.records.values() for name, d in rtype.derived.items()]
        parameters = [{"name": p.name, "value": parameter_value(p), "means": p.means, "source": p.source or "",
                       "rules": ", ".join(p.uses)} for p in pack.parameters.values()]
        entries.append(PackEntry(pack, {**DEFAULT_TARGETS, **pack.targets}, types, list(dict.fromkeys(derived)),
                                 rules, sources, parameters))
    return entries


def _field_text(rtype: RecordType, name: str) -> str:
    spec = rtype.fields[name]
    kind = f"one of {', '.join(spec.values)}" if spec.type == "enum" else spec.type
    roles = [role for role, ref in (("key", rtype.key), ("patient", rtype.patient), ("time", rtype.time))
             if ref == name]
    extra = ", ".join([*([spec.unit] if spec.unit else []), *roles, *(["identifying"] if spec.phi else []),
                       *(["staff identifier"] if spec.staff and not spec.phi else [])])
    return f"`{name}` ({kind}{'; ' + extra if extra else ''})"


def _rule(pack: Pack, rule: Rule) -> RuleEntry:
    rtype = pack.records[rule.for_type]
    when = _own_when(rule, rtype)
    applies: list[Clause] = [f"every `{rule.for_type}` record"] if when is None else _clauses(when, rtype)
    effective = None if rule.effective is None else window_text(*rule.effective)
    sources = [(source_id, pack.sources[source_id].ref, note) for source_id, note in rule.sources]
    examples = [{"expect": _EXPECT.get(example.expect, example.expect), "time": example.time,
                 "record": _values(example.record) or "—",
                 "history": "; ".join(f"{item.get('type', '?')} ({_values(item.get('record') or {})})"
                                      for item in example.history)}
                for example in rule.examples]
    parameters = [f"{p.name} = {parameter_value(p)}" for p in pack.parameters.values() if rule.id in p.uses]
    return RuleEntry(rule, applies, _clauses(rule.require, rtype), effective, sources, examples, _per_words(rule),
                     parameters)


def parameter_value(parameter: Parameter) -> str:
    """A parameter's value as the pack writes it (a list as its items, comma separated)."""
    value = parameter.value
    return ", ".join(_value(v, quote=False) for v in value) if isinstance(value, list) else _value(value, quote=False)


def _own_when(rule: Rule, rtype: RecordType) -> Condition | None:
    """The rule's own ``when``, without the conditions its effective dates added (the handbook says
    those dates on their own line)."""
    if rule.effective is None:
        return rule.when
    added = sum(day is not None for day in rule.effective)
    when = rule.when
    if isinstance(when, All) and len(when.parts) == added + 1:
        return when.parts[added]
    return None


def _clauses(cond: Condition, rtype: RecordType) -> list[Clause]:
    """A condition as lines of plain words: a top-level 'all' is its parts, one per line."""
    if isinstance(cond, All):
        return [_clause(part, rtype) for part in cond.parts]
    return [_clause(cond, rtype)]


def _clause(cond: Condition, rtype: RecordType) -> Clause:
    if isinstance(cond, All):
        return ("all of:", [_clause(part, rtype) for part in cond.parts])
    if isinstance(cond, AnyOf):
        return ("at least one of:", [_clause(part, rtype) for part in cond.parts])
    if isinstance(cond, Not):
        inner = _clause(cond.part, rtype)
        return f"not: {inner}" if isinstance(inner, str) else ("none of this holds:", [inner])
    return _inline(cond, rtype)


def _inline(cond: Condition, rtype: RecordType | None) -> str:
    """A condition as one line (a history condition's ``where``, a leaf)."""
    if isinstance(cond, Leaf):
        return _leaf(cond, rtype)
    if isinstance(cond, History):
        return _history(cond)
    if isinstance(cond, Not):
        return f"not ({_inline(cond.part, rtype)})"
    joiner = " and " if isinstance(cond, All) else " or "
    return joiner.join(_inline(part, rtype) if isinstance(part, (Leaf, History)) else f"({_inline(part, rtype)})"
                       for part in cond.parts)


def _leaf(leaf: Leaf, rtype: RecordType | None) -> str:
    name = f"`{leaf.field}`"
    if leaf.op == "present":
        return f"{name} is documented" if leaf.value else f"{name} is not documented"
    if leaf.ref is not None and leaf.ref.startswith(JUDGED_PREFIX):
        return f"{name} {_WORDS.get(leaf.op, leaf.op)} the judged record's `{leaf.ref[len(JUDGED_PREFIX):]}`"
    if leaf.ref is not None:
        return f"{name} {_WORDS.get(leaf.op, leaf.op)} `{leaf.ref}`"
    unit = _unit(leaf.field, rtype)
    if leaf.op == "between":
        low, high = leaf.value
        return f"{name} is between {_value(low)} and {_value(high)}{unit} (both included)"
    if leaf.op in ("one_of", "none_of"):
        items = [_value(v) for v in leaf.value]
        listed = items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"
        return f"{name} is {'one of' if leaf.op == 'one_of' else 'none of'} {listed}{unit}"
    if leaf.op == "matches":
        return f"{name} matches the pattern {_value(leaf.value)}"
    return f"{name} {_WORDS.get(leaf.op, leaf.op)} {_value(leaf.value)}{unit}"


def _unit(name: str, rtype: RecordType | None) -> str:
    spec = rtype.fields.get(name) if rtype is not None else None
    return f" {spec.unit}" if spec is not None and spec.unit else ""


def _history(cond: History) -> str:
    records = f"`{cond.of}` record"
    where = f" where {_inline(cond.where, None)}" if cond.where is not None else ""
    window = "" if cond.join and cond.before is None and cond.after is None else _window(cond)
    shared = f" sharing this record's `{cond.join}`" if cond.join else ""
    if cond.join and cond.their_join != cond.join:
        shared = f" whose `{cond.their_join}` is this record's `{cond.join}`"
    if cond.form == "exists":
        subject = f"there is a {records}{shared}" if cond.join else f"the patient has another {records}"
        return f"{subject}{window}{where}"
    if cond.form == "count":
        bounds = "no" if cond.at_most == 0 and cond.at_least is None else " and ".join(
            f"{word} {n}" for word, n in (("at least", cond.at_least), ("at most", cond.at_most)) if n is not None)
        subject = f"there are {bounds} {records}s{shared}" if cond.join \
            else f"the patient has {bounds} other {records}s"
        return f"{subject}{window}{where}"
    if cond.form == "since_previous":
        gap = _value(cond.gap) if cond.gap is not None else "some time"
        return (f"at least {gap} have passed since the patient's previous {records}{shared}{where} "
                "(holds when there is none)")
    return f"this is the patient's first {records}{shared}{where}"


def _window(cond: History) -> str:
    """Where a history condition looks, in words: " within 90 days before this one", " at any time"."""
    if cond.form in ("since_previous", "first"):
        return ""
    if cond.before is None and cond.after is None:
        return " at any time"
    sides = [f"{_value(cond.before)} before" if cond.before else "",
             f"{_value(cond.after)} after" if cond.after else ""]
    said = " and ".join(side for side in sides if side) or "the same moment as"
    return f" within {said} this record's time" if said.endswith(("before", "after")) else f" at {said} this one"


def _values(record: dict[str, Any]) -> str:
    return ", ".join(f"{name}: {_value(value, quote=False)}" for name, value in dict(record).items())


def _value(value: Any, quote: bool = True) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.timedelta):
        return duration_words(format_duration(value))
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (tuple, list)):
        return ", ".join(_value(v) for v in value)
    if value is None:
        return "not documented"
    if isinstance(value, str):
        return (f'"{value}"' if quote else value).replace("`", "'")
    return str(value)


# ---- Markdown ----

def render_markdown(packs: list[Pack], out: TextIO) -> None:
    for index, entry in enumerate(build(packs)):
        if index:
            out.write("\n---\n\n")
        out.write("\n".join(_markdown_pack(entry)) + "\n")


def _markdown_pack(entry: PackEntry) -> list[str]:
    pack = entry.pack
    lines = [f"# {md(pack.title)}", "",
             f"Pack `{pack.id}` version {md(pack.version)}; {md(pack.source)}. Times are read in {pack.timezone}. "
             f"Generated by protocol-audit {__version__} from `{md(pack.path)}` (sha256 {pack.sha256[:12]}).", "",
             "How to read a rule: it judges every record of its type. Where its applicability holds, the "
             "requirement must hold, or the record fails it. A requirement on something not documented is not "
             "met (not documented = not done). A record whose applicability cannot be decided is not evaluable "
             "and listed, never counted as passing.", "",
             "Compliance targets: " + ", ".join(f"{sev} {round(t * 100, 1):g}%" for sev, t in entry.targets.items())
             + ".", ""]
    if entry.parameters:
        lines += ["## Local parameters", "",
                  "The clinic's own choices, each written once in the pack (`parameters:`) and used by the rules "
                  "named; changing the value there changes every rule that uses it.", "",
                  "| Parameter | Value | What it is | Source | Used by |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| `{p['name']}` | {md(p['value'])} | {md(p['means'])} | {md(p['source']) or '—'} | "
                  f"{md(p['rules'])} |" for p in entry.parameters]
        lines += [""]
    lines += ["## Contents", ""]
    lines += [f"- {md(r.rule.id)} ({r.rule.severity}): {md(r.rule.title)}" for r in entry.rules]
    for r in entry.rules:
        lines += _markdown_rule(r)
    lines += ["", "## Records the pack reads", ""]
    for name, fields in entry.types:
        lines += [f"- `{name}`: " + "; ".join(_md_code(text) for text in fields)]
    if entry.derived:
        lines += ["", "Derived values: " + "; ".join(_md_code(text) for text in entry.derived) + "."]
    lines += ["", "## Bibliography", ""]
    if not entry.sources:
        lines += ["This pack declares no sources."]
    for item in entry.sources:
        source = item["source"]
        cited = ", ".join(item["rules"]) or "no rule"
        url = f" {md(source.url)}" if source.url else ""
        lines += [f"- **{md(source.id)}** ({source.evidence}) {md(source.ref)}{url}. Cited by: {md(cited)}."]
    return lines


def _markdown_rule(entry: RuleEntry) -> list[str]:
    rule = entry.rule
    lines = ["", f"## {md(rule.id)}: {md(rule.title)}", "",
             f"Severity **{rule.severity}**; judges each `{rule.for_type}` record{_per_words(rule)}."]
    if entry.effective:
        lines += ["", f"In force: {entry.effective}."]
    lines += ["", "**Applies to**", "", *_markdown_clauses(entry.applies), "", "**Requires**", "",
              *_markdown_clauses(entry.requires), "", f"Finding message: {md(rule.message)}"]
    if entry.parameters:
        lines += ["", "Local parameters: " + "; ".join(f"`{text}`" for text in entry.parameters) + "."]
    if rule.rationale:
        lines += ["", f"**Rationale.** {md(rule.rationale)}"]
    if entry.sources:
        lines += ["", "**Sources**", ""]
        lines += [f"- {md(source_id)}: {md(note)}" for source_id, _, note in entry.sources]
    if rule.cite:
        lines += ["", f"Cited as: {md(rule.cite)}"]
    if entry.examples:
        lines += ["", "**Examples**", "", "| Outcome | Record | Other records of the patient |", "| --- | --- | --- |"]
        for example in entry.examples:
            record = example["record"] + (f" (at {example['time']})" if example["time"] else "")
            lines += [f"| {example['expect']} | {md(record)} | {md(example['history']) or '—'} |"]
    return lines


def _per_words(rule: Rule) -> str:
    """How a rule counted per patient or course counts, said after "judges each session record"."""
    if rule.per is None:
        return ""
    unit = "patient" if rule.per == "patient" else f"patient and `{rule.per}`"
    return (f", and counts each {unit} once: failed when any of its records fails (one finding, listing "
            "every failing record)")


def _md_code(text: str) -> str:
    """Plain words with `field` spans as Markdown: the words escaped, the spans as code."""
    return "".join(f"`{part}`" if index % 2 else md(part) if part else ""
                   for index, part in enumerate(text.split("`")))


def _markdown_clauses(clauses: list[Clause], depth: int = 0) -> list[str]:
    lines = []
    for clause in clauses:
        if isinstance(clause, str):
            lines.append(f"{'  ' * depth}- {_md_code(clause)}")
        else:
            heading, parts = clause
            lines.append(f"{'  ' * depth}- {_md_code(heading)}")
            lines += _markdown_clauses(parts, depth + 1)
    return lines


# ---- HTML ----

def render_html(packs: list[Pack], out: TextIO) -> None:
    out.write(_environment().get_template("handbook.html.j2").render(packs=build(packs), version=__version__))


def _code(text: str) -> Markup:
    """Plain words with `field` spans: escaped, the spans as <code>."""
    parts = str(text).split("`")
    return Markup("").join(Markup("<code>{}</code>").format(part) if index % 2 else escape(part)
                           for index, part in enumerate(parts))


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("engine.reporters", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters["code"] = _code
    env.tests["text"] = lambda value: isinstance(value, str)
    return env


def render_bibliography(packs: list[Pack], out: TextIO) -> None:
    """Every pack's sources as Markdown: the full reference, and what each rule takes from it."""
    lines = ["# Clinical sources of the shipped rule packs", "",
             f"Generated by protocol-audit {__version__} from the packs' `sources:` (their bibliography) and "
             "each rule's `sources:` (what the rule takes from each). Evidence: primary = the document itself; "
             "secondary = a summary, a clinic's page or a news item, to be checked against the primary text; "
             "local = the clinic's own protocol parameter, which no external source fixes."]
    for entry in build(packs):
        pack = entry.pack
        lines += ["", f"## {md(pack.title)} (`{pack.id}` {md(pack.version)})"]
        notes = {(r.rule.id, source_id): note for r in entry.rules for source_id, _, note in r.sources}
        titles = {r.rule.id: r.rule.title for r in entry.rules}
        if not entry.sources:
            lines += ["", "This pack declares no sources."]
        for item in entry.sources:
            source = item["source"]
            lines += ["", f"### {md(source.id)}: {md(source.ref)}", "",
                      f"Evidence: {source.evidence}." + (f" Where: {md(source.url)}" if source.url else "")]
            if not item["rules"]:
                lines += ["", "No rule cites it."]
            lines += [""] if item["rules"] else []
            for rule_id in item["rules"]:
                lines += [f"- {md(rule_id)} ({md(titles[rule_id])}): {md(notes[(rule_id, source.id)])}"]
    out.write("\n".join(lines) + "\n")


RENDERERS = {".md": render_markdown, ".html": render_html, ".htm": render_html}


def for_path(path: str, bibliography: bool = False) -> Any:
    """The renderer for a handbook file, by its extension: .md or .html (the bibliography: .md)."""
    if bibliography:
        return by_extension(path, {".md": render_bibliography}, "the bibliography", ".md")
    return by_extension(path, RENDERERS, "a handbook", ".md or .html")
