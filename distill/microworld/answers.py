r"""Answers: their kinds, canonical text, and how a free-text reply is read and checked.

A reply is read the way a math checker reads one, after its reasoning trace if it has
one (`<think>...</think>`; a trace never closed states no answer). The sentence after the
last "answer is" / "answer:" / "result is" (or the content of the last `\boxed{...}`) is
the answer region when there is one, else the whole reply; then each kind takes what it
needs from that region:

- `number`: the last number ("The sum is 42." -> 42; "1,250" is one number);
- `numbers`: the last run of numbers separated by commas, spaces or "and" ("3, 5, 9"),
  or the last bracketed list; every number counts, so an extra one makes it wrong;
- `word`: the last run of letters ("elppa");
- `weekday`: the last weekday named;
- `quantity`: the last number and the unit right after it; a wrong unit is wrong, a
  missing unit is accepted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from distill.records import has_open_trace, split_trace

Kind = Literal["number", "numbers", "word", "weekday", "quantity"]

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# canonical unit (plural) -> (dimension, size in the dimension's base unit)
UNITS: dict[str, tuple[str, Fraction]] = {
    "millimeters": ("length", Fraction(1, 1000)),
    "centimeters": ("length", Fraction(1, 100)),
    "meters": ("length", Fraction(1)),
    "kilometers": ("length", Fraction(1000)),
    "grams": ("mass", Fraction(1)),
    "kilograms": ("mass", Fraction(1000)),
    "seconds": ("time", Fraction(1)),
    "minutes": ("time", Fraction(60)),
    "hours": ("time", Fraction(3600)),
    "days": ("time", Fraction(86400)),
    "weeks": ("time", Fraction(604800)),
    "milliliters": ("volume", Fraction(1, 1000)),
    "liters": ("volume", Fraction(1)),
}
_UNIT_ALIASES = {
    "mm": "millimeters", "cm": "centimeters", "m": "meters", "km": "kilometers",
    "g": "grams", "kg": "kilograms", "s": "seconds", "sec": "seconds", "secs": "seconds",
    "min": "minutes", "mins": "minutes", "h": "hours", "hr": "hours", "hrs": "hours",
    "ml": "milliliters", "l": "liters",
    "metres": "meters", "centimetres": "centimeters", "millimetres": "millimeters",
    "kilometres": "kilometers", "litres": "liters", "millilitres": "milliliters",
}


def unit_name(word: str) -> str | None:
    """The canonical (plural) name of a unit word: "meter", "m", "metres" -> "meters"."""
    word = word.lower().strip(".")
    if word in UNITS:
        return word
    if word + "s" in UNITS:
        return word + "s"
    if word in _UNIT_ALIASES:
        return _UNIT_ALIASES[word]
    if word.endswith("s") and word[:-1] in _UNIT_ALIASES:
        return _UNIT_ALIASES[word[:-1]]
    if word + "s" in _UNIT_ALIASES:
        return _UNIT_ALIASES[word + "s"]
    return None


def unit_text(unit: str, value: Fraction) -> str:
    """The unit as written after `value`: "1 meter", "3 meters"."""
    return unit[:-1] if value == 1 else unit


@dataclass(frozen=True)
class Answer:
    """The true answer of a task: its kind and value.

    value: a `Fraction` (number), a tuple of Fractions (numbers), a lower-case string
    (word), a weekday name (weekday), or a `(Fraction, unit)` pair (quantity).
    """

    kind: Kind
    value: Any

    def text(self) -> str:
        """The canonical reply: the answer alone, e.g. "42", "3, 5, 9", "300 centimeters"."""
        if self.kind == "number":
            return format_number(self.value)
        if self.kind == "numbers":
            return ", ".join(format_number(v) for v in self.value)
        if self.kind == "quantity":
            value, unit = self.value
            return f"{format_number(value)} {unit_text(unit, value)}"
        return str(self.value)

    def matches(self, reply: str) -> bool:
        """Whether a free-text reply states this answer."""
        region = answer_region(reply)
        if self.kind == "number":
            got = last_number(region)
            return got is not None and got == self.value
        if self.kind == "numbers":
            got = last_number_list(region)
            return got is not None and tuple(got) == tuple(self.value)
        if self.kind == "word":
            got = last_word(region)
            return got is not None and got == self.value.lower()
        if self.kind == "weekday":
            got = last_weekday(region)
            return got is not None and got == self.value
        if self.kind == "quantity":
            got = last_quantity(region)
            if got is None:
                return False
            value, unit = got
            target_value, target_unit = self.value
            return value == target_value and unit in (None, target_unit)
        raise ValueError(f"unknown answer kind {self.kind!r}")


def number(text: str) -> Fraction:
    """Parse "42", "-7", "3.25", "1,250" exactly."""
    return Fraction(text.replace(",", ""))


def format_number(value: Fraction | int) -> str:
    """Exact decimal text of a number whose decimal expansion ends: 7, -3, 2.5, 0.125."""
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    if not is_finite_decimal(value):
        raise ValueError(f"{value} has no finite decimal form")
    sign = "-" if value < 0 else ""
    value = abs(value)
    whole, rest = divmod(value.numerator, value.denominator)
    digits = ""
    while rest:
        rest *= 10
        digit, rest = divmod(rest, value.denominator)
        digits += str(digit)
    return f"{sign}{whole}.{digits}"


def is_finite_decimal(value: Fraction) -> bool:
    """True when the decimal expansion of `value` ends (denominator 2^a 5^b)."""
    denominator = Fraction(value).denominator
    for prime in (2, 5):
        while denominator % prime == 0:
            denominator //= prime
    return denominator == 1


# A number: thousands groups ("1,250", no space after the comma) or plain digits, with an
# optional sign and decimals. "3, 5" is two numbers.
NUMBER_RE = r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w])"
_NUMBER = re.compile(NUMBER_RE)
_MARKER = re.compile(r"(?:answer|result)\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_SENTENCE_END = re.compile(r"\.(?:\s|$)|\n")
_LIST_RUN = re.compile(NUMBER_RE + r"(?:(?:\s*,\s*(?:and\s+)?|\s+and\s+|\s+)" + NUMBER_RE + r")+")
_BRACKETED = re.compile(r"\[([^\[\]]*)\]")
_WORD = re.compile(r"[A-Za-z]+")
_WEEKDAY = re.compile(r"\b(" + "|".join(WEEKDAYS) + r")\b", re.IGNORECASE)
_QUANTITY = re.compile(NUMBER_RE + r"(?:\s*([A-Za-z]+))?")


def answer_region(reply: str) -> str:
    """The part of a reply that states the answer (see the module docstring)."""
    # A reasoning trace is not the answer: read what follows it; a trace never closed
    # (cut off while thinking) states no answer, whatever numbers it holds.
    if has_open_trace(reply):
        return ""
    reply = split_trace(reply)[1]
    boxed = _BOXED.findall(reply)
    if boxed:
        return boxed[-1]
    markers = list(_MARKER.finditer(reply))
    if markers:
        # "The answer is 42. Check: 42 - 25 = 17." -> "42": up to the sentence's end.
        return _SENTENCE_END.split(reply[markers[-1].end():], maxsplit=1)[0]
    return reply


def last_number(text: str) -> Fraction | None:
    """The last number in `text`, exactly."""
    found = _NUMBER.findall(text)
    return number(found[-1]) if found else None


def last_number_list(text: str) -> list[Fraction] | None:
    """The last bracketed list, else the last run of numbers; a lone number is a list of one."""
    bracketed = _BRACKETED.findall(text)
    if bracketed:
        return [number(n) for n in _NUMBER.findall(bracketed[-1])]
    runs = list(_LIST_RUN.finditer(text))
    if runs and not _NUMBER.search(text[runs[-1].end():]):
        return [number(n) for n in _NUMBER.findall(runs[-1].group(0))]
    single = last_number(text)
    return [single] if single is not None else None


def last_word(text: str) -> str | None:
    """The last run of letters, lower-cased."""
    words = _WORD.findall(text)
    return words[-1].lower() if words else None


def last_weekday(text: str) -> str | None:
    """The last weekday named in `text`, capitalised."""
    days = _WEEKDAY.findall(text)
    return days[-1].capitalize() if days else None


def last_quantity(text: str) -> tuple[Fraction, str | None] | None:
    """The last number and the unit after it: (value, canonical unit or None).

    A word after the number that is no unit ("300 apples") gives the unit "?", which
    matches no unit.
    """
    found = list(_QUANTITY.finditer(text))
    if not found:
        return None
    match = found[-1]
    value = number(_NUMBER.match(match.group(0)).group(0))
    word = match.group(1)
    if word is None:
        return value, None
    return value, unit_name(word) or "?"
