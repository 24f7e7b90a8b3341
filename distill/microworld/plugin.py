"""The microworld as a distill plugin: what it adds to the core, through the registries.

Loaded through the `distill.plugins` entry point (pyproject.toml), like any plugin:

- model scheme `microworld:` (teacher, student, thinker: the teacher taught to think):
  built from scratch on first use, cached;
- real-data source `kind: microworld`: ground-truth tasks from the world's generators;
- answer checker `microworld` (the verify filter, the preference verifier judge), and
  `microworld_steps`, which also checks every step of the record's reasoning trace;
- problem generator `microworld` (`generate.kind: reasoning`): tasks of the families with
  multi-step worked solutions, which `microworld:thinker` learned to think through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from distill.filters.checkers import Check
from distill.flywheel.real import RealDraw, RealSource, draw_seed
from distill.microworld.build import MODEL_NAMES
from distill.models import ModelScheme
from distill.records import Example
from distill.registry import CHECKERS, MODEL_SCHEMES, PROBLEM_SOURCES, REAL_SOURCES

if TYPE_CHECKING:
    from distill.generate.reasoning import Problem


def _build_and_locate(name: str) -> str:
    from distill.microworld.build import build_models

    return str(build_models(models=(name,))[name])


# built here from scratch, from data generated here: the cards name the project's licence
MODEL_SCHEMES.register("microworld")(ModelScheme(names=MODEL_NAMES, resolve=_build_and_locate,
                                                 license="apache-2.0"))


@REAL_SOURCES.register
class MicroworldReal(RealSource):
    """Ground-truth tasks drawn from the microworld's generators (Zipf families)."""

    kind: Literal["microworld"] = "microworld"
    count: int = Field(ge=1, description="Real tasks per draw (per round with fresh_real).")

    def draw(self, seed: int, draw_round: int) -> RealDraw:
        """Held-out tasks (unique, never benchmark items) and a training draw beside them."""
        from distill.microworld.benchmark import benchmark_keys
        from distill.microworld.tasks import generate_tasks

        benchmark = benchmark_keys()
        held_tasks = generate_tasks(self.held_out, draw_seed(seed, "mw_held_out"),
                                    exclude=benchmark, unique=True) if self.held_out else []
        exclude = benchmark | {task.key for task in held_tasks}
        tasks = generate_tasks(self.count, draw_seed(seed, "mw_real", draw_round),
                               exclude=exclude)
        identity = {"microworld": {"count": self.count}, "held_out": self.held_out,
                    "seed": seed, "draw": draw_round}
        return RealDraw(train=[_real(t.to_example(), "real") for t in tasks],
                        held_out=[_real(t.to_example(), "held_out") for t in held_tasks],
                        identity=identity)


def _real(example: Example, source: str) -> Example:
    example.lineage.method = f"microworld_{source}"
    return example


@CHECKERS.register("microworld")
def check_microworld(records: list[Example], config: Any) -> list[Check]:
    """The verify filter's checker: each task's true answer, derived from its own text.

    The answer comes from the instruction and input the teacher wrote (never from the
    record's claimed output); the output is read as a free-text answer.
    """
    from distill.microworld.tasks import check

    checks = []
    for record in records:
        result = check(record)
        scores: dict[str, Any] = {"correct": result.correct, "family": result.family}
        if result.expected is not None:
            scores["expected"] = result.expected
        if result.reason:
            scores["unverifiable_reason"] = result.reason  # "unknown_task" or "malformed"
        checks.append((result.status, result.status, scores))
    return checks


@CHECKERS.register("microworld_steps")
def check_microworld_steps(records: list[Example], config: Any) -> list[Check]:
    """`microworld`, and every step of the record's `reasoning` must compute right.

    Process verification for traces of the multi-step families: a right answer after a
    wrong step ("9 * 6 = 14; ...") is `wrong_steps`, and so is one without a trace.
    """
    from distill.microworld.families.steps import check_trace

    checks = []
    for record, (status, reason, scores) in zip(records, check_microworld(records, config),
                                                strict=True):
        trace = check_trace(record.reasoning)
        scores = {**scores, "steps": trace.steps, "correct_steps": trace.correct_steps}
        if status == "correct" and not trace.all_correct:
            status, reason, scores["correct"] = "wrong_answer", "wrong_steps", False
        checks.append((status, reason, scores))
    return checks


@PROBLEM_SOURCES.register("microworld")
def microworld_problems(count: int, seed: int) -> list[Problem]:
    """`count` distinct tasks of the families the teacher works step by step.

    None is a benchmark item; each carries its family and difficulty
    (`distill.microworld.tasks.reasoning_tasks`).
    """
    from distill.generate.reasoning import Problem
    from distill.microworld.benchmark import benchmark_keys
    from distill.microworld.tasks import reasoning_tasks

    return [Problem(id=task.to_example().id, problem=task.instruction, input=task.input,
                    answer=task.output, checker="microworld",
                    fields={"family": task.family, "difficulty": task.difficulty})
            for task in reasoning_tasks(count, seed, exclude=benchmark_keys())]
