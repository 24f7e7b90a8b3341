"""Perplexity filter: drop records a reference model finds too predictable or too surprising.

Each record's text is scored with a reference causal LM (distill.metrics.perplexity); very
low perplexity marks boilerplate and repetition (`too_predictable`), very high marks
garbage, other languages or broken encodings (`too_surprising`). Bounds are absolute
(`min_perplexity`, `max_perplexity`), percentiles of the batch the filter sees
(`low_percentile`, `high_percentile`: 5 drops the lowest 5%), or both, in which case
either bound drops. With no bound the filter only records the scores. Every record's
perplexity is kept in `scores.perplexity.perplexity`, and what was scored in
`scores.perplexity.scored`; a record with no token to score (an empty output) gets None
and is kept.

What is scored (`text`) defaults to what the reference model was trained to predict: a
student that distill trained with the loss on responses only (a previous round's
`train/merged`) scores the response given its prompt through its chat template, as in
training (`response`); any other model scores the output as raw text (`output`).

    filters:
      - kind: perplexity
        model: microworld:teacher      # any causal LM checkpoint
        text: output_given_prompt
        low_percentile: 5
        high_percentile: 95
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings, Verdict
from distill.models import ModelSpec, model_path
from distill.records import Example
from distill.registry import FILTERS


@FILTERS.register
class Config(FilterSettings):
    """Perplexity bounds under a reference model."""

    kind: Literal["perplexity"] = "perplexity"
    model: ModelSpec = Field(description="The reference causal LM: a checkpoint directory, "
                             "a hub id, or a plugin's `scheme:name`; loaded as it is, with its "
                             "own tokenizer and chat template (no revision or chat_template).")
    text: Literal["auto", "response", "output", "prompt_output", "output_given_prompt"] = Field(
        "auto", description="What is scored. response: the output given its prompt, through "
        "the model's chat template as SFT renders a chat, prompt tokens not scored; output: "
        "the output alone; prompt_output: the prompt and output joined by a blank line, all "
        "scored; output_given_prompt: the output as raw text conditioned on the prompt. "
        "auto: response under a student distill trained with the loss on responses only "
        "(what it learnt to predict), else output.")
    min_perplexity: float | None = Field(
        None, ge=0, description="Drop below this (`too_predictable`).")
    max_perplexity: float | None = Field(
        None, ge=0, description="Drop above this (`too_surprising`).")
    low_percentile: float | None = Field(
        None, ge=0, le=100, description="Drop below this percentile of the batch's "
        "perplexities (`too_predictable`).")
    high_percentile: float | None = Field(
        None, ge=0, le=100, description="Drop above this percentile of the batch's "
        "perplexities (`too_surprising`).")
    max_length: int = Field(1024, ge=2, description="Tokens scored per record at most.")
    batch_size: int = Field(8, ge=1, description="Records per forward pass.")
    device: str | None = Field(None, description="Where the reference model runs; default "
                               "CUDA when available.")

    # settings that change only speed (batching is exact, see tests/metrics/test_perplexity)
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    @field_validator("model")
    @classmethod
    def _plain_checkpoint(cls, value: ModelSpec) -> ModelSpec:
        # The scorer loads the checkpoint as it is and scores raw text: a revision or a chat
        # template would enter the fingerprint while changing nothing that is loaded.
        if value.revision is not None or value.chat_template is not None:
            raise ValueError("the perplexity filter loads the checkpoint as it is, with its "
                             "own chat template: give no revision or chat_template")
        return value

    @model_validator(mode="after")
    def _ordered_bounds(self) -> Config:
        for low, high in (("min_perplexity", "max_perplexity"),
                          ("low_percentile", "high_percentile")):
            if None not in (getattr(self, low), getattr(self, high)) and \
                    getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} must not exceed {high}")
        return self

    def dependencies(self) -> Dependencies:
        """The reference model: another model gives other scores."""
        return Dependencies(models={"reference": self.model})

    def build(self, context: FilterContext) -> PerplexityFilter:
        """The perplexity filter."""
        return PerplexityFilter(self, context)


class PerplexityFilter:
    """Scores records with a reference model and drops those outside the bounds."""

    name = "perplexity"

    def __init__(self, config: Config, context: FilterContext) -> None:
        self.config = config

    def texts(self, records: list[Example], text: str) -> tuple[list[str], list[str] | None]:
        """The scored raw texts and, for `output_given_prompt`, their unscored contexts."""
        if text == "output":
            return [r.output for r in records], None
        if text == "prompt_output":
            return [f"{r.prompt_text}\n\n{r.output}" for r in records], None
        return [r.output for r in records], [f"{r.prompt_text}\n\n" for r in records]

    def perplexities(self, records: list[Example]) -> tuple[list[float], str]:
        """Every record's perplexity under the reference model, and what was scored."""
        from distill.metrics.perplexity import (
            load_scorer,
            response_loss_mask,
            response_perplexities,
            sequence_perplexities,
        )

        config = self.config
        path = model_path(config.model.model)
        loss_mask = response_loss_mask(path)
        text = config.text
        if text == "auto":
            text = "output" if loss_mask is None else "response"
        scorer = load_scorer(path, device=config.device)
        if text == "response":
            # a model trained on whole chats, or not by distill: its response after the
            # prompt and generation prompt, as completion-only SFT would train it
            return response_perplexities(scorer, [r.messages() for r in records],
                                         loss_mask=loss_mask or "completion",
                                         batch_size=config.batch_size,
                                         max_length=config.max_length), text
        texts, contexts = self.texts(records, text)
        return sequence_perplexities(scorer, texts, contexts=contexts,
                                     batch_size=config.batch_size,
                                     max_length=config.max_length), text

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """Score every record, then apply the absolute and percentile bounds."""
        import numpy as np

        if not records:
            return []
        config = self.config
        values, scored = self.perplexities(records)
        finite = np.array([v for v in values if math.isfinite(v)])
        low, high = config.min_perplexity, config.max_perplexity
        if finite.size and config.low_percentile is not None:
            cut = float(np.percentile(finite, config.low_percentile))
            low = cut if low is None else max(low, cut)
        if finite.size and config.high_percentile is not None:
            cut = float(np.percentile(finite, config.high_percentile))
            high = cut if high is None else min(high, cut)

        verdicts = []
        for value in values:
            if not math.isfinite(value):
                verdicts.append(Verdict(keep=True, scores={"perplexity": None,
                                                           "scored": scored}))
            elif low is not None and value < low:
                verdicts.append(Verdict(keep=False, reason="too_predictable", scores={
                    "perplexity": value, "bound": low, "scored": scored}))
            elif high is not None and value > high:
                verdicts.append(Verdict(keep=False, reason="too_surprising", scores={
                    "perplexity": value, "bound": high, "scored": scored}))
            else:
                verdicts.append(Verdict(keep=True, scores={"perplexity": value,
                                                           "scored": scored}))
        return verdicts
