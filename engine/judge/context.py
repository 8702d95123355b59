"""What the packs of an audit become before any record is read: merged record types, the compiled
ruleset the engine holds, derive expressions, history conditions, the plain-Python judgement of
each rule (every answer of the engine is checked against it) and the privacy gate."""

from __future__ import annotations

from engine.judge import verdicts
from engine.judge.compiler import compile_rules
from engine.judge.evidence import evidence_fields
from engine.judge.facts import Layout
from engine.language import conditions, expressions
from engine.language.model import History, Pack, Record, Rejected, Rule, latest_version, merged_types
from engine.language.values import timezone
from engine.privacy import Privacy, Pseudonymiser


class PackContext:
    """The packs of one audit, compiled once; read-only after construction."""

    def __init__(self, packs: list[Pack], pseudonymise: Pseudonymiser | None = None, reveal: bool = False) -> None:
        self.packs = packs
        self.types, zone = merged_types(packs)
        self.tz = timezone(zone)
        self.rules = [rule for pack in packs for rule in pack.rules]
        self.layout = Layout(self.types, self.rules)
        # compiled before any record is read: a pack the engine cannot hold stops the run here
        self.ruleset = compile_rules(self.rules, self.layout)
        self.rules_by_type: dict[str, list[int]] = {}
        for index, rule in enumerate(self.rules):
            self.rules_by_type.setdefault(rule.for_type, []).append(index)
        # the one gate identifying values pass on their way into the report
        self.privacy = Privacy(self.types, None if reveal else pseudonymise)
        self.derivers = {name: [(d.name, expressions.compile_expression(d.expr)) for d in rtype.derived.values()]
                         for name, rtype in self.types.items()}
        # identifying fields stay out of the evidence (the finding names the patient by pseudonym)
        self.evidence_fields = [[name for name in evidence_fields(rule, self.types[rule.for_type])
                                 if not self.privacy.hides(rule.for_type, name)] for rule in self.rules]
        self.histories = [conditions.histories_of(rule.when) + conditions.histories_of(rule.require)
                          for rule in self.rules]
        self.histories_by_type: dict[str, list[History]] = {}
        for rule, found in zip(self.rules, self.histories):
            known = self.histories_by_type.setdefault(rule.for_type, [])
            known.extend(h for h in found if h not in known)
        # the plain-Python judgement of each rule, that every answer of the engine is checked against
        self.plain = [conditions.compile_outcome(rule.when, rule.require) for rule in self.rules]
        self.wheres = {id(h): conditions.compile_condition(h.where)
                       for hs in self.histories for h in hs if h.where is not None}
        # rules with effective dates, and the latest version of each: versions of one rule all find a
        # record without a time not evaluable, and only the latest counts it
        self.dated = {index for index, rule in enumerate(self.rules) if rule.effective is not None}
        versions: dict[tuple[str, str], list[Rule]] = {}
        for index in self.dated:
            versions.setdefault((self.rules[index].pack, self.rules[index].id), []).append(self.rules[index])
        latest = {id(latest_version(found)) for found in versions.values()}
        self.latest_dated = {index for index in self.dated if id(self.rules[index]) in latest}
        # rules whose outcomes are tallied one record at a time: dated ones, and those counted per
        # patient or course (their units are made of records; judge/tally.py)
        self.record_by_record = self.dated | {index for index, rule in enumerate(self.rules) if rule.per is not None}
        # the atoms of each type's rules: a record's truths of them are its signature (judge/verdicts.py)
        self.atoms = {name: verdicts.atoms([self.rules[i] for i in indexes])
                      for name, indexes in self.rules_by_type.items()}
        # what an export must provide: per record type, each field a rule reads and why
        self.needed = conditions.fields_read(self.rules, self.types)
        # record types an audit must keep: those judged and those history conditions look at
        self.kept_types = set(self.rules_by_type) | {h.of for hs in self.histories for h in hs}
        # reference tables (no patient): their records are held aside and reached through join
        self.shared_types = {name for name, rtype in self.types.items() if rtype.shared}

    def is_shared(self, item: Record | Rejected) -> bool:
        """Whether a record (or a rejected one) is a reference table's row: of no patient, anyone's.
        A rule example's or scenario's roster row is its patient's: each example sees its own only."""
        return item.patient is None and item.type in self.shared_types

    def history_owner(self, item: Record | Rejected) -> str | None:
        """Whose history sees ``item``: its patient, "" for a reference table's row, None for no one."""
        return item.patient if item.patient is not None else "" if self.is_shared(item) else None

    @property
    def needs_history(self) -> bool:
        return any(self.histories)

    def derive(self, record: Record) -> None:
        """Add the record's derived fields as it is read (a derived value is missing when an input is)."""
        values = record.values
        for name, compute in self.derivers[record.type]:
            value = compute(values)
            if value is not None:
                values[name] = value

    def where(self, record: Record) -> str:
        """A record as an error message names it: type, key (through the privacy gate), file and line."""
        return f"{record.type} {self.privacy.key(record.type, record.key)} ({record.path}:{record.line})"

