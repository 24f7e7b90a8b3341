"""`distill sweep`: a grid of flywheel runs and one comparison report.

    distill sweep recipes/collapse/replace_vs_accumulate.yaml [--only ARM] [--report-only]

A study file names a base recipe and the arms to compare (each a set of dotted overrides,
e.g. a data policy and its real fraction), the seeds and the number of rounds:

    name: replace_vs_accumulate
    recipe: base/microworld_flywheel.yaml   # relative to the study file
    output_dir: runs/collapse               # cells go to <output_dir>/<name>/<arm>-s<seed>
    rounds: 5
    seeds: [0, 1, 2]
    set: {measure.sample_size: 300}         # overrides of every cell
    arms:
      replace: {rounds.data_policy: replace}
      accumulate: {rounds.data_policy: accumulate}
    grid:                                   # optional: arms x every combination of these
      rounds.fresh_real: [false, true]
    metrics: [held_out_perplexity.mean, microworld.tail_mass]

Every cell is a normal run (`Runner`), so the sweep resumes where it stopped and a cell
can be inspected with `distill show`. A cell stopped by a `budget:` cap (one per cell's
run directory) stops the sweep with exit code 4 and a message naming the cell; rerunning
with a higher cap resumes it. The report (`report.md`, `report.html`, `plots/`)
plots each metric against the round, one line per arm, the mean over seeds with a min-max
band, and the per-round histograms of generated data's perplexity under the reference
model (Shumailov et al.'s figure).
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator

from distill.records import atomic_write_text, read_utf8
from distill.settings import Strict

log = logging.getLogger("distill")

DEFAULT_METRICS = [
    "held_out_perplexity.mean", "generated_perplexity.mean", "generated_perplexity.p95",
    "diversity.distinct_2", "diversity.ttr", "diversity.self_bleu",
    "diversity.compression_ratio", "semantic.mean_pairwise_distance",
    "microworld.tail_mass", "microworld.kl_families", "microworld.families_covered",
    "microworld.hard_share", "benchmark.microworld/exact_match",
]
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*$")


class StudyError(ValueError):
    """A study file that cannot run; the message names the field or cell."""


class Study(Strict):
    """A study file."""

    name: str = Field(description="Study name; cells and report go to <output_dir>/<name>/.")
    recipe: str = Field(description="The base recipe, relative to the study file.")
    output_dir: str = Field("runs/collapse", description="Parent directory of the study.")
    rounds: int | None = Field(None, ge=1, description="rounds.count of every cell.")
    seeds: list[int] = Field([0], min_length=1, description="Seeds; each arm runs once per seed.")
    set: dict[str, Any] = Field(default_factory=dict, description="Overrides of every cell.")
    arms: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                            description="Arm name -> overrides.")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="Dotted key -> "
                                       "values; every combination multiplies the arms.")
    metrics: list[str] | None = Field(None, description="Metrics plotted; null: the "
                                      "defaults that the cells measured.")

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in value:
            if not _ARM_NAME.match(name):
                raise ValueError(f"arm {name!r}: use letters, digits, '.', '_', '=' and '-'")
        return value


@dataclass
class Cell:
    """One run of the grid."""

    arm: str
    seed: int
    overrides: list[str]

    @property
    def name(self) -> str:
        """The cell's run name (its directory under the study directory)."""
        return f"{self.arm}-s{self.seed}"


def load_study(path: str | Path) -> tuple[Study, Path]:
    """Read and validate a study file; returns it and the base recipe's resolved path."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: study file not found")
    try:
        text = read_utf8(path)
    except ValueError as error:  # not UTF-8: the file and line
        raise StudyError(str(error)) from None
    try:
        data = yaml.safe_load(text)
        study = Study.model_validate(data)
    except yaml.YAMLError as error:
        raise StudyError(f"{path}: not valid YAML ({error})") from None
    except ValidationError as error:
        from distill.recipe import format_validation_error

        raise StudyError(f"{path}: invalid study\n{format_validation_error(error)}") from None
    recipe = (path.parent / study.recipe).resolve()
    if not recipe.is_file():
        raise StudyError(f"{path}: recipe: file not found: {study.recipe} (looked at {recipe})")
    if not study.arms and not study.grid:
        raise StudyError(f"{path}: give arms or grid (nothing to compare)")
    return study, recipe


def cells(study: Study, study_dir: Path) -> list[Cell]:
    """Arms (crossed with the grid) times seeds, each with its full list of overrides."""
    arms = dict(study.arms) or {"base": {}}
    if study.grid:
        keys = list(study.grid)
        crossed = {}
        for arm, overrides in arms.items():
            for values in itertools.product(*(study.grid[k] for k in keys)):
                label = ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in
                                 zip(keys, values, strict=True))
                name = label if arm == "base" and not study.arms else f"{arm},{label}"
                crossed[name] = {**overrides, **dict(zip(keys, values, strict=True))}
        arms = crossed
    common = {**study.set}
    if study.rounds is not None:
        common["rounds.count"] = study.rounds
    result = []
    for arm, overrides in arms.items():
        safe = re.sub(r"[^A-Za-z0-9._=-]", "_", arm)
        for seed in study.seeds:
            merged = {**common, **overrides, "seed": seed, "name": f"{safe}-s{seed}",
                      "output_dir": str(study_dir)}
            result.append(Cell(arm=safe, seed=seed,
                               overrides=[f"{k}={json.dumps(v)}" for k, v in merged.items()]))
    return result


def _short(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_sweep(path: str | Path, *, only: list[str] | None = None, report_only: bool = False,
              options: Any = None) -> Path:
    """Validate every cell, run them in turn (resuming), and write the comparison report.

    Returns:
        The study's report.md.
    """
    from distill.recipe import RecipeError, load_recipe
    from distill.runlock import run_lock, taken_over, unwritable

    study, recipe_path = load_study(path)
    study_dir = Path(study.output_dir) / study.name
    grid = cells(study, study_dir)
    if only:
        unknown = sorted(set(only) - {c.arm for c in grid})
        if unknown:
            raise StudyError(f"--only: unknown arm(s) {unknown}; arms are "
                             f"{sorted({c.arm for c in grid})}")
        grid = [c for c in grid if c.arm in only]
    recipes = []
    for cell in grid:  # every cell is checked before any runs
        try:
            recipes.append(load_recipe(recipe_path, cell.overrides))
        except RecipeError as error:
            raise StudyError(f"cell {cell.name}: {error}") from None
        problem = unwritable(Path(recipes[-1].output_dir) / recipes[-1].name)
        if problem and not report_only:
            raise StudyError(f"cell {cell.name}: output_dir: {problem}")
    if not report_only:
        from distill.budget import BudgetReached
        from distill.runner import Runner

        for index, (cell, recipe) in enumerate(zip(grid, recipes, strict=True), start=1):
            log.info("sweep %s: cell %d/%d %s", study.name, index, len(grid), cell.name)
            run_dir = Path(recipe.output_dir) / recipe.name
            # RunLocked (another process runs this cell) stops the sweep, exit 2
            with run_lock(run_dir, f"distill sweep {path} (cell {cell.name})") as previous:
                if previous is not None:
                    log.warning(taken_over(run_dir, previous))
                try:
                    Runner(recipe, options).run()
                except BudgetReached as stop:  # the sweep stops there; a rerun resumes it
                    raise BudgetReached(stop.cap, stop.limit, stop.spent,
                                        f"cell {cell.name} {stop.where}") from None
    return write_sweep_report(study, study_dir, cells(study, study_dir))


def collect(study_dir: Path, grid: list[Cell]) -> dict[str, dict[int, list[dict[str, Any]]]]:
    """Per arm and seed, the cell's metrics per round (missing cells give no entry)."""
    from distill.flywheel.measure import read_metrics

    found: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for cell in grid:
        rounds = read_metrics(study_dir / cell.name)
        if rounds:
            found.setdefault(cell.arm, {})[cell.seed] = rounds
    return found


def write_sweep_report(study: Study, study_dir: Path, grid: list[Cell]) -> Path:
    """report.md, report.html and plots/*.png of a study from its cells' metrics."""
    from distill.flywheel.plots import histogram_plot, metric_plot
    from distill.flywheel.stopping import flatten_metrics

    results = collect(study_dir, grid)
    flat = {arm: {seed: [flatten_metrics(m) for m in rounds] for seed, rounds in seeds.items()}
            for arm, seeds in results.items()}
    present = {k for seeds in flat.values() for rounds in seeds.values() for row in rounds
               for k in row}
    metrics = study.metrics or [m for m in DEFAULT_METRICS if m in present]
    blocks: list[tuple[str, Any]] = [
        ("h1", f"Study: {study.name}"),
        ("p", f"Base recipe `{study.recipe}`, seeds {study.seeds}, "
              f"{len(grid)} cells ({sum(len(s) for s in results.values())} with metrics). "
              "Lines are the mean over seeds; bands span the seeds' minimum to maximum."),
    ]
    if not results:
        blocks.append(("p", "No cell has measured a round yet."))
    table = [["metric", "arm", "first round", "last round", "change"]]
    every_round = sorted({int(row.get("round", index)) for seeds in flat.values()
                          for rows in seeds.values() for index, row in enumerate(rows)})
    per_round = [["metric", "arm", *(f"r{r}" for r in every_round)]]
    for metric in metrics:
        series = {arm: _by_round(seeds, metric) for arm, seeds in flat.items()}
        series = {arm: by_round for arm, by_round in series.items() if by_round}
        if not series:
            continue
        image = metric_plot(series, metric, study_dir / "plots" / f"{_file(metric)}.png")
        blocks += [("h2", metric), ("img", image.relative_to(study_dir).as_posix())]
        for arm, by_round in series.items():
            first, last = min(by_round), max(by_round)
            a, b = _mean_spread(by_round[first]), _mean_spread(by_round[last])
            change = b[0] - a[0] if not (math.isnan(a[0]) or math.isnan(b[0])) else math.nan
            table.append([metric, arm, f"{_fmt(a[0])} ± {_fmt(a[1])} (r{first})",
                          f"{_fmt(b[0])} ± {_fmt(b[1])} (r{last})", _fmt(change)])
            per_round.append([metric, arm, *(_fmt(_mean_spread(by_round[r])[0])
                                             if r in by_round else "" for r in every_round)])
    for arm, seeds in results.items():
        seed = min(seeds)
        histograms = {m["round"]: m["generated_perplexity"]["histogram"] for m in seeds[seed]
                      if "histogram" in (m.get("generated_perplexity") or {})}
        if histograms:
            image = histogram_plot(histograms, f"{arm}, seed {seed}: perplexity of each round's "
                                   "generated data under the reference model",
                                   study_dir / "plots" / f"histogram_{_file(arm)}.png")
            blocks += [("h2", f"Perplexity histograms: {arm}"),
                       ("img", image.relative_to(study_dir).as_posix())]
    stops = _stops(study_dir, grid)
    if len(table) > 1:
        blocks += [("h2", "Numbers (mean ± std over seeds)"), ("table", table),
                   ("h2", "Every round (mean over seeds)"), ("table", per_round)]
    if stops:
        blocks += [("h2", "Early stops"), ("table", [["cell", "after round", "reason"]] + stops)]
    markdown = _markdown(blocks)
    atomic_write_text(study_dir / "report.md", markdown)
    atomic_write_text(study_dir / "report.html", _html(blocks, study.name))
    return study_dir / "report.md"


def _by_round(seeds: dict[int, list[dict[str, float]]], metric: str) -> dict[int, list[float]]:
    by_round: dict[int, list[float]] = {}
    for rounds in seeds.values():
        for index, row in enumerate(rounds):
            if metric in row:
                by_round.setdefault(int(row.get("round", index)), []).append(row[metric])
    return by_round


def _mean_spread(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return math.nan, math.nan
    mean = sum(finite) / len(finite)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in finite) / len(finite))


def _stops(study_dir: Path, grid: list[Cell]) -> list[list[str]]:
    from distill.records import read_json

    rows = []
    for cell in grid:
        path = study_dir / cell.name / "stopped.json"
        if path.exists():
            stop = read_json(path)
            rows.append([cell.name, str(stop["round"]), stop["reason"]])
    return rows


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4g}"


def _file(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _markdown(blocks: list[tuple[str, Any]]) -> str:
    lines: list[str] = []
    for kind, content in blocks:
        if kind == "h1":
            lines += [f"# {content}", ""]
        elif kind == "h2":
            lines += [f"## {content}", ""]
        elif kind == "p":
            lines += [content, ""]
        elif kind == "img":
            lines += [f"![{content}]({content})", ""]
        elif kind == "table":
            header, *rows = content
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                      for row in rows]
            lines.append("")
    return "\n".join(lines) + "\n"


def _html(blocks: list[tuple[str, Any]], title: str) -> str:
    from distill.flywheel.plots import html_page

    parts: list[str] = []
    for kind, content in blocks:
        if kind in ("h1", "h2"):
            parts.append(f"<{kind}>{html.escape(content)}</{kind}>")
        elif kind == "p":
            text = html.escape(content)
            parts.append("<p>" + re.sub(r"`([^`]*)`", r"<code>\1</code>", text) + "</p>")
        elif kind == "img":
            parts.append(f"<img src='{html.escape(content)}' alt='{html.escape(content)}'>")
        elif kind == "table":
            header, *rows = content
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
                         + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                      for row in rows]
            parts.append("</table>")
    return html_page(title, "".join(parts))
