"""The `measure` stage of a round: what the model-collapse papers plot, per round.

Writes `metrics.json` (and the raw per-sequence perplexities in `perplexities.json`):

- held_out_perplexity: the round's student on held-out real data (`data.real.held_out`);
  Shumailov et al.'s main curve.
- generated_perplexity: each round's synthetic training data scored by one fixed
  reference model (the round-0 student by default, or the original teacher), as a
  histogram on fixed log-spaced bins; the "tails vanish" figure of Shumailov et al.
- diversity: distinct-n, type-token ratio, self-BLEU and compression ratio of the round's
  synthetic data (`distill.metrics.diversity`); semantic: mean pairwise embedding distance
  (optional, needs the `embeddings` extra).
- microworld: family and difficulty coverage against the true distribution (KL, tail
  mass) and benchmark accuracy per family (`distill.metrics.coverage`).
- benchmark scores, training-data mix, funnel counts, generated tokens and wall time per
  stage, copied from the round's manifests.

Texts are scored as the model saw them in training. A student distill trained with the
loss on the assistant's tokens only (TRL's default here) was never trained to predict
prompts, so under it a chat's perplexity is that of the response given its prompt, in the
chat template rendering training used (prompt tokens labelled -100); under any other model
it is that of the full text: a record's `text` field when it has one, otherwise its chat
rendered with the scoring model's chat template. Each perplexity summary says which in
`scored` ("response" or "full text").
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from distill.records import Example, write_json
from distill.settings import Strict

log = logging.getLogger("distill")

class MeasureConfig(Strict):
    """`measure:` settings of the per-round metrics."""

    enabled: bool = Field(True, description="Run the measure stage after each evaluation.")
    sample_size: int = Field(500, ge=2, description="Synthetic records per round that "
                             "lexical diversity and the perplexity histogram use (seeded "
                             "sample; fixed size keeps rounds comparable).")
    bleu_sample_size: int = Field(100, ge=2, description="Records for self-BLEU (quadratic "
                                  "cost), a sub-sample of the above.")
    ngram_sizes: list[int] = Field([1, 2, 3], description="n of each distinct-n.")
    perplexity: bool = Field(True, description="Held-out real perplexity and the histogram "
                             "of generated data's perplexity (loads models).")
    reference_model: Literal["round_0", "teacher"] = Field(
        "round_0", description="Scores every round's generated data for the histogram: "
        "round_0 (the round-0 student) or teacher (the recipe's original teacher).")
    histogram_bins: int = Field(40, ge=2, description="Log-spaced histogram bins.")
    histogram_range: tuple[float, float] = Field(
        (1.0, 1000.0), description="Perplexity range of the bins; values outside land in the "
        "first or last bin.")
    max_length: int = Field(512, ge=2, description="Tokens scored per text.")
    batch_size: int = Field(16, ge=1, description="Texts per forward pass (speed only).")
    embeddings: bool = Field(False, description="Semantic diversity: mean pairwise embedding "
                             "distance (needs `pip install 'distill[embeddings]'`).")
    embedding_sample_size: int = Field(200, ge=2, description="Records embedded per round.")
    microworld: bool | None = Field(None, description="Family / difficulty coverage and "
                                    "per-family accuracy; null: on when the eval tasks "
                                    "include the microworld benchmark.")
    tail_fraction: float = Field(0.5, gt=0, lt=1, description="Rarest share of microworld "
                                 "families counted as the tail.")

    # settings that change only speed: left out of the stage's fingerprint
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"batch_size"})


def record_text(example: Example, tokenizer: Any = None) -> str:
    """The text a model is trained on for a record (see the module docstring)."""
    text = getattr(example, "text", None)
    if isinstance(text, str):
        return text
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(example.messages(), tokenize=False)
        bos = tokenizer.bos_token
        # sequence_perplexities puts BOS in front itself
        return rendered[len(bos):] if bos and rendered.startswith(bos) else rendered
    return f"{example.prompt_text}\n{example.output}"


def histogram(values: list[float], bins: int, low: float, high: float) -> dict[str, Any]:
    """Counts on `bins` log-spaced bins over [low, high]; outliers go to the end bins."""
    edges = [low * (high / low) ** (i / bins) for i in range(bins + 1)]
    counts = [0] * bins
    finite = [v for v in values if not math.isnan(v)]
    for value in finite:
        position = 0 if value <= low else math.log(value / low) / math.log(high / low) * bins
        counts[min(bins - 1, max(0, int(position)))] += 1
    return {"edges": edges, "counts": counts}


def summary(values: list[float]) -> dict[str, float]:
    """n, mean, median, 5th and 95th percentile of the finite values."""
    finite = sorted(v for v in values if not math.isnan(v) and not math.isinf(v))
    if not finite:
        return {"n": 0}

    def quantile(q: float) -> float:
        return finite[min(len(finite) - 1, int(q * len(finite)))]

    return {"n": len(finite), "mean": sum(finite) / len(finite), "median": quantile(0.5),
            "p05": quantile(0.05), "p95": quantile(0.95)}


def measure_round(config: MeasureConfig, out: Path, *, round_index: int, seed: int,
                  synthetic: list[Example], held_out: list[Example], student: str,
                  reference: str | None, scores: dict[str, Any],
                  manifests: dict[str, dict[str, Any]], microworld: bool,
                  training_mix: dict[str, int] | None = None) -> dict[str, Any]:
    """Compute one round's metrics and write `metrics.json` into `out`; returns them.

    Args:
        config: the recipe's `measure` section.
        out: the stage's work directory.
        round_index: the round.
        seed: the recipe's seed (seeds the samples).
        synthetic: the round's synthetic training data (clean, after decontamination).
        held_out: held-out real records (empty: no perplexity of real data).
        student: path of the round's trained (merged) student.
        reference: path of the model that scores generated data (None: skipped).
        scores: the round's evaluate-stage scores ({task: {metric: value}}).
        manifests: the round's stage manifests by stage name.
        microworld: whether to compute microworld coverage and per-family accuracy.
        training_mix: training records by source ("real", "round_<r>").
    """
    from distill.metrics.diversity import lexical_diversity, seeded_sample

    metrics: dict[str, Any] = {"round": round_index, "synthetic_records": len(synthetic)}
    sample_ids = {e.id for e in synthetic}
    sample = seeded_sample(synthetic, config.sample_size, seed) if synthetic else []
    raw: dict[str, list[float]] = {}
    if config.perplexity:
        if held_out:
            raw["held_out"], scored = record_perplexities(student, held_out, config)
            metrics["held_out_perplexity"] = {**summary(raw["held_out"]), "scored": scored}
        if reference and sample:
            raw["generated"], scored = record_perplexities(reference, sample, config)
            low, high = config.histogram_range
            metrics["generated_perplexity"] = {
                **summary(raw["generated"]), "scored": scored,
                "histogram": histogram(raw["generated"], config.histogram_bins, low, high)}
    texts = [record_text(e) for e in sample]
    if texts:
        metrics["diversity"] = lexical_diversity(
            texts, sample_size=config.sample_size, bleu_sample_size=config.bleu_sample_size,
            ngram_sizes=config.ngram_sizes, seed=seed)
    if config.embeddings:
        metrics["semantic"] = _semantic(seeded_sample(texts, config.embedding_sample_size, seed))
    if microworld:
        from distill.metrics.coverage import family_accuracy, microworld_coverage

        coverage = microworld_coverage(synthetic, tail_fraction=config.tail_fraction)
        coverage["accuracy"] = family_accuracy(scores)
        metrics["microworld"] = coverage
    metrics["benchmark"] = _flat_scores(scores)
    metrics["training_data"] = training_mix or {}
    metrics["funnel"] = {name: m.get("counts", {}) for name, m in manifests.items()
                         if m.get("counts")}
    metrics["tokens"] = (manifests.get("generate") or {}).get("tokens", {})
    metrics["wall_time_s"] = {name: m.get("wall_time_s", 0.0) for name, m in manifests.items()}
    write_json(out / "metrics.json", metrics)
    write_json(out / "perplexities.json", raw)
    log.info("round_%d/measure: %d synthetic records (%d sampled)", round_index,
             len(sample_ids), len(sample))
    return metrics


def record_perplexities(model: str, records: list[Example],
                        config: MeasureConfig) -> tuple[list[float], str]:
    """Each record's perplexity under `model`, and what was scored ("response", "full text").

    The response given its prompt under a student trained on responses only
    (`distill.metrics.perplexity.response_loss_mask`), for records that are chats; the
    full text otherwise (see the module docstring).
    """
    from distill.metrics.perplexity import (
        FULL_TEXT,
        RESPONSE,
        load_scorer,
        response_loss_mask,
        response_perplexities,
        sequence_perplexities,
    )

    loss_mask = response_loss_mask(model)
    scorer = load_scorer(model)
    if loss_mask is not None and not any(isinstance(getattr(e, "text", None), str)
                                         for e in records):
        return response_perplexities(scorer, [e.messages() for e in records],
                                     loss_mask=loss_mask, batch_size=config.batch_size,
                                     max_length=config.max_length), RESPONSE
    texts = [record_text(e, scorer.tokenizer) for e in records]
    return sequence_perplexities(scorer, texts, batch_size=config.batch_size,
                                 max_length=config.max_length), FULL_TEXT


def _semantic(texts: list[str]) -> dict[str, Any]:
    try:
        from distill.metrics.embeddings import embed
    except ImportError as error:  # the module of another part, or its extra, is missing
        return {"skipped": str(error)}
    from distill.metrics.diversity import mean_pairwise_distance

    try:
        vectors = embed(texts)
    except ImportError as error:
        log.warning("semantic diversity skipped: %s", error)
        return {"skipped": str(error)}
    return {"n": len(texts), "mean_pairwise_distance": mean_pairwise_distance(vectors)}


def _flat_scores(scores: dict[str, Any]) -> dict[str, float]:
    flat = {}
    for task, values in (scores or {}).items():
        if isinstance(values, dict):
            for metric, value in values.items():
                if isinstance(value, int | float) and "stderr" not in metric:
                    flat[f"{task}/{metric}"] = float(value)
    return flat


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every committed round's metrics.json of a run, in round order."""
    from distill.records import read_json

    found = []
    for path in Path(run_dir).glob("round_*/measure/metrics.json"):
        found.append(read_json(path))
    return sorted(found, key=lambda m: m["round"])
