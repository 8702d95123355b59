"""The common FHIRPath of views compiled to Python closures over the resource's JSON (fhirpathpy does the rest).

fhirpathpy walks its AST with typed node objects: 50-150 µs for a path like
``code.coding.where(system = 'http://loinc.org').exists()``. The subset views use most (members,
``where``, ``exists``, ``empty``, ``first``, ``not``, ``=``/``!=`` on text, numbers and booleans,
``and``/``or``, ``ofType`` on a choice element, ``getReferenceKey``, ``getResourceKey``) is compiled
here for one FHIR type once; anything else, or a value it is not sure about (a comparison of
collections, a date), leaves the path to fhirpathpy. The tests check both give the same answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from engine.inputs.fhir_view_functions import reference_key

Step = Callable[[list[Any]], list[Any]]

# Element types whose JSON value compares as FHIRPath compares them (dates and times do not: precision, zones).
_COMPARABLE = frozenset({"string", "code", "id", "uri", "url", "canonical", "markdown", "oid", "uuid", "boolean",
                         "integer", "decimal", "positiveInt", "unsignedInt", "System.String", "System.Boolean",
                         "System.Integer", "System.Decimal"})
_OPAQUE_TYPES = frozenset({"Resource", "DomainResource"})  # contained resources: their own type decides
_CHOSEN = "(value[x])"  # the type of a choice element read without ofType: known per value only


class NotDirect(Exception):
    """This expression (or this focus type) is outside the compiled subset."""


class Unsure(Exception):
    """Raised while evaluating: these values need fhirpathpy's rules (the caller asks fhirpathpy)."""


def compile_direct(ast: dict[str, Any], type_path: str, model: dict[str, Any]) -> Step | None:
    """A closure evaluating ``ast`` on a list holding one element of ``type_path``, or None."""
    try:
        step, _ = _Compiler(model).expression(ast["children"][0], type_path)
    except NotDirect:
        return None
    return step


class _Compiler:
    def __init__(self, model: dict[str, Any]) -> None:
        self.model = model

    def child_type(self, type_path: str | None, name: str) -> tuple[str, bool]:
        """The model's type of ``type_path.name`` and whether it is a choice element (fhirpathpy's lookup)."""
        if type_path is None or type_path in _OPAQUE_TYPES or type_path == _CHOSEN or not name[:1].islower():
            raise NotDirect
        child = f"{type_path}.{name}"
        child = self.model["pathsDefinedElsewhere"].get(child, child)
        if child in self.model["choiceTypePaths"]:
            return child, True
        if name == "extension":
            child = "Extension"
        return self.model["path2Type"].get(child, child), False

    def expression(self, node: dict[str, Any], type_path: str | None) -> tuple[Step, str | None]:
        kind = node["type"]
        children = node.get("children", [])
        if kind == "TermExpression":
            return self.term(children[0], type_path)
        if kind == "InvocationExpression":
            return self.invocation(children[0], children[1], type_path)
        if kind in ("EqualityExpression", "AndExpression", "OrExpression"):
            return self.operator(kind, node["terminalNodeText"][0], children, type_path)
        if kind == "UnionExpression":
            (left, left_type), (right, right_type) = (self.expression(c, type_path) for c in children)
            if any(t is None or t.startswith("System.") for t in (left_type, right_type)):
                raise NotDirect  # fhirpathpy's union of computed values dedups by another rule
            return _union(left, right), left_type if left_type == right_type else _CHOSEN
        raise NotDirect

    def term(self, node: dict[str, Any], type_path: str | None) -> tuple[Step, str | None]:
        kind = node["type"]
        if kind == "ParenthesizedTerm":
            return self.expression(node["children"][0], type_path)
        if kind == "LiteralTerm":
            return _literal(node["children"][0])
        if kind == "InvocationTerm":
            return self.call(node["children"][0], _this, type_path)
        raise NotDirect

    def invocation(self, left: dict[str, Any], right: dict[str, Any], type_path: str | None) -> tuple[Step, str | None]:
        if right["type"] == "FunctionInvocation" and _function_name(right) == "ofType":
            return self.of_type(left, right, type_path)
        if right["type"] == "FunctionInvocation" and _function_name(right) == "select" and \
                len(_arguments(right)) == 1 and _ends_in_member(left):
            owner, member = self.split_member(left, type_path)
            choice_path, choice = self.child_type(owner[1], member)
            if choice:
                return self.choice_select(owner[0], member, choice_path, _arguments(right)[0]), _CHOSEN
        before, before_type = self.expression(left, type_path)
        return self.call(right, before, before_type)

    def split_member(self, node: dict[str, Any], type_path: str | None) -> tuple[tuple[Step, str | None], str]:
        """``a.b.c`` as (the step for ``a.b`` and its type, "c")."""
        if node["type"] == "InvocationExpression":
            return self.expression(node["children"][0], type_path), node["children"][1]["children"][0]["text"]
        return (_this, type_path), node["children"][0]["children"][0]["children"][0]["text"]

    def choice_select(self, owner: Step, name: str, choice_path: str, body: dict[str, Any]) -> Step:
        """``value.select(ofType(Quantity).value | ofType(string))``: the body compiled per type present."""
        suffixes = self.model["choiceTypePaths"][choice_path]
        bodies: dict[str, Step] = {}
        pick = _Choice(name, suffixes).chosen
        for suffix in suffixes:
            chosen = self.model["path2Type"].get(choice_path + suffix, choice_path + suffix)
            bodies[suffix] = self.expression(body, chosen)[0]

        def select(items: list[Any]) -> list[Any]:
            found: list[Any] = []
            for item in owner(items):
                suffix, value = pick(item)
                if suffix is not None and value is not None:
                    found.extend(bodies[suffix]([value]))
            return found
        return select

    def call(self, node: dict[str, Any], before: Step, type_path: str | None) -> tuple[Step, str | None]:
        if node["type"] == "MemberInvocation":
            name = node["children"][0]["text"]
            child, choice = self.child_type(type_path, name)
            if choice:  # as fhirpathpy: the first of the model's value[x] types present
                return _choice(before, name, self.model["choiceTypePaths"][child]), _CHOSEN
            return _member(before, name), child
        if node["type"] == "FunctionInvocation":
            return self.function(node, before, type_path)
        if node["type"] == "ThisInvocation":
            return before, type_path
        raise NotDirect

    def of_type(self, left: dict[str, Any], right: dict[str, Any], type_path: str | None) -> tuple[Step, str | None]:
        # value.ofType(Quantity) is the JSON key valueQuantity; ofType anywhere else is fhirpathpy's
        if left["type"] == "InvocationExpression" and left["children"][1]["type"] == "MemberInvocation":
            before, before_type = self.expression(left["children"][0], type_path)
            member = left["children"][1]
        elif left["type"] == "TermExpression" and left["children"][0]["type"] == "InvocationTerm" and \
                left["children"][0]["children"][0]["type"] == "MemberInvocation":
            before, before_type, member = _this, type_path, left["children"][0]["children"][0]
        else:
            raise NotDirect
        name = member["children"][0]["text"]
        choice_path, choice = self.child_type(before_type, name)
        arguments = _arguments(right)
        if not choice or len(arguments) != 1:
            raise NotDirect
        wanted = arguments[0].get("text", "")
        suffix = wanted[:1].upper() + wanted[1:]
        if not wanted.isidentifier() or suffix not in self.model["choiceTypePaths"][choice_path]:
            raise NotDirect
        key = name + suffix
        return _member(before, key), self.model["path2Type"].get(choice_path + suffix, choice_path + suffix)

    def function(self, node: dict[str, Any], before: Step, type_path: str | None) -> tuple[Step, str | None]:
        name, arguments = _function_name(node), _arguments(node)
        if name == "where" and len(arguments) == 1:
            test, _ = self.expression(arguments[0], type_path)
            return _where(before, test), type_path
        if name == "select" and len(arguments) == 1:
            body, body_type = self.expression(arguments[0], type_path)
            return (lambda items: [v for item in before(items) for v in body([item])]), body_type
        if name == "iif" and len(arguments) in (2, 3):
            branches = [self.expression(a, type_path) for a in arguments]
            return _iif(before, *(b[0] for b in branches)), \
                branches[1][1] if len(branches) == 2 or branches[1][1] == branches[2][1] else None
        if name == "exists" and len(arguments) <= 1:
            condition = self.expression(arguments[0], type_path)[0] if arguments else None
            return _exists(before, condition), "System.Boolean"
        if name == "extension" and len(arguments) == 1:
            url = _literal(_only_literal(arguments[0]))[0]([])[0]
            if not isinstance(url, str):
                raise NotDirect
            return _extension(before, url), "Extension"
        if name == "ofType" and len(arguments) == 1 and type_path is not None and type_path != _CHOSEN:
            wanted = arguments[0].get("text", "")
            return (before if wanted == type_path else lambda items: []), type_path
        if arguments:
            if name == "getReferenceKey" and len(arguments) == 1 and arguments[0].get("text", "").isidentifier():
                return _reference_keys(before, arguments[0]["text"]), "System.String"
            raise NotDirect
        simple: dict[str, tuple[Step, str | None]] = {
            "empty": (lambda items: [not before(items)], "System.Boolean"),
            "first": (lambda items: before(items)[:1], type_path),
            "not": (lambda items: _not(before(items)), "System.Boolean"),
            "getReferenceKey": (_reference_keys(before, None), "System.String"),
            "getResourceKey": (lambda items: [r["id"] for r in before(items)
                                              if isinstance(r, dict) and isinstance(r.get("id"), str)],
                               "System.String"),
        }
        if name not in simple:
            raise NotDirect
        return simple[name]

    def operator(self, kind: str, symbol: str, children: list[dict[str, Any]],
                 type_path: str | None) -> tuple[Step, str | None]:
        left, left_type = self.expression(children[0], type_path)
        right, right_type = self.expression(children[1], type_path)
        if kind == "EqualityExpression":
            if symbol not in ("=", "!=") or left_type not in _COMPARABLE or right_type not in _COMPARABLE:
                raise NotDirect
            return _equality(left, right, symbol == "!="), "System.Boolean"
        if symbol not in ("and", "or"):
            raise NotDirect
        return _logic(left, right, symbol == "and"), "System.Boolean"


def _ends_in_member(node: dict[str, Any]) -> bool:
    if node["type"] == "InvocationExpression":
        return bool(node["children"][1]["type"] == "MemberInvocation")
    return bool(node["type"] == "TermExpression" and node["children"][0]["type"] == "InvocationTerm"
                and node["children"][0]["children"][0]["type"] == "MemberInvocation")


def _only_literal(node: dict[str, Any]) -> dict[str, Any]:
    if node["type"] == "TermExpression" and node["children"][0]["type"] == "LiteralTerm":
        return dict(node["children"][0]["children"][0])
    raise NotDirect


def _function_name(node: dict[str, Any]) -> str:
    return str(node["children"][0]["children"][0]["text"])


def _arguments(node: dict[str, Any]) -> list[dict[str, Any]]:
    params = [c for c in node["children"][0]["children"][1:] if c["type"] == "ParamList"]
    return list(params[0]["children"]) if params else []


def _literal(node: dict[str, Any]) -> tuple[Step, str]:
    text = node.get("text", "")
    value: Any
    if node["type"] == "StringLiteral" and "\\" not in text:
        value, kind = text[1:-1], "System.String"
    elif node["type"] == "BooleanLiteral":
        value, kind = text == "true", "System.Boolean"
    elif node["type"] == "NumberLiteral":
        value, kind = (int(text), "System.Integer") if text.isdigit() else (float(text), "System.Decimal")
    else:
        raise NotDirect
    constant = [value]

    def literal(items: list[Any]) -> list[Any]:
        return constant
    literal.constant = constant  # type: ignore[attr-defined]  # known to _equality: text compared at once
    return literal, kind



def _this(items: list[Any]) -> list[Any]:
    """The focus itself (a path's start)."""
    return items


def _member(before: Step, key: str) -> Step:
    def member(items: list[Any]) -> list[Any]:
        found: list[Any] = []
        for item in before(items):
            if isinstance(item, dict):
                value = item.get(key)
                if type(value) is list:
                    found.extend(value if None not in value else [v for v in value if v is not None])
                elif value is not None:
                    found.append(value)
        return found
    if before is _this:  # a member of the focus itself: _equality reads one element's text at once
        member.key = key  # type: ignore[attr-defined]
    return member


class _Choice:
    """A choice element (``value`` of value[x]): its keys (valueQuantity, _valueString...) with their
    suffix's rank in the model, worked out once when the path is compiled."""

    __slots__ = ("name", "suffixes", "keys")

    def __init__(self, name: str, suffixes: list[str]) -> None:
        self.name = name
        self.suffixes = suffixes
        self.keys = {name + suffix: rank for rank, suffix in enumerate(suffixes)}
        self.keys.update({"_" + name + suffix: rank for rank, suffix in enumerate(suffixes)})

    def chosen(self, item: Any) -> tuple[str | None, Any]:
        """The first of the model's types present (as fhirpathpy), found through the element's own keys
        (a handful) rather than the model's fifty value[x] types."""
        if type(item) is dict or isinstance(item, dict):
            keys = self.keys
            best = None
            for key in item:
                rank = keys.get(key)
                if rank is not None and (best is None or rank < best):
                    plain = key.lstrip("_")
                    if item.get(plain) is not None or item.get("_" + plain) is not None:
                        best = rank
            if best is not None:
                return self.suffixes[best], item.get(self.name + self.suffixes[best])
        return None, None


def _choice(before: Step, name: str, suffixes: list[str]) -> Step:
    chosen = _Choice(name, suffixes).chosen

    def choice(items: list[Any]) -> list[Any]:
        found: list[Any] = []
        for item in before(items):
            value = chosen(item)[1]
            if isinstance(value, list):
                found.extend(v for v in value if v is not None)
            elif value is not None:
                found.append(value)
        return found
    return choice


_INDEXES: dict[int, tuple[Any, dict[str, Any] | None]] = {}  # id(element) -> (element, url -> its first extension)


def _extensions_of(item: dict[str, Any]) -> dict[str, Any] | None:
    """An element's extensions by url (the first of each url), built once for the columns of a row:
    a view reads a dozen extensions of one element, each scanning the list otherwise. None when an
    extension has no url (fhirpathpy fails on it: it is left to say how)."""
    kept = _INDEXES.get(id(item))
    if kept is not None and kept[0] is item:
        return kept[1]
    index: dict[str, Any] | None = {}
    for each in item.get("extension", ()):
        if not isinstance(each, dict) or "url" not in each:
            index = None
            break
        index.setdefault(each["url"], each)  # type: ignore[union-attr]
    if len(_INDEXES) >= 64:
        _INDEXES.clear()
    _INDEXES[id(item)] = (item, index)  # the element is held: its id cannot be another's meanwhile
    return index


def _extension(before: Step, url: str) -> Step:
    def extension(items: list[Any]) -> list[Any]:
        found = []
        for item in before(items):
            if isinstance(item, dict) and "extension" in item:
                index = _extensions_of(item)
                if index is None:
                    raise Unsure
                if url in index:
                    found.append(index[url])  # fhirpathpy's extension() keeps the first match per element
        return found
    return extension


def _iif(before: Step, condition: Step, then: Step, otherwise: Step | None = None) -> Step:
    def iif(items: list[Any]) -> list[Any]:
        chosen = before(items)
        if _truth(condition(chosen)):
            return then(chosen)
        return otherwise(chosen) if otherwise is not None else []
    return iif


def _union(left: Step, right: Step) -> Step:
    def union(items: list[Any]) -> list[Any]:
        # fhirpathpy's distinct: equal JSON text is one value, kept where it first came, last one kept
        unique: dict[Any, Any] = {}
        for value in left(items) + right(items):
            unique[_distinct_key(value)] = value
        return list(unique.values())
    return union


def _distinct_key(value: Any) -> Any:
    """What makes two values one for distinct: their JSON text; a text, number or boolean keyed by its
    kind and itself without writing it (1 and 1.0, true and 1 stay apart, as their texts do)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or (kind is float and value == value):
        return kind, value
    return json.dumps(value, sort_keys=True)


def _where(before: Step, test: Step) -> Step:
    item_test: Callable[[Any], bool | None] | None = getattr(test, "item_test", None)

    def where(items: list[Any]) -> list[Any]:
        kept = []
        for item in before(items):
            if item_test is not None:
                sure = item_test(item)
                if sure is not None:
                    if sure:
                        kept.append(item)
                    continue
            truth = test([item])
            if len(truth) == 1 and truth[0] is True:
                kept.append(item)
            elif truth and not (len(truth) == 1 and truth[0] is False):
                _truth(truth)  # not one boolean: Unsure
        return kept
    return where


def _exists(before: Step, test: Step | None) -> Step:
    if test is None:
        return lambda items: [bool(before(items))]
    kept = _where(before, test)
    return lambda items: [bool(kept(items))]


def _truth(values: list[Any]) -> bool | None:
    if not values:
        return None
    if len(values) == 1 and isinstance(values[0], bool):
        return values[0]
    raise Unsure


def _not(values: list[Any]) -> list[Any]:
    truth = _truth(values)
    return [] if truth is None else [not truth]


def _logic(left: Step, right: Step, conjunction: bool) -> Step:
    first: Callable[[Any], bool | None] | None = getattr(left, "item_test", None)
    second: Callable[[Any], bool | None] | None = getattr(right, "item_test", None)

    def logic(items: list[Any]) -> list[Any]:
        a, b = _truth(left(items)), _truth(right(items))
        if conjunction:
            return [False] if a is False or b is False else [True] if a and b else []
        return [True] if a is True or b is True else [False] if a is False and b is False else []
    if first is not None and second is not None:
        def both(item: Any) -> bool | None:
            """Both sides sure of one element (system = '...' and code = '...'), None when either is not."""
            a, b = first(item), second(item)
            if a is None or b is None:
                return None
            return (a and b) if conjunction else (a or b)
        logic.item_test = both  # type: ignore[attr-defined]
    return logic


def _equality(left: Step, right: Step, negated: bool) -> Step:
    constant = getattr(right, "constant", None)
    if constant is not None and type(constant[0]) is str:
        text = constant[0]
        general = _equality(left, lambda items: constant, negated)

        def equals_text(items: list[Any]) -> list[Any]:
            found = left(items)
            if len(found) == 1 and type(found[0]) is str:  # the usual case: one text against the literal
                return [(found[0] == text) != negated]
            return general(items)  # nothing, several values or another kind: the general rule

        key = getattr(left, "key", None)
        if key is None:
            return equals_text
        def item_test(item: Any) -> bool | None:
            """where(system = '...') on one element whose member is one text; None: not sure, ask the step."""
            if type(item) is dict:
                value = item.get(key)
                if type(value) is str:
                    return (value == text) != negated
            return None

        def equals_own_text(items: list[Any]) -> list[Any]:
            if len(items) == 1:
                sure = item_test(items[0])
                if sure is not None:
                    return [sure]
            return equals_text(items)
        equals_own_text.item_test = item_test  # type: ignore[attr-defined]
        return equals_own_text

    def equality(items: list[Any]) -> list[Any]:
        a, b = left(items), right(items)
        if not a or not b:
            return []
        if len(a) != 1 or len(b) != 1:
            raise Unsure  # collections compare item by item, in order: fhirpathpy's rule
        x, y = a[0], b[0]
        if isinstance(x, bool) != isinstance(y, bool) or isinstance(x, str) != isinstance(y, str) or \
                not isinstance(x, bool | str | int | float) or not isinstance(y, bool | str | int | float):
            raise Unsure
        return [(x == y) != negated]
    return equality


def _reference_keys(before: Step, of_type: str | None) -> Step:
    def keys(items: list[Any]) -> list[Any]:
        found = (reference_key(r, of_type) for r in before(items) if isinstance(r, dict))
        return [k for k in found if k is not None]
    return keys
