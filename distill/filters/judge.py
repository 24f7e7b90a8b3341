"""LLM-judge quality filter: keep records whose answer a judge rates at least `threshold`.

The judge (default: the recipe's teacher) rates each record's `output` as an answer to
its user turn on UltraFeedback's aspects, 1-5 at temperature 0 (`distill.judge`); the
record's score is the mean. A preference pair is judged by its chosen answer.

    filters:
      - kind: judge
        threshold: 4.0
        aspects: [instruction_following, helpfulness]
        model: {model: Qwen/Qwen2.5-7B-Instruct, backend: vllm}

Verdicts: kept, `judge_score<threshold`, or `judge_malformed` (the judge's answer gave
no usable score; kept instead with `keep_unjudged: true`). Every record's
`scores["judge"]` holds the mean, the per-aspect scores and the judge's rationales (or
the malformed reason). Judgements are checkpointed in the filter stage's directory, so a
killed filter stage resumes without asking again. The judge's requests count against the
run's `budget:` caps, at the judge model's `price` (the teacher's when it is the teacher),
checked between chunks of 64: a cap stops the filter stage uncommitted and resumable.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings, Verdict
from distill.judge import (
    REQUEST_FAILED,
    RUBRIC_TEMPLATE,
    JudgeSettings,
    LLMJudge,
    open_judge_backend,
)
from distill.models import ServedModel
from distill.records import Example
from distill.registry import FILTERS

log = logging.getLogger("distill")


@FILTERS.register
class Config(FilterSettings, JudgeSettings):
    """Keep records the LLM judge scores at or above `threshold`."""

    kind: Literal["judge"] = "judge"
    threshold: float = Field(
        3.0, ge=1.0, le=5.0, description="Lowest mean score (1-5) a record may have and stay.")
    keep_unjudged: bool = Field(
        False, description="Keep records whose judgement could not be parsed instead of "
        "dropping them as `judge_malformed`.")

    def dependencies(self) -> Dependencies:
        """The judge model (or the recipe's teacher) and the rubric prompt it is asked."""
        judge = self.model if self.model is not None else "teacher"
        return Dependencies(models={"judge": judge}, templates=(RUBRIC_TEMPLATE,))

    def build(self, context: FilterContext) -> JudgeFilter:
        """The judge filter; with no `model`, the judge is the context's teacher."""
        return JudgeFilter(self, context)


class JudgeFilter:
    """Drops records the judge scores below the threshold."""

    name = "judge"

    def __init__(self, config: Config, context: FilterContext | None = None) -> None:
        self.config = config
        self.context = context or FilterContext()

    def _judge_model(self) -> ServedModel:
        if self.config.model is not None:
            return self.config.model
        if self.context.teacher is None:
            raise ValueError("filters[kind=judge]: no judge model and no teacher to default to")
        return self.context.teacher

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """One verdict per record, in order."""
        from distill.generate.context import GenerationContext

        if not records:
            return []
        choice = self._judge_model()
        if self.config.model is None:
            log.warning("judge filter: the judge is the teacher that wrote this data; LLM "
                        "judges favour their own outputs (self-preference bias)")
        work = self.context.work_dir or Path(".")
        settings = json.dumps(self.config.model_dump(mode="json"), sort_keys=True)
        key = "judge-" + hashlib.sha256(settings.encode()).hexdigest()[:12]
        backend = open_judge_backend(choice, self.context.seed)
        self.context.failures.max_fraction = choice.max_failed_fraction  # the judge's server
        try:
            ctx = GenerationContext(backend=backend, checkpoint_dir=work / "judge-checkpoints",
                                    seed=self.context.seed, failures=self.context.failures,
                                    budget=self.context.budget, price=choice.price)
            ratings = LLMJudge(self.config, ctx, choice.model).rate(records, key=key)
        finally:
            backend.close()
        verdicts = []
        for rating in ratings:
            if rating.reason == REQUEST_FAILED:  # no judgement at all: never kept unjudged
                verdicts.append(Verdict(keep=False, reason="judge_request_failed"))
                continue
            if not rating.ok:
                verdicts.append(Verdict(keep=self.config.keep_unjudged, reason="judge_malformed",
                                        scores={"malformed": rating.reason}))
                continue
            score = rating.score
            keep = score >= self.config.threshold
            verdicts.append(Verdict(
                keep=keep, reason="" if keep else f"judge_score<{self.config.threshold:g}",
                scores={"mean": round(score, 4), "aspects": rating.scores,
                        "rationales": rating.rationales}))
        return verdicts
