"""Number families: arithmetic, comparing, sorting, list operations, sequences."""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from distill.microworld.answers import Answer, format_number, number
from distill.microworld.families.common import (
    Draft,
    Malformed,
    join_numbers,
    normalize,
    parse_number_list,
    pick,
)
from distill.microworld.families.expressions import evaluate
from distill.microworld.families.steps import Step, chain, expression_steps

_INT = r"-?\d+"


@dataclass(frozen=True)
class Binary:
    """A two-operand arithmetic family: "Add the two numbers." / "17 + 25" -> "42"."""

    name: str
    symbol: str
    sentence: str  # "The sum of {a} and {b} is {c}."
    instructions: tuple[str, ...]
    operands: Callable[[random.Random, int], tuple[int, int]]
    apply: Callable[[int, int], int]
    kind: str = "number"

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        a, b = self.operands(rng, difficulty)
        c = self.apply(a, b)
        if rng.random() < 0.5:
            statement = f"{a} {self.symbol} {b} = {c}."
        else:
            statement = self.sentence.format(a=a, b=b, c=c)
        return Draft(pick(rng, self.instructions), f"{a} {self.symbol} {b}",
                     Answer("number", Fraction(c)), statement)

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return normalize(instruction) in {normalize(i) for i in self.instructions}

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        first, *rest = self._operands(input)
        value = first
        for operand in rest:
            value = self.apply(value, operand)
        if abs(value) > 10**12:
            raise Malformed("number too large")
        return Answer("number", Fraction(value))

    def worked(self, instruction: str, input: str) -> list[Step]:
        """One step per operation: "17 + 25 = 42"."""
        first, *rest = self._operands(input)
        return chain(first, self.symbol, rest)

    def _operands(self, input: str) -> list[int]:
        # "a + b" as generated, or more terms ("1 + 2 + 3"), worked left to right.
        symbols = re.escape(self.symbol) + ("x×" if self.symbol == "*" else "")
        text = input.strip().rstrip("=").strip()
        if not re.fullmatch(rf"{_INT}(?:\s*[{symbols}]\s*{_INT})+", text):
            raise Malformed(f"expected 'a {self.symbol} b', got {input!r}")
        return [int(n) for n in re.findall(rf"(?:^|[{symbols}])\s*({_INT})", text)]


def _add_operands(rng: random.Random, difficulty: int) -> tuple[int, int]:
    # Small enough at the easy level for a tiny model to learn the table; multi-digit above.
    if difficulty == 1:
        return rng.randint(0, 9), rng.randint(0, 9)
    if difficulty == 2:
        return rng.randint(10, 99), rng.randint(1, 99)
    return rng.randint(100, 999), rng.randint(10, 999)


def _subtract_operands(rng: random.Random, difficulty: int) -> tuple[int, int]:
    if difficulty == 1:
        b, c = rng.randint(0, 9), rng.randint(0, 9)
        return b + c, b  # the inverse of an easy addition
    if difficulty == 2:
        a = rng.randint(10, 99)
        return a, rng.randint(1, a)
    return rng.randint(100, 999), rng.randint(10, 999)  # may go below zero


def _multiply_operands(rng: random.Random, difficulty: int) -> tuple[int, int]:
    if difficulty == 1:
        return rng.randint(2, 9), rng.randint(2, 9)
    if difficulty == 2:
        return rng.randint(10, 20), rng.randint(2, 9)
    return rng.randint(10, 99), rng.randint(2, 9)


ADD = Binary("add", "+", "The sum of {a} and {b} is {c}.",
             ("Add the two numbers.", "What is the sum of the numbers?",
              "Find the sum of the numbers.", "Compute the sum of the numbers."),
             _add_operands, operator.add)
SUBTRACT = Binary("subtract", "-", "{a} minus {b} is {c}.",
                  ("Subtract the second number from the first.",
                   "What is the difference of the numbers?",
                   "Find the difference of the numbers.",
                   "Compute the difference of the numbers."),
                  _subtract_operands, operator.sub)
MULTIPLY = Binary("multiply", "*", "{a} times {b} is {c}.",
                  ("Multiply the two numbers.", "What is the product of the numbers?",
                   "Find the product of the numbers.",
                   "Compute the product of the numbers."),
                  _multiply_operands, operator.mul)


class MultiStep:
    """Two or three operations with precedence and parentheses: "(3 + 4) * 2" -> "14"."""

    name = "multistep"
    kind = "number"
    instructions = ("Evaluate the arithmetic expression.",
                    "Calculate the value of the expression.",
                    "Compute the value of the expression.")

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        if difficulty == 1:
            a, b = rng.randint(1, 9), rng.randint(1, 9)
            c = rng.randint(0, a + b)
            expression = f"{a} + {b} - {c}"
        elif difficulty == 2:
            a, b, c = rng.randint(2, 9), rng.randint(2, 9), rng.randint(1, 30)
            expression = pick(rng, [f"{a} * {b} + {c}", f"{c} + {a} * {b}",
                                    f"{a} * {b} - {rng.randint(1, a * b)}"])
        else:
            a, b, c = rng.randint(1, 15), rng.randint(1, 15), rng.randint(2, 9)
            d = rng.randint(0, 20)
            expression = pick(rng, [f"({a} + {b}) * {c} - {d}", f"{c} * ({a} + {b}) + {d}",
                                    f"({a} + {b}) * ({c} - {min(d, c - 1)})"])
        value = evaluate(expression)
        return Draft(pick(rng, self.instructions), expression,
                     Answer("number", Fraction(value)), f"{expression} = {value}.")

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return normalize(instruction) in {normalize(i) for i in self.instructions}

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        return Answer("number", Fraction(evaluate(input)))

    def worked(self, instruction: str, input: str) -> list[Step]:
        """The operations in evaluation order: "3 + 4 = 7; 7 * 2 = 14"."""
        evaluate(input)  # the same checks as the answer (size, allowed syntax)
        return expression_steps(input)


class Compare:
    """Which of two numbers is larger (or smaller); decimals at the hardest level."""

    name = "compare"
    kind = "number"
    larger = ("Which number is larger?", "Which number is bigger?", "Which number is greater?")
    smaller = ("Which number is smaller?",)

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        while True:
            if difficulty == 1:
                a, b = Fraction(rng.randint(0, 30)), Fraction(rng.randint(0, 30))
            elif difficulty == 2:
                lead = rng.randint(1, 9) * 100
                a, b = Fraction(lead + rng.randint(0, 99)), Fraction(lead + rng.randint(0, 99))
            else:  # 3.45 against 3.5: the classic decimal trap
                whole = rng.randint(0, 20)
                a = whole + Fraction(rng.randint(1, 99), 100)
                b = whole + Fraction(rng.randint(1, 9), 10)
            if a != b:
                break
        if rng.random() < 0.5:
            a, b = b, a
        want_larger = rng.random() < 0.75
        instruction = pick(rng, self.larger if want_larger else self.smaller)
        answer = max(a, b) if want_larger else min(a, b)
        other = min(a, b) if want_larger else max(a, b)
        word = "larger" if want_larger else "smaller"
        fa, fb, fans, foth = map(format_number, (a, b, answer, other))
        statement = pick(rng, [f"{fans} is {word} than {foth}.",
                               f"Of {fa} and {fb}, the {word} number is {fans}."])
        return Draft(instruction, f"{fa} or {fb}", Answer("number", answer), statement)

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return normalize(instruction) in {normalize(i) for i in self.larger + self.smaller}

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        parts = re.split(r"\s*(?:,|\bor\b|\band\b)\s*", input.strip().rstrip("?."))
        try:
            values = [number(p) for p in parts if p]
        except ValueError:
            raise Malformed(f"expected 'a or b', got {input!r}") from None
        if len(values) != 2 or values[0] == values[1]:
            raise Malformed(f"needs two different numbers: {input!r}")
        larger = normalize(instruction) in {normalize(i) for i in self.larger}
        return Answer("number", max(values) if larger else min(values))


class Sort:
    """Sort a list of numbers ascending or descending: "5, 3, 9" -> "3, 5, 9"."""

    name = "sort"
    kind = "numbers"
    ascending = ("Sort the numbers in ascending order.",
                 "Sort the numbers from smallest to largest.",
                 "Arrange the numbers in increasing order.")
    descending = ("Sort the numbers in descending order.",
                  "Sort the numbers from largest to smallest.",
                  "Arrange the numbers in decreasing order.")

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        count, high = {1: (3, 9), 2: (4, 99), 3: (5, 999)}[difficulty]
        values = rng.sample(range(high + 1), count)
        up = rng.random() < 0.7
        while values == sorted(values, reverse=not up):  # the input must not be the answer
            rng.shuffle(values)
        ordered = sorted(values, reverse=not up)
        order = "ascending" if up else "descending"
        statement = f"{join_numbers(values)} sorted in {order} order is {join_numbers(ordered)}."
        return Draft(pick(rng, self.ascending if up else self.descending), join_numbers(values),
                     Answer("numbers", tuple(Fraction(v) for v in ordered)), statement)

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return normalize(instruction) in {normalize(i) for i in self.ascending + self.descending}

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        values = parse_number_list(input, minimum=2)
        up = normalize(instruction) in {normalize(i) for i in self.ascending}
        return Answer("numbers", tuple(sorted(values, reverse=not up)))


class ListOps:
    """One operation on a list: largest, smallest, sum, first or last element."""

    name = "list_ops"
    kind = "number"
    operations = {
        "max": ("What is the largest number in the list?",),
        "min": ("What is the smallest number in the list?",),
        "sum": ("What is the sum of the list?", "Add up the numbers in the list."),
        "first": ("What is the first number in the list?",),
        "last": ("What is the last number in the list?",),
    }
    words = {"max": "largest number", "min": "smallest number", "sum": "sum",
             "first": "first number", "last": "last number"}

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        if difficulty == 1:
            values = [rng.randint(0, 9) for _ in range(rng.randint(3, 4))]
            operation = pick(rng, ["max", "min", "first", "last"])
        elif difficulty == 2:
            values = [rng.randint(0, 99) for _ in range(rng.randint(4, 5))]
            operation = pick(rng, ["max", "min", "first", "last", "sum"])
        else:
            values = [rng.randint(0, 99) for _ in range(rng.randint(6, 7))]
            operation = pick(rng, ["max", "min", "sum", "sum"])
        result = self._apply(operation, [Fraction(v) for v in values])
        listed = f"[{join_numbers(values)}]"
        statement = f"The {self.words[operation]} in {listed} is {format_number(result)}."
        return Draft(pick(rng, self.operations[operation]), listed, Answer("number", result),
                     statement)

    def _operation(self, instruction: str) -> str | None:
        for operation, texts in self.operations.items():
            if normalize(instruction) in {normalize(t) for t in texts}:
                return operation
        return None

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return self._operation(instruction) is not None

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        operation = self._operation(instruction)
        if operation is None:
            raise Malformed(f"unknown list operation: {instruction!r}")
        return Answer("number", self._apply(operation, parse_number_list(input)))

    def worked(self, instruction: str, input: str) -> list[Step] | None:
        """A sum as additions, the largest or smallest as pairwise max / min.

        The first or last number needs no work (None).
        """
        operation = self._operation(instruction)
        if operation is None:
            raise Malformed(f"unknown list operation: {instruction!r}")
        values = parse_number_list(input)
        op = {"sum": "+", "max": "max", "min": "min"}.get(operation)
        if op is None or len(values) < 2:
            return None
        return chain(values[0], op, values[1:])

    @staticmethod
    def _apply(operation: str, values: list[Fraction]) -> Fraction:
        return {"max": max, "min": min, "sum": sum,
                "first": lambda v: v[0], "last": lambda v: v[-1]}[operation](values)


class NextInSequence:
    """The next number of an arithmetic (or, hardest, geometric) sequence."""

    name = "sequence"
    kind = "number"
    instructions = ("What is the next number in the sequence?",
                    "Continue the sequence with the next number.")

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        if difficulty == 1:
            start, step, terms = rng.randint(0, 10), rng.randint(1, 3), 4
            values = [start + step * i for i in range(terms + 1)]
        elif difficulty == 2:
            start, step, terms = rng.randint(0, 50), rng.randint(2, 15), rng.randint(4, 5)
            if rng.random() < 0.3:
                start, step = start + step * (terms + 1), -step
            values = [start + step * i for i in range(terms + 1)]
        else:
            start, ratio = rng.randint(1, 5), rng.randint(2, 3)
            values = [start * ratio**i for i in range(5)]
        shown, following = values[:-1], values[-1]
        statement = f"The sequence {join_numbers(shown)} continues with {following}."
        return Draft(pick(rng, self.instructions), join_numbers(shown),
                     Answer("number", Fraction(following)), statement)

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return normalize(instruction) in {normalize(i) for i in self.instructions}

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        values = parse_number_list(input.strip().rstrip(".").removesuffix("...").rstrip(", "),
                                   minimum=3)
        steps = {b - a for a, b in zip(values, values[1:], strict=False)}
        if len(steps) == 1:
            return Answer("number", values[-1] + steps.pop())
        if 0 not in values:
            ratios = {b / a for a, b in zip(values, values[1:], strict=False)}
            if len(ratios) == 1:
                return Answer("number", values[-1] * ratios.pop())
        raise Malformed(f"neither arithmetic nor geometric: {input!r}")
