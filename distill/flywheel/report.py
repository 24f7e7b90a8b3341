"""The flywheel section of a run's report.md: metrics per round, and why the rounds stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.records import read_json

# (dotted metric, column title); rows whose metric no round has are left out.
COLUMNS = [
    ("held_out_perplexity.mean", "ppl real (held out)"),
    ("generated_perplexity.mean", "ppl generated (ref.)"),
    ("generated_perplexity.p95", "p95 generated"),
    ("diversity.distinct_2", "distinct-2"),
    ("diversity.ttr", "TTR"),
    ("diversity.self_bleu", "self-BLEU"),
    ("diversity.compression_ratio", "compression"),
    ("semantic.mean_pairwise_distance", "embedding dist."),
    ("microworld.families_covered", "families"),
    ("microworld.tail_mass", "tail mass"),
    ("microworld.kl_families", "KL families"),
    ("microworld.hard_share", "hard share"),
]


def flywheel_section(run_dir: str | Path) -> list[str]:
    """Markdown lines: one row per measured round, then the stop reason if any."""
    from distill.flywheel.measure import read_metrics
    from distill.flywheel.stopping import flatten_metrics

    run_dir = Path(run_dir)
    rounds = read_metrics(run_dir)
    lines: list[str] = []
    if rounds:
        flat = [flatten_metrics(m) for m in rounds]
        columns = [(key, title) for key, title in COLUMNS if any(key in row for row in flat)]
        benchmark = sorted({k for row in flat for k in row if k.startswith("benchmark.")})[:1]
        columns += [(key, key.removeprefix("benchmark.")) for key in benchmark]
        lines += ["## Flywheel metrics", "",
                  "Measured after each round (`round_<r>/measure/metrics.json`); perplexity "
                  "of generated data is under the reference model of `measure.reference_model`"
                  + _scored(rounds, "generated_perplexity") + (
                      "; perplexity of real held-out data is under each round's student"
                      + _scored(rounds, "held_out_perplexity")
                      if any("held_out_perplexity" in m for m in rounds) else "") + ".",
                  "", "| round | training data | " + " | ".join(t for _, t in columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for metrics, row in zip(rounds, flat, strict=True):
            mix = ", ".join(f"{k} {v}" for k, v in (metrics.get("training_data") or {}).items())
            cells = [_format(row.get(key)) for key, _ in columns]
            lines.append(f"| {metrics['round']} | {mix} | " + " | ".join(cells) + " |")
        lines.append("")
    stopped = run_dir / "stopped.json"
    if stopped.exists():
        stop = read_json(stopped)
        lines += [f"**Stopped after round {stop['round']}** by the `{stop['rule']['kind']}` "
                  f"rule: {stop['reason']}.", ""]
    return lines


# What a perplexity summary's `scored` says was scored (distill.flywheel.measure).
SCORED = {"response": "the response given its prompt (what the model was trained to "
                      "predict; prompt tokens not scored)",
          "full text": "the full text"}


def _scored(rounds: list[dict[str, Any]], key: str) -> str:
    """", scored on ..." for a perplexity metric, per round where rounds differ."""
    scored = {m["round"]: (m.get(key) or {}).get("scored") for m in rounds if m.get(key)}
    if not scored:
        return ""
    kinds = set(scored.values())
    if len(kinds) == 1:
        kind = kinds.pop()
        return f", scored on {SCORED.get(kind, kind or 'the full text')}"
    return ", scored on " + ", ".join(f"{SCORED.get(kind, kind or 'the full text')} in "
                                      f"round {r}" for r, kind in sorted(scored.items()))


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.4g}"
