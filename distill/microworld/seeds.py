"""The microworld's seed tasks: the human-written pool a Self-Instruct run starts from.

    distill microworld seeds recipes/data/microworld_seed_tasks.jsonl

A few easy and medium tasks per family, drawn with their own seed and never equal to a
benchmark item, written in the seed-file format `distill.data.load_seed_tasks` reads.
"""

from __future__ import annotations

from pathlib import Path

from distill.microworld.benchmark import benchmark_keys
from distill.microworld.families import FAMILIES
from distill.microworld.tasks import generate_tasks
from distill.records import Example, write_jsonl

SEEDS_SEED = 5_000_011  # distinct from the build's and the benchmark's draws


def seed_tasks(per_family: int = 2) -> list[Example]:
    """`per_family` tasks of every family (difficulties 1, 2, 1, 2, ...), in family order."""
    held_out = benchmark_keys()
    examples: list[Example] = []
    for index, family in enumerate(FAMILIES):
        for k in range(per_family):
            task = generate_tasks(1, SEEDS_SEED + 100 * index + k, family=family,
                                  difficulty=1 + k % 2, exclude=held_out)[0]
            examples.append(task.to_example(id=f"seed-{family}-{k}"))
    return examples


def write_seed_tasks(path: str | Path, per_family: int = 2) -> int:
    """Write the seed pool as JSONL; returns how many tasks were written."""
    rows = [{"id": e.id, "instruction": e.instruction, "input": e.input, "output": e.output,
             "is_classification": False} for e in seed_tasks(per_family)]
    return write_jsonl(path, rows)
