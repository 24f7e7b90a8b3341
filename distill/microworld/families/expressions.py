"""A safe evaluator for the arithmetic and Python expressions tasks contain.

Task text comes from a teacher model, so it is never handed to `eval`: the expression is
parsed with `ast` and only whitelisted nodes are evaluated (integers, short strings, lists,
+ - * // %, unary minus, and len / max / min / abs / sum). Everything else, including
division by zero and very large numbers, is `Malformed`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from distill.microworld.families.common import Malformed

MAX_MAGNITUDE = 10**9
MAX_STRING = 30
MAX_LIST = 20

_ARITHMETIC = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
}
_PYTHON_ONLY = {
    ast.FloorDiv: lambda a, b: a // b,
    ast.Mod: lambda a, b: a % b,
}
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "len": len, "max": max, "min": min, "abs": abs, "sum": sum,
}


def evaluate(expression: str, *, python: bool = False) -> int:
    """The integer value of `expression`.

    With `python=False` only integer arithmetic with + - * and parentheses is allowed
    (the multistep family); `python=True` adds //, %, strings, lists and
    the whitelisted functions.
    """
    text = expression.strip()
    if python:
        text = text.removeprefix(">>>").strip()
    else:
        text = text.replace("×", "*").rstrip("=").strip()
    if not text or len(text) > 200:
        raise Malformed("empty or overlong expression")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise Malformed(f"not an expression: {expression!r}") from None
    value = _eval(tree.body, python)
    if isinstance(value, bool) or not isinstance(value, int):
        raise Malformed(f"value is not an integer: {value!r}")
    return value


def _eval(node: ast.AST, python: bool) -> Any:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            raise Malformed("booleans are not allowed")
        if isinstance(value, int):
            return _checked(value)
        if python and isinstance(value, str) and len(value) <= MAX_STRING:
            return value
        raise Malformed(f"constant not allowed: {value!r}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _eval(node.operand, python)
        if not isinstance(operand, int):
            raise Malformed("unary minus on a non-number")
        return _checked(-operand if isinstance(node.op, ast.USub) else operand)
    if isinstance(node, ast.BinOp):
        ops = {**_ARITHMETIC, **(_PYTHON_ONLY if python else {})}
        operator = ops.get(type(node.op))
        if operator is None:
            raise Malformed(f"operator not allowed: {type(node.op).__name__}")
        left, right = _eval(node.left, python), _eval(node.right, python)
        if not (isinstance(left, int) and isinstance(right, int)):
            raise Malformed("arithmetic on a non-number")
        if isinstance(node.op, (ast.FloorDiv, ast.Mod)) and right == 0:
            raise Malformed("division by zero")
        return _checked(operator(left, right))
    if python and isinstance(node, ast.List):
        if len(node.elts) > MAX_LIST:
            raise Malformed("list too long")
        items = [_eval(item, python) for item in node.elts]
        if not all(isinstance(item, int) for item in items):
            raise Malformed("lists hold numbers only")
        return items
    if python and isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise Malformed("call not allowed")
        args = [_eval(arg, python) for arg in node.args]
        try:
            return _result(FUNCTIONS[node.func.id](*args))
        except (TypeError, ValueError) as error:
            raise Malformed(f"bad call: {error}") from None
    raise Malformed(f"syntax not allowed: {type(node).__name__}")


def _result(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return _checked(value)
    if isinstance(value, str) and len(value) <= MAX_STRING:
        return value
    raise Malformed(f"result not allowed: {value!r}")


def _checked(value: int) -> int:
    if abs(value) > MAX_MAGNITUDE:
        raise Malformed("number too large")
    return value
