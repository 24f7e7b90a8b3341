"""Figures of the sweep's and a run's reports, and the HTML page both are written into.

Figures are matplotlib PNG files, drawn with the Agg backend.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def metric_plot(series: dict[str, dict[int, list[float]]], metric: str, path: Path,
                title: str | None = None) -> Path:
    """One line per arm: the mean over seeds against the round, with a min-max band.

    Args:
        series: arm -> round -> values over seeds (NaN values are left out).
        metric: the dotted metric name (the y label).
        path: the PNG to write.
        title: the figure's title; default: the sweep's (mean over seeds, band min-max).
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
        n = max(len(v) for _, v in kept)
        line, = axes.plot(xs, means, marker="o", label=arm if n == 1 else f"{arm} (n={n})")
        axes.fill_between(xs, [min(v) for _, v in kept], [max(v) for _, v in kept],
                          color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_xlabel("round")
    axes.xaxis.get_major_locator().set_params(integer=True)  # no round 0.5
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    axes.set_title(title or f"{metric}: mean over seeds, band min-max", fontsize=9)
    return _save(plt, figure, path)


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
    return _save(plt, figure, path)


def curves_plot(curves: dict[str, list[tuple[int, float]]], ylabel: str, title: str,
                path: Path) -> Path:
    """One line per curve (a round's training loss against the optimizer step)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, points in curves.items():
        if points:
            axes.plot([x for x, _ in points], [y for _, y in points], label=label)
    axes.set_xlabel("optimizer step")
    axes.set_ylabel(ylabel)
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return _save(plt, figure, path)


def funnel_plot(funnels: dict[str, list[tuple[str, int]]], path: Path) -> Path:
    """Per round, how many examples are left after each step (grouped horizontal bars).

    Args:
        funnels: round label -> (step, examples left after it), in pipeline order.
        path: the PNG to write.
    """
    plt = _pyplot()
    steps = list(dict.fromkeys(step for funnel in funnels.values() for step, _ in funnel))
    figure, axes = plt.subplots(figsize=(6.4, 1.2 + 0.45 * len(steps) * max(1, len(funnels))
                                         ** 0.5), dpi=110)
    height = 0.8 / max(1, len(funnels))
    for index, (label, funnel) in enumerate(funnels.items()):
        left = dict(funnel)
        ys = [position + index * height for position in range(len(steps))]
        axes.barh(ys, [left.get(step, 0) for step in steps], height=height, label=label)
    axes.set_yticks([position + 0.4 - height / 2 for position in range(len(steps))], steps,
                    fontsize=8)
    axes.invert_yaxis()  # the pipeline reads top to bottom
    axes.set_xlabel("examples left")
    axes.set_title("The funnel: examples left after each step", fontsize=9)
    axes.grid(alpha=0.3, axis="x")
    axes.legend(fontsize=8)
    return _save(plt, figure, path)


PAGE_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:auto}"
              "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}"
              "img{max-width:100%}")


def html_page(title: str, body: str) -> str:
    """A report's HTML document around its body (the sweep's and a run's report.html)."""
    import html

    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{PAGE_STYLE}</style></head><body>{body}</body></html>\n")


def markdown_html(markdown: str, title: str) -> str:
    """report.md as an HTML page (markdown-it, CommonMark with tables; rich installs it)."""
    from markdown_it import MarkdownIt

    # html on: the report's <details> blocks of dropped examples stay foldable
    return html_page(title, MarkdownIt("commonmark", {"html": True}).enable("table")
                     .render(markdown))


def _save(plt, figure, path: Path) -> Path:
    """Lay out, write the PNG (making its directory) and free the figure."""
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
