"""Worked solutions of the multi-step families, the step checker, and the thinker.

The generators' tasks get step-by-step solutions derived from their text; each step is
checked on its own, and the built thinker, asked with the reasoning method's system
prompt, writes such traces (the last tests load the cached build).
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from distill.microworld.families.steps import Step, check_trace, parse_step, step, trace_text
from distill.microworld.tasks import (
    REASONING_FAMILIES,
    Unverifiable,
    generate_task,
    reasoning_tasks,
    worked_solution,
)
from distill.records import join_trace


@pytest.mark.parametrize("family", ["add", "subtract", "multiply", *REASONING_FAMILIES])
@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_every_step_checks_and_the_last_one_is_the_answer(family: str, difficulty: int) -> None:
    rng = random.Random(f"{family}-{difficulty}")
    solved = 0
    for _ in range(300):
        task = generate_task(rng, family, difficulty)
        steps = worked_solution(task.instruction, task.input)
        if steps is None:  # first / last of a list, weekday questions: nothing to work out
            assert (family, task.instruction.split()[3]) in {("list_ops", "first"),
                                                            ("list_ops", "last")} \
                or task.answer.kind == "weekday", task
            continue
        solved += 1
        assert all(s.correct for s in steps)
        value = task.answer.value[0] if task.answer.kind == "quantity" else task.answer.value
        assert steps[-1].result == value
        trace = trace_text(steps)
        assert "\n" not in trace  # the benchmark stops generating at a newline
        check = check_trace(trace)
        assert (check.steps, check.correct_steps, check.final) == (len(steps), len(steps),
                                                                    value)
        # the answer the teacher writes after its trace is read as the answer
        assert task.answer.matches(join_trace(trace, task.output))
    # the easiest dates tasks are all weekday questions
    assert solved == 0 if (family, difficulty) == ("dates", 1) else solved >= 100


@pytest.mark.parametrize(("instruction", "input", "trace"), [
    ("Evaluate the arithmetic expression.", "(3 + 4) * 2 - 5", "3 + 4 = 7; 7 * 2 = 14; 14 - 5 = 9"),
    ("Evaluate the arithmetic expression.", "(12 + 3) * (8 - 2)",
     "12 + 3 = 15; 8 - 2 = 6; 15 * 6 = 90"),
    ("Compute the value of the expression.", "4 + 5 * 6", "5 * 6 = 30; 4 + 30 = 34"),
    ("Tom has 4 bags with 6 marbles in each bag. He loses 5 marbles. "
     "How many marbles does Tom have now?", "", "4 * 6 = 24; 24 - 5 = 19"),
    ("Anna has 5 apples. She buys 3 more apples. Then she gives away 2 apples. "
     "How many apples does Anna have now?", "", "5 + 3 = 8; 8 - 2 = 6"),
    ("What is the sum of the list?", "[4, 9, 2]", "4 + 9 = 13; 13 + 2 = 15"),
    ("What is the largest number in the list?", "[4, 9, 2]", "max(4, 9) = 9; max(9, 2) = 9"),
    ("Convert 3500 grams to kilograms.", "", "3500 / 1000 = 3.5"),
    ("How many minutes are in 3 hours?", "", "3 * 60 = 180"),
    ("How many days are there from March 5 to April 10?", "", "31 - 5 = 26; 26 + 10 = 36"),
    ("How many days are there from January 30 to March 2?", "",
     "31 - 30 = 1; 1 + 28 = 29; 29 + 2 = 31"),
    ("How many days are there from May 3 to May 20?", "", "20 - 3 = 17"),
    ("Add the two numbers.", "1 + 2 + 3", "1 + 2 = 3; 3 + 3 = 6"),
])
def test_worked_solutions_of_hand_written_tasks(instruction: str, input: str, trace: str) -> None:
    assert trace_text(worked_solution(instruction, input)) == trace


def test_tasks_without_work_have_no_worked_solution_and_garbage_is_unverifiable() -> None:
    assert worked_solution("What is the first number in the list?", "[4, 9, 2]") is None
    assert worked_solution("What day of the week is it 3 days after Monday?") is None
    assert worked_solution("Which number is larger?", "3 or 7") is None  # no worked family
    with pytest.raises(Unverifiable):
        worked_solution("Write a poem.")
    with pytest.raises(Unverifiable, match="malformed"):
        worked_solution("Evaluate the arithmetic expression.", "3 / 0")


def test_the_step_checker_finds_wrong_and_unreadable_steps() -> None:
    assert check_trace("3 + 4 = 7; 7 * 2 = 14").all_correct
    wrong = check_trace("3 + 4 = 8; 8 * 2 = 16")  # the first is wrong, the second right
    assert (wrong.steps, wrong.correct_steps, wrong.final) == (2, 1, Fraction(16))
    assert not wrong.all_correct
    unreadable = check_trace("first add them; 7 * 2 = 14")
    assert (unreadable.steps, unreadable.correct_steps) == (2, 1)
    assert check_trace("").steps == 0 and not check_trace("").all_correct
    assert parse_step("max(4, 9) = 9") == Step(Fraction(4), "max", Fraction(9), Fraction(9))
    assert parse_step("3500 / 1000 = 3.5").correct
    assert not parse_step("7 / 0 = 0").correct
    assert parse_step("-5 - -3 = -2").correct
    assert step(7, "-", 9).text() == "7 - 9 = -2"


def test_reasoning_tasks_are_distinct_seeded_and_never_benchmark_items() -> None:
    from distill.microworld.benchmark import benchmark_keys

    held_out = benchmark_keys()
    tasks = reasoning_tasks(300, seed=3, exclude=held_out)
    assert len({t.key for t in tasks}) == 300 and not {t.key for t in tasks} & held_out
    assert {t.family for t in tasks} == set(REASONING_FAMILIES)
    assert {t.difficulty for t in tasks} == {1, 2, 3}
    assert [t.key for t in reasoning_tasks(20, seed=3, exclude=held_out)] == \
        [t.key for t in tasks[:20]]


def test_the_thinker_reads_reasoning_chats_under_the_reasoning_prompt() -> None:
    from distill.generate.reasoning import SYSTEM_PROMPT
    from distill.microworld.corpus import reasoning_document, teacher_documents, tokenizer_texts
    from distill.microworld.train import train_tokenizer

    tokenizer = train_tokenizer(tokenizer_texts(random.Random(0), 50), 400)
    task = reasoning_tasks(1, seed=5)[0]
    document = reasoning_document(task, tokenizer, SYSTEM_PROMPT)
    assert document.prompt.startswith(f"<|system|>\n{SYSTEM_PROMPT}<|end|>\n<|user|>\n")
    assert document.prompt.endswith("<|assistant|>\n") and document.kind == "reasoning"
    trace = trace_text(worked_solution(task.instruction, task.input))
    assert document.target == f"<think>{trace}</think>{task.output}<|end|>"
    documents = teacher_documents(5, 0, random.Random(0), None, tokenizer, family_exponent=0.3,
                                  n_reasoning=4, system_prompt=SYSTEM_PROMPT)
    assert sorted(d.kind for d in documents) == ["chat"] * 5 + ["reasoning"] * 4
    # chats without the prompt are answered as before: the answer alone
    assert all("<think>" not in d.target for d in documents if d.kind == "chat")


@pytest.mark.parametrize(("reply", "right"), [
    ("<think>3 + 4 = 7; 7 * 2 = 14</think>14", True),
    ("<think>3 + 4 = 7; 7 * 2 = 15</think>14", True),  # the answer is what is scored
    ("<think>3 + 4 = 7; 7 * 2 = 14</think>15", False),
    ("<think>3 + 4 = 7; 7 * 2 = 14", False),  # cut off while thinking: no answer
    ("<think>3 + 4 = 7</think>", False),
    ("14", True),
])
def test_benchmark_scores_the_answer_after_the_trace(reply: str, right: bool) -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "eval" / "tasks" / "microworld"))
    from utils import process_results

    doc = {"instruction": "Evaluate the arithmetic expression.", "input": "(3 + 4) * 2"}
    assert process_results(doc, [reply]) == {"exact_match": float(right)}


# -- the built thinker (microworld:thinker) -----------------------------------------------------


@pytest.fixture(scope="module")
def thinker_dir():
    from distill.microworld.build import build_models

    return build_models(quiet=True, models=("thinker",))["thinker"]  # cached after the first build


def test_the_thinker_writes_checkable_traces_under_the_reasoning_prompt(thinker_dir) -> None:
    """Greedy, 80 fresh tasks of the multi-step families.

    Measured on the thinker of build 37df83ec41e0992d: every reply holds a trace, 40.6 %
    of the steps written compute right, 28.8 % of traces have every step right (20 % are
    the worked solution exactly), 22.5 % of answers are right (20 % after steps that all
    check). On the benchmark's 150 items of these families it answers about as often
    right with a trace as without (0.26 and 0.27, `distill microworld build
    --evaluate`): a tiny model's arithmetic is the limit. The bounds leave room for
    another CPU's arithmetic.
    """
    from distill.microworld.benchmark import benchmark_keys
    from distill.microworld.evaluate import chat_prompt, complete, load, reasoning

    model, tokenizer = load(thinker_dir)
    tasks = reasoning_tasks(80, seed=20_000, exclude=benchmark_keys())
    scores = reasoning(model, tokenizer, tasks)
    print({k: v for k, v in scores.items() if k != "samples"})
    assert scores["traced"] >= 0.95
    assert scores["step_accuracy"] >= 0.3
    assert scores["steps_check"] >= 0.2
    assert scores["right"] >= 0.15
    # without the system prompt it answers as it always did: no trace
    plain = complete(model, tokenizer, [chat_prompt(tokenizer, t) for t in tasks[:30]],
                     max_new_tokens=32)
    assert not any("<think>" in reply or "</think>" in reply for reply in plain)
