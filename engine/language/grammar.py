"""The condition grammar: YAML condition nodes -> Condition trees, checked against record types.

Also home of the checker every part of pack validation reports through.
"""

from __future__ import annotations

import datetime as dt
import difflib
from typing import Any

from engine.errors import Problem
from engine.language.conditions import leaves_of
from engine.language.loader import Node
from engine.language.model import (
    JUDGED_PREFIX,
    ORDERED_TYPES,
    TYPE_KIND,
    All,
    AnyOf,
    Condition,
    Field,
    History,
    Leaf,
    Mark,
    Not,
    RecordType,
)
from engine.language.operators import OPERATORS
from engine.language.patterns import PatternError, compile_pattern
from engine.language.values import ConversionError, OutOfRange, convert, parse_duration

COMBINATORS = ("all", "any", "not")
HISTORY_FORMS = ("exists", "count", "since_previous", "first")
HISTORY_KEYS = {
    "exists": ("of", "where", "within", "join"),
    "count": ("of", "where", "within", "join", "at_most", "at_least"),
    "since_previous": ("of", "where", "at_least", "join"),
    "first": ("of", "where", "join"),
}


def suggest(word: str, choices: Any, known: str = "") -> str:
    """' (did you mean "x"?)' for a close match; else ' (known KNOWN: a, b, c)' when ``known`` names them."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    if close:
        return f' (did you mean "{close[0]}"?)'
    return f" (known {known}: {', '.join(choices)})" if known else ""


def written(node: Node, kind: str) -> Any:
    """A pack value as written, read like the same text in an export, not as YAML 1.1 reads it:
    for a string or enum field an unquoted yes/no/on/off/1.0; for a number or integer field
    010 (10, not octal 8), 1:30 (not 90), 0x1F, 1_000 or 1e-400 (refused, as in an export)."""
    if kind in ("string", "enum", "number", "integer") and not node.quoted and node.source is not None \
            and isinstance(node.value, (bool, int, float)):
        return node.source
    return node.value


class Checker:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        # Fields whose declaration was refused: their problem is reported once, at the declaration,
        # and uses of them are not reported again as "not declared".
        self.broken: set[str] = set()
        # The pack's parameters (name -> its value as written) and the rules using each: a local
        # choice written once at the top of a pack and referred to as {param: NAME}
        self.params: dict[str, Node] = {}
        self.param_uses: dict[str, list[str]] = {}
        self.rule = ""  # the rule being read, so that a parameter knows its users
        self.broken_params: set[str] = set()  # refused where declared: their uses are not reported again

    def resolve(self, node: Node) -> Node | None:
        """``node`` itself, or the value of the parameter it names (``{param: NAME}``); None (and a
        problem) for a reference to no parameter."""
        if not isinstance(node.value, dict) or "param" not in node.value:
            return node
        extra = [key for key in node.value if key != "param"]
        if extra:
            self.key(node, extra[0], f'unknown key "{extra[0]}" in a parameter reference: write {{param: NAME}}')
            return None
        name_node = node.value["param"]
        name = name_node.value if isinstance(name_node.value, str) else None
        if name in self.broken_params:
            return None
        if name is None or name not in self.params:
            shown = name_node.source or str(name_node.value)
            declared = self.params or self.broken_params
            said = suggest(shown, self.params, "parameters") if declared else " (the pack declares no parameters:)"
            self.node(name_node, f'unknown parameter "{shown}"{said}')
            return None
        self.note_use(name)
        return self.params[name]

    def note_use(self, name: str) -> None:
        """Note that the rule being read uses parameter ``name`` (once per rule)."""
        uses = self.param_uses.setdefault(name, [])
        if self.rule and self.rule not in uses:
            uses.append(self.rule)

    def used(self, node: Node, given: Node, what: str) -> str:
        """' (parameter "NAME", used WHAT by rule R)' when ``node`` is the value of the parameter
        ``given`` refers to, so that a problem reported at the value says where it was used."""
        if node is given:
            return ""
        name = next((name for name, value in self.params.items() if value is node), "?")
        return f' (parameter "{name}", used {what} by rule {self.rule})'

    def at(self, line: int, column: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, column, message))

    def node(self, node: Node, message: str) -> None:
        self.at(node.line, node.column, message)

    def inside(self, node: Node, offset: int, message: str) -> None:
        """A problem at character ``offset`` of a string value (an expression, a pattern, a message)."""
        line, column = node.position_of(offset)
        self.at(line, column, message)

    def key(self, node: Node, key: str, message: str) -> None:
        line, column = node.keys.get(key, (node.line, node.column))
        self.at(line, column, message)

    def mapping(self, node: Node, what: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> bool:
        if not isinstance(node.value, dict):
            self.node(node, f"{what} must be a mapping")
            return False
        for key in node.value:
            if key not in allowed:
                self.key(node, key, f'unknown key "{key}" in {what}{suggest(key, allowed)}')
        for key in required:
            if key not in node.value:
                self.node(node, f'{what} is missing "{key}"')
        return True

    def text(self, node: Node | None, what: str, default: str = "") -> str:
        if node is None:
            return default
        if isinstance(node.value, str):
            return node.value
        if isinstance(node.value, (bool, int, float)) and node.source is not None:
            # YAML reads 12, 2026.10, 0x1F or yes as a number or boolean, and its text back differs
            # from what was written ("2026.1", "31", "True"): ask for quotes rather than guess
            self.node(node, f'{what} must be text: put it in quotes ("{node.source}")')
            return node.source
        self.node(node, f"{what} must be text")
        return default

    def mark(self, node: Node) -> Mark:
        return Mark(self.path, node.line, node.column)


class Conditions:
    """Parses the condition language of one rule against its record type."""

    def __init__(self, check: Checker, rtype: RecordType | None, tz: Any,
                 types: dict[str, RecordType] | None = None, in_where: bool = False,
                 judged: RecordType | None = None) -> None:
        self.check = check
        self.rtype = rtype
        self.tz = tz
        self.types = types or {}
        self.in_where = in_where  # a where: judges the other records; history cannot nest there
        self.judged = judged  # in a where: the judged record's type, which {judged: NAME} reads

    def parse(self, node: Node) -> Condition | None:
        if not isinstance(node.value, dict) or not node.value:
            self.check.node(node, "a condition must be a non-empty mapping")
            return None
        parts: list[Condition | None] = []
        for key, value in node.value.items():
            if key in ("all", "any"):
                if not isinstance(value.value, list) or not value.value:
                    self.check.node(value, f"{key} needs a non-empty list of conditions")
                    parts.append(None)
                    continue
                items = [self.parse(v) for v in value.value]
                parts.append(None if None in items else
                             (All if key == "all" else AnyOf)(tuple(i for i in items if i is not None)))
            elif key == "not":
                inner = self.parse(value)
                parts.append(None if inner is None else Not(inner))
            elif key in HISTORY_FORMS:
                parts.append(self._history(node, key, value))
            else:
                parts.append(self._field(node, key, value))
        if None in parts:
            return None
        done = [p for p in parts if p is not None]
        return done[0] if len(done) == 1 else All(tuple(done))

    def _field(self, parent: Node, name: str, node: Node) -> Condition | None:
        if self.rtype is None:
            return None
        kind = self.rtype.type_of(name)
        if kind is None and name in self.check.broken:
            return None
        if kind is None:
            choices = [*self.rtype.fields, *self.rtype.derived, *COMBINATORS]
            self.check.key(parent, name, f'field "{name}" is not declared for record type '
                                         f'"{self.rtype.name}"{suggest(name, choices)}')
            return None
        if isinstance(node.value, dict) and len(node.value) == 1 and set(node.value) <= {"param", "field", "judged"}:
            return self._leaf(name, kind, "equals", node)  # field: {param: NAME} or a reference, as field: value
        if not isinstance(node.value, dict):
            if isinstance(node.value, list):
                self.check.node(node, f'a list needs an operator: write {name}: {{one_of: [...]}}')
                return None
            if node.value is None:
                self.check.node(node, f"no value given: write {name}: {{present: false}} for an undocumented field")
                return None
            return self._leaf(name, kind, "equals", node)
        if not node.value:
            self.check.node(node, f'no operator given for field "{name}"')
            return None
        leaves = [self._leaf(name, kind, op, operand, node) for op, operand in node.value.items()]
        if None in leaves:
            return None
        done = [leaf for leaf in leaves if leaf is not None]
        return done[0] if len(done) == 1 else All(tuple(done))

    def _leaf(self, name: str, kind: str, op: str, written_operand: Node, ops: Node | None = None) -> Leaf | None:
        check = self.check
        known = OPERATORS.get(op)
        if known is None:
            where = ops if ops is not None else written_operand
            check.key(where, op, f'unknown operator "{op}"{suggest(op, OPERATORS, "operators")}')
            return None
        form = known.operand
        mark = check.mark(written_operand)
        resolved = check.resolve(written_operand)
        if resolved is None:
            return None
        operand = resolved
        if form == "flag":
            if not isinstance(operand.value, bool):
                check.node(operand, "present takes true or false")
                return None
            return Leaf(name, op, operand.value, mark=mark)
        if form == "regex":
            if kind not in ("string", "enum"):
                where = ops if ops is not None else operand
                check.key(where, op, f'operator "matches" does not fit {kind} field "{name}" '
                                     "(matches needs a string or enum field)")
                return None
            if not isinstance(operand.value, str):
                check.node(operand, "matches takes a regular expression in quotes")
                return None
            try:
                compile_pattern(operand.value)
            except PatternError as exc:
                check.inside(operand, exc.offset, f'invalid regular expression "{operand.value}": {exc}')
                return None
            return Leaf(name, op, operand.value, mark=mark)
        if known.ordered and kind not in ORDERED_TYPES:
            where = ops if ops is not None else operand
            check.key(where, op, f'operator "{op}" does not fit {kind} field "{name}" '
                                 f"({kind}s compare for equality only)")
            return None
        if form in ("value", "order") and isinstance(operand.value, dict):
            return self._ref(name, kind, op, operand, mark)
        if form == "range":
            if not isinstance(operand.value, list) or len(operand.value) != 2:
                got = f"{len(operand.value)} values" if isinstance(operand.value, list) else "one value"
                check.node(operand, f"between takes a list of two values [low, high], not {got}")
                return None
            low, high = (self._constant(name, v) for v in operand.value)
            if low is None or high is None:
                return None
            if low > high:
                written = [v.source.strip("'\"") if v.source else str(v.value) for v in operand.value]
                check.node(operand, f'between: low "{written[0]}" is greater than high "{written[1]}"')
                return None
            return Leaf(name, op, (low, high), mark=mark)
        if form == "set":
            if not isinstance(operand.value, list):
                check.node(operand, f"{op} takes a list of values")
                return None
            items = [self._constant(name, v) for v in operand.value]
            if None in items:
                return None
            return Leaf(name, op, tuple(items), mark=mark)
        if isinstance(operand.value, list):
            check.node(operand, f'{op} takes one value; use one_of for a list')
            return None
        value = self._constant(name, written_operand)
        return None if value is None else Leaf(name, op, value, mark=mark)

    def _ref(self, name: str, kind: str, op: str, operand: Node, mark: Mark) -> Leaf | None:
        assert self.rtype is not None
        spec = operand.value
        # {field: NAME}: another field of the same record; {judged: NAME}, in a history condition's
        # where: a field of the judged record (so a roster row can be current on the session's date)
        if set(spec) == {"judged"}:
            if self.judged is None:
                self.check.node(operand, "{judged: NAME} compares with the judged record's field, and is "
                                         "written only in a history condition's where")
                return None
            key, target, prefix, whose = "judged", self.judged, JUDGED_PREFIX, f' of "{self.judged.name}"'
        elif set(spec) == {"field"}:
            key, target, prefix, whose = "field", self.rtype, "", ""
        else:
            extra = [key for key in spec if key != "field"]
            if extra:
                self.check.key(operand, extra[0], f'unknown key "{extra[0]}" in a field reference'
                                                  f'{suggest(extra[0], ["field"])}: write {op}: {{field: NAME}}')
            else:
                self.check.node(operand, f"compare with another field as {op}: {{field: NAME}}")
            return None
        other = self.check.text(spec[key], key)
        other_kind = target.type_of(other)
        if other_kind is None:
            choices = [*target.fields, *target.derived]
            self.check.node(spec[key], f'field "{other}" is not declared for record type '
                                       f'"{target.name}"{suggest(other, choices)}')
            return None
        if TYPE_KIND[kind] != TYPE_KIND[other_kind]:
            self.check.node(spec[key], f'cannot compare {kind} field "{name}" with {other_kind} field "{other}"{whose}')
            return None
        return Leaf(name, op, None, ref=prefix + other, mark=mark)

    def _constant(self, name: str, given: Node) -> Any:
        assert self.rtype is not None
        spec = self.rtype.fields.get(name)
        if spec is None:
            spec = Field(name, self.rtype.derived[name].type)
        node = self.check.resolve(given)
        if node is None:
            return None
        used = self.check.used(node, given, f'for field "{name}"')
        if node.value is None or isinstance(node.value, (dict, list)):
            self.check.node(node, f'expected a {spec.type} value for field "{name}"{used}')
            return None
        try:
            return convert(spec, written(node, spec.type), self.tz)
        except ConversionError as exc:
            self.check.node(node, f"{exc}{used}")
            return None

    # -- history conditions ------------------------------------------------------------------
    def _history(self, parent: Node, form: str, node: Node) -> History | None:
        check = self.check
        if self.in_where:
            check.key(parent, form, f'history condition "{form}" cannot be used inside "where"')
            return None
        if self.rtype is None:
            return None
        if not check.mapping(node, f"{form} condition", HISTORY_KEYS[form], ("of",)):
            return None
        spec: dict[str, Node] = node.value
        failed = False
        of = check.text(spec.get("of"), "of")
        other = self.types.get(of)
        if "of" in spec and other is None:
            check.node(spec["of"], f'unknown record type "{of}"{suggest(of, self.types, "types")}')
            failed = True
        where = None
        if "where" in spec and other is not None:
            where = Conditions(check, other, self.tz, self.types, in_where=True, judged=self.rtype).parse(spec["where"])
            failed = failed or where is None
        before = after = None
        if "within" in spec:
            window = self._window(spec["within"])
            failed = failed or window is None
            before, after = window or (None, None)
        if self.rtype.shared and other is not None and not other.shared:
            check.node(spec["of"], f'"{self.rtype.name}" is a reference table (it names no patient), so its '
                                   f'rules can look only at reference tables, not at "{of}", which belongs '
                                   "to patients")
            failed = True
        join = joined_as = None
        if "join" in spec:
            joined = self._join(spec["join"], other)
            failed = failed or joined is None
            join, joined_as = joined or (None, None)
        elif other is not None and other.shared:
            check.key(node, "of", f'"{of}" is a reference table (it names no patient): say how its records '
                                  f"are found, with join: FIELD or join: {{this_field: its_field}}")
            failed = True
        at_most = self._count(spec.get("at_most")) if form == "count" else None
        at_least = self._count(spec.get("at_least")) if form == "count" else None
        if form == "count" and at_most is None and at_least is None:
            if "at_most" not in spec and "at_least" not in spec:
                check.node(node, 'count needs "at_most" or "at_least" (a whole number)')
            failed = True
        gap = None
        if form == "since_previous":
            if "at_least" not in spec:
                check.node(node, 'since_previous needs "at_least" (a duration such as 40h)')
                failed = True
            else:
                gap = self._duration(spec["at_least"])
                failed = failed or gap is None
        if failed:
            return None
        line, column = parent.keys.get(form, (node.line, node.column))
        judged = tuple(dict.fromkeys(leaf.ref[len(JUDGED_PREFIX):] for leaf in leaves_of(where)
                                     if leaf.ref and leaf.ref.startswith(JUDGED_PREFIX)))
        return History(form=form, of=of, where=where, before=before, after=after, join=join, at_most=at_most,
                       at_least=at_least, gap=gap, time_field=self.rtype.time,
                       mark=Mark(check.path, line, column), joined_as=joined_as if joined_as != join else None,
                       judged=judged)

    def _duration(self, given: Node) -> dt.timedelta | None:
        node = self.check.resolve(given)
        if node is None:
            return None
        used = self.check.used(node, given, "as a duration")
        if isinstance(node.value, (dict, list)):
            self.check.node(node, f"expected a duration such as 90d{used}")
            return None
        shown = node.source if node.source is not None else str(node.value)
        try:
            duration = parse_duration(node.value) if isinstance(node.value, str) else None
        except OutOfRange as exc:
            self.check.node(node, f'"{shown}" {exc}{used}')
            return None
        if duration is None:
            self.check.node(node, f'"{shown}" is not a duration (write 30m, 40h, 90d or 2w){used}')
        return duration

    def _window(self, node: Node) -> tuple[dt.timedelta, dt.timedelta] | None:
        if not self.check.mapping(node, "within", ("before", "after")):
            return None
        if not node.value:
            self.check.node(node, 'within needs "before" and/or "after" (a duration such as 90d)')
            return None
        # an omitted side of a given window is 0 (SPEC 4.1)
        sides = [self._duration(node.value[side]) if side in node.value else dt.timedelta(0)
                 for side in ("before", "after")]
        if sides[0] is None or sides[1] is None:
            return None
        return sides[0], sides[1]

    def _join(self, node: Node, other: RecordType | None) -> tuple[str, str] | None:
        """``join: FIELD`` (the same field in both types) or ``join: {this_field: its_field}``: the
        judged record's field and the field of the other records that must equal it."""
        assert self.rtype is not None
        if isinstance(node.value, dict):
            if len(node.value) != 1:
                self.check.node(node, "join takes one field, or one pair {this_field: its_field}")
                return None
            ((name, theirs_node),) = node.value.items()
            theirs = self.check.text(theirs_node, "join")
            where = theirs_node
        else:
            name = theirs = self.check.text(node, "join")
            where = node
        kind = self.rtype.type_of(name)
        if kind is None:
            self.check.key(node, name, f'join field "{name}" is not declared for record type "{self.rtype.name}"'
                                       f"{suggest(name, [*self.rtype.fields, *self.rtype.derived])}")
            return None
        if other is None:
            return None
        other_kind = other.type_of(theirs)
        if other_kind is None:
            self.check.node(where, f'join field "{theirs}" is not declared for record type "{other.name}"'
                                   f"{suggest(theirs, [*other.fields, *other.derived])}")
            return None
        if TYPE_KIND[kind] != TYPE_KIND[other_kind]:
            self.check.node(where, f'join field "{name}" is {kind} in "{self.rtype.name}" '
                                   f'but "{theirs}" is {other_kind} in "{other.name}"' if theirs != name else
                                   f'join field "{name}" is {kind} in "{self.rtype.name}" '
                                   f'but {other_kind} in "{other.name}"')
            return None
        return name, theirs

    def _count(self, given: Node | None) -> int | None:
        if given is None:
            return None
        node = self.check.resolve(given)
        if node is None:
            return None
        if isinstance(node.value, bool) or not isinstance(node.value, int) or node.value < 0:
            shown = node.source if node.source is not None else str(node.value)
            if isinstance(node.value, (dict, list)):
                shown = "a list" if isinstance(node.value, list) else "a mapping"
            used = self.check.used(node, given, "as a count")
            self.check.node(node, f'"{shown}" is not a count (a whole number, 0 or more){used}')
            return None
        return node.value
