"""Structural and type checks of a loaded pack; builds the Pack or reports every problem."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

from engine.errors import PackError
from engine.language import expressions
from engine.language.grammar import COMBINATORS, HISTORY_FORMS, Checker, Conditions, suggest, written
from engine.language.loader import Node
from engine.language.model import (
    EVIDENCE,
    FIELD_TYPES,
    SEVERITIES,
    All,
    Derived,
    Example,
    Field,
    Leaf,
    Pack,
    Parameter,
    RecordType,
    Rule,
    Source,
)
from engine.language.values import (
    ConversionError,
    OutOfRange,
    convert,
    duration_words,
    parse_day,
    record_time,
    timezone,
)

PACK_KEYS = ("pack", "version", "title", "source", "timezone", "parameters", "records", "derive", "rules", "targets",
             "sources")
PARAMETER_KEYS = ("value", "means", "source")
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SOURCE_KEYS = ("ref", "url", "evidence")
RECORD_KEYS = ("key", "patient", "time", "fields")
FIELD_KEYS = ("type", "values", "unit", "phi", "staff")
RULE_KEYS = ("id", "title", "severity", "for", "when", "require", "message", "rationale", "cite", "tests",
             "effective", "sources", "per")
EFFECTIVE_KEYS = ("from", "until")
Window = tuple[dt.date | None, dt.date | None]
_FIRST_DAY, _LAST_DAY = dt.date(1, 1, 2), dt.date(9999, 12, 30)
EXAMPLE_KEYS = ("record", "expect", "history", "time")
OUTCOMES = ("pass", "fail", "not_applicable", "not_evaluable")
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
PARAM_PLACEHOLDER = re.compile(r"\{param\.([A-Za-z_][A-Za-z0-9_]*)\}")
_RULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def build_pack(root: Node, path: str, raw: bytes) -> Pack:
    """Check a loaded pack and build it; raise PackError with every problem found."""
    check = Checker(path)
    if not check.mapping(root, "pack", PACK_KEYS, ("pack", "records", "rules")):
        raise PackError(check.problems)
    top: dict[str, Node] = root.value
    tz_name = check.text(top.get("timezone"), "timezone", "UTC")
    try:
        tz = timezone(tz_name)
    except (KeyError, ValueError):
        check.node(top["timezone"], f'unknown time zone "{tz_name}"{suggest(tz_name, _zones())}')
        tz = timezone("UTC")
    types = _records(check, top.get("records"))
    if "derive" in top:
        _derive(check, top["derive"], types)
    rules_node = top.get("rules")
    if rules_node is not None and rules_node.value is None:  # "rules:" and nothing: point at the key
        rules_node = Node([], *root.keys["rules"])
    sources = _sources(check, top["sources"]) if "sources" in top else {}
    if "parameters" in top:
        _parameters(check, top["parameters"], sources)
    rules = _rules(check, rules_node, types, tz, check.text(top.get("pack"), "pack", "?"), sources)
    parameters = _parameter_uses(check, top["parameters"]) if "parameters" in top else {}
    targets = _targets(check, top["targets"]) if "targets" in top else {}
    version, title = check.text(top.get("version"), "version"), check.text(top.get("title"), "title")
    source = check.text(top.get("source"), "source")
    if check.problems:
        raise PackError(check.problems)
    return Pack(
        id=check.text(top.get("pack"), "pack"), version=version, title=title, source=source,
        timezone=tz_name, records=types, rules=tuple(rules), path=path,
        sha256=hashlib.sha256(raw).hexdigest(), targets=targets, sources=sources, parameters=parameters)


def _parameters(check: Checker, node: Node, sources: dict[str, Source]) -> None:
    """``parameters: {max_dose_mg_per_kg: {value: 1.0, means: ..., source: LOCAL}}``: the pack's local
    choices, each written once and used by rules as ``{param: NAME}``. A value is a scalar or a list
    of scalars, converted where it is used to the type of the field it is compared with."""
    if not isinstance(node.value, dict) or not node.value:
        check.node(node, "parameters must be a mapping of name: {value: ..., means: ..., source: ...}")
        return
    for name, entry in node.value.items():
        check.broken_params.add(name)  # until it is read whole
        if not _PARAM_NAME.fullmatch(name):
            check.key(node, name, f'parameter name "{name}" may use letters, digits and "_" only, '
                                  "and does not start with a digit")
            continue
        if not check.mapping(entry, f'parameter "{name}"', PARAMETER_KEYS, ("value", "means")):
            continue
        value = entry.value.get("value")
        if value is None:
            continue
        items = value.value if isinstance(value.value, list) else [value]
        if isinstance(value.value, list) and not items:
            check.node(value, f'parameter "{name}" needs a value (its list is empty)')
            continue
        if any(item.value is None or isinstance(item.value, (dict, list)) for item in items):
            check.node(value, f'parameter "{name}" takes a value or a list of values')
            continue
        check.broken_params.discard(name)
        means = check.text(entry.value.get("means"), "means")
        if "means" in entry.value and not means.strip():
            check.node(entry.value["means"], f'say what parameter "{name}" means')
        source = entry.value.get("source")
        if source is not None:
            source_id = check.text(source, "source")
            if source_id not in sources:
                said = suggest(source_id, sources, "sources") if sources else " (the pack declares no sources:)"
                check.node(source, f'source "{source_id}" is not in the pack\'s sources{said}')
        check.params[name] = value


def _as_written(node: Node) -> Any:
    """A scalar as the pack author wrote it: text for a string, the source for YAML's numbers and booleans."""
    return node.value if isinstance(node.value, str) or node.source is None else node.source


def _parameter_uses(check: Checker, node: Node) -> dict[str, Parameter]:
    """The declared parameters with the rules that use them; one no rule uses is a problem (a value
    changed there would change nothing)."""
    found: dict[str, Parameter] = {}
    for name, value in check.params.items():
        entry: dict[str, Node] = node.value[name].value
        uses = tuple(check.param_uses.get(name, ()))
        if not uses:
            check.key(node, name, f'parameter "{name}" is not used by any rule (write {{param: {name}}} '
                                  "where a rule needs it, or remove it)")
        shown = [_as_written(item) for item in value.value] if isinstance(value.value, list) else _as_written(value)
        source = entry.get("source")
        found[name] = Parameter(name, shown, check.text(entry.get("means"), "means"),
                                check.text(source, "source") if source is not None else None, uses,
                                check.mark(node.value[name]))
    return found


def _sources(check: Checker, node: Node) -> dict[str, Source]:
    """``sources: {S22: {ref: full reference, url: ..., evidence: primary | secondary | local}}``: the
    pack's bibliography, which rules cite by id."""
    found: dict[str, Source] = {}
    if not isinstance(node.value, dict) or not node.value:
        check.node(node, "sources must be a mapping of id: {ref: full reference, url: ..., evidence: ...}")
        return found
    for source_id, entry in node.value.items():
        if not _RULE_ID.fullmatch(source_id):
            check.key(node, source_id, f'source id "{source_id}" may use letters, digits, "-", "_" and "." only')
            continue
        if not check.mapping(entry, f'source "{source_id}"', SOURCE_KEYS, ("ref",)):
            continue
        evidence = check.text(entry.value.get("evidence"), "evidence", "primary")
        if evidence not in EVIDENCE:
            check.node(entry.value["evidence"],
                       f'unknown evidence "{evidence}"{suggest(evidence, EVIDENCE, "kinds")}')
        ref = check.text(entry.value.get("ref"), "ref")
        if "ref" in entry.value and not ref.strip():
            check.node(entry.value["ref"], f'source "{source_id}" needs its full reference')
        url = entry.value.get("url")
        found[source_id] = Source(source_id, ref, check.text(url, "url") if url is not None else None, evidence)
    return found


def _per(check: Checker, node: Node, rtype: RecordType | None) -> str | None:
    """``per: patient`` or ``per: FIELD``: the unit a rule counts (a patient, or a patient's value of
    FIELD such as a course), for obligations met once per patient or course rather than per record."""
    if not isinstance(node.value, str) or not node.value:
        check.node(node, "per must be patient or a field of the record type (per: course_id)")
        return None
    name = node.value
    if rtype is None:
        return None
    if not rtype.patient:
        check.node(node, f'per needs record type "{rtype.name}" to name its patient')
        return None
    if name != "patient" and not rtype.type_of(name):
        check.node(node, f'per: "{name}" is neither patient nor a field of "{rtype.name}"'
                         f"{suggest(name, ['patient', *rtype.fields, *rtype.derived])}")
        return None
    return name


def _rule_sources(check: Checker, node: Node, sources: dict[str, Source]) -> tuple[tuple[str, str], ...]:
    """A rule's ``sources: {S22: what the rule takes from it}``, each id one of the pack's sources."""
    cited: list[tuple[str, str]] = []
    if not isinstance(node.value, dict) or not node.value:
        check.node(node, "a rule's sources must be a mapping of source id: what the rule takes from it")
        return ()
    for source_id, note in node.value.items():
        if source_id not in sources:
            said = suggest(source_id, sources, "sources") if sources else " (the pack declares no sources:)"
            check.key(node, source_id, f'source "{source_id}" is not in the pack\'s sources{said}')
            continue
        text = _with_parameters(check, note, f'source "{source_id}"')
        if not isinstance(note.value, str) or not text.strip():
            check.node(note, f'say what the rule takes from source "{source_id}" (a quote or paraphrase)')
            continue
        cited.append((source_id, text))
    return tuple(cited)


def _targets(check: Checker, node: Node) -> dict[str, float]:
    """``targets: {critical: 100, major: 95, minor: 90}``: compliance targets in percent per severity."""
    found: dict[str, float] = {}
    if not check.mapping(node, "targets", SEVERITIES):
        return found
    for severity, value in node.value.items():
        number = value.value
        if severity not in SEVERITIES:
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number <= 100:
            shown = value.source if value.source is not None else str(number)
            check.node(value, f'target "{shown}" is not a percentage from 0 to 100')
            continue
        found[severity] = number / 100
    return found


def _records(check: Checker, node: Node | None) -> dict[str, RecordType]:
    types: dict[str, RecordType] = {}
    if node is None or not check.mapping(node, "records", tuple(node.value) if isinstance(node.value, dict) else ()):
        return types
    if not node.value:
        check.node(node, "records declares no record type")
    for name, decl in node.value.items():
        # without patient: a reference table (a staff roster), reached by history conditions through join
        if not check.mapping(decl, f'record type "{name}"', RECORD_KEYS, ("key", "time", "fields")):
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
                    check.node(ref, f'{role} field "{ref_name}" is not declared in fields{suggest(ref_name, fields)}')
            elif allowed and fields[ref_name].type not in allowed:
                check.node(ref, f'time field "{ref_name}" must be a datetime or date, not {fields[ref_name].type}')
            elif role == "time" and (fields[ref_name].phi or fields[ref_name].staff):
                # every report shows the record time (findings, the period, months, windows): a
                # pseudonym there would leave no audit; a date that identifies belongs elsewhere
                check.node(ref, f'time field "{ref_name}" is marked phi, but every report shows record times '
                                "(findings, the period, months): choose a time field that is not phi")
        types[name] = RecordType(
            name=name, key=check.text(decl.value.get("key"), "key"),
            patient=check.text(decl.value.get("patient"), "patient"),
            time=check.text(decl.value.get("time"), "time"), fields=fields)
    return types


def _field(check: Checker, parent: Node, name: str, spec: Node) -> Field | None:
    if name in COMBINATORS or name in HISTORY_FORMS:
        check.key(parent, name, f'field name "{name}" is a condition keyword; rename the field')
        return None
    if isinstance(spec.value, str):
        if spec.value not in FIELD_TYPES:
            check.node(spec, f'unknown field type "{spec.value}"{suggest(spec.value, FIELD_TYPES, "types")}')
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
        check.node(spec.value["type"], f'unknown field type "{kind}"{suggest(kind, FIELD_TYPES, "types")}')
        return None
    values: tuple[str, ...] = ()
    values_node = spec.value.get("values")
    if kind == "enum":
        if values_node is None or not isinstance(values_node.value, list) or not values_node.value:
            check.node(values_node or spec, f'enum field "{name}" needs a non-empty list of values')
            return None
        values = tuple(check.text(Node(written(v, "enum"), v.line, v.column), "enum value")
                       for v in values_node.value)
    elif values_node is not None:
        check.node(values_node, f'values only apply to enum fields; "{name}" is {kind}')
    flags = {}
    for flag in ("phi", "staff"):
        flag_node = spec.value.get(flag)
        if flag_node is not None and not isinstance(flag_node.value, bool):
            check.node(flag_node, f"{flag} must be true or false")
        flags[flag] = bool(flag_node and flag_node.value is True)
    if flags["staff"] and kind not in ("string", "enum"):
        check.node(spec.value["staff"], f'staff marks a staff identifier: "{name}" is {kind}, not a string')
    unit = spec.value.get("unit")
    return Field(name, kind, values, check.text(unit, "unit") if unit else None, flags["phi"], flags["staff"])


def _derive(check: Checker, node: Node, types: dict[str, RecordType]) -> None:
    if not isinstance(node.value, dict):
        check.node(node, "derive must be a mapping of name: expression")
        return
    for name, expr_node in node.value.items():
        if not _derive_one(check, node, name, expr_node, types) and not any(t.type_of(name) for t in types.values()):
            check.broken.add(name)  # reported here; rules that read it are not told it is undeclared


def _derive_one(check: Checker, node: Node, name: str, expr_node: Node, types: dict[str, RecordType]) -> bool:
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
                         f'derive "{name}" reads undeclared field "{unknown[0]}"{suggest(unknown[0], known)}')
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


def _rules(check: Checker, node: Node | None, types: dict[str, RecordType], tz: Any, pack: str,
           sources: dict[str, Source]) -> list[Rule]:
    rules: list[Rule] = []
    if node is None:
        return rules
    if node.value is None or node.value == []:
        check.node(node, "pack has no rules")  # a bare "rules:" reads as null: say what it means
        return rules
    if not isinstance(node.value, list):
        check.node(node, "rules must be a list of rules")
        return rules
    seen: dict[str, list[tuple[int, Window | None, str]]] = {}  # id -> its versions: line, window, for
    refused: set[str] = set()
    for item in node.value:
        if not check.mapping(item, "rule", RULE_KEYS, ("id", "severity", "for", "require")):
            continue
        spec: dict[str, Node] = item.value
        rule_id = check.text(spec.get("id"), "id")
        check.rule = rule_id
        effective = _effective(check, spec.get("effective"))
        if "effective" in spec and effective is None:
            refused.add(rule_id)  # its window is said to be wrong: no version message on top
        if "id" in spec and rule_id not in refused:
            _version(check, spec, rule_id, effective, seen.get(rule_id, []))
            if rule_id not in seen and not _RULE_ID.fullmatch(rule_id):
                check.node(spec["id"], f'rule id "{rule_id}" may use letters, digits, "-", "_" and "." only')
            seen.setdefault(rule_id, []).append((spec["id"].line, effective, check.text(spec.get("for"), "for")))
        severity = check.text(spec.get("severity"), "severity")
        if "severity" in spec and severity not in SEVERITIES:
            check.node(spec["severity"], f'unknown severity "{severity}"{suggest(severity, SEVERITIES, "severities")}')
        type_name = check.text(spec.get("for"), "for")
        rtype = types.get(type_name)
        if "for" in spec and rtype is None and types:
            check.node(spec["for"], f'unknown record type "{type_name}"{suggest(type_name, types, "types")}')
        conditions = Conditions(check, rtype, tz, types)
        when = conditions.parse(spec["when"]) if "when" in spec else None
        if effective is not None and rtype is not None and "when" in spec and when is None:
            effective = None  # its when is wrong, and said so: the rule is not built
        require = conditions.parse(spec["require"]) if "require" in spec else None
        title = _with_parameters(check, spec.get("title"), "title", rule_id)
        message = _with_parameters(check, spec.get("message"), "message", title)
        if rtype is not None and "message" in spec:
            written_message = spec["message"].value if isinstance(spec["message"].value, str) else ""
            for match in PLACEHOLDER.finditer(written_message):
                if not rtype.type_of(match.group(1)) and match.group(1) not in check.broken:
                    check.inside(spec["message"], match.start(),
                                 f'message uses undeclared field "{match.group(1)}"'
                                 f"{suggest(match.group(1), [*rtype.fields, *rtype.derived])}")
        examples = _examples(check, spec.get("tests"), rtype, tz, types)
        cited = _rule_sources(check, spec["sources"], sources) if "sources" in spec else ()
        per = _per(check, spec["per"], rtype) if "per" in spec else None
        if per is not None and "effective" in spec:  # each version would count the same course again
            check.key(item, "per", "per cannot be combined with effective dates: each version would count a "
                                   "patient or course of its own (give the rule one version)")
            per = None
        if require is None or rtype is None:
            continue
        if effective is not None:
            when = _in_force(effective, rtype, when, tz)
        rules.append(Rule(
            id=rule_id, title=title, severity=severity, for_type=type_name, when=when, require=require,
            message=message, rationale=_with_parameters(check, spec.get("rationale"), "rationale"),
            cite=check.text(spec.get("cite"), "cite"), pack=pack, mark=check.mark(item),
            examples=tuple(examples), effective=effective, sources=cited, per=per))
    return rules


def _with_parameters(check: Checker, node: Node | None, what: str, default: str = "") -> str:
    """A rule's text with each ``{param.NAME}`` replaced by the parameter's value as written, so that
    a title or message saying "30 minutes" changes with the parameter it states."""
    text = check.text(node, what, default)
    if node is None:
        return text

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = check.params.get(name)
        if name in check.broken_params:
            return match.group(0)
        if found is None:
            said = suggest(name, check.params, "parameters") if check.params else " (the pack declares no parameters:)"
            check.inside(node, match.start(), f'{what} uses unknown parameter "{name}"{said}')
            return match.group(0)
        check.note_use(name)
        items = found.value if isinstance(found.value, list) else [found]
        shown = ", ".join(duration_words(str(_as_written(item))) for item in items)
        if "{" in shown or "}" in shown:  # it would read as a {field} placeholder in a message
            check.inside(node, match.start(), f'parameter "{name}" holds a brace and cannot be said in a {what}')
            return match.group(0)
        return shown
    return PARAM_PLACEHOLDER.sub(value, text)


def _effective(check: Checker, node: Node | None) -> Window | None:
    """``effective: {from: DATE, until: DATE}``: both optional, days inclusive in the pack's zone."""
    if node is None:
        return None
    if not check.mapping(node, "effective", EFFECTIVE_KEYS):
        return None
    days: dict[str, dt.date | None] = {}
    for key in EFFECTIVE_KEYS:
        item = node.value.get(key)
        days[key] = None
        if item is None:
            continue
        try:
            days[key] = parse_day(item.value if isinstance(item.value, str) else "")
        except ValueError:
            check.node(item, f"effective {key} must be a date (YYYY-MM-DD)")
            return None
        if not _FIRST_DAY <= days[key] <= _LAST_DAY:  # type: ignore[operator]
            check.node(item, f"effective {key} must lie between {_FIRST_DAY} and {_LAST_DAY} (times within a "
                             "day of the calendar's ends are not read)")
            return None
    start, end = days["from"], days["until"]
    if start is None and end is None:
        check.node(node, "effective needs from, until or both (a rule always in force has no effective:)")
        return None
    if start is not None and end is not None and end < start:
        check.node(node.value["until"], f"effective until {end} is before from {start}")
        return None
    return start, end


def _version(check: Checker, spec: dict[str, Node], rule_id: str, effective: Window | None,
             versions: list[tuple[int, Window | None, str]]) -> None:
    """A rule id given again is a version of the rule: allowed when every version has an effective
    window, none overlapping (a shared boundary day, or two open ends, overlap), for one record type."""
    if not versions:
        return
    first = versions[0][0]
    if effective is None or any(window is None for _, window, _ in versions):
        dated = effective is not None or any(window is not None for _, window, _ in versions)
        hint = ("; versions of one rule each need effective: {from, until} windows that do not overlap"
                if dated else "")
        check.node(spec["id"], f'duplicate rule id "{rule_id}" (first at line {first}){hint}')
        return
    for line, window, for_type in versions:
        assert window is not None
        if _overlap(window, effective):
            check.node(spec["effective"], f'effective window overlaps the version of "{rule_id}" at line {line} '
                                          "(a shared day, or two open ends, overlap)")
            return
        written_for = spec.get("for")
        if written_for is not None and isinstance(written_for.value, str) and for_type and \
                written_for.value != for_type:
            check.node(written_for, f'a version of "{rule_id}" is for {written_for.value}, the one at line {line} '
                                    f"for {for_type}: versions judge one record type")
            return


def _overlap(a: Window, b: Window) -> bool:
    low = max(a[0] or dt.date.min, b[0] or dt.date.min)
    high = min(a[1] or dt.date.max, b[1] or dt.date.max)
    return low <= high


def _in_force(effective: Window, rtype: RecordType, when: Any, tz: Any) -> Any:
    """``when`` with the record's time inside the window: outside, the rule does not apply; without
    a time, it cannot be known (not evaluable). Conditions the engine judges like any other."""
    start, end = effective
    name = rtype.time
    kind = rtype.fields[name].type
    parts: list[Any] = []
    if kind == "date":
        if start is not None:
            parts.append(Leaf(name, "at_least", start))
        if end is not None:
            parts.append(Leaf(name, "at_most", end))
    else:
        for day, op in ((start, "at_least"), (end + dt.timedelta(days=1) if end else None, "less_than")):
            if day is not None:  # days are checked to lie inside the calendar by a day: this converts
                parts.append(Leaf(name, op, convert(rtype.fields[name], f"{day.isoformat()}T00:00:00", tz)))
    if when is not None:
        parts.append(when)
    return parts[0] if len(parts) == 1 else All(tuple(parts))


def record_values(check: Checker, record: Node, rtype: RecordType | None, tz: Any,
                  what: str = "example") -> dict[str, Any]:
    """An example's (or a scenario's) record values as written, each checked against its declared type."""
    values: dict[str, Any] = record.plain()
    if rtype is None:
        return values
    for name, value in record.value.items():
        spec = rtype.fields.get(name)
        if spec is None and name in check.broken:
            continue
        if spec is None:
            hint = " (derived fields are computed, give their inputs)" if name in rtype.derived else \
                suggest(name, rtype.fields)
            check.key(record, name, f'{what} sets undeclared field "{name}"{hint}')
        elif value.value is not None:
            values[name] = written(value, spec.type)
            try:
                converted = convert(spec, values[name], tz)
                if name == rtype.time:
                    record_time(converted, tz)  # a date's midnight must lie inside the calendar too
            except ConversionError as exc:
                check.node(value, str(exc))
            except OutOfRange as exc:
                check.node(value, str(ConversionError(name, str(exc), values[name])))
    return values


def _example_history(check: Checker, node: Node, types: dict[str, RecordType], tz: Any) -> list[dict[str, Any]]:
    """``history: [{type: T, record: {...}}, ...]``: the patient's other records for one example."""
    found: list[dict[str, Any]] = []
    if not isinstance(node.value, list):
        check.node(node, "history must be a list of {type: TYPE, record: {...}}")
        return found
    for item in node.value:
        if not check.mapping(item, "history entry", ("type", "record"), ("type", "record")):
            continue
        type_name = check.text(item.value.get("type"), "type")
        rtype = types.get(type_name)
        if "type" in item.value and rtype is None:
            check.node(item.value["type"], f'unknown record type "{type_name}"{suggest(type_name, types, "types")}')
        record = item.value.get("record")
        if record is None or not check.mapping(record, "history record",
                                               tuple(record.value) if isinstance(record.value, dict) else ()):
            continue
        found.append({"type": type_name, "record": record_values(check, record, rtype, tz),
                      "line": item.line})
    return found


def _examples(check: Checker, node: Node | None, rtype: RecordType | None, tz: Any,
              types: dict[str, RecordType]) -> list[Example]:
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
            check.node(item.value["expect"], f'unknown outcome "{expect}"{suggest(expect, OUTCOMES, "outcomes")}')
        record = item.value.get("record")
        if record is None or not check.mapping(record, "example record",
                                               tuple(record.value) if isinstance(record.value, dict) else ()):
            continue
        values = record_values(check, record, rtype, tz)
        history: list[dict[str, Any]] = []
        if "history" in item.value:
            history = _example_history(check, item.value["history"], types, tz)
        time = None
        if "time" in item.value and rtype is not None:
            node_time = item.value["time"]
            time = written(node_time, rtype.fields[rtype.time].type) if node_time.value is not None else None
            if time is None:  # an empty time picks nothing: leave it out for the latest version
                check.node(node_time, f"time: give the {rtype.fields[rtype.time].type} that picks the rule's "
                                      f"version (e.g. 2026-01-15T09:00:00), or leave time out for the latest")
            else:
                try:
                    convert(rtype.fields[rtype.time], time, tz)
                except (ConversionError, OutOfRange) as exc:
                    check.node(node_time, f"time: {exc}")
                    time = None
            if rtype.time in values:
                check.node(node_time, f"time: the record gives {rtype.time} already; give one of them")
        examples.append(Example(values, expect, check.mark(item), tuple(history), time))
    return examples


def _zones() -> list[str]:
    import zoneinfo

    return sorted(zoneinfo.available_timezones())
