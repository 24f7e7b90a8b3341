"""The `distill` command line.

    distill run recipes/quickstart.yaml [key.sub=value ...] [--force STAGE] [--quiet]
    distill run recipes/alpaca.yaml --profile smoke    a recipe's small first try
    distill validate recipes/x.yaml [--profile P]      check a recipe without running it
    distill plan recipes/x.yaml [--from runs/<name>]  requests, tokens, time, cost; no model
    distill show runs/<name>               rounds, stages, fingerprints, counts, scores
    distill report runs/<name>             (re)write runs/<name>/report.md
    distill schema                         the recipe's JSON Schema, for editors
    distill microworld build               build the microworld teacher and student
    distill sweep recipes/collapse/x.yaml  a grid of runs and their comparison report
    distill review export|import runs/<name>   expert review of a round's training data
    distill decontaminate data.jsonl --tasks t1,t2   check any JSONL against lm-eval tasks
    distill export runs/<name> --round N --to DIR    a round's data as Parquet + its card

Bad input exits with code 2 and one line per problem; nothing is printed as a traceback
unless the failure is a bug, and then the traceback goes to the run's log file. `run` and
`validate` make the same checks (`_load`), so `run` refuses bad input before any stage;
`run` then holds the run directory's lock (`distill.runlock`) until it exits, and a
second `run` of the same directory exits with 2, naming the holder. A run (or a `sweep`
cell) that a `budget:` cap stopped exits with 4 (distill.budget); rerunning with a higher
cap resumes it.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import traceback
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from distill import LOG_ONLY

app = typer.Typer(help="Distil large language models into small ones through synthetic data.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console(stderr=True)

EXIT_BAD_INPUT = 2
EXIT_BUDGET = 4  # a budget cap stopped the run; rerunning with a higher cap resumes it


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _load(recipe_path: Path, overrides: list[str] | None, profile: str | None = None):
    """The checked recipe, as `run` and `validate` both see it; bad input exits with 2.

    `load_recipe` checks the schema, the files a recipe names (seed tasks and other data
    files, line by line), the lm-eval task names and each backend's engine options; here
    the run directory must also be one this process can create or write.
    """
    from distill.recipe import RecipeError, load_recipe
    from distill.runlock import unwritable

    try:
        loaded = load_recipe(recipe_path, overrides, profile)
    except RecipeError as error:
        raise _fail(str(error)) from None
    problem = unwritable(Path(loaded.output_dir) / loaded.name)
    if problem:
        raise _fail(f"output_dir: {problem}")
    return loaded


def _lock_run_dir(stack: ExitStack, run_dir: Path, command: str) -> str | None:
    """Hold the run directory's lock until `stack` closes; bad input exits with 2.

    Taken before anything is written there (the log file included). Returns the warning
    to log, once logging is set up, when the lock was taken over from a dead process.
    """
    from distill.runlock import RunLocked, run_lock, taken_over

    try:
        previous = stack.enter_context(run_lock(run_dir, command))
    except RunLocked as error:
        raise _fail(str(error)) from None
    except OSError as error:
        raise _fail(f"{run_dir}: cannot create or write the run directory "
                    f"({error.strerror or error})") from None
    return taken_over(run_dir, previous) if previous is not None else None


def _setup_logging(run_dir: Path, quiet: bool) -> Path:
    """Log everything at INFO to the run's log file; the console gets what `_ConsoleRule` passes."""
    from rich.logging import RichHandler

    log_path = run_dir / "distill.log"
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_path, encoding="utf-8")
    except OSError as error:
        raise _fail(f"{log_path}: cannot write the log file ({error.strerror or error})"
                    ) from None
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(file_handler)
    console_handler = RichHandler(console=console, show_path=False, markup=False)
    console_handler.setLevel(logging.WARNING if quiet else logging.INFO)
    console_handler.addFilter(_ConsoleRule())
    root.addHandler(console_handler)
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _route_library_output()
    return log_path


class _ConsoleRule(logging.Filter):
    """Which records reach the console; the log file gets them all.

    distill's own records pass (its stage lines at INFO, or only its warnings with
    --quiet), and so do ERRORs from anyone. Libraries' INFO and WARNING records stay in the
    log: their INFO is bookkeeping (lm-eval logs "Building contexts", its gen_kwargs and its
    task list for every subtask of every evaluation: most of a quickstart's console once),
    and their warnings are about their own defaults, repeated per task and per round
    (lm-eval's "Custom kwargs can be passed to `--metadata`" for each of 14 subtasks). What
    a user must act on, distill says itself, as a warning (decontamination, stopping rules)
    or an error. The held-back warnings are counted, and `run` ends by saying how many are
    in the log, so that they are one look away rather than never seen.
    """

    def __init__(self) -> None:
        super().__init__()
        self.held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == LOG_ONLY:
            return False
        if record.name == "distill" or record.name.startswith("distill."):
            return True
        if record.levelno >= logging.ERROR:
            return True
        if record.levelno >= logging.WARNING:
            self.held_back += 1
        return False


def _held_back_warnings() -> int:
    return sum(rule.held_back for handler in logging.getLogger().handlers
               for rule in handler.filters if isinstance(rule, _ConsoleRule))


def _route_library_output() -> None:
    """Send the libraries' records through the root logger's handlers; turn their bars off.

    transformers, datasets and huggingface_hub each put their own stderr handler on their
    logger when imported (transformers also stops propagation), so their records would
    skip both the log file and `_ConsoleRule`; importing them here, before the run does,
    lets those handlers be taken off. vLLM does the same unless VLLM_CONFIGURE_LOGGING=0
    (a user's own setting wins). Their tqdm bars ("Loading weights", "Map", downloads) are
    turned off: the console shows distill's own progress bars. Python warnings (torch's,
    among others) become records of the `py.warnings` logger, so the same rule applies.
    """
    import datasets
    import transformers

    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()
    transformers.utils.logging.disable_progress_bar()  # huggingface_hub's bars as well
    datasets.disable_progress_bars()
    for name in ("datasets", "huggingface_hub"):
        library = logging.getLogger(name)
        for handler in [h for h in library.handlers if type(h) is logging.StreamHandler]:
            library.removeHandler(handler)
    if "VLLM_LOGGING_CONFIG_PATH" not in os.environ:  # vLLM refuses a config file with 0
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    logging.captureWarnings(True)


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML.")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Dotted overrides, e.g. rounds.count=2 filters.1.threshold=0.6")] = None,
    force: Annotated[list[str] | None, typer.Option(
        "--force", help="Redo this stage (and everything after it) even if it is done.")] = None,
    stop_after: Annotated[str | None, typer.Option(
        "--stop-after", help="Stop once this stage of the first round is done.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="One of the recipe's `profiles` (e.g. smoke), applied before the "
        "overrides; the run is named <name>-<profile> unless the profile sets a name.")] = None,
) -> None:
    """Run a recipe end to end; re-running resumes where it stopped."""
    from distill.budget import BudgetReached
    from distill.runner import STAGES, Runner, RunOptions, refuse_launched_ranks

    try:  # before anything is read or written
        refuse_launched_ranks()
    except RuntimeError as error:
        raise _fail(str(error)) from None
    loaded = _load(recipe, overrides, profile)
    unknown = sorted(set(force or []) - set(STAGES))
    if unknown:
        raise _fail(f"--force: unknown stage(s) {unknown}; stages are {list(STAGES)}")
    if stop_after is not None and stop_after not in STAGES:
        raise _fail(f"--stop-after: unknown stage {stop_after!r}; stages are {list(STAGES)}")
    run_dir = Path(loaded.output_dir) / loaded.name
    command = shlex.join(["distill", "run", str(recipe), *(["--profile", profile] if profile
                                                            else []), *(overrides or [])])
    with ExitStack() as held:  # the run directory's lock, until this command returns
        took_over = _lock_run_dir(held, run_dir, command)
        log_path = _setup_logging(run_dir, quiet)
        if took_over:
            logging.getLogger("distill").warning(took_over)
        progress = None if quiet else _progress_bars()
        options = RunOptions(force=set(force or []), stop_after=stop_after, quiet=quiet,
                             progress=progress.update if progress else None)
        try:
            if progress:
                progress.start()
            Runner(loaded, options).run()
        except BudgetReached as stop:  # a clean stop: no traceback, the report says where
            console.print(f"[bold yellow]stopped by the budget:[/] {stop}\n(report: "
                          f"{run_dir}/report.md)", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BUDGET) from None
        except Exception as error:  # one readable line here; the traceback goes to the log
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(traceback.format_exc())
            raise _fail(f"{type(error).__name__}: {error}\n(full traceback in {log_path})",
                        code=_exit_code(error)) from None
        finally:
            if progress:
                progress.stop()
    held_back = _held_back_warnings()
    note = f" ({held_back} library warning(s) in {log_path})" if held_back else ""
    console.print(f"[green]done:[/] {run_dir}/report.md{note}", soft_wrap=True)


def _exit_code(error: Exception) -> int:
    from distill.evaluate.contamination import ContaminationError
    from distill.identity import ModelsIncompatible, ModelUnavailable

    # raised before any work (Runner._resolve_models)
    if isinstance(error, ModelUnavailable | ModelsIncompatible):
        return EXIT_BAD_INPUT
    return 3 if isinstance(error, ContaminationError) else 1


class _progress_bars:
    """Rich progress bars keyed by task name; the runner calls `update(task, done, total)`."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self._progress = Progress("{task.description}", BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._tasks: dict[str, int] = {}

    def start(self) -> None:
        self._progress.start()

    def stop(self) -> None:
        self._progress.stop()

    def update(self, task: str, done: int, total: int) -> None:
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total)
        self._progress.update(self._tasks[task], completed=done, total=total)


@app.command()
def plan(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML.")],
    overrides: Annotated[list[str] | None, typer.Argument(
        help="Dotted overrides, as for run.")] = None,
    measured_run: Annotated[Path | None, typer.Option(
        "--from", help="A previous run directory: its measured answer lengths, yields and "
        "throughput replace the assumptions.")] = None,
    throughput: Annotated[float | None, typer.Option(
        "--throughput", help="Teacher tokens (prompt + completion) per second.")] = None,
    fill: Annotated[float, typer.Option(
        "--fill", help="Assumed share of max_tokens an answer fills (without --from).")] = 0.5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="One of the recipe's "
                                                "profiles, as for run.")] = None,
) -> None:
    """Estimate requests, tokens, time and cost per round before any model loads."""
    from distill.plan import Measured, Planner, print_plan

    loaded = _load(recipe, overrides, profile)
    if throughput is not None and throughput <= 0:
        raise _fail(f"--throughput: tokens per second must be positive, not {throughput:g}")
    try:
        measured = Measured.read(measured_run) if measured_run is not None else None
        estimate = Planner(loaded, measured, fill=fill, throughput=throughput).plan()
    except ValueError as error:
        raise _fail(str(error)) from None
    if as_json:
        print(json.dumps(estimate.as_json(), indent=2))
    else:
        # piped output gets room for the table rather than 80 columns
        print_plan(estimate, Console() if sys.stdout.isatty() else Console(width=132))


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="The recipe YAML.")],
    overrides: Annotated[list[str] | None, typer.Argument(help="Dotted overrides.")] = None,
    profile: Annotated[str | None, typer.Option(
        "--profile", help="Check the recipe as this profile of its own makes it.")] = None,
) -> None:
    """Check a recipe (schema, files, values) without running anything.

    Licences and terms that restrict training other models on the writers' outputs, and a
    data licence that cannot be determined, are warnings: the exit code stays 0.
    """
    from distill.cards import licence_survey

    loaded = _load(recipe, overrides, profile)
    for line in licence_survey(loaded).warnings():
        console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    console.print(f"[green]ok:[/] {recipe} ({loaded.name}: {loaded.rounds.count} round(s), "
                  f"{len(loaded.filters)} filter(s), teacher {loaded.teacher.model})",
                  soft_wrap=True)


@app.command()
def schema() -> None:
    """Print the recipe's JSON Schema."""
    from distill.recipe import recipe_json_schema

    sys.stdout.write(json.dumps(recipe_json_schema(), indent=2) + "\n")


@app.command()
def show(run_dir: Annotated[Path, typer.Argument(help="A run directory, runs/<name>.")]) -> None:
    """Print a run's rounds, stages, fingerprints, counts and scores."""
    from distill.store import RunStore

    if not run_dir.is_dir():
        raise _fail(f"{run_dir}: no such run directory")
    manifests = RunStore(run_dir).manifests()
    if not manifests:
        raise _fail(f"{run_dir}: no finished stage yet")
    table = Table(title=str(run_dir))
    for column in ("round", "stage", "fingerprint", "wall s", "counts", "scores"):
        table.add_column(column)
    for m in manifests:
        scores = _short_scores(m.get("scores", {}))
        counts = ", ".join(f"{k} {v}" for k, v in m.get("counts", {}).items())
        table.add_row(m["round"], m["stage"], m["fingerprint"][:12], f"{m['wall_time_s']:.1f}",
                      counts, scores)
    out = Console()
    if not out.is_terminal:
        out.width = 200  # piped or captured: do not squeeze the table to 80 columns
    out.print(table)


def _short_scores(scores: dict) -> str:
    parts = []
    for task, metrics in scores.items():
        if isinstance(metrics, dict):
            parts += [f"{task} {k}={v:.3f}" for k, v in metrics.items()
                      if isinstance(v, int | float) and "stderr" not in k]
    return "; ".join(parts[:4]) + (" ..." if len(parts) > 4 else "")


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory, runs/<name>.")]) -> None:
    """(Re)write a run's report.md from its manifests."""
    from distill.report import write_report

    if not run_dir.is_dir():
        raise _fail(f"{run_dir}: no such run directory")
    console.print(f"[green]wrote:[/] {write_report(run_dir)}")


@app.command()
def sweep(
    study: Annotated[Path, typer.Argument(help="The study YAML (recipes/collapse/*.yaml).")],
    only: Annotated[list[str] | None, typer.Option(
        "--only", help="Run only this arm (repeatable); the report covers every cell.")] = None,
    report_only: Annotated[bool, typer.Option(
        "--report-only", help="Rewrite the comparison report without running.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
) -> None:
    """Run a grid of flywheel runs (arms x seeds) and write the comparison report."""
    from distill.budget import BudgetReached
    from distill.flywheel.sweep import StudyError, load_study, run_sweep
    from distill.runlock import RunLocked
    from distill.runner import RunOptions, refuse_launched_ranks

    try:  # before anything is read or written
        refuse_launched_ranks()
    except RuntimeError as error:
        raise _fail(str(error)) from None
    try:
        loaded, _ = load_study(study)
    except StudyError as error:
        raise _fail(str(error)) from None
    study_dir = Path(loaded.output_dir) / loaded.name
    log_path = _setup_logging(study_dir, quiet)
    try:
        report_path = run_sweep(study, only=only, report_only=report_only,
                                options=RunOptions(quiet=quiet))
    except (StudyError, RunLocked) as error:  # RunLocked: a cell's run is in use
        raise _fail(str(error)) from None
    except BudgetReached as stop:  # a clean stop, as `distill run` makes it; names the cell
        console.print(f"[bold yellow]stopped by the budget:[/] {stop}", highlight=False,
                      soft_wrap=True)
        raise typer.Exit(EXIT_BUDGET) from None
    except Exception as error:  # one readable line here; the traceback goes to the log
        with log_path.open("a", encoding="utf-8") as handle:
            handle.write(traceback.format_exc())
        raise _fail(f"{type(error).__name__}: {error}\n(full traceback in {log_path})",
                    code=_exit_code(error)) from None
    console.print(f"[green]done:[/] {report_path} (and report.html, plots/)")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory, runs/<name>.")],
    round_index: Annotated[int, typer.Option("--round", help="The round whose training "
                                             "data to export.")],
    to: Annotated[Path, typer.Option("--to", help="The dataset directory to write.")],
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace data/ and README.md in a non-empty --to.")] = False,
) -> None:
    """Write a round's training data as Parquet with its dataset card (never pushed)."""
    from distill.export import ExportError, export_round

    try:
        rows = export_round(run_dir, round_index, to, overwrite=overwrite)
    except ExportError as error:
        raise _fail(str(error)) from None
    console.print(f"[green]exported:[/] {rows} rows to {to} (README.md is the dataset card; "
                  f"datasets.load_dataset({str(to)!r}) reads it)", soft_wrap=True)


def _mount_subcommands() -> None:
    from distill.evaluate.decontaminate_cli import decontaminate
    from distill.microworld.cli import app as microworld_app

    app.add_typer(microworld_app, name="microworld", help="The verifiable task world.")
    from distill.review_cli import app as review_app

    app.add_typer(review_app, name="review", help="Expert review: export a sample, import "
                  "decisions.")
    app.command(name="decontaminate")(decontaminate)


_mount_subcommands()
