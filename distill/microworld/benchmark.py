"""The held-out microworld benchmark: fixed items per family, written as JSONL for lm-eval.

    distill microworld benchmark eval/tasks/microworld/data    # write_benchmark(dir)

The items come from the same generators as the training data but from their own seed,
and the models' training data never contains them (`benchmark_keys()` is excluded when
the build draws tasks). A teacher asked to write new tasks can still write one of them,
most easily in the small easy families: that is what decontamination must find.
"""

from __future__ import annotations

import json
from pathlib import Path

from distill.microworld.families import FAMILIES
from distill.microworld.tasks import Task, generate_tasks

BENCHMARK_SEED = 7_000_003  # no training draw uses it
# Per family: mostly easy items, like the world itself.
DIFFICULTY_COUNTS: dict[int, int] = {1: 15, 2: 9, 3: 6}


def benchmark_tasks() -> dict[str, list[Task]]:
    """Family -> its held-out tasks (distinct within the family), in a fixed order."""
    out: dict[str, list[Task]] = {}
    for family_index, family in enumerate(FAMILIES):
        tasks: list[Task] = []
        for difficulty, count in DIFFICULTY_COUNTS.items():
            seed = BENCHMARK_SEED + 1000 * family_index + difficulty
            tasks += generate_tasks(count, seed, family=family, difficulty=difficulty,
                                    exclude={t.key for t in tasks}, unique=True)
        out[family] = tasks
    return out


def benchmark_keys() -> set[tuple[str, str]]:
    """The (instruction, input) keys of every benchmark item."""
    return {task.key for tasks in benchmark_tasks().values() for task in tasks}


def benchmark_record(task: Task) -> dict[str, object]:
    """One JSONL row: the record fields plus `prompt`, the user turn lm-eval sends."""
    example = task.to_example()
    return {"id": example.id, "family": task.family, "difficulty": task.difficulty,
            "instruction": task.instruction, "input": task.input, "output": task.output,
            "prompt": example.prompt_text}


def write_benchmark(directory: str | Path) -> dict[str, int]:
    """Write `<family>.jsonl` for every family into `directory`; returns item counts."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for family, tasks in benchmark_tasks().items():
        lines = [json.dumps(benchmark_record(task), ensure_ascii=False) for task in tasks]
        (directory / f"{family}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        counts[family] = len(tasks)
    return counts
