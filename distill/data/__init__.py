"""Data shipped with distill, and the seed-task loader.

`seed_tasks.jsonl` is a general-purpose pool of 75 instruction / input / output tasks
written for this project (not copied from Self-Instruct's or Alpaca's seed file): writing,
rewriting, extraction, math, reasoning, coding, brainstorming and knowledge questions;
40% have an input and 11 (about 15%, like Self-Instruct's 26 of 175) are marked
`is_classification`. One JSON object per line:

    {"id": "seed-000", "instruction": "...", "input": "", "output": "...",
     "is_classification": false}

`load_seed_tasks` also reads Self-Instruct's own seed format (`instances: [{input,
output}, ...]`, first instance used), so `data.seed_tasks: path/to/seed_tasks.jsonl`
from yizhongw/self-instruct works unchanged.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from distill.records import Example, numbered_json_objects

SEED_TASKS_FILE = "seed_tasks.jsonl"


def seed_tasks_path() -> Path:
    """Path of the seed pool shipped with the package."""
    return Path(str(resources.files("distill.data").joinpath(SEED_TASKS_FILE)))


def load_seed_tasks(path: str | Path | None = None) -> list[Example]:
    """Read a seed-task JSONL file (the shipped pool when `path` is None).

    Required per line: `id`, `instruction`, `output` (or Self-Instruct's `instances`);
    optional: `input` (default ""), `is_classification` (default false); other keys are
    kept on the record. Raises ValueError naming the file and line for bytes that are not
    UTF-8, bad JSON, missing or mistyped fields, empty instructions and duplicate ids, and
    for a file with no task. The recipe calls it when it is loaded, so a bad seed file is
    refused before any stage runs.
    """
    path = Path(path) if path is not None else seed_tasks_path()
    if not path.is_file():
        raise ValueError(f"{path}: seed task file not found")
    tasks: list[Example] = []
    seen: dict[str, int] = {}
    with path.open("rb") as handle:  # decoded per line, so a bad byte names its line
        for number, row in numbered_json_objects(handle, path):
            where = f"{path}:{number}"
            task = _seed_task(row, where)
            if task.id in seen:
                raise ValueError(f"{where}: duplicate id {task.id!r} (first on line "
                                 f"{seen[task.id]})")
            seen[task.id] = number
            tasks.append(task)
    if not tasks:
        raise ValueError(f"{path}: no seed tasks")
    return tasks


def _seed_task(row: dict[str, Any], where: str) -> Example:
    row = dict(row)
    if "instances" in row and "output" not in row:  # Self-Instruct's seed format
        instances = row.pop("instances")
        if not isinstance(instances, list) or not instances or not isinstance(instances[0], dict):
            raise ValueError(f"{where}: 'instances' must be a non-empty list of objects")
        row["input"] = instances[0].get("input", "")
        row["output"] = instances[0].get("output")
    for name in ("id", "instruction", "output"):
        if name not in row or row[name] is None:
            raise ValueError(f"{where}: missing field {name!r}")
    row["id"] = str(row["id"]) if isinstance(row["id"], int) else row["id"]
    row.setdefault("input", "")
    row["input"] = row["input"] if row["input"] is not None else ""
    for name in ("id", "instruction", "input", "output"):
        if not isinstance(row[name], str):
            raise ValueError(f"{where}: field {name!r} must be a string, "
                             f"got {type(row[name]).__name__}")
    for name in ("id", "instruction"):
        if not row[name].strip():
            raise ValueError(f"{where}: field {name!r} is empty")
    row.setdefault("is_classification", False)
    if not isinstance(row["is_classification"], bool):
        raise ValueError(f"{where}: field 'is_classification' must be true or false")
    row.pop("messages", None)  # derived from the fields (a file of examples may carry it)
    try:
        return Example.model_validate(row)
    except Exception as error:  # pydantic's message, but anchored to the line
        raise ValueError(f"{where}: {error}") from None
