"""FHIRPath expressions of a SQL-on-FHIR view: parsed once, checked, evaluated directly or by fhirpathpy."""

from __future__ import annotations

import difflib
import functools
import importlib
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any, cast

from antlr4 import CommonTokenStream, InputStream
from antlr4.error.ErrorListener import ErrorListener
from antlr4.tree.Tree import ParseTreeWalker
from fhirpathpy import engine as fhirpath_engine
from fhirpathpy.engine import invocations
from fhirpathpy.engine.invocations.constants import constants as fhirpath_clock
from fhirpathpy.engine.nodes import FP_Type, ResourceNode
from fhirpathpy.engine.util import process_user_invocation_table
from fhirpathpy.models import models
from fhirpathpy.parser.generated.FHIRPathLexer import FHIRPathLexer
from fhirpathpy.parser.generated.FHIRPathParser import FHIRPathParser

from engine.inputs.fhir_view_direct import Step, Unsure, compile_direct
from engine.inputs.fhir_view_functions import USER_FUNCTIONS, check_regex

R4: dict[str, Any] = models["r4"]

MAX_PATH_LENGTH = 2000  # characters; a real column path is a few dozen
BUILTIN_CONSTANTS = frozenset({"context", "resource", "rootResource", "ucum", "sct", "loinc", "rowIndex"})

_KEYWORDS = frozenset({"and", "or", "xor", "implies", "is", "as", "in", "contains", "div", "mod", "true", "false"})
_PLAIN_PATH = re.compile(r"[a-z][A-Za-z0-9_]*(\.[a-z][A-Za-z0-9_]*)*\Z")
_FUNCTIONS: dict[str, dict[str, Any]] = {**cast(Any, invocations).invocation_registry, **USER_FUNCTIONS}
# fhirpathpy ships py.typed without annotating these: typed as Any here, once
_USER_TABLE: Any = cast(Any, process_user_invocation_table)(USER_FUNCTIONS)
_do_eval: Any = fhirpath_engine.do_eval
_reset_clock: Any = fhirpath_clock.reset
_ASTPathListener: Any = importlib.import_module("fhirpathpy.parser.ASTPathListener").ASTPathListener


class PathError(ValueError):
    """A FHIRPath that cannot be compiled, or fails on one resource; the message says why."""


class _Listener(ErrorListener):  # type: ignore[misc]
    """Keeps the first syntax error: fhirpathpy's own parse() drops them and returns half a tree."""

    def __init__(self) -> None:
        self.error: str | None = None

    def syntaxError(self, recognizer: Any, offending: Any, line: int, column: int, msg: str, e: Any) -> None:
        if self.error is None:
            wanted, _, options = msg.partition(" expecting {")
            if options.count(",") < 6:  # a short list of what would fit helps; ANTLR's whole token set does not
                wanted = msg
            self.error = f"at character {column + 1}: {wanted}"


def parse_fhirpath(text: str) -> dict[str, Any]:
    """The fhirpathpy AST of ``text``; PathError if it is not one whole FHIRPath expression."""
    if len(text) > MAX_PATH_LENGTH:
        raise PathError(f"FHIRPath of {len(text)} characters is too long (at most {MAX_PATH_LENGTH})")
    if not text.strip():
        raise PathError("empty FHIRPath")
    listener = _Listener()
    lexer = FHIRPathLexer(InputStream(text))
    lexer.removeErrorListeners()
    lexer.addErrorListener(listener)
    parser = FHIRPathParser(CommonTokenStream(lexer))
    parser.removeErrorListeners()
    parser.addErrorListener(listener)
    try:
        tree = cast(Any, parser).entireExpression()  # up to EOF: trailing text is an error, not ignored
        if listener.error is not None:
            raise PathError(f'FHIRPath "{text}" does not parse {listener.error}')
        builder = _ASTPathListener()
        ParseTreeWalker().walk(builder, tree.expression())
    except RecursionError:
        raise PathError(f'FHIRPath "{text[:60]}..." is nested too deeply') from None
    ast: dict[str, Any] = builder.parentStack[0]
    return ast


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.get("children", [])))


def check_fhirpath(ast: dict[str, Any], constants: Mapping[str, Any]) -> list[str]:
    """Problems fhirpathpy would only meet while evaluating: unknown functions, arity, constants, regexes."""
    problems = []
    for node in _nodes(ast):
        if node.get("type") == "Functn":
            name = node["children"][0]["text"]
            params = [c for c in node["children"][1:] if c["type"] == "ParamList"]
            arguments = params[0]["children"] if params else []
            problems += _check_call(name, arguments)
        elif node.get("type") == "MemberInvocation":
            name = node["children"][0]["text"].strip("`")
            if name.removeprefix("_") not in _element_names():
                problems.append(f'"{name}" is no element or type of FHIR R4: a path through it would find nothing'
                                f"{_suggest(name, _element_names())}")
        elif node.get("type") == "ExternalConstant":
            name = node["children"][0]["text"].strip("`")
            if name not in constants and name not in BUILTIN_CONSTANTS:
                known = [f"%{c}" for c in [*constants, *BUILTIN_CONSTANTS]]
                problems.append(f'unknown constant "%{name}"{_suggest("%" + name, known)}')
    return problems


@functools.cache
def _element_names() -> frozenset[str]:
    """Every element name of FHIR R4 (choice elements also with each type: valueQuantity), and every
    type name (for ofType(Quantity), Observation.code): a name outside it is a typo, whose path would
    quietly find nothing and read as a missing value."""
    names = {"System", "FHIR", "Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity"}
    for path in [*R4["path2Type"], *R4["pathsDefinedElsewhere"]]:
        names.update(path.split("."))
    for path, types in R4["choiceTypePaths"].items():
        base = path.rsplit(".", 1)[-1]
        names.add(base)
        names.update(base + kind[0].upper() + kind[1:] for kind in types)
    names.update(R4["type2Parent"])
    names.update(R4["type2Parent"].values())
    names.update(kind.removeprefix("System.") for kind in R4["path2Type"].values())
    return frozenset(names)


def _check_call(name: str, arguments: list[dict[str, Any]]) -> list[str]:
    spec = _FUNCTIONS.get(name)
    if spec is None:
        return [f'unknown FHIRPath function "{name}()"{_suggest(name, _FUNCTIONS, "()")}']
    if "variadic" not in spec and len(arguments) not in spec.get("arity", {0: []}):
        counts = " or ".join(str(n) for n in sorted(spec.get("arity", {0: []})))
        return [f'"{name}()" takes {counts} argument(s), not {len(arguments)}']
    if name in ("matches", "replaceMatches") and arguments:
        literal = _string_literal(arguments[0])
        if literal is not None:
            problem = check_regex(literal)
            return [f'"{name}()": {problem}'] if problem else []
    return []


def _string_literal(node: dict[str, Any]) -> str | None:
    for inner in _nodes(node):
        if inner["type"] == "StringLiteral":
            text: str = inner["text"]
            return text[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        if inner["type"] not in ("TermExpression", "LiteralTerm"):
            return None
    return None


def _suggest(name: str, candidates: Any, suffix: str = "") -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f' (did you mean "{close[0]}{suffix}"?)' if close else ""


def plain_segments(text: str) -> tuple[str, ...] | None:
    """The element names of a plain dotted path (``subject.reference``), None for anything else."""
    if not _PLAIN_PATH.match(text):
        return None
    segments = tuple(text.split("."))
    if any(s in _KEYWORDS or s == "length" for s in segments):
        return None
    return segments


def static_type(resource: str, segments: tuple[str, ...]) -> str | None:
    """The R4 type a plain path from ``resource`` ends on (``boolean``, ``HumanName``...), None if unknown."""
    type_path = resource
    for segment in segments:
        child = f"{type_path}.{segment}"
        child = R4["pathsDefinedElsewhere"].get(child, child)
        if child in R4["choiceTypePaths"]:
            return None
        found = R4["path2Type"].get(child)
        if found is None and not any(p.startswith(child + ".") for p in R4["path2Type"]):
            return None
        type_path = found or child
    return type_path


_UNCOMPILED: Any = object()  # a focus type no closure was compiled for yet


class Path:
    """One compiled FHIRPath: ``nodes`` keeps fhirpathpy's typed nodes, ``values`` gives plain JSON values.

    With ``fast``, ``values`` runs the closure fhir_view_direct compiles for the focus's FHIR type
    (once per type) and asks fhirpathpy only when the path or a value is outside that subset.
    """

    __slots__ = ("text", "ast", "fast", "uses_row_index", "_root", "_direct")

    def __init__(self, text: str, ast: dict[str, Any], fast: bool) -> None:
        self.text = text
        self.ast = ast
        self.fast = fast
        self.uses_row_index = any(n.get("type") == "ExternalConstant" and n["children"][0]["text"].strip("`")
                                  == "rowIndex" for n in _nodes(ast))
        self._root = ast["children"][0]
        self._direct: dict[str, Step | None] = {}

    def direct(self, type_path: str) -> Step | None:
        """The compiled closure for a focus of ``type_path`` (None: fhirpathpy evaluates this path)."""
        if type_path not in self._direct:
            self._direct[type_path] = compile_direct(self.ast, type_path, R4) if self.fast else None
        return self._direct[type_path]

    def nodes(self, focus: Any, env: dict[str, Any]) -> list[Any]:
        """fhirpathpy's nodes, which keep their FHIR type for the paths evaluated on them (forEach)."""
        _reset_clock()
        root = focus if isinstance(focus, list) else [focus]
        context = {"dataRoot": root, "$this": root, "vars": env, "model": R4, "userInvocationTable": _USER_TABLE}
        try:
            result = _do_eval(context, root, self._root)
        except RecursionError:
            raise PathError(f'"{self.text}": the resource is nested too deeply') from None
        except Exception as exc:  # fhirpathpy raises bare Exceptions for evaluation errors
            raise PathError(f'"{self.text}": {exc}') from None
        return [n for n in result if not _extension_only(n)]

    def values(self, focus: Any, env: dict[str, Any]) -> list[Any]:
        if self.fast:
            type_path: Any
            data: Any
            if type(focus) is dict:  # a resource: the usual case, its type its resourceType
                type_path, data = focus.get("resourceType"), focus
            elif isinstance(focus, ResourceNode):
                type_path, data = focus.path, focus.data
            else:
                type_path, data = (focus.get("resourceType"), focus) if isinstance(focus, dict) else (None, None)
            step = self._direct.get(type_path, _UNCOMPILED)
            if step is _UNCOMPILED:
                step = self.direct(type_path) if isinstance(type_path, str) else None
            if step is not None:
                try:
                    found: list[Any] = step([data])
                except Unsure:
                    pass
                except RecursionError:
                    raise PathError(f'"{self.text}": the resource is nested too deeply') from None
                else:
                    for value in found:
                        if type(value) is dict:
                            return [v for v in found if not _extension_only(v)]
                    return found
        try:
            return [plain(n) for n in self.nodes(focus, env)]
        except RecursionError:
            raise PathError(f'"{self.text}": the value is nested too deeply') from None


def _extension_only(node: Any) -> bool:
    # fhirpathpy adds the "_given"-style sibling of a primitive as a node of its own; without a value
    # it is no value of the path (fhirpathpy's own result conversion drops it the same way)
    data = node.data if isinstance(node, ResourceNode) else node
    return isinstance(data, dict) and list(data) == ["extension"]


def plain(value: Any) -> Any:
    """A fhirpathpy result as a JSON-like value: decimals as float, dates and times as their ISO text."""
    if isinstance(value, ResourceNode):
        value = value.data
    if isinstance(value, bool | str | int | float) or value is None:
        return value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, FP_Type):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return str(value)
