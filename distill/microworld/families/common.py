"""What every task family shares: the draft a generator writes and small text helpers."""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol, TypeVar

from distill.microworld.answers import NUMBER_RE, Answer, Kind, number

T = TypeVar("T")

LEVELS = (1, 2, 3)


class Malformed(ValueError):
    """A task that names a family but whose text has no single exact answer."""


@dataclass(frozen=True)
class Draft:
    """One generated task: its text, its answer, and the same fact as a plain sentence.

    `statement` is what the student's base model reads in pretraining ("17 + 25 = 42."):
    the world's facts without the instruction / answer form.
    """

    instruction: str
    input: str
    answer: Answer
    statement: str


class Family(Protocol):
    """A task family: a generator and an exact solver for the tasks it writes."""

    name: str
    kind: Kind  # the main kind of answer (a family may mix, e.g. dates)

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        ...

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        ...

    def solve(self, instruction: str, input: str) -> Answer:
        """The exact answer, re-derived from the task text; raises `Malformed`."""
        ...


def normalize(text: str) -> str:
    """Lower case, single spaces, no surrounding blanks: how instructions are compared."""
    return " ".join(text.lower().split())


def pick(rng: random.Random, options: Sequence[T]) -> T:
    """`rng.choice`, named for reading."""
    return options[rng.randrange(len(options))]


_NUMBER = re.compile(NUMBER_RE)
_NUMBER_LIST = re.compile(r"^\[?\s*" + NUMBER_RE + r"(?:\s*,\s*" + NUMBER_RE + r")*\s*\]?$")


def parse_number_list(text: str, *, minimum: int = 1) -> list[Fraction]:
    """Parse "4, 9, 2" or "[4, 9, 2]"; anything else is `Malformed`."""
    text = text.strip().rstrip(".")
    if not _NUMBER_LIST.match(text):
        raise Malformed(f"not a list of numbers: {text!r}")
    values = [number(n) for n in _NUMBER.findall(text)]
    if len(values) < minimum:
        raise Malformed(f"needs at least {minimum} numbers: {text!r}")
    return values


def join_numbers(values: Sequence[int | Fraction]) -> str:
    """Numbers as the tasks write them: "4, 9, 2"."""
    from distill.microworld.answers import format_number

    return ", ".join(format_number(v) for v in values)
