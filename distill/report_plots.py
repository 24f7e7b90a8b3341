"""The run report's figures: training loss per round, the funnel, scores, flywheel metrics.

`write_report` calls `plot_run`, which draws each figure from the committed manifests (the
numbers the report's tables print) into `<run dir>/plots/` with the sweep's plotting
functions (distill.flywheel.plots), and returns the markdown that embeds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.records import read_json

# x of the base student's scores on the scores figure (before round 0)
BASE_ROUND = -1


def plot_run(run_dir: Path, by_round: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Draw every figure the run has numbers for; markdown lines that embed them."""
    from distill.flywheel.plots import curves_plot, funnel_plot, metric_plot

    plots = run_dir / "plots"
    for stale in plots.glob("*.png"):  # figures of metrics a rerun no longer has
        stale.unlink()
    figures: list[tuple[str, Path]] = []
    curves = {label: [(p["step"], p["loss"]) for p in
                      (stages.get("train", {}).get("train") or {}).get("loss_history", [])]
              for label, stages in by_round.items()}
    curves = {label: points for label, points in curves.items() if points}
    if curves:
        figures.append(("Training loss per round", curves_plot(
            curves, "training loss", "Training loss per round (the trainer's logged steps)",
            plots / "training_loss.png")))
    funnels = {label: steps for label, stages in by_round.items()
               if (steps := funnel_steps(run_dir / label, stages))}
    if funnels:
        figures.append(("The funnel", funnel_plot(funnels, plots / "funnel.png")))
    scores = score_series(by_round)
    if scores:
        figures.append(("Scores per task", metric_plot(
            scores, "score", plots / "scores.png",
            title=f"Scores per task and metric (round {BASE_ROUND}: the base student)")))
    for key, title, series in flywheel_series(run_dir):
        figures.append((f"Flywheel: {title}", metric_plot(
            {title: series}, key, plots / f"flywheel_{key}.png", title=f"{title} per round")))
    if not figures:
        return []
    lines = ["## Plots", ""]
    for caption, path in figures:
        lines += [f"![{caption}]({path.relative_to(run_dir).as_posix()})", ""]
    return lines


def funnel_steps(round_dir: Path, stages: dict[str, dict[str, Any]]) -> list[tuple[str, int]]:
    """(step, examples left after it): generation, each filter, decontamination."""
    steps: list[tuple[str, int]] = []
    generated = (stages.get("generate", {}).get("counts") or {}).get("candidates")
    if generated is not None:
        steps.append(("generated", generated))
    funnel_path = round_dir / "filter" / "funnel.json"
    if funnel_path.exists():
        steps += [(step["filter"], step["out"]) for step in read_json(funnel_path)]
    clean = (stages.get("decontaminate", {}).get("counts") or {}).get("clean")
    if clean is not None:
        steps.append(("decontaminated", clean))
    return steps


def score_series(by_round: dict[str, dict[str, dict[str, Any]]]
                 ) -> dict[str, dict[int, list[float]]]:
    """task/metric -> round -> [score] (the base student at `BASE_ROUND`)."""
    from distill.report import main_scores

    series: dict[str, dict[int, list[float]]] = {}
    for label, stages in by_round.items():
        x = BASE_ROUND if label == "base" else int(label.removeprefix("round_"))
        for key, value in main_scores(stages.get("evaluate")).items():
            series.setdefault(key, {})[x] = [value]
    return series


def flywheel_series(run_dir: Path) -> list[tuple[str, str, dict[int, list[float]]]]:
    """(metric, title, round -> [value]) of each report column some round measured."""
    from distill.flywheel.measure import read_metrics
    from distill.flywheel.report import COLUMNS
    from distill.flywheel.stopping import flatten_metrics

    rounds = [flatten_metrics(m) | {"round": m["round"]} for m in read_metrics(run_dir)]
    found = []
    for key, title in COLUMNS:
        series = {int(row["round"]): [row[key]] for row in rounds if key in row}
        if series:
            found.append((key, title, series))
    return found
