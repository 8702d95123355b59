"""Waivers (SPEC 9): approved exceptions that turn a rule's fail into ``waived``.

A waivers file is YAML, checked like a pack: every problem at ``path:line:column``. A waiver names
one rule and narrows by record keys, patient, a condition on the judged record and a window of
record days; all that are given must hold. It covers nothing after ``expires`` (as of the run),
and only a fail can be waived. The report lists each waiver's id, rule, status and the records it
waived; the file's identifiers (record keys, patients) are never copied into a report.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import PackError, UsageError, WaiverError
from engine.inputs.files import special_file
from engine.language.conditions import Truth, compile_condition, fields_of, need
from engine.language.grammar import Checker, Conditions, suggest
from engine.language.loader import Node, decode_pack, load_yaml, top_level_keys
from engine.language.model import Pack, Record, RecordType, Rule, merged_types
from engine.language.values import ConversionError, convert, parse_day, timezone
from engine.results import WaiverStatus

TOP_KEYS = ("waivers",)
WAIVER_KEYS = ("id", "rule", "records", "patient", "where", "from", "until", "expires", "reason", "approved_by",
               "approved_on")
REQUIRED = ("id", "rule", "reason", "approved_by", "approved_on")
WHAT = "waivers file"


@dataclass(frozen=True, slots=True)
class Waiver:
    id: str
    rule: str  # the rule's id
    pack: str  # the pack of the rule
    reason: str
    approved_by: str
    approved_on: dt.date
    records: frozenset[str] | None = None
    patient: str | None = None
    where: Callable[[dict[str, Any]], Truth] | None = field(default=None, compare=False)
    where_fields: tuple[str, ...] = ()  # the declared fields its where reads (an export must have them)
    record_type: str = ""
    start: dt.date | None = None
    end: dt.date | None = None
    expires: dt.date | None = None

    def covers(self, record: Record, tz: dt.tzinfo) -> bool:
        """Whether every narrowing the waiver gives holds for ``record`` (a where that is unknown on it
        does not cover it; a record without a time is outside any window)."""
        if self.records is not None and record.key not in self.records:
            return False
        if self.patient is not None and record.patient != self.patient:
            return False
        if self.start is not None or self.end is not None:
            if record.time is None:
                return False
            day = record.time.astimezone(tz).date()
            if (self.start is not None and day < self.start) or (self.end is not None and day > self.end):
                return False
        return self.where is None or self.where(dict(record.values)) is True

    def shown(self) -> dict[str, str]:
        """What a finding says of the waiver that covers it."""
        return {"id": self.id, "reason": self.reason, "approved_by": self.approved_by,
                "approved_on": self.approved_on.isoformat()}


class Waivers:
    """The run's waivers: which one covers a fail (the first in file order), and their statuses."""

    def __init__(self, waivers: list[Waiver], as_of: dt.datetime, tz: dt.tzinfo) -> None:
        self.waivers, self.tz = waivers, tz
        today = as_of.astimezone(tz).date()
        self.expired = {w.id for w in waivers if w.expires is not None and today > w.expires}
        self.by_rule: dict[tuple[str, str], list[Waiver]] = {}
        for waiver in waivers:
            if waiver.id not in self.expired:
                self.by_rule.setdefault((waiver.pack, waiver.rule), []).append(waiver)
        self.used: dict[str, int] = {}

    def needed(self, types: Mapping[str, RecordType]) -> dict[str, dict[str, str]]:
        """The fields the waivers' where conditions read, per record type (through derived fields):
        an export without one of them would leave the waiver silently unused, so the run stops."""
        needed: dict[str, dict[str, str]] = {}
        for waiver in self.waivers:
            rtype = types.get(waiver.record_type)
            if rtype is not None and waiver.id not in self.expired:
                for name in waiver.where_fields:
                    need(needed, rtype, name, f"read by waiver {waiver.id}")
        return needed

    def covering(self, rule: Rule, record: Record) -> Waiver | None:
        """The waiver that turns this fail into ``waived``, counted as used; None when none does."""
        for waiver in self.by_rule.get((rule.pack, rule.id), ()):
            if waiver.covers(record, self.tz):
                self.used[waiver.id] = self.used.get(waiver.id, 0) + 1
                return waiver
        return None

    def statuses(self) -> tuple[WaiverStatus, ...]:
        """Every waiver, in file order: expired ones are never called unused."""
        return tuple(WaiverStatus(w.id, w.rule, w.pack,
                                  "expired" if w.id in self.expired else "applied" if self.used.get(w.id) else "unused",
                                  self.used.get(w.id, 0), w.expires.isoformat() if w.expires else None)
                     for w in self.waivers)


def is_waivers_ref(ref: str) -> bool:
    """Whether ``validate``'s argument is a waivers file: YAML whose top level says ``waivers:``."""
    tops = top_level_keys(ref) if Path(ref).is_file() else set()
    return "waivers" in tops and not tops & {"pack", "map"}


def load_waivers(paths: Iterable[str], packs: list[Pack] | None) -> list[Waiver]:
    """Every waiver of the files, checked against the run's packs; WaiverError lists every problem."""
    found: list[Waiver] = []
    problems = []
    first: dict[str, tuple[str, int]] = {}
    given: dict[Path, str] = {}
    for path in paths:
        if Path(path).exists() and Path(path).resolve() in given:
            raise UsageError(f"{path}: the same waivers file is given twice (as {given[Path(path).resolve()]} too)")
        if Path(path).exists():
            given[Path(path).resolve()] = path
        kind = special_file(path)
        if kind is not None:
            raise UsageError(f"{path}: not a regular file ({kind}); a waivers file is a YAML file")
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read waivers file ({exc.strerror or exc})") from None
        try:
            found += parse_waivers(data, path, packs, first)
        except PackError as exc:
            problems += exc.problems
    if problems:
        raise WaiverError(problems)
    return found


def parse_waivers(data: bytes, path: str, packs: list[Pack] | None,
                  first: dict[str, tuple[str, int]] | None = None) -> list[Waiver]:
    """One waivers file; with ``packs`` None its structure alone is checked (rules not looked up)."""
    root = load_yaml(decode_pack(data, path, WHAT), path, WHAT)
    check = Checker(path)
    first = {} if first is None else first
    waivers: list[Waiver] = []
    if check.mapping(root, WHAT, TOP_KEYS, TOP_KEYS):
        entries = root.value.get("waivers")
        if entries is not None and (not isinstance(entries.value, list) or not entries.value):
            check.node(entries, "waivers must be a non-empty list")
        elif entries is not None:
            context = _Context(packs)
            for index, node in enumerate(entries.value):
                ident = node.value.get("id") if isinstance(node.value, dict) else None
                if ident is not None and isinstance(ident.value, str):
                    seen = first.get(ident.value)
                    if seen is not None:
                        where = f"line {seen[1]}" if seen[0] == path else f"{seen[0]}:{seen[1]}"
                        check.node(ident, f'duplicate waiver id "{ident.value}" (first at {where})')
                    else:
                        first[ident.value] = (path, ident.line)
                waiver = _waiver(check, node, index, context)
                if waiver is not None:
                    waivers.append(waiver)
    if check.problems:
        raise WaiverError(check.problems)
    return waivers


class _Context:
    """What a waiver is checked against: the packs' rules by id, their record types and zone."""

    def __init__(self, packs: list[Pack] | None) -> None:
        self.packs = packs
        self.rules: dict[str, list[Rule]] = {}
        self.types: dict[str, RecordType] = {}
        self.tz: dt.tzinfo = dt.UTC
        if packs:
            for pack in packs:
                for rule in pack.rules:
                    self.rules.setdefault(rule.id, []).append(rule)
            self.types, zone = merged_types(packs)
            self.tz = timezone(zone)

    def rule(self, check: Checker, node: Node, text: str) -> Rule | None:
        pack_id, slash, rule_id = text.rpartition("/")
        if slash and not pack_id:
            check.node(node, f'rule "{text}" has nothing before "/": write PACK/ID or ID')
            return None
        # one per pack: the versions of a rule (effective dates) share its id, and a waiver covers each
        candidates = list({r.pack: r for r in self.rules.get(rule_id, []) if not pack_id or r.pack == pack_id}.values())
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            known = [*self.rules, *(f"{r.pack}/{r.id}" for rules in self.rules.values() for r in rules)]
            same_case = [k for k in known if k.lower() == text.lower()]
            hint = f' (did you mean "{same_case[0]}"?)' if same_case else suggest(text, known)
            check.node(node, f'rule "{text}" is not a rule of the packs given{hint}')
        else:
            packs = ", ".join(sorted(r.pack for r in candidates))
            check.node(node, f'rule "{text}" is in packs {packs}: write PACK/{rule_id}')
        return None


def _waiver(check: Checker, node: Node, index: int, context: _Context) -> Waiver | None:
    what = f"waivers[{index}]"
    if not check.mapping(node, what, WAIVER_KEYS, REQUIRED):
        return None
    keys: dict[str, Node] = node.value
    before = len(check.problems)
    texts = {name: _text(check, keys.get(name), name) for name in ("id", "rule", "reason", "approved_by", "patient")}
    days = {name: _day(check, keys.get(name), name) for name in ("from", "until", "expires", "approved_on")}
    records = _records(check, keys.get("records"))
    if days["from"] and days["until"] and days["until"] < days["from"]:
        check.node(keys["until"], f"until {days['until']} is before from {days['from']}")
    if days["expires"] and days["approved_on"] and days["expires"] < days["approved_on"]:
        check.node(keys["expires"], f"expires {days['expires']} is before approved_on {days['approved_on']}")
    rule = None
    if context.packs is not None and texts["rule"] and "rule" in keys:
        rule = context.rule(check, keys["rule"], texts["rule"])
    where = None
    where_fields: tuple[str, ...] = ()
    if "where" in keys and rule is not None:
        parsed = Conditions(check, context.types.get(rule.for_type), context.tz, context.types,
                            in_where=True).parse(keys["where"])
        where = compile_condition(parsed) if parsed is not None else None
        where_fields = tuple(fields_of(parsed)) if parsed is not None else ()
    elif "where" in keys and not isinstance(keys["where"].value, dict):
        check.node(keys["where"], "where must be a condition (a mapping, as a rule's when)")
    if rule is not None:
        rtype = context.types.get(rule.for_type)
        if rtype is not None:
            if records is not None:
                made = (_identifier(check, item, rtype, rtype.key, context.tz) for item in keys["records"].value)
                records = frozenset(key for key in made if key is not None)
            if texts["patient"]:
                texts["patient"] = _identifier(check, keys["patient"], rtype, rtype.patient, context.tz)
    if len(check.problems) > before or (context.packs is not None and rule is None):
        return None
    approved_on = days["approved_on"]
    assert approved_on is not None
    # without packs (validate given the file alone) the rule is as written and the where is not compiled
    pack_id, _, rule_id = (texts["rule"] or "").rpartition("/")
    return Waiver(texts["id"] or "", rule.id if rule else rule_id, rule.pack if rule else pack_id,
                  texts["reason"] or "", texts["approved_by"] or "", approved_on, records, texts["patient"], where,
                  where_fields, rule.for_type if rule else "", days["from"], days["until"], days["expires"])


_PSEUDONYM = re.compile(r"(pt|phi)-[0-9a-f]{12}")


def _identifier(check: Checker, item: Node, rtype: RecordType, name: str, tz: dt.tzinfo) -> str | None:
    """A record key or patient as the reader makes it from the export (trimmed, read as the field's
    type: an integer key 00123 is 123), so that a waiver matches what the export holds; None, said,
    for a pseudonym or a value of another type (not text, or empty, was said already)."""
    text = item.value.strip() if isinstance(item.value, str) else ""
    if not text:
        return None
    if _PSEUDONYM.fullmatch(text):
        check.node(item, f'"{text}" is a pseudonym from a report: give the identifier as it is in the export')
        return None
    try:
        return str(convert(rtype.fields[name], text, tz))
    except ConversionError as exc:
        check.node(item, f'"{text}" cannot be a {name} of {rtype.name}: {exc.expected}')
        return None


def _text(check: Checker, node: Node | None, what: str) -> str | None:
    if node is None:
        return None
    text = check.text(node, what)
    if not text.strip():
        if isinstance(node.value, str) or node.value is None:  # anything else was said to be no text
            check.node(node, f"{what} must not be empty")
        return None
    return text


def _day(check: Checker, node: Node | None, what: str) -> dt.date | None:
    if node is None:
        return None
    try:
        return parse_day(node.value if isinstance(node.value, str) else "")
    except ValueError:
        check.node(node, f"{what} must be a date (YYYY-MM-DD)")
        return None


def _records(check: Checker, node: Node | None) -> frozenset[str] | None:
    if node is None:
        return None
    if not isinstance(node.value, list) or not node.value:
        check.node(node, "records must be a non-empty list of record keys")
        return None
    keys = [check.text(item, "records") for item in node.value]
    return frozenset(key.strip() for key in keys if key.strip())


__all__ = ["Waiver", "Waivers", "is_waivers_ref", "load_waivers", "parse_waivers"]
