"""The task families of the microworld, by name, from the most to the least frequent."""

from __future__ import annotations

from distill.microworld.families.common import Draft, Family, Malformed
from distill.microworld.families.numbers import (
    ADD,
    MULTIPLY,
    SUBTRACT,
    Compare,
    ListOps,
    MultiStep,
    NextInSequence,
    Sort,
)
from distill.microworld.families.python import PythonEval
from distill.microworld.families.text import CountLetter, Reverse
from distill.microworld.families.world import Dates, Units, WordProblem

# Ordered by frequency rank: the head first, the long tail last (see tasks.FAMILY_WEIGHTS).
FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        ADD, SUBTRACT, Compare(), MULTIPLY, ListOps(), Sort(), MultiStep(), Units(),
        WordProblem(), CountLetter(), NextInSequence(), Dates(), Reverse(), PythonEval(),
    )
}

__all__ = ["FAMILIES", "Draft", "Family", "Malformed"]
