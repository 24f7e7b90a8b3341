"""`distill microworld ...`: build the microworld's models, write its benchmark, check them.

distill microworld build [--seed 0] [--force] [--cache-dir DIR] [--evaluate]
distill microworld benchmark eval/tasks/microworld/data
distill microworld seeds recipes/data/microworld_seed_tasks.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The verifiable task world: its models and benchmark.",
                  no_args_is_help=True)


@app.command()
def build(
    seed: Annotated[int, typer.Option(help="Seed of the build (data, init, order).")] = 0,
    force: Annotated[bool, typer.Option(help="Rebuild even if a cached build exists.")] = False,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Where builds live (default $DISTILL_CACHE/microworld).")] = None,
    evaluate: Annotated[bool, typer.Option(
        help="Then score the models on the held-out benchmark (greedy, in-process), "
        "count the tasks the teacher writes when prompted Self-Instruct style, and check "
        "the traces the thinker writes under the reasoning prompt.")] = False,
) -> None:
    """Build (or find cached) the teacher, student and thinker; print their directories."""
    from distill.microworld.build import MODEL_NAMES, build_models

    paths = build_models(cache_dir, seed=seed, force=force, models=MODEL_NAMES)
    for name, path in paths.items():
        typer.echo(f"{name}: {path}")
    if evaluate:
        from distill.microworld.benchmark import benchmark_tasks
        from distill.microworld.evaluate import accuracy, load, reasoning, task_writing
        from distill.microworld.tasks import REASONING_FAMILIES

        tasks = [t for family in benchmark_tasks().values() for t in family]
        for name, path in paths.items():
            model, tokenizer = load(path)
            scores = accuracy(model, tokenizer, tasks)
            scores.pop("mistakes")
            typer.echo(f"{name} accuracy: {json.dumps(scores)}")
            if name == "teacher":
                written = task_writing(model, tokenizer, prompts=48, temperature=0.8)
                summary = {k: written[k] for k in ("expected_tasks", "parsed_tasks", "status",
                                                   "families")}
                typer.echo(f"teacher task writing: {json.dumps(summary)}")
            if name == "thinker":
                thinking = reasoning(model, tokenizer, [t for t in tasks
                                                        if t.family in REASONING_FAMILIES])
                thinking.pop("samples")
                typer.echo(f"thinker reasoning (benchmark items of the multi-step "
                           f"families, reasoning prompt): {json.dumps(thinking)}")


@app.command()
def benchmark(directory: Annotated[Path, typer.Argument(
        help="Folder for the <family>.jsonl files.")] = Path("eval/tasks/microworld/data")
              ) -> None:
    """Write the held-out benchmark items (fixed seed) as JSONL."""
    from distill.microworld.benchmark import write_benchmark

    counts = write_benchmark(directory)
    typer.echo(f"wrote {sum(counts.values())} items in {len(counts)} families to {directory}")


@app.command()
def seeds(path: Annotated[Path, typer.Argument(help="The seed-task JSONL to write.")] = Path(
        "recipes/data/microworld_seed_tasks.jsonl")) -> None:
    """Write the seed tasks Self-Instruct starts from (a few per family, none in the benchmark)."""
    from distill.microworld.seeds import write_seed_tasks

    typer.echo(f"wrote {write_seed_tasks(path)} seed tasks to {path}")
