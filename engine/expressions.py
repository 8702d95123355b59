"""The ``derive:`` language: arithmetic parsed with ``ast`` against a whitelist, never eval-ed."""

from __future__ import annotations

import ast
import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

FUNCTIONS = ("minutes", "hours", "days", "coalesce")
_ELAPSED = {"minutes": 60.0, "hours": 3600.0, "days": 86400.0}
_OPS: dict[type, str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
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
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(f"expression does not parse: {exc.msg}", max((exc.offset or 1) - 1, 0)) from None
    except (ValueError, RecursionError, MemoryError):
        raise ExpressionError("expression does not parse") from None
    try:
        return _convert(tree.body)
    except RecursionError:
        raise ExpressionError("expression is nested too deeply") from None


def _convert(node: ast.AST) -> Expr:
    offset = getattr(node, "col_offset", 0)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Expr("num", float(node.value))
    if isinstance(node, ast.Name):
        return Expr("field", node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _convert(node.operand)
        return Expr("neg", None, (operand,)) if isinstance(node.op, ast.USub) else operand
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return Expr("bin", _OPS[type(node.op)], (_convert(node.left), _convert(node.right)))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else "this"
            allowed = ", ".join(FUNCTIONS)
            raise ExpressionError(f'unknown function "{name}" (allowed: {allowed})', offset)
        if node.keywords or len(node.args) != 2:
            raise ExpressionError(f"{node.func.id}() takes exactly two arguments", offset)
        return Expr("call", node.func.id, tuple(_convert(a) for a in node.args))
    raise ExpressionError(f"{_describe(node)} is not allowed in derive (only + - * /, "
                          "numbers, field names and minutes/hours/days/coalesce)", offset)


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.BinOp):
        symbol = {ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//"}.get(type(node.op), "this operator")
        return f'"{symbol}"' if symbol != "this operator" else symbol
    if isinstance(node, ast.Attribute):
        return "an attribute"
    if isinstance(node, ast.Lambda):
        return "a lambda"
    if isinstance(node, ast.Constant):
        return f"the constant {node.value!r}"
    return f"{type(node).__name__.lower()}"


def infer_type(expr: Expr, type_of: Callable[[str], str | None]) -> str:
    """The result type (number, or the field type for coalesce); raises ExpressionError."""
    if expr.kind == "num":
        return "number"
    if expr.kind == "field":
        found = type_of(expr.value)
        if found is None:
            raise ExpressionError(f'unknown field "{expr.value}"')
        return found
    if expr.kind == "neg" or expr.kind == "bin":
        for arg in expr.args:
            kind = infer_type(arg, type_of)
            if kind not in ("number", "integer"):
                raise ExpressionError(f"arithmetic needs numbers, not a {kind}")
        return "number"
    left, right = (infer_type(a, type_of) for a in expr.args)
    if expr.value == "coalesce":
        if _kind(left) != _kind(right):
            raise ExpressionError(f"coalesce() needs two values of one type, not {left} and {right}")
        return left
    for kind in (left, right):
        if kind not in ("datetime", "date"):
            raise ExpressionError(f"{expr.value}() needs two datetimes or dates, not a {kind}")
    if left != right:
        raise ExpressionError(f"{expr.value}() needs two values of one type, not {left} and {right}")
    return "number"


def _kind(name: str) -> str:
    return "number" if name == "integer" else name


def evaluate(expr: Expr, values: dict[str, Any]) -> Any:
    """The value, or None (missing) when an input is missing or a division is by zero."""
    kind = expr.kind
    if kind == "num":
        return expr.value
    if kind == "field":
        return values.get(expr.value)
    if kind == "neg":
        inner = evaluate(expr.args[0], values)
        return None if inner is None else -inner
    if kind == "bin":
        left = evaluate(expr.args[0], values)
        right = evaluate(expr.args[1], values)
        if left is None or right is None:
            return None
        op = expr.value
        if op == "+":
            return float(left + right)
        if op == "-":
            return float(left - right)
        if op == "*":
            return float(left * right)
        return None if right == 0 else float(left / right)
    if expr.value == "coalesce":
        first = evaluate(expr.args[0], values)
        return first if first is not None else evaluate(expr.args[1], values)
    start = evaluate(expr.args[0], values)
    end = evaluate(expr.args[1], values)
    if start is None or end is None:
        return None
    if isinstance(start, dt.datetime):
        return (end - start).total_seconds() / _ELAPSED[expr.value]
    return (end - start).days * 86400.0 / _ELAPSED[expr.value]
