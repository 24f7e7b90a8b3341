"""Data loading and scoring for the microworld lm-eval tasks.

lm-eval resolves `dataset_kwargs.data_files` against the current directory, so the
tasks load their JSONL through `custom_dataset` instead: the files are found next to
this module wherever lm-eval runs. A reply is scored by the microworld's own verifier,
which re-derives the answer from the task text and reads the reply like a math checker
("The answer is 42." and "42" both count). A reply that thinks first, as a student trained
on reasoning traces does (`<think>3 + 4 = 7</think>7`), is scored on what follows its
trace; a trace never closed scores 0 (`distill.microworld.answers.answer_region`).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"


def load_family(family: str | None = None, **_: object):
    """The `test` split of one family (`dataset_kwargs.family`), or of all families."""
    import datasets

    files = [DATA / f"{family}.jsonl"] if family else sorted(DATA.glob("*.jsonl"))
    rows = [json.loads(line) for path in files
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """exact_match: 1.0 when the verifier accepts the reply, else 0.0."""
    from distill.microworld.tasks import solve

    _, truth = solve(doc["instruction"], doc["input"])
    return {"exact_match": float(truth.matches(results[0]))}
