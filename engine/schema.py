"""Structural and type checks of a loaded pack; builds the Pack or reports every problem."""

from __future__ import annotations

import difflib
import hashlib
import re
from typing import Any

from . import expressions
from .errors import PackError, Problem
from .loader import Node
from .model import (
    FIELD_TYPES,
    ORDERED_TYPES,
    SEVERITIES,
    TYPE_KIND,
    All,
    AnyOf,
    Condition,
    Derived,
    Example,
    Field,
    Leaf,
    Mark,
    Not,
    Pack,
    RecordType,
    Rule,
)
from .patterns import PatternError, compile_pattern
from .values import ConversionError, convert, timezone

PACK_KEYS = ("pack", "version", "title", "source", "timezone", "records", "derive", "rules", "targets")
RECORD_KEYS = ("key", "patient", "time", "fields")
FIELD_KEYS = ("type", "values", "unit", "phi")
RULE_KEYS = ("id", "title", "severity", "for", "when", "require", "message", "rationale", "cite", "tests")
EXAMPLE_KEYS = ("record", "expect", "history")
OUTCOMES = ("pass", "fail", "not_applicable", "not_evaluable")
COMBINATORS = ("all", "any", "not")
HISTORY_FORMS = ("exists", "count", "since_previous", "first")
# operator -> what its operand is
OPERATORS = {
    "equals": "value", "not_equals": "value",
    "less_than": "order", "at_most": "order", "greater_than": "order", "at_least": "order",
    "between": "range", "one_of": "set", "none_of": "set", "present": "flag", "matches": "regex",
}
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _suggest(word: str, choices: Any, known: str = "") -> str:
    """' (did you mean "x"?)' for a close match; else ' (known KNOWN: a, b, c)' when ``known`` names them."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    if close:
        return f' (did you mean "{close[0]}"?)'
    return f" (known {known}: {', '.join(choices)})" if known else ""


def _written(node: Node, kind: str) -> Any:
    """The value for a string or enum field: an unquoted yes/no/on/off/1.0 as written, not as YAML 1.1 reads it."""
    if kind in ("string", "enum") and not node.quoted and node.source is not None \
            and isinstance(node.value, (bool, int, float)):
        return node.source
    return node.value


class _Checker:
    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []
        # Fields whose declaration was refused: their problem is reported once, at the declaration,
        # and uses of them are not reported again as "not declared".
        self.broken: set[str] = set()

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
                self.key(node, key, f'unknown key "{key}" in {what}{_suggest(key, allowed)}')
        for key in required:
            if key not in node.value:
                self.node(node, f'{what} is missing "{key}"')
        return True

    def text(self, node: Node | None, what: str, default: str = "") -> str:
        if node is None:
            return default
        if isinstance(node.value, bool) or not isinstance(node.value, (str, int, float)):
            self.node(node, f"{what} must be text")
            return default
        return str(node.value)

    def mark(self, node: Node) -> Mark:
        return Mark(self.path, node.line, node.column)


def build_pack(root: Node, path: str, raw: bytes) -> Pack:
    """Check a loaded pack and build it; raise PackError with every problem found."""
    check = _Checker(path)
    if not check.mapping(root, "pack", PACK_KEYS, ("pack", "records", "rules")):
        raise PackError(check.problems)
    top: dict[str, Node] = root.value
    tz_name = check.text(top.get("timezone"), "timezone", "UTC")
    try:
        tz = timezone(tz_name)
    except (KeyError, ValueError):
        check.node(top["timezone"], f'unknown time zone "{tz_name}"{_suggest(tz_name, _zones())}')
        tz = timezone("UTC")
    types = _records(check, top.get("records"))
    if "derive" in top:
        _derive(check, top["derive"], types)
    rules_node = top.get("rules")
    if rules_node is not None and rules_node.value is None:  # "rules:" and nothing: point at the key
        rules_node = Node([], *root.keys["rules"])
    rules = _rules(check, rules_node, types, tz, check.text(top.get("pack"), "pack", "?"))
    if check.problems:
        raise PackError(check.problems)
    return Pack(
        id=check.text(top.get("pack"), "pack"), version=check.text(top.get("version"), "version"),
        title=check.text(top.get("title"), "title"), source=check.text(top.get("source"), "source"),
        timezone=tz_name, records=types, rules=tuple(rules), path=path,
        sha256=hashlib.sha256(raw).hexdigest())


def _records(check: _Checker, node: Node | None) -> dict[str, RecordType]:
    types: dict[str, RecordType] = {}
    if node is None or not check.mapping(node, "records", tuple(node.value) if isinstance(node.value, dict) else ()):
        return types
    if not node.value:
        check.node(node, "records declares no record type")
    for name, decl in node.value.items():
        if not check.mapping(decl, f'record type "{name}"', RECORD_KEYS, RECORD_KEYS):
            continue
        fields: dict[str, Field] = {}
        fields_node = decl.value.get("fields")
        if fields_node is not None and check.mapping(
                fields_node, "fields", tuple(fields_node.value) if isinstance(fields_node.value, dict) else ()):
            for field_name, spec in fields_node.value.items():
                parsed = _field(check, fields_node, field_name, spec)
                if parsed:
                    fields[field_name] = parsed
                else:
                    check.broken.add(field_name)
        for role, allowed in (("key", None), ("patient", None), ("time", ("datetime", "date"))):
            ref = decl.value.get(role)
            if ref is None or fields_node is None:
                continue
            ref_name = check.text(ref, role)
            if ref_name not in fields:
                if fields and ref_name not in check.broken:
                    check.node(ref, f'{role} field "{ref_name}" is not declared in fields{_suggest(ref_name, fields)}')
            elif allowed and fields[ref_name].type not in allowed:
                check.node(ref, f'time field "{ref_name}" must be a datetime or date, not {fields[ref_name].type}')
        types[name] = RecordType(
            name=name, key=check.text(decl.value.get("key"), "key"),
            patient=check.text(decl.value.get("patient"), "patient"),
            time=check.text(decl.value.get("time"), "time"), fields=fields)
    return types


def _field(check: _Checker, parent: Node, name: str, spec: Node) -> Field | None:
    if name in COMBINATORS or name in HISTORY_FORMS:
        check.key(parent, name, f'field name "{name}" is a condition keyword; rename the field')
        return None
    if isinstance(spec.value, str):
        if spec.value not in FIELD_TYPES:
            check.node(spec, f'unknown field type "{spec.value}"{_suggest(spec.value, FIELD_TYPES, "types")}')
            return None
        if spec.value == "enum":
            check.node(spec, f'enum field "{name}" needs values: write {{type: enum, values: [...]}}')
            return None
        return Field(name, spec.value)
    if not isinstance(spec.value, dict):
        check.node(spec, f'field "{name}" needs a type: write {name}: number or {name}: {{type: number, unit: mg}}')
        return None
    if not check.mapping(spec, f'field "{name}"', FIELD_KEYS, ("type",)):
        return None
    if "type" not in spec.value:
        return None  # reported as missing by check.mapping
    kind = check.text(spec.value.get("type"), "type")
    if kind not in FIELD_TYPES:
        check.node(spec.value["type"], f'unknown field type "{kind}"{_suggest(kind, FIELD_TYPES, "types")}')
        return None
    values: tuple[str, ...] = ()
    values_node = spec.value.get("values")
    if kind == "enum":
        if values_node is None or not isinstance(values_node.value, list) or not values_node.value:
            check.node(values_node or spec, f'enum field "{name}" needs a non-empty list of values')
            return None
        values = tuple(check.text(Node(_written(v, "enum"), v.line, v.column), "enum value")
                       for v in values_node.value)
    elif values_node is not None:
        check.node(values_node, f'values only apply to enum fields; "{name}" is {kind}')
    phi_node = spec.value.get("phi")
    if phi_node is not None and not isinstance(phi_node.value, bool):
        check.node(phi_node, "phi must be true or false")
    unit = spec.value.get("unit")
    return Field(name, kind, values, check.text(unit, "unit") if unit else None,
                 bool(phi_node and phi_node.value is True))


def _derive(check: _Checker, node: Node, types: dict[str, RecordType]) -> None:
    if not isinstance(node.value, dict):
        check.node(node, "derive must be a mapping of name: expression")
        return
    for name, expr_node in node.value.items():
        if not _derive_one(check, node, name, expr_node, types) and not any(t.type_of(name) for t in types.values()):
            check.broken.add(name)  # reported here; rules that read it are not told it is undeclared


def _derive_one(check: _Checker, node: Node, name: str, expr_node: Node, types: dict[str, RecordType]) -> bool:
    """Check one derived field and add it to the record type it belongs to; False when it is refused."""
    if not isinstance(expr_node.value, (str, int, float)) or isinstance(expr_node.value, bool):
        check.node(expr_node, f'derive "{name}" must be an expression')
        return False
    text = str(expr_node.value)
    try:
        expr = expressions.parse(text)
    except expressions.ExpressionError as exc:
        check.inside(expr_node, exc.offset, f'derive "{name}": {exc}')
        return False
    inputs = expr.fields()
    owners = [t for t in types.values() if all(t.type_of(f) for f in inputs)]
    if not owners:
        unknown = [f for f in inputs if not any(t.type_of(f) for t in types.values())]
        if unknown and set(unknown) <= check.broken:
            return False
        if unknown and unknown[0] in node.value:  # derived below this one: derive reads top to bottom
            check.inside(expr_node, expr.offset_of(unknown[0]),
                         f'derive "{name}" reads "{unknown[0]}", which is derived further down; move it above')
        elif unknown:
            known = sorted({f for t in types.values() for f in (*t.fields, *t.derived)})
            check.inside(expr_node, expr.offset_of(unknown[0]),
                         f'derive "{name}" reads undeclared field "{unknown[0]}"{_suggest(unknown[0], known)}')
        else:
            check.inside(expr_node, 0, f'derive "{name}" reads fields of more than one record type')
        return False
    for owner in owners:
        if owner.type_of(name):
            check.key(node, name, f'derive "{name}" clashes with a field of record type "{owner.name}"')
            return False
        try:
            kind = expressions.infer_type(expr, owner.type_of)
        except expressions.ExpressionError as exc:
            check.inside(expr_node, exc.offset, f'derive "{name}": {exc}')
            return False
        owner.derived[name] = Derived(name, kind, expr, inputs, text)
    return True


def _rules(check: _Checker, node: Node | None, types: dict[str, RecordType], tz: Any, pack: str) -> list[Rule]:
    rules: list[Rule] = []
    if node is None:
        return rules
    if node.value is None or node.value == []:
        check.node(node, "pack has no rules")  # a bare "rules:" reads as null: say what it means
        return rules
    if not isinstance(node.value, list):
        check.node(node, "rules must be a list of rules")
        return rules
    seen: dict[str, int] = {}
    for item in node.value:
        if not check.mapping(item, "rule", RULE_KEYS, ("id", "severity", "for", "require")):
            continue
        spec: dict[str, Node] = item.value
        rule_id = check.text(spec.get("id"), "id")
        if "id" in spec:
            if rule_id in seen:
                check.node(spec["id"], f'duplicate rule id "{rule_id}" (first at line {seen[rule_id]})')
            elif not _RULE_ID.fullmatch(rule_id):
                check.node(spec["id"], f'rule id "{rule_id}" may use letters, digits, "-", "_" and "." only')
            seen.setdefault(rule_id, spec["id"].line)
        severity = check.text(spec.get("severity"), "severity")
        if "severity" in spec and severity not in SEVERITIES:
            check.node(spec["severity"], f'unknown severity "{severity}"{_suggest(severity, SEVERITIES, "severities")}')
        type_name = check.text(spec.get("for"), "for")
        rtype = types.get(type_name)
        if "for" in spec and rtype is None and types:
            check.node(spec["for"], f'unknown record type "{type_name}"{_suggest(type_name, types, "types")}')
        conditions = _Conditions(check, rtype, tz)
        when = conditions.parse(spec["when"]) if "when" in spec else None
        require = conditions.parse(spec["require"]) if "require" in spec else None
        title = check.text(spec.get("title"), "title", rule_id)
        message = check.text(spec.get("message"), "message", title)
        if rtype is not None and "message" in spec:
            for match in PLACEHOLDER.finditer(message):
                if not rtype.type_of(match.group(1)) and match.group(1) not in check.broken:
                    check.inside(spec["message"], match.start(),
                                 f'message uses undeclared field "{match.group(1)}"'
                                 f"{_suggest(match.group(1), [*rtype.fields, *rtype.derived])}")
        examples = _examples(check, spec.get("tests"), rtype, tz)
        if require is None or rtype is None:
            continue
        rules.append(Rule(
            id=rule_id, title=title, severity=severity, for_type=type_name, when=when, require=require,
            message=message, rationale=check.text(spec.get("rationale"), "rationale"),
            cite=check.text(spec.get("cite"), "cite"), pack=pack, mark=check.mark(item),
            examples=tuple(examples)))
    return rules


def _examples(check: _Checker, node: Node | None, rtype: RecordType | None, tz: Any) -> list[Example]:
    examples: list[Example] = []
    if node is None:
        return examples
    if not isinstance(node.value, list):
        check.node(node, "tests must be a list of examples")
        return examples
    for item in node.value:
        if not check.mapping(item, "test example", EXAMPLE_KEYS, ("record", "expect")):
            continue
        expect = check.text(item.value.get("expect"), "expect")
        if "expect" in item.value and expect not in OUTCOMES:
            check.node(item.value["expect"], f'unknown outcome "{expect}"{_suggest(expect, OUTCOMES, "outcomes")}')
        record = item.value.get("record")
        if record is None or not check.mapping(record, "example record",
                                               tuple(record.value) if isinstance(record.value, dict) else ()):
            continue
        values = record.plain()
        if rtype is not None:
            for name, value in record.value.items():
                spec = rtype.fields.get(name)
                if spec is None and name in check.broken:
                    continue
                if spec is None:
                    hint = " (derived fields are computed, give their inputs)" if name in rtype.derived else \
                        _suggest(name, rtype.fields)
                    check.key(record, name, f'example sets undeclared field "{name}"{hint}')
                elif value.value is not None:
                    values[name] = _written(value, spec.type)
                    try:
                        convert(spec, values[name], tz)
                    except ConversionError as exc:
                        check.node(value, str(exc))
        history = item.value.get("history")
        if history is not None:
            check.node(history, "history examples need history conditions, which this version does not support")
        examples.append(Example(values, expect, check.mark(item)))
    return examples


class _Conditions:
    """Parses the condition language of one rule against its record type."""

    def __init__(self, check: _Checker, rtype: RecordType | None, tz: Any) -> None:
        self.check = check
        self.rtype = rtype
        self.tz = tz

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
                self.check.key(node, key, f'history condition "{key}" is not supported by this version')
                parts.append(None)
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
                                         f'"{self.rtype.name}"{_suggest(name, choices)}')
            return None
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

    def _leaf(self, name: str, kind: str, op: str, operand: Node, ops: Node | None = None) -> Leaf | None:
        check = self.check
        form = OPERATORS.get(op)
        if form is None:
            where = ops if ops is not None else operand
            check.key(where, op, f'unknown operator "{op}"{_suggest(op, OPERATORS, "operators")}')
            return None
        mark = check.mark(operand)
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
        if form in ("order", "range") and kind not in ORDERED_TYPES:
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
        value = self._constant(name, operand)
        return None if value is None else Leaf(name, op, value, mark=mark)

    def _ref(self, name: str, kind: str, op: str, operand: Node, mark: Mark) -> Leaf | None:
        assert self.rtype is not None
        spec = operand.value
        if set(spec) != {"field"}:
            extra = [key for key in spec if key != "field"]
            if extra:
                self.check.key(operand, extra[0], f'unknown key "{extra[0]}" in a field reference'
                                                  f'{_suggest(extra[0], ["field"])}: write {op}: {{field: NAME}}')
            else:
                self.check.node(operand, f"compare with another field as {op}: {{field: NAME}}")
            return None
        other = self.check.text(spec["field"], "field")
        other_kind = self.rtype.type_of(other)
        if other_kind is None:
            choices = [*self.rtype.fields, *self.rtype.derived]
            self.check.node(spec["field"], f'field "{other}" is not declared for record type '
                                           f'"{self.rtype.name}"{_suggest(other, choices)}')
            return None
        if TYPE_KIND[kind] != TYPE_KIND[other_kind]:
            self.check.node(spec["field"], f'cannot compare {kind} field "{name}" with {other_kind} field "{other}"')
            return None
        return Leaf(name, op, None, ref=other, mark=mark)

    def _constant(self, name: str, node: Node) -> Any:
        assert self.rtype is not None
        spec = self.rtype.fields.get(name)
        if spec is None:
            spec = Field(name, self.rtype.derived[name].type)
        if node.value is None or isinstance(node.value, (dict, list)):
            self.check.node(node, f'expected a {spec.type} value for field "{name}"')
            return None
        try:
            return convert(spec, _written(node, spec.type), self.tz)
        except ConversionError as exc:
            self.check.node(node, str(exc))
            return None


def _zones() -> list[str]:
    import zoneinfo

    return sorted(zoneinfo.available_timezones())
