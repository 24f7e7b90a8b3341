"""The Python family: what a short Python expression evaluates to."""

from __future__ import annotations

import random
from fractions import Fraction

from distill.microworld.answers import Answer
from distill.microworld.families.common import Draft, normalize, pick
from distill.microworld.families.expressions import evaluate
from distill.microworld.families.text import WORDS


class PythonEval:
    """Evaluate a Python expression: "len('cat') + 2" -> "5"."""

    name = "python_eval"
    kind = "number"
    instructions = ("What does this Python expression evaluate to?",
                    "Evaluate the Python expression.")

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        a, b, c = rng.randint(2, 20), rng.randint(2, 9), rng.randint(1, 9)
        word = pick(rng, WORDS[1] + WORDS[2])
        if difficulty == 1:
            expression = pick(rng, [f"{a} % {b}", f"{a} // {b}", f"abs(-{a})", f"{a} - {b}"])
        elif difficulty == 2:
            expression = pick(rng, [f"max({a}, {b}) - {c}", f"min({a}, {b}) * {c}",
                                    f"len('{word}') + {c}", f"{a} * {b} % {c + 1}"])
        else:
            expression = pick(rng, [f"sum([{a}, {b}, {c}]) % {b}", f"len('{word}') * {c} - {b}",
                                    f"max([{a}, {b}, {c}]) // {b}",
                                    f"abs({b} - {a}) + min({c}, {b})"])
        value = evaluate(expression, python=True)
        return Draft(pick(rng, self.instructions), expression,
                     Answer("number", Fraction(value)), f"{expression} evaluates to {value}.")

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return normalize(instruction) in {normalize(i) for i in self.instructions}

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        return Answer("number", Fraction(evaluate(input, python=True)))
