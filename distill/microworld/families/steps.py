"""Worked solutions: the microworld's multi-step tasks solved step by step, each step checkable.

A step is one operation on two numbers and its result, written the way the teacher
learns to write it: "3 + 4 = 7", "14 / 4 = 3.5", "max(4, 9) = 9". A worked solution is
its steps joined by "; ", the last step's result being the answer:

    (3 + 4) * 2 - 5             ->  3 + 4 = 7; 7 * 2 = 14; 14 - 5 = 9
    Tom has 5 apples. He buys 3 more apples. Then he gives away 2 apples. ...
                                ->  5 + 3 = 8; 8 - 2 = 6
    Convert 3500 grams to kilograms.   ->  3500 / 1000 = 3.5

The traces stay on one line: the benchmark's generations stop at a newline.

Families that compute something in several operations derive their steps from the task
text, as they derive the answer (`worked(instruction, input)`): add / subtract / multiply
(one step, more for "1 + 2 + 3"), multistep, word_problem, list_ops (sum, largest,
smallest), units and dates (day counts). Deriving them from the text, never from the
generator's random draws, leaves every generated task, and so the benchmark, unchanged.

Such families implement `Worked`; `distill.microworld.tasks.worked_solution` finds a
task's family and asks it. `check_trace` reads a trace back (a model's, or anyone's) and
checks each step's arithmetic on its own: a step that does not parse or computes wrongly
is a wrong step.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, runtime_checkable

from distill.microworld.answers import NUMBER_RE, format_number, number
from distill.microworld.families.common import Malformed

STEP_SEPARATOR = "; "

OPERATIONS: dict[str, Callable[[Fraction, Fraction], Fraction]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "max": max,
    "min": min,
}
FUNCTIONS = ("max", "min")  # written "max(a, b) = c"

_NUM = rf"({NUMBER_RE})"
_INFIX = re.compile(rf"^\s*{_NUM}\s*([-+*/])\s*{_NUM}\s*=\s*{_NUM}\s*$")
_CALL = re.compile(rf"^\s*(max|min)\(\s*{_NUM}\s*,\s*{_NUM}\s*\)\s*=\s*{_NUM}\s*$")


@dataclass(frozen=True)
class Step:
    """One operation: `left op right = result`."""

    left: Fraction
    op: str
    right: Fraction
    result: Fraction

    def text(self) -> str:
        """The step as written: "7 * 2 = 14" or "max(4, 9) = 9"."""
        left, right, result = map(format_number, (self.left, self.right, self.result))
        if self.op in FUNCTIONS:
            return f"{self.op}({left}, {right}) = {result}"
        return f"{left} {self.op} {right} = {result}"

    @property
    def correct(self) -> bool:
        """Whether the result is what the operation gives."""
        if self.op == "/" and self.right == 0:
            return False
        return OPERATIONS[self.op](self.left, self.right) == self.result


def step(left: Fraction | int, op: str, right: Fraction | int) -> Step:
    """The step that computes `left op right`."""
    left, right = Fraction(left), Fraction(right)
    return Step(left, op, right, OPERATIONS[op](left, right))


def chain(first: Fraction | int, op: str, operands: list[Fraction] | list[int]) -> list[Step]:
    """`first op a op b ...` worked left to right: one step per operand."""
    steps: list[Step] = []
    value = Fraction(first)
    for operand in operands:
        steps.append(step(value, op, operand))
        value = steps[-1].result
    return steps


def trace_text(steps: list[Step]) -> str:
    """The worked solution as one line of steps."""
    return STEP_SEPARATOR.join(s.text() for s in steps)


@runtime_checkable
class Worked(Protocol):
    """A family whose tasks have worked solutions."""

    def worked(self, instruction: str, input: str) -> list[Step] | None:
        """The steps that solve the task (None: nothing to work out); raises `Malformed`."""
        ...


def expression_steps(expression: str) -> list[Step]:
    """The steps of an integer expression with + - * and parentheses, in evaluation order.

    Operands are worked before the operation that uses them, left before right, as a
    person works "(3 + 4) * (5 - 2)": "3 + 4 = 7; 5 - 2 = 3; 7 * 3 = 21".
    """
    text = expression.replace("×", "*").strip().rstrip("=").strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise Malformed(f"not an expression: {expression!r}") from None
    steps: list[Step] = []
    symbols = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}

    def value(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in symbols:
            left, right = value(node.left), value(node.right)
            steps.append(step(left, symbols[type(node.op)], right))
            return steps[-1].result
        raise Malformed(f"not an arithmetic expression: {expression!r}")

    value(tree.body)
    return steps


# -- reading and checking traces -------------------------------------------------------------


def parse_step(text: str) -> Step | None:
    """A step read from its text, or None when it is not one."""
    match = _INFIX.match(text)
    if match:
        left, op, right, result = match.groups()
    else:
        match = _CALL.match(text)
        if not match:
            return None
        op, left, right, result = match.groups()
    try:
        return Step(number(left), op, number(right), number(result))
    except ValueError:
        return None


@dataclass(frozen=True)
class TraceCheck:
    """What a trace's steps are worth, each checked on its own."""

    steps: int  # parts between separators
    correct_steps: int  # those that parse and compute right
    final: Fraction | None  # the last step's result, when the last step parses

    @property
    def all_correct(self) -> bool:
        """A trace with at least one step, every step right."""
        return self.steps > 0 and self.correct_steps == self.steps


def check_trace(trace: str) -> TraceCheck:
    """Check each step of a one-line trace ("a op b = c; ...")."""
    parts = [part for part in trace.strip().rstrip(".").split(";") if part.strip()]
    parsed = [parse_step(part) for part in parts]
    last = parsed[-1] if parsed else None
    return TraceCheck(steps=len(parts), correct_steps=sum(s is not None and s.correct
                                                           for s in parsed),
                      final=last.result if last is not None else None)

