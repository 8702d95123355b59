"""The ``derive:`` language: arithmetic parsed with ``ast`` against a whitelist, never eval-ed."""

from __future__ import annotations

import ast
import datetime as dt
import difflib
import math
import operator
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.language.values import MAX_INTEGER, lost_to_zero

FUNCTIONS = ("minutes", "hours", "days", "coalesce")
_ELAPSED = {"minutes": 60.0, "hours": 3600.0, "days": 86400.0}
_OPS: dict[type, str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_ARITHMETIC: dict[str, Callable[[Any, Any], Any]] = {"+": operator.add, "-": operator.sub, "*": operator.mul,
                                                     "/": operator.truediv}
MAX_EXPRESSION_CHARS = 2000


class ExpressionError(ValueError):
    """A derive expression outside the language; ``offset`` is the column within the text."""

    def __init__(self, message: str, offset: int = 0) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Expr:
    """A parsed expression: ``kind`` is num, field, neg, bin or call."""

    kind: str
    value: Any = None
    args: tuple[Expr, ...] = ()
    offset: int = field(default=0, compare=False)  # where it starts in the text, for error positions

    def offset_of(self, name: str) -> int:
        """Where field ``name`` is first read in the text (0 when it is not read)."""
        if self.kind == "field" and self.value == name:
            return self.offset
        found = (arg.offset_of(name) for arg in self.args if name in arg.fields())
        return next(found, 0)

    def fields(self) -> tuple[str, ...]:
        if self.kind == "field":
            return (self.value,)
        names: list[str] = []
        for arg in self.args:
            names.extend(n for n in arg.fields() if n not in names)
        return tuple(names)


def parse(text: str) -> Expr:
    """Parse ``text`` or raise ExpressionError; nothing in it is ever executed."""
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    body = text.strip()
    lead = len(text) - len(text.lstrip())  # ast counts from the stripped text; positions count from text
    if not body:
        raise ExpressionError("empty expression")
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like must not reach stderr
            warnings.simplefilter("ignore")
            tree = ast.parse(body, mode="eval")
    except SyntaxError as exc:
        # Python reports the end of the text as offset 0 ("a +"): say so and point there.
        at_end = not exc.offset
        offset = lead + (len(body) if at_end else (exc.offset or 1) - 1)
        if at_end and exc.msg == "invalid syntax":
            raise ExpressionError("expression ends too early", offset) from None
        raise ExpressionError(f"expression does not parse: {_quotes(exc.msg)}", offset) from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("expression does not parse") from None
    try:
        return _convert(tree.body, body, lead)
    except RecursionError:
        raise ExpressionError("expression is nested too deeply") from None


def _quotes(message: str) -> str:
    """Python's messages quote with 'x'; the house style is "x"."""
    return re.sub(r"'([^']*)'", r'"\1"', message)


_NOT_ALLOWED = "is not allowed (only + - * /, numbers, field names and minutes, hours, days, coalesce)"
_SYMBOLS: dict[type, str] = {ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@",
                             ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|",
                             ast.BitXor: "^"}


def _col(text: str, byte_offset: int | None) -> int:
    """ast counts UTF-8 bytes; positions count characters."""
    return len(text.encode()[:byte_offset or 0].decode("utf-8", "ignore"))


def _convert(node: ast.AST, text: str, lead: int) -> Expr:
    offset = lead + _col(text, getattr(node, "col_offset", 0))
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        try:
            number = float(node.value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ExpressionError("the number is too large", offset)
        if isinstance(node.value, int) and abs(node.value) > MAX_INTEGER:
            raise ExpressionError(f"the integer is larger than {MAX_INTEGER:,}: it would not be exact", offset)
        if lost_to_zero(number, ast.get_source_segment(text, node) or ""):
            raise ExpressionError("the number is too small (it would read as 0)", offset)
        return Expr("num", number, offset=offset)
    if isinstance(node, ast.Name):
        return Expr("field", node.id, offset=offset)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _convert(node.operand, text, lead)
        return Expr("neg", None, (operand,), offset) if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return Expr("bin", _OPS[type(node.op)], (_convert(node.left, text, lead), _convert(node.right, text, lead)),
                    offset)
    if isinstance(node, ast.BinOp):  # "**", "%", "//"...: point at the operator, not the left operand
        symbol = _SYMBOLS.get(type(node.op), "this operator")
        at = text.find(symbol, _col(text, node.left.end_col_offset)) if node.left.end_lineno == node.lineno else -1
        raise ExpressionError(f'"{symbol}" {_NOT_ALLOWED}', lead + at if at >= 0 else offset)
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            _convert(node.func, text, lead)  # a lambda, an attribute...: say which
            raise ExpressionError(f"only {', '.join(FUNCTIONS)} can be called", offset)
        if node.func.id not in FUNCTIONS:
            close = difflib.get_close_matches(node.func.id, FUNCTIONS, n=1)
            hint = f'did you mean "{close[0]}"?' if close else f"allowed: {', '.join(FUNCTIONS)}"
            raise ExpressionError(f'unknown function "{node.func.id}" ({hint})', offset)
        if node.keywords or len(node.args) != 2:
            raise ExpressionError(f"{node.func.id}() takes exactly two arguments", offset)
        return Expr("call", node.func.id, tuple(_convert(a, text, lead) for a in node.args), offset)
    if isinstance(node, ast.Attribute):  # point at the dot: "a.real", "__import__('os').system"
        dot = text.find(".", _col(text, node.value.end_col_offset)) if node.value.end_lineno == node.lineno else -1
        raise ExpressionError(f'an attribute (".{node.attr}") {_NOT_ALLOWED}', lead + dot if dot >= 0 else offset)
    raise ExpressionError(f"{_describe(node)} {_NOT_ALLOWED}", offset)


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Lambda):
        return "a lambda"
    if isinstance(node, ast.Constant):
        return f'the text "{node.value}"' if isinstance(node.value, str) else f'the constant "{node.value!r}"'
    names = {ast.Compare: "a comparison", ast.BoolOp: '"and" / "or"', ast.IfExp: '"if ... else"',
             ast.Subscript: "indexing", ast.List: "a list", ast.Tuple: "a tuple", ast.Dict: "a dict",
             ast.Set: "a set", ast.NamedExpr: '":="', ast.JoinedStr: "an f-string", ast.Starred: '"*"',
             ast.ListComp: "a comprehension", ast.SetComp: "a comprehension", ast.DictComp: "a comprehension",
             ast.GeneratorExp: "a comprehension", ast.Await: '"await"', ast.Yield: '"yield"',
             ast.YieldFrom: '"yield"', ast.Slice: "a slice"}
    if isinstance(node, ast.UnaryOp):
        return '"not"' if isinstance(node.op, ast.Not) else '"~"'
    return names.get(type(node), "this")


def infer_type(expr: Expr, type_of: Callable[[str], str | None]) -> str:
    """The result type (number, or the field type for coalesce); raises ExpressionError."""
    if expr.kind == "num":
        return "number"
    if expr.kind == "field":
        found = type_of(expr.value)
        if found is None:
            raise ExpressionError(f'unknown field "{expr.value}"', expr.offset)
        return found
    if expr.kind == "neg" or expr.kind == "bin":
        for arg in expr.args:
            kind = infer_type(arg, type_of)
            if kind not in ("number", "integer"):
                raise ExpressionError(f"arithmetic needs numbers; {_what(arg, kind)}", arg.offset)
        return "number"
    left, right = (infer_type(a, type_of) for a in expr.args)
    if expr.value == "coalesce":
        if _kind(left) != _kind(right):
            raise ExpressionError(f"coalesce() needs two values of one type, not {left} and {right}", expr.offset)
        return left
    for arg, kind in zip(expr.args, (left, right), strict=True):
        if kind not in ("datetime", "date"):
            raise ExpressionError(f"{expr.value}() needs two datetimes or dates; {_what(arg, kind)}", arg.offset)
    if left != right:
        raise ExpressionError(f"{expr.value}() needs two values of one type, not {left} and {right}", expr.offset)
    return "number"


def _what(expr: Expr, kind: str) -> str:
    """'"route" is an enum' for a field, 'this is a number' for anything else."""
    article = "an" if kind[0] in "aeiou" else "a"
    subject = f'"{expr.value}"' if expr.kind == "field" else "this"
    return f"{subject} is {article} {kind}"


def _kind(name: str) -> str:
    return "number" if name == "integer" else name


def compile_expression(expr: Expr) -> Callable[[dict[str, Any]], Any]:
    """The expression as a Python closure over a record's values; the value is None (missing) when an
    input is missing or a division is by zero. Built from the parsed tree, never from text."""
    kind = expr.kind
    if kind == "num":
        constant = expr.value
        return lambda values: constant
    if kind == "field":
        name = expr.value
        return lambda values: values.get(name)
    if kind == "neg":
        inner = compile_expression(expr.args[0])

        def negate(values: dict[str, Any]) -> Any:
            value = inner(values)
            return None if value is None else -value
        return negate
    left, right = (compile_expression(arg) for arg in expr.args)
    if kind == "bin":
        operation = _ARITHMETIC[expr.value]

        def arithmetic(values: dict[str, Any]) -> Any:
            a = left(values)
            b = right(values)
            if a is None or b is None:
                return None
            try:
                result = float(operation(a, b))
            except (ZeroDivisionError, OverflowError):
                return None
            # like a division by zero, a result too large for a number (1e200 * 1e200) is missing:
            # no number can stand for it, and the rule engine could not compare one
            return result if math.isfinite(result) else None
        return arithmetic
    if expr.value == "coalesce":
        def coalesce(values: dict[str, Any]) -> Any:
            first = left(values)
            return first if first is not None else right(values)
        return coalesce
    scale = _ELAPSED[expr.value]

    def elapsed(values: dict[str, Any]) -> Any:
        start = left(values)
        end = right(values)
        if start is None or end is None:
            return None
        if isinstance(start, dt.datetime):
            if type(start.tzinfo) is not dt.timezone or type(end.tzinfo) is not dt.timezone:
                # in UTC: two times that share a zone object subtract as wall-clock times in
                # Python, wrong by an hour across a daylight-saving change
                start, end = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
            return (end - start).total_seconds() / scale  # fixed offsets (as read) subtract exactly
        return (end - start).days * 86400.0 / scale
    return elapsed
