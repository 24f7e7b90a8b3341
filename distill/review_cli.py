"""`distill review ...`: expert review of a round's training data (see distill.review).

distill review export runs/<name> [--round N] [--size K] [--seed S] [--out FILE]
distill review import runs/<name> FILE
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Expert review: export a sample, import decisions.",
                  no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    from distill.cli import _fail as fail

    return fail(message)


def _run_dir(run_dir: Path) -> Path:
    if not run_dir.is_dir():
        raise _fail(f"{run_dir}: no such run directory")
    return run_dir


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, runs/<name>.")],
    round_index: Annotated[int | None, typer.Option(
        "--round", help="Round to sample; default: the last round with filtered data.")] = None,
    size: Annotated[int | None, typer.Option(
        help="Examples in the sample; default: the recipe's review.size (100).")] = None,
    seed: Annotated[int | None, typer.Option(
        help="Seed of the sample; default: the recipe's review.seed (0).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Output .jsonl (a .csv is written beside it); default: "
             "<run>/review/<round>/sample-n<size>-seed<seed>.jsonl.")] = None,
) -> None:
    """Write a random sample of a round's training data for reviewers (JSONL and CSV)."""
    from distill.review import ReviewError, export_sample

    try:
        jsonl, table, count = export_sample(_run_dir(run_dir), round_index, size, seed, out)
    except ReviewError as error:
        raise _fail(str(error)) from None
    typer.echo(f"wrote {count} examples to {jsonl} and {table}; fill in decision "
               "(accept / reject / fix), fixed_output and note, then: "
               f"distill review import {run_dir} <file>")


@app.command("import")
def import_(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, runs/<name>.")],
    file: Annotated[Path, typer.Argument(help="The filled-in review file (.jsonl or .csv).")],
) -> None:
    """Validate reviewers' decisions and store them in the run; the report shows them."""
    from distill.report import write_report
    from distill.review import ReviewError, import_decisions, summarize

    try:
        counts = import_decisions(_run_dir(run_dir), file)
    except ReviewError as error:
        raise _fail(str(error)) from None
    for label, numbers in counts.items():
        summary = summarize(run_dir, label) if label.startswith("round_") else None
        rate = ""
        if summary is not None and summary.reviewed:
            low, high = summary.interval
            rate = (f"; error rate {summary.error_rate:.1%} (95% {low:.1%}-{high:.1%}) "
                    f"over {summary.reviewed}")
        typer.echo(f"{label}: " + ", ".join(f"{k} {v}" for k, v in numbers.items()) + rate)
    typer.echo(f"report: {write_report(run_dir)}")
