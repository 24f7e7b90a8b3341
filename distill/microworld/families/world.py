"""Everyday families: unit conversions, calendar questions, two-step word problems."""

from __future__ import annotations

import random
import re
from fractions import Fraction

from distill.microworld.answers import (
    UNITS,
    WEEKDAYS,
    Answer,
    format_number,
    is_finite_decimal,
    number,
    unit_name,
    unit_text,
)
from distill.microworld.families.common import Draft, Malformed, normalize, pick
from distill.microworld.families.steps import Step, chain, step

# (larger unit, smaller unit) pairs a person converts between.
CONVERSIONS = (
    ("kilometers", "meters"), ("meters", "centimeters"), ("centimeters", "millimeters"),
    ("kilograms", "grams"), ("liters", "milliliters"), ("hours", "minutes"),
    ("minutes", "seconds"), ("days", "hours"), ("weeks", "days"),
)
_NUM = r"(-?\d+(?:\.\d+)?)"


class Units:
    """Unit conversion: "Convert 3 meters to centimeters." -> "300 centimeters"."""

    name = "units"
    kind = "quantity"
    _patterns = (
        re.compile(rf"convert {_NUM} ([a-z]+) (?:in)?to ([a-z]+)\."),
        re.compile(rf"how many ([a-z]+) are (?:there )?in {_NUM} ([a-z]+)\?"),
    )

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        big, small = pick(rng, CONVERSIONS)
        factor = UNITS[big][1] / UNITS[small][1]
        if difficulty == 1:
            value, source, target = Fraction(rng.randint(1, 9)), big, small
        elif difficulty == 2:
            value, source, target = Fraction(rng.randint(10, 99)), big, small
        else:  # smaller to larger unit, whole or half: 3500 grams -> 3.5 kilograms
            while True:
                result = Fraction(rng.randint(2, 40), 2)
                if (result * factor).denominator == 1:
                    break
            value, source, target = result * factor, small, big
        result = value * UNITS[source][1] / UNITS[target][1]
        amount = f"{format_number(value)} {unit_text(source, value)}"
        answer = Answer("quantity", (result, target))
        if rng.random() < 0.6:
            instruction = f"Convert {amount} to {target}."
        else:
            instruction = f"How many {target} are in {amount}?"
        statement = pick(rng, [f"{amount} is {answer.text()}.",
                               f"There are {answer.text()} in {amount}."])
        return Draft(instruction, "", answer, statement)

    def _parse(self, instruction: str) -> tuple[Fraction, str | None, str | None] | None:
        text = normalize(instruction)
        match = self._patterns[0].fullmatch(text)
        if match:
            return number(match[1]), unit_name(match[2]), unit_name(match[3])
        match = self._patterns[1].fullmatch(text)
        if match:
            return number(match[2]), unit_name(match[3]), unit_name(match[1])
        return None

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        return self._parse(instruction) is not None

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        parsed = self._parse(instruction)
        if parsed is None or input.strip():
            raise Malformed(f"not a conversion question: {instruction!r}")
        value, source, target = parsed
        if source is None or target is None or UNITS[source][0] != UNITS[target][0]:
            raise Malformed(f"cannot convert between these units: {instruction!r}")
        result = value * UNITS[source][1] / UNITS[target][1]
        if not is_finite_decimal(result):
            raise Malformed(f"no exact decimal answer: {instruction!r}")
        return Answer("quantity", (result, target))

    def worked(self, instruction: str, input: str) -> list[Step] | None:
        """One step: times the factor to a smaller unit, divided by it to a larger one."""
        _, target = self.solve(instruction, input).value
        value, source, _ = self._parse(instruction) or (Fraction(0), None, None)
        if source is None:  # solve() already refused a task without both units
            raise Malformed(f"not a conversion question: {instruction!r}")
        factor = UNITS[source][1] / UNITS[target][1]
        if factor.denominator == 1:
            return [step(value, "*", factor)]
        if factor.numerator == 1:
            return [step(value, "/", 1 / factor)]
        return None


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")
MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # a common (non-leap) year


def _day_of_year(month: int, day: int) -> int:
    return sum(MONTH_DAYS[:month]) + day


class Dates:
    """Weekday arithmetic and day counts between two dates of a common year."""

    name = "dates"
    kind = "number"  # or "weekday", depending on the question
    _weekday = re.compile(r"what day of the week is it (\d+) days? (after|before) ([a-z]+)\?")
    _between = re.compile(r"how many days are there from ([a-z]+) (\d+) to ([a-z]+) (\d+)\?")

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        if difficulty == 1 or (difficulty == 3 and rng.random() < 0.3):
            start = pick(rng, WEEKDAYS)
            days = rng.randint(1, 6) if difficulty == 1 else rng.randint(7, 20)
            after = difficulty == 1 or rng.random() < 0.5
            shift = days if after else -days
            result = WEEKDAYS[(WEEKDAYS.index(start) + shift) % 7]
            direction = "after" if after else "before"
            noun = "day" if days == 1 else "days"
            instruction = f"What day of the week is it {days} {noun} {direction} {start}?"
            statement = f"{days} {noun} {direction} {start} is {result}."
            return Draft(instruction, "", Answer("weekday", result), statement)
        if difficulty == 2:
            month = rng.randrange(12)
            first = rng.randint(1, MONTH_DAYS[month] - 1)
            second = rng.randint(first + 1, MONTH_DAYS[month])
            months = (month, month)
        else:
            month = rng.randrange(11)
            first = rng.randint(1, MONTH_DAYS[month])
            second = rng.randint(1, MONTH_DAYS[month + 1])
            months = (month, month + 1)
        count = _day_of_year(months[1], second) - _day_of_year(months[0], first)
        start, end = f"{MONTHS[months[0]]} {first}", f"{MONTHS[months[1]]} {second}"
        instruction = f"How many days are there from {start} to {end}?"
        statement = f"From {start} to {end} there are {count} days."
        return Draft(instruction, "", Answer("number", Fraction(count)), statement)

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        text = normalize(instruction)
        return bool(self._weekday.fullmatch(text) or self._between.fullmatch(text))

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        text = normalize(instruction)
        if input.strip():
            raise Malformed("calendar questions take no input")
        match = self._weekday.fullmatch(text)
        if match:
            start = match[3].capitalize()
            if start not in WEEKDAYS:
                raise Malformed(f"not a weekday: {match[3]!r}")
            shift = int(match[1]) * (1 if match[2] == "after" else -1)
            return Answer("weekday", WEEKDAYS[(WEEKDAYS.index(start) + shift) % 7])
        match = self._between.fullmatch(text)
        if not match:
            raise Malformed(f"not a calendar question: {instruction!r}")
        first = self._date(match[1], match[2])
        second = self._date(match[3], match[4])
        if second < first:
            raise Malformed("the second date comes before the first")
        return Answer("number", Fraction(second - first))

    def worked(self, instruction: str, input: str) -> list[Step] | None:
        """A day count month by month ("31 - 5 = 26; 26 + 10 = 36").

        The rest of the first month, each whole month between, then the days into the
        last. Weekday questions have nothing to add up (None).
        """
        self.solve(instruction, input)  # the same checks as the answer
        match = self._between.fullmatch(normalize(instruction))
        if not match:
            return None
        names = [m.lower() for m in MONTHS]
        first, second = names.index(match[1]), names.index(match[3])
        day, last_day = int(match[2]), int(match[4])
        if first == second:
            return [step(last_day, "-", day)]
        whole = [MONTH_DAYS[m] for m in range(first + 1, second)]
        return [step(MONTH_DAYS[first], "-", day),
                *chain(MONTH_DAYS[first] - day, "+", [*whole, last_day])]

    @staticmethod
    def _date(month_name: str, day: str) -> int:
        names = [m.lower() for m in MONTHS]
        if month_name not in names or not 1 <= int(day) <= MONTH_DAYS[names.index(month_name)]:
            raise Malformed(f"not a date of a common year: {month_name} {day}")
        return _day_of_year(names.index(month_name), int(day))


NAMES = {"Tom": "he", "Anna": "she", "Ben": "he", "Mia": "she", "Sam": "he", "Lily": "she",
         "Max": "he", "Emma": "she", "Leo": "he", "Zoe": "she"}
ITEMS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "coins", "cards",
         "stamps", "shells")
GAIN = ("buys", "finds", "gets")
LOSS = ("gives away", "loses", "sells")


class WordProblem:
    """A story with two steps: "Tom has 5 apples. He buys 3 more apples. ..." -> "6"."""

    name = "word_problem"
    kind = "number"
    _start = re.compile(r"([a-z]+) has (\d+) ([a-z]+)\.")
    _bags = re.compile(r"([a-z]+) has (\d+) bags with (\d+) ([a-z]+) in each bag\.")
    _gain = re.compile(r"(?:then )?(he|she) (" + "|".join(GAIN) + r") (\d+) more ([a-z]+)\.")
    _loss = re.compile(r"(?:then )?(he|she) (" + "|".join(LOSS) + r") (\d+) ([a-z]+)\.")
    _question = re.compile(r"how many ([a-z]+) does ([a-z]+) have now\?")

    def generate(self, rng: random.Random, difficulty: int) -> Draft:
        """A new task at `difficulty` (1 easy .. 3 hard)."""
        name = pick(rng, sorted(NAMES))
        pronoun = NAMES[name].capitalize()
        items = pick(rng, ITEMS)
        high = 9 if difficulty == 1 else 60
        if difficulty == 3:
            bags, each = rng.randint(2, 9), rng.randint(2, 12)
            total = bags * each
            opening = f"{name} has {bags} bags with {each} {items} in each bag."
            steps = [self._step(rng, pronoun, items, total, first=True)]
        else:
            total = rng.randint(3, high)
            opening = f"{name} has {total} {items}."
            steps = []
            kinds = ["gain", "loss"] if difficulty == 1 or rng.random() < 0.5 else ["loss", "gain"]
            for position, kind in enumerate(kinds):
                step = self._step(rng, pronoun, items, total, first=position == 0, kind=kind,
                                  high=high)
                steps.append(step)
        value = total
        for _, delta in steps:
            value += delta
        sentences = [opening] + [text for text, _ in steps]
        instruction = " ".join(sentences + [f"How many {items} does {name} have now?"])
        statement = " ".join(sentences + [f"Now {name} has {value} {items}."])
        return Draft(instruction, "", Answer("number", Fraction(value)), statement)

    @staticmethod
    def _step(rng: random.Random, pronoun: str, items: str, total: int, *, first: bool,
              kind: str | None = None, high: int = 20) -> tuple[str, int]:
        kind = kind or pick(rng, ["gain", "loss"])
        lead = "" if first else "Then "
        who = pronoun if first else pronoun.lower()
        # Amounts start at 2: the items are plural nouns ("gives away 1 marbles" is wrong).
        if kind == "gain":
            amount = rng.randint(2, high)
            return f"{lead}{who} {pick(rng, GAIN)} {amount} more {items}.", amount
        amount = rng.randint(2, max(2, total - 1))
        return f"{lead}{who} {pick(rng, LOSS)} {amount} {items}.", -amount

    def claims(self, instruction: str) -> bool:
        """Whether `instruction` is written the way this family writes its tasks."""
        text = normalize(instruction)
        return bool(re.match(r"[a-z]+ has \d+ ", text)) and bool(
            re.search(r"how many [a-z]+ does [a-z]+ have now\?$", text))

    def solve(self, instruction: str, input: str) -> Answer:
        """The true answer, from the task text alone; raises `Malformed`."""
        start, steps = self._story(instruction, input)
        return Answer("number", steps[-1].result if steps else Fraction(start))

    def worked(self, instruction: str, input: str) -> list[Step] | None:
        """The bags multiplied out, then each gain or loss: "4 * 6 = 24; 24 - 5 = 19"."""
        return self._story(instruction, input)[1] or None

    def _story(self, instruction: str, input: str) -> tuple[int, list[Step]]:
        """(the count the story opens with, the steps that change it); raises `Malformed`."""
        if input.strip():
            raise Malformed("word problems take no input")
        sentences = re.findall(r"[^.?]+[.?]", normalize(instruction))
        sentences = [s.strip() for s in sentences]
        if len(sentences) < 2:
            raise Malformed("too short for a word problem")
        opening, *story, question = sentences
        steps: list[Step] = []
        match = self._bags.fullmatch(opening)
        if match:
            name, items = match[1], match[4]
            steps.append(step(int(match[2]), "*", int(match[3])))
            start = int(steps[-1].result)
        else:
            match = self._start.fullmatch(opening)
            if not match:
                raise Malformed(f"cannot read the opening: {opening!r}")
            name, start, items = match[1], int(match[2]), match[3]
        value = Fraction(start)
        pronoun = NAMES.get(name.capitalize())
        for sentence in story:
            gain, loss = self._gain.fullmatch(sentence), self._loss.fullmatch(sentence)
            found = gain or loss
            if not found or found[4] != items or (pronoun and found[1] != pronoun):
                raise Malformed(f"cannot read the step: {sentence!r}")
            steps.append(step(value, "+" if gain else "-", int(found[3])))
            value = steps[-1].result
            if value < 0:
                raise Malformed("the story takes away more than there is")
        match = self._question.fullmatch(question)
        if not match or match[1] != items or match[2] != name:
            raise Malformed(f"cannot read the question: {question!r}")
        return start, steps
