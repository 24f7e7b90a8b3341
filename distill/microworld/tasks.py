"""Tasks of the microworld: sampling them, rendering them as records, checking answers.

    from distill.microworld.tasks import generate_tasks, check
    tasks = generate_tasks(100, seed=0)           # Zipf-distributed families
    example = tasks[0].to_example()               # an `Example` with `family`, `difficulty`
    check(example).status                         # "correct" | "wrong_answer" | "unverifiable"
    worked_solution(task.instruction, task.input) # its steps ("3 + 4 = 7; ..."), or None

Family frequencies follow a Zipf law over the families' rank (`FAMILY_WEIGHTS`): a few
head families (addition, subtraction, comparison) make up most tasks and a long tail
(dates, reversing words, Python expressions) is rare, so a distillation loop that loses
the tail round after round shows it in per-family counts and scores.

Checking never trusts a record's claimed output or family: the true answer is derived
again from the instruction and input, which is all a teacher-written task has.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Literal

from distill.microworld.answers import Answer
from distill.microworld.families import FAMILIES, Malformed
from distill.microworld.families.steps import Step, Worked
from distill.records import Example

ZIPF_EXPONENT = 1.0
# family -> probability, proportional to 1 / rank ** ZIPF_EXPONENT (rank 1 = "add").
FAMILY_WEIGHTS: dict[str, float] = {
    name: 1.0 / rank**ZIPF_EXPONENT for rank, name in enumerate(FAMILIES, start=1)
}
_total = sum(FAMILY_WEIGHTS.values())
FAMILY_WEIGHTS = {name: weight / _total for name, weight in FAMILY_WEIGHTS.items()}

# Easy tasks dominate, as in real instruction data.
DIFFICULTY_WEIGHTS: dict[int, float] = {1: 0.5, 2: 0.3, 3: 0.2}


@dataclass(frozen=True)
class Task:
    """One task: its family, difficulty, text and true answer."""

    family: str
    difficulty: int
    instruction: str
    input: str
    answer: Answer
    statement: str  # the same fact as a plain sentence (the student's pretraining text)

    @property
    def output(self) -> str:
        """The canonical reply: the answer alone ("42", "3, 5, 9", "300 centimeters")."""
        return self.answer.text()

    @property
    def key(self) -> tuple[str, str]:
        """What makes two tasks the same task (used to hold benchmark items out)."""
        return task_key(self.instruction, self.input)

    def to_example(self, id: str | None = None) -> Example:
        """The task as an `Example`, with `family` and `difficulty` as extra fields."""
        return Example(id=id or task_id(self.instruction, self.input),
                       instruction=self.instruction, input=self.input, output=self.output,
                       family=self.family, difficulty=self.difficulty)


def task_key(instruction: str, input: str) -> tuple[str, str]:
    """Whitespace-normalised (instruction, input)."""
    return " ".join(instruction.split()), " ".join(input.split())


def task_id(instruction: str, input: str) -> str:
    """A stable id from the task text: "mw-<12 hex>"."""
    digest = hashlib.sha256("\x1f".join(task_key(instruction, input)).encode()).hexdigest()
    return f"mw-{digest[:12]}"


def sample_family(rng: random.Random) -> str:
    """A family name drawn from `FAMILY_WEIGHTS`."""
    return rng.choices(list(FAMILY_WEIGHTS), weights=list(FAMILY_WEIGHTS.values()))[0]


def sample_difficulty(rng: random.Random) -> int:
    """A difficulty drawn from `DIFFICULTY_WEIGHTS`."""
    return rng.choices(list(DIFFICULTY_WEIGHTS), weights=list(DIFFICULTY_WEIGHTS.values()))[0]


def generate_task(rng: random.Random, family: str | None = None,
                  difficulty: int | None = None) -> Task:
    """One task; family and difficulty are drawn from their weights unless given."""
    family = family or sample_family(rng)
    difficulty = difficulty or sample_difficulty(rng)
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")
    draft = FAMILIES[family].generate(rng, difficulty)
    return Task(family, difficulty, draft.instruction, draft.input, draft.answer,
                draft.statement)


def generate_tasks(n: int, seed: int, *, family: str | None = None,
                   difficulty: int | None = None, exclude: set[tuple[str, str]] | None = None,
                   unique: bool = False) -> list[Task]:
    """`n` tasks from a seeded generator.

    `exclude` holds task keys never to produce (held-out benchmark items); `unique`
    refuses repeats. Both give up after many fruitless draws rather than loop forever.
    """
    rng = random.Random(seed)
    tasks: list[Task] = []
    seen: set[tuple[str, str]] = set()
    misses = 0
    while len(tasks) < n:
        task = generate_task(rng, family, difficulty)
        if (exclude and task.key in exclude) or (unique and task.key in seen):
            misses += 1
            if misses > 100 * n + 1000:
                raise RuntimeError(f"cannot find {n} new tasks (family={family}, "
                                   f"difficulty={difficulty}); the space is too small")
            continue
        seen.add(task.key)
        tasks.append(task)
    return tasks


# The families whose tasks take several steps to work out (`worked_solution`): what a
# teacher that thinks is asked (the reasoning problems, the teacher's reasoning chats).
REASONING_FAMILIES = ("multistep", "word_problem", "list_ops", "units", "dates")


def reasoning_task(rng: random.Random, exclude: set[tuple[str, str]] | None = None) -> Task:
    """A task of a `REASONING_FAMILIES` family (uniform) with a worked solution."""
    while True:
        task = generate_task(rng, rng.choice(REASONING_FAMILIES))
        if (not exclude or task.key not in exclude) and worked_solution(task.instruction,
                                                                        task.input):
            return task


def reasoning_tasks(n: int, seed: int, exclude: set[tuple[str, str]] | None = None
                    ) -> list[Task]:
    """`n` distinct tasks with worked solutions from a seeded generator."""
    rng = random.Random(seed)
    tasks: list[Task] = []
    seen: set[tuple[str, str]] = set()
    for _ in range(100 * n + 1000):
        if len(tasks) == n:
            return tasks
        task = reasoning_task(rng, exclude)
        if task.key not in seen:
            seen.add(task.key)
            tasks.append(task)
    raise RuntimeError(f"cannot find {n} distinct reasoning tasks; the space is too small")


class Unverifiable(ValueError):
    """A task whose text no family can solve; `reason` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def solve(instruction: str, input: str = "") -> tuple[str, Answer]:
    """(family, true answer) of a task, from its text alone.

    Raises `Unverifiable` with reason "unknown_task" (no family writes instructions like
    this) or "malformed" (a family's instruction, but no single exact answer).
    """
    claimed = [name for name, family in FAMILIES.items() if family.claims(instruction)]
    if not claimed:
        raise Unverifiable("unknown_task", instruction[:80])
    name = claimed[0]
    try:
        return name, FAMILIES[name].solve(instruction, input)
    except Malformed as error:
        raise Unverifiable("malformed", str(error)) from None


def worked_solution(instruction: str, input: str = "") -> list[Step] | None:
    """The steps that solve a task, from its text; None when its family has none to show.

    Raises `Unverifiable` as `solve` does (see `distill.microworld.families.steps`).
    """
    name, _ = solve(instruction, input)
    family = FAMILIES[name]
    if not isinstance(family, Worked):
        return None
    try:
        return family.worked(instruction, input)
    except Malformed as error:
        raise Unverifiable("malformed", str(error)) from None


Status = Literal["correct", "wrong_answer", "unverifiable"]


@dataclass(frozen=True)
class Check:
    """The verdict on one answered task."""

    status: Status
    family: str | None = None
    expected: str | None = None  # the true answer's canonical text
    reason: str = ""  # for unverifiable tasks: "unknown_task" or "malformed"

    @property
    def correct(self) -> bool:
        """True only for a verified correct answer."""
        return self.status == "correct"


def verify(family: str, instruction: str, input: str, answer: str) -> bool:
    """Whether `answer` (free text) solves the task, which must belong to `family`.

    Raises `Unverifiable` when the text cannot be solved, or belongs to another family.
    """
    if family not in FAMILIES:
        raise Unverifiable("unknown_task", f"no family {family!r}")
    found, truth = solve(instruction, input)
    if found != family:
        raise Unverifiable("unknown_task", f"a {found} task, not {family}")
    return truth.matches(answer)


def check(example: Example) -> Check:
    """Check a record's output against the answer derived from its own task text."""
    try:
        family, truth = solve(example.instruction, example.input)
    except Unverifiable as error:
        return Check("unverifiable", reason=error.reason)
    status: Status = "correct" if truth.matches(example.output) else "wrong_answer"
    return Check(status, family=family, expected=truth.text())


def check_answer(example: Example) -> bool:
    """True when the record's output is verifiably correct (see `check` for why not)."""
    return check(example).correct
