"""Word families: reversing a word, counting a letter in a word."""

from __future__ import annotations

import random
import re
from fractions import Fraction

from distill.microworld.answers import Answer
from distill.microworld.families.common import Draft, Malformed, normalize, pick

# Everyday words by length band; reversal and counting are learned from these.
WORDS = {
    1: ("cat", "dog", "sun", "map", "cup", "hat", "pen", "box", "red", "top", "bird", "fish",
        "tree", "book", "lamp", "milk", "rain", "star", "ship", "frog", "moon", "door",
        "cake", "ball", "leaf", "road", "bell", "coin", "desk", "kite"),
    2: ("apple", "house", "water", "green", "table", "bread", "chair", "river", "plant",
        "stone", "cloud", "light", "music", "paper", "horse", "garden", "window", "orange",
        "banana", "pencil", "rabbit", "yellow", "summer", "button", "candle", "forest",
        "planet", "silver", "winter", "castle"),
    3: ("morning", "blanket", "kitchen", "teacher", "rainbow", "chicken", "library",
        "picture", "dolphin", "holiday", "elephant", "mountain", "sandwich", "notebook",
        "triangle", "umbrella", "computer", "painting", "treasure", "baseball", "football",
        "sunshine", "marble", "cabinet", "battery", "journey", "lantern", "pancake",
        "balloon", "giraffe"),
}
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _counts(word: str) -> dict[str, int]:
    return {letter: word.count(letter) for letter in set(word)}


class Reverse:
    """Reverse a word: "apple" -> "elppa"."""

    name = "reverse"
    kind = "word"
    instructions = ("Reverse the given word.", "Write the word backwards.",
                    "Spell the word backwards.")

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        word = pick(rng, WORDS[difficulty])
        backwards = word[::-1]
        statement = pick(rng, [f"{word} reversed is {backwards}.",
                               f"The word {word} spelled backwards is {backwards}."])
        return Draft(pick(rng, self.instructions), word, Answer("word", backwards), statement)

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return normalize(instruction) in {normalize(i) for i in self.instructions}

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        word = input.strip().strip("\"'.")
        if not re.fullmatch(r"[A-Za-z]+", word):
            raise Malformed(f"expected one word, got {input!r}")
        return Answer("word", word.lower()[::-1])


class CountLetter:
    """How often a letter occurs in a word: 'a' in "banana" -> "3"."""

    name = "count_letter"
    kind = "number"
    templates = ("How many times does the letter '{letter}' appear in the word?",
                 "Count how many times the letter '{letter}' appears in the word.")
    _patterns = (
        re.compile(r"how many times does the letter '([a-z])' appear in the word\?"),
        re.compile(r"count how many times the letter '([a-z])' appears in the word\."),
    )

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard: longer words)."""
        # The count is drawn first, uniformly over 0, 1 and 2, and then a word and a letter
        # with that count: letters drawn from the word itself occur once nearly always, so
        # answering "1" to every task would score about 80 %.
        count = pick(rng, [0, 1, 2])
        words = [w for w in WORDS[difficulty] if count == 0 or count in _counts(w).values()]
        word = pick(rng, words)
        if count == 0:
            letter = pick(rng, [c for c in _LETTERS if c not in word])
        else:
            letter = pick(rng, sorted(c for c, n in _counts(word).items() if n == count))
        times = "time" if count == 1 else "times"
        statement = f"The letter '{letter}' appears {count} {times} in {word}."
        instruction = pick(rng, self.templates).format(letter=letter)
        return Draft(instruction, word, Answer("number", Fraction(count)), statement)

    def _letter(self, instruction: str) -> str | None:
        text = normalize(instruction)
        for pattern in self._patterns:
            match = pattern.fullmatch(text)
            if match:
                return match[1]
        return None

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return self._letter(instruction) is not None

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        letter = self._letter(instruction)
        word = input.strip().strip("\"'.")
        if letter is None or not re.fullmatch(r"[A-Za-z]+", word):
            raise Malformed(f"expected a letter and one word: {instruction!r} / {input!r}")
        return Answer("number", Fraction(word.lower().count(letter)))
