"""The filter protocol and the funnel that runs filters in order.

A filter sees the whole batch of surviving records at once (novelty and dedup depend on
what came before) and returns one `Verdict` per record. The funnel runs the recipe's
filters in order, stores every filter's scores in the records, keeps every dropped record
with its reason, and counts what each filter took out, with a few examples per reason.
"""

from __future__ import annotations

import importlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from distill.records import Example, Rejected

# recipe name -> "module:Class". Each class is built as Class(config, context).
FILTERS: dict[str, str] = {
    "heuristics": "distill.filters.heuristics:HeuristicFilter",
    "novelty": "distill.filters.novelty:NoveltyFilter",
    "dedup": "distill.filters.dedup:ExactDedupFilter",
    "verify": "distill.filters.verify:VerifyFilter",
    "judge": "distill.filters.judge:JudgeFilter",
    "minhash_dedup": "distill.filters.near_dedup:MinHashDedupFilter",
    "embedding_dedup": "distill.filters.near_dedup:EmbeddingDedupFilter",
    "perplexity": "distill.filters.perplexity:PerplexityFilter",
}

EXAMPLES_PER_REASON = 3


@dataclass
class Verdict:
    """A filter's decision on one record."""

    keep: bool
    reason: str = ""  # short and stable ("too_short", "rouge_l>0.7"): the funnel groups by it
    scores: dict[str, Any] = field(default_factory=dict)  # stored in record.scores[filter]


@dataclass
class FilterContext:
    """What filters may need beyond their own config."""

    seed_examples: list[Example] = field(default_factory=list)  # e.g. the novelty pool's start
    run_dir: Path | None = None
    seed: int = 0
    teacher: Any = None  # the recipe's TeacherSpec: the LLM judge's default model
    work_dir: Path | None = None  # the filter stage's directory (judge checkpoints)


class Filter(Protocol):
    """A named batch filter."""

    name: str

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """Judge every record; one verdict each, in order."""
        ...


def build_filter(config: Any, context: FilterContext) -> Filter:
    """Instantiate the filter named by `config.kind`, importing its module only now."""
    module_name, class_name = FILTERS[config.kind].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(config, context)


@dataclass
class FunnelResult:
    """Kept and rejected records and the per-filter counts."""

    kept: list[Example]
    rejected: list[Rejected]
    funnel: list[dict[str, Any]]


def run_funnel(filters: list[Filter], records: list[Example],
               progress: Callable[[str, int], None] | None = None) -> FunnelResult:
    """Run filters in order; each sees only what the previous ones kept."""
    kept = list(records)
    rejected: list[Rejected] = []
    funnel: list[dict[str, Any]] = []
    for position, flt in enumerate(filters):
        verdicts = flt(kept)
        if len(verdicts) != len(kept):
            raise RuntimeError(f"filter {flt.name} returned {len(verdicts)} verdicts "
                               f"for {len(kept)} records")
        survivors: list[Example] = []
        reasons: Counter[str] = Counter()
        examples: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for record, verdict in zip(kept, verdicts, strict=True):
            if verdict.scores:
                record.scores[flt.name] = verdict.scores
            if verdict.keep:
                survivors.append(record)
                continue
            reason = verdict.reason or "dropped"
            reasons[reason] += 1
            if len(examples[reason]) < EXAMPLES_PER_REASON:
                examples[reason].append({"id": record.id, "instruction": record.instruction,
                                         "input": record.input, "output": record.output})
            rejected.append(Rejected(id=record.id, stage=f"filter:{flt.name}", reason=reason,
                                     record=record.to_json()))
        funnel.append({"position": position, "filter": flt.name, "in": len(kept),
                       "out": len(survivors), "dropped": dict(reasons),
                       "examples": dict(examples)})
        kept = survivors
        if progress is not None:
            progress(flt.name, len(kept))
    return FunnelResult(kept=kept, rejected=rejected, funnel=funnel)
