"""Synthetic data generation methods, chosen by the recipe's `generate.kind`.

Every method is a module with a pydantic `Config` (whose `kind` literal names it) and a
function with one signature:

    run(config, ctx: GenerationContext, seed_tasks: list[Example], teacher_name: str)
        -> GenerationResult

It asks the teacher through `ctx.generate(key, requests)` (checkpointed, sharded across
ranks) and returns records with lineage, every refused completion as a `Rejected` record,
and stats for the report. Every rank calls it and gets the same result.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# recipe `generate.kind` -> "module:function"; modules are imported only when used.
GENERATORS: dict[str, str] = {
    "self_instruct": "distill.generate.self_instruct:run",
    "continuation": "distill.generate.continuation:run",
    "preference": "distill.generate.preference:run",
    "doc_qa": "distill.generate.doc_qa:run",
    "evol_instruct": "distill.generate.evol_instruct:run",
    "textbook": "distill.generate.textbook:run",
}


def load_generator(kind: str) -> Callable[..., Any]:
    """The `run` function of the generation method named `kind`."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown generation method {kind!r}; choose one of {sorted(GENERATORS)}")
    module_name, function = GENERATORS[kind].split(":")
    return getattr(importlib.import_module(module_name), function)
