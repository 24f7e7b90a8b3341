"""Stopping rules for the flywheel: end the rounds early, and say why.

    rounds:
      stop:
        - {kind: plateau, metric: benchmark.microworld/exact_match, mode: max,
           min_delta: 0.005, patience: 2}
        - {kind: floor, metric: diversity.distinct_2, value: 0.2}
        - {kind: ceiling, metric: held_out_perplexity.mean, value: 50}

Metrics are the dotted names of the measure stage's `metrics.json`, flattened
(`flatten_metrics`). After each round's measure stage the rules are checked in order; the
first that fires ends the run after that round, and the run directory's `stopped.json`
and report say which rule fired, on which value.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

from distill.settings import Strict


class PlateauRule(Strict):
    """Stop when a metric has not improved on its best by `min_delta` for `patience` rounds."""

    kind: Literal["plateau"] = "plateau"
    metric: str = Field(description="Dotted metric name, e.g. benchmark.microworld/exact_match.")
    mode: Literal["max", "min"] = Field("max", description="max: higher is better; min: lower.")
    min_delta: float = Field(0.0, ge=0, description="Smallest change that counts as better.")
    patience: int = Field(1, ge=1, description="Rounds without improvement before stopping.")


class FloorRule(Strict):
    """Stop when a metric falls below a floor (diversity: distinct-n, TTR, coverage)."""

    kind: Literal["floor"] = "floor"
    metric: str = Field(description="Dotted metric name, e.g. diversity.distinct_2.")
    value: float = Field(description="Stop once the metric is below this.")


class CeilingRule(Strict):
    """Stop when a metric rises above a ceiling (self-BLEU, perplexity of real data)."""

    kind: Literal["ceiling"] = "ceiling"
    metric: str = Field(description="Dotted metric name, e.g. diversity.self_bleu.")
    value: float = Field(description="Stop once the metric is above this.")


StopRule = Annotated[PlateauRule | FloorRule | CeilingRule, Field(discriminator="kind")]


def flatten_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numbers of a nested dict under dotted keys ({"a": {"b": 1}} -> {"a.b": 1.0})."""
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name + "."))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int | float):
            flat[name] = float(value)
    return flat


def check_stop(rules: list[Any], history: list[dict[str, float]]) -> dict[str, Any] | None:
    """The first rule that fires on the flattened metrics of rounds 0..r, or None.

    Args:
        rules: the recipe's `rounds.stop`.
        history: flattened metrics per round so far, in order.

    Returns:
        {"round", "rule", "metric", "value", "reason"} when a rule fires.

    Raises:
        KeyError: a rule names a metric the measure stage did not write.
    """
    if not history:
        return None
    round_index = len(history) - 1
    for rule in rules:
        values = [_value(rule.metric, row, r) for r, row in enumerate(history)]
        value = values[-1]
        reason = None
        if rule.kind == "floor" and value < rule.value:
            reason = f"{rule.metric} = {value:.4g} fell below the floor {rule.value:g}"
        elif rule.kind == "ceiling" and value > rule.value:
            reason = f"{rule.metric} = {value:.4g} rose above the ceiling {rule.value:g}"
        elif rule.kind == "plateau":
            reason = _plateau(rule, values)
        if reason:
            return {"round": round_index, "rule": rule.model_dump(), "metric": rule.metric,
                    "value": value, "reason": reason}
    return None


def _plateau(rule: PlateauRule, values: list[float]) -> str | None:
    sign = 1.0 if rule.mode == "max" else -1.0
    best, best_round, stale = sign * values[0], 0, 0
    for index, value in enumerate(values[1:], start=1):
        if math.isnan(value):
            stale += 1
        elif sign * value > best + rule.min_delta:
            best, best_round, stale = sign * value, index, 0
        else:
            stale += 1
    if stale >= rule.patience:
        return (f"{rule.metric} has not improved by more than {rule.min_delta:g} for {stale} "
                f"round(s) (best {sign * best:.4g} at round {best_round})")
    return None


def _value(metric: str, row: dict[str, float], round_index: int) -> float:
    if metric not in row:
        close = sorted(key for key in row if metric.split(".")[0] in key)[:8]
        raise KeyError(f"stop rule: round {round_index} has no metric {metric!r}"
                       + (f"; similar: {close}" if close else ""))
    return row[metric]
