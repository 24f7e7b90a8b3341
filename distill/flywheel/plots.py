"""Figures of the sweep report (matplotlib, written as PNG files with the Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def metric_plot(series: dict[str, dict[int, list[float]]], metric: str, path: Path) -> Path:
    """One line per arm: the mean over seeds against the round, with a min-max band.

    Args:
        series: arm -> round -> values over seeds (NaN values are left out).
        metric: the dotted metric name (the y label).
        path: the PNG to write.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for arm, by_round in series.items():
        rounds = sorted(by_round)
        values = [[v for v in by_round[r] if not math.isnan(v)] for r in rounds]
        kept = [(r, v) for r, v in zip(rounds, values, strict=True) if v]
        if not kept:
            continue
        xs = [r for r, _ in kept]
        means = [sum(v) / len(v) for _, v in kept]
        line, = axes.plot(xs, means, marker="o", label=f"{arm} (n={max(len(v) for _, v in kept)})")
        axes.fill_between(xs, [min(v) for _, v in kept], [max(v) for _, v in kept],
                          color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("round")
    axes.xaxis.get_major_locator().set_params(integer=True)  # no round 0.5
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(f"{metric}: mean over seeds, band min-max", fontsize=9)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def histogram_plot(histograms: dict[int, dict[str, Any]], title: str, path: Path) -> Path:
    """Per-round histograms (density) of per-sequence perplexity on shared log bins."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    colours = plt.get_cmap("viridis")
    rounds = sorted(histograms)
    for index, round_index in enumerate(rounds):
        edges, counts = histograms[round_index]["edges"], histograms[round_index]["counts"]
        total = sum(counts) or 1
        axes.stairs([c / total for c in counts], edges, label=f"round {round_index}",
                    color=colours(index / max(1, len(rounds) - 1)))
    axes.set_xscale("log")
    axes.set_xlabel("perplexity of a generated sequence under the reference model")
    axes.set_ylabel("share of sequences")
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
