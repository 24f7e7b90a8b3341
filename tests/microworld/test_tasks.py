"""Every family's generator and verifier, with answers that are wrong in subtle ways."""

from __future__ import annotations

import random
from collections import Counter
from fractions import Fraction

import pytest

from distill.microworld.answers import UNITS, WEEKDAYS, Answer, format_number
from distill.microworld.families import FAMILIES
from distill.microworld.tasks import (
    DIFFICULTY_WEIGHTS,
    FAMILY_WEIGHTS,
    Unverifiable,
    check,
    check_answer,
    generate_task,
    generate_tasks,
    sample_family,
    solve,
    verify,
)
from distill.records import Example


def example(instruction: str, input: str = "", output: str = "") -> Example:
    return Example(id="t", instruction=instruction, input=input, output=output)


def subtly_wrong(answer: Answer) -> list[str]:
    """Replies a careless solver might give: close to the truth, but wrong."""
    value = answer.value
    if answer.kind == "number":
        return [format_number(value + 1), format_number(value - 1),
                f"{format_number(value)} {format_number(value + 3)}",  # extra number at the end
                f"{format_number(value)}1"]  # a digit too many
    if answer.kind == "numbers":
        values = list(value)
        swapped = values[:]
        swapped[0], swapped[1] = swapped[1], swapped[0]
        return [", ".join(map(format_number, swapped)),
                ", ".join(map(format_number, values[::-1])),
                ", ".join(map(format_number, values + [values[-1] + 1])),  # one extra
                ", ".join(map(format_number, values[:-1]))]  # one missing
    if answer.kind == "word":
        return [value[::-1] if value[::-1] != value else value + "s",  # not reversed
                value[:-1], value + value[-1], value[1:] + value[0]]
    if answer.kind == "weekday":
        index = WEEKDAYS.index(value)
        return [WEEKDAYS[(index + 1) % 7], WEEKDAYS[(index - 1) % 7]]
    if answer.kind == "quantity":
        amount, unit = value
        dimension = UNITS[unit][0]
        other = next(u for u, (d, _) in UNITS.items() if d == dimension and u != unit)
        return [f"{format_number(amount)} {other}",  # right number, wrong unit
                f"{format_number(amount * 10)} {unit}", f"{format_number(amount + 1)} {unit}"]
    raise AssertionError(answer.kind)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_generated_tasks_verify_and_subtle_mistakes_fail(family: str, difficulty: int) -> None:
    rng = random.Random(f"{family}-{difficulty}")
    for _ in range(40):
        task = generate_task(rng, family, difficulty)
        assert (task.family, task.difficulty) == (family, difficulty)
        record = task.to_example()
        result = check(record)
        assert result.status == "correct", (task, result)
        assert result.family == family
        assert result.expected == task.output
        assert verify(family, task.instruction, task.input, task.output)
        assert task.input != task.output  # Self-Instruct drops input == output
        assert len(task.instruction.split()) >= 4  # Self-Instruct drops <= 3 words
        for wrong in subtly_wrong(task.answer):
            assert not task.answer.matches(wrong), (task, wrong)
            assert check(record.model_copy(update={"output": wrong})).status == "wrong_answer"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_no_single_answer_wins_a_family(family: str) -> None:
    # a family where one constant reply scores well measures nothing: count_letter once
    # drew its letter from the word, and "1" was right four times in five
    rng = random.Random(7)
    answers = Counter(str(FAMILIES[family].generate(rng, difficulty).answer.value)
                      for difficulty in (1, 2, 3) for _ in range(200))
    assert answers.most_common(1)[0][1] / 600 < 0.4, answers.most_common(3)


@pytest.mark.parametrize(("instruction", "input", "truth"), [
    ("Add the two numbers.", "17 + 25", "42"),
    ("Compute the sum of the numbers.", "1 + 2 + 3", "6"),
    ("Subtract the second number from the first.", "52 - 17", "35"),
    ("What is the difference of the numbers?", "17 - 52", "-35"),
    ("Multiply the two numbers.", "12 × 11", "132"),
    ("Evaluate the arithmetic expression.", "(3 + 4) * 2 - 1", "13"),
    ("Calculate the value of the expression.", "3 + 4 * 2", "11"),
    ("Which number is larger?", "3.45 or 3.5", "3.5"),
    ("Which number is smaller?", "100, 99", "99"),
    ("Sort the numbers in descending order.", "5, 30, 7", "30, 7, 5"),
    ("Sort the numbers from smallest to largest.", "[9, 1, 5]", "1, 5, 9"),
    ("What is the sum of the list?", "[4, 9, 2, 7]", "22"),
    ("What is the last number in the list?", "[4, 9, 2, 7]", "7"),
    ("What is the next number in the sequence?", "2, 6, 18", "54"),
    ("Continue the sequence with the next number.", "20, 17, 14, 11", "8"),
    ("Reverse the given word.", "apple", "elppa"),
    ("How many times does the letter 'a' appear in the word?", "banana", "3"),
    ("Count how many times the letter 'z' appears in the word.", "banana", "0"),
    ("Convert 2.5 kilograms to grams.", "", "2500 grams"),
    ("How many hours are in 3 days?", "", "72 hours"),
    ("Convert 90 minutes to hours.", "", "1.5 hours"),
    ("What day of the week is it 3 days after Monday?", "", "Thursday"),
    ("What day of the week is it 10 days before Monday?", "", "Friday"),
    ("How many days are there from January 25 to February 10?", "", "16"),
    ("How many days are there from February 20 to March 1?", "", "9"),
    ("Tom has 5 apples. He buys 3 more apples. Then he gives away 2 apples. "
     "How many apples does Tom have now?", "", "6"),
    ("Anna has 3 bags with 4 coins in each bag. She loses 5 coins. "
     "How many coins does Anna have now?", "", "7"),
    ("What does this Python expression evaluate to?", "len('cat') + 2", "5"),
    ("Evaluate the Python expression.", "sum([1, 2, 3]) % 4", "2"),
    ("Evaluate the Python expression.", "-7 // 2", "-4"),
])
def test_solver_on_hand_written_tasks(instruction: str, input: str, truth: str) -> None:
    _, answer = solve(instruction, input)
    assert answer.text() == truth
    assert check_answer(example(instruction, input, truth))


@pytest.mark.parametrize(("instruction", "input", "reply", "correct"), [
    ("Add the two numbers.", "17 + 25", "The answer is 42.", True),
    ("Add the two numbers.", "17 + 25", "17 + 25 = 42", True),
    ("Add the two numbers.", "17 + 25", "\\boxed{42}", True),
    ("Add the two numbers.", "17 + 25", "The answer is 42. Check: 42 - 25 = 17.", True),
    ("Add the two numbers.", "17 + 25", "42.0", True),
    ("Add the two numbers.", "17 + 25", "The answer is 43.", False),
    ("Add the two numbers.", "17 + 25", "42 and then 17", False),
    ("Add the two numbers.", "17 + 25", "", False),
    ("Sort the numbers in ascending order.", "5, 3, 9", "The sorted list is [3, 5, 9].", True),
    ("Sort the numbers in ascending order.", "5, 3, 9", "5, 3, 9 sorted is 3, 5, 9", True),
    ("Sort the numbers in ascending order.", "5, 3, 9", "3 5 9", True),
    ("Sort the numbers in ascending order.", "5, 3, 9", "3, 5, 9, 10", False),
    ("Sort the numbers in ascending order.", "5, 3, 9", "3, 5, 9 and 9", False),
    ("Sort the numbers in ascending order.", "5, 3, 9", "9, 5, 3", False),
    ("Reverse the given word.", "apple", "The reversed word is elppa.", True),
    ("Reverse the given word.", "apple", "ELPPA", True),
    ("Reverse the given word.", "apple", "apple", False),
    ("Convert 3 meters to centimeters.", "", "300 cm", True),
    ("Convert 3 meters to centimeters.", "", "That is 300 centimetres.", True),
    ("Convert 3 meters to centimeters.", "", "300", True),
    ("Convert 3 meters to centimeters.", "", "300 meters", False),
    ("Convert 3 meters to centimeters.", "", "300 apples", False),
    ("Convert 3 meters to centimeters.", "", "30 centimeters", False),
    ("What day of the week is it 3 days after Monday?", "", "It is Thursday.", True),
    ("What day of the week is it 3 days after Monday?", "", "Monday", False),
    ("Which number is larger?", "3.45 or 3.5", "3.50", True),
    ("Which number is larger?", "3.45 or 3.5", "3.45", False),
])
def test_free_text_replies(instruction: str, input: str, reply: str, correct: bool) -> None:
    assert check(example(instruction, input, reply)).correct is correct


def test_thousands_separator_is_one_number() -> None:
    assert check_answer(example("Multiply the two numbers.", "50 * 25", "1,250"))


@pytest.mark.parametrize(("instruction", "input", "reason"), [
    ("Write a poem about the sea.", "", "unknown_task"),
    ("", "", "unknown_task"),
    ("Add the two numbers.", "banana", "malformed"),
    ("Add the two numbers.", "", "malformed"),
    ("Which number is larger?", "7 or 7", "malformed"),
    ("What is the next number in the sequence?", "1, 2, 4, 7", "malformed"),
    ("Convert 3 meters to kilograms.", "", "malformed"),
    ("Convert 100 minutes to hours.", "", "malformed"),  # 1.666...: no exact answer
    ("How many days are there from February 30 to March 2?", "", "malformed"),
    ("How many days are there from March 5 to March 1?", "", "malformed"),
    ("What day of the week is it 3 days after Funday?", "", "malformed"),
    ("Evaluate the Python expression.", "__import__('os').system('ls')", "malformed"),
    ("Evaluate the Python expression.", "10 // 0", "malformed"),
    ("Evaluate the Python expression.", "9 ** 9 ** 9", "malformed"),
    ("Evaluate the arithmetic expression.", "3 // 2", "malformed"),
    ("Tom has 5 apples. He flies 3 more apples. How many apples does Tom have now?", "",
     "malformed"),
    ("Tom has 5 apples. He gives away 9 apples. How many apples does Tom have now?", "",
     "malformed"),
    ("Tom has 5 apples. He buys 3 more pears. How many apples does Tom have now?", "",
     "malformed"),
])
def test_unverifiable_tasks_are_reported_not_raised(instruction: str, input: str,
                                                    reason: str) -> None:
    result = check(example(instruction, input, "42"))
    assert result.status == "unverifiable"
    assert result.reason == reason
    assert not check_answer(example(instruction, input, "42"))
    with pytest.raises(Unverifiable):
        solve(instruction, input)


def test_check_survives_garbage() -> None:
    rng = random.Random(0)
    alphabet = "abc Add the two numbers.?[],0123456789+-*/()'\n"
    for _ in range(500):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        check(example(text, text[::-1], text))


def test_verify_refuses_a_task_of_another_family() -> None:
    assert verify("add", "Add the two numbers.", "1 + 2", "3")
    with pytest.raises(Unverifiable):
        verify("multiply", "Add the two numbers.", "1 + 2", "3")
    with pytest.raises(Unverifiable):
        verify("no_such_family", "Add the two numbers.", "1 + 2", "3")


def test_claimed_output_and_family_are_not_trusted() -> None:
    record = Example(id="x", instruction="Add the two numbers.", input="2 + 2", output="5",
                     family="multiply")
    result = check(record)
    assert result.status == "wrong_answer"
    assert result.family == "add"
    assert result.expected == "4"


def test_family_weights_are_a_zipf_long_tail() -> None:
    weights = list(FAMILY_WEIGHTS.values())
    assert len(FAMILY_WEIGHTS) >= 12
    assert sum(weights) == pytest.approx(1.0)
    assert weights == sorted(weights, reverse=True)
    assert weights[0] / weights[-1] == pytest.approx(len(weights))  # 1 / rank
    rng = random.Random(0)
    counts = Counter(sample_family(rng) for _ in range(20000))
    for family, weight in FAMILY_WEIGHTS.items():
        assert counts[family] / 20000 == pytest.approx(weight, abs=0.01)
    assert sum(DIFFICULTY_WEIGHTS.values()) == pytest.approx(1.0)


def test_task_renders_as_example_with_family_and_difficulty() -> None:
    task = generate_task(random.Random(1), "add", 2)
    record = task.to_example()
    data = record.to_json()
    assert data["family"] == "add" and data["difficulty"] == 2
    assert data["messages"][0]["content"] == f"{task.instruction}\n\n{task.input}"
    assert data["messages"][1]["content"] == task.output
    assert Example.from_json(data).model_extra["family"] == "add"
    no_input = generate_task(random.Random(1), "units", 1).to_example()
    assert no_input.messages()[0]["content"] == no_input.instruction


def test_generation_is_deterministic_and_can_exclude() -> None:
    first = generate_tasks(50, seed=3)
    assert [t.key for t in first] == [t.key for t in generate_tasks(50, seed=3)]
    held_out = {first[0].key, first[1].key}
    again = generate_tasks(50, seed=3, exclude=held_out)
    assert not held_out & {t.key for t in again}
    unique = generate_tasks(40, seed=1, family="dates", difficulty=1, unique=True)
    assert len({t.key for t in unique}) == 40
    with pytest.raises(RuntimeError):
        generate_tasks(100, seed=1, family="dates", difficulty=1, unique=True)


def test_answer_text_is_canonical() -> None:
    assert Answer("quantity", (Fraction(1), "meters")).text() == "1 meter"
    assert Answer("numbers", (Fraction(1), Fraction(5, 2))).text() == "1, 2.5"
    assert format_number(Fraction(-1, 8)) == "-0.125"
    with pytest.raises(ValueError):
        format_number(Fraction(1, 3))
