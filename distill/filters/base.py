"""The filter seam and the funnel that runs filters in order.

A filter is one module: its settings class derives from `FilterSettings`, registers under
its `kind` (`@FILTERS.register`), declares what its verdicts depend on
(`dependencies()`) and builds the filter (`build(context)`).

A filter sees the whole batch of surviving records at once (novelty and dedup depend on
what came before) and returns one `Verdict` per record. The funnel runs the recipe's
filters in order, stores every filter's scores in the records, keeps every dropped record
with its reason, and counts what each filter took out, with a few examples per reason.
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field

from distill.budget import Budget
from distill.component import Component, undeclared
from distill.generate.failures import FailedRequests
from distill.records import Example, Rejected

EXAMPLES_PER_REASON = 3


@dataclass
class Verdict:
    """A filter's decision on one record."""

    keep: bool
    reason: str = ""  # short and stable ("too_short", "rouge_l>0.7"): the funnel groups by it
    scores: dict[str, Any] = field(default_factory=dict)  # stored in record.scores[filter]


@dataclass
class FilterContext:
    """What filters may need beyond their own settings."""

    seed: int = 0
    work_dir: Path | None = None  # the filter stage's directory (judge checkpoints)
    teacher: Any = None  # the recipe's teacher (a ServedModel): "teacher" in dependencies
    # the run's seed tasks (the novelty pool's start); raises unless the filter declared them
    seed_tasks: Callable[[], list[Example]] = undeclared("seed_tasks")
    # the stage's requests to a judge that ran out of retries (distill.generate.failures)
    failures: FailedRequests = field(default_factory=lambda: FailedRequests(stage="filter"))
    # the run's budget caps (distill.budget): a judge's requests count against them
    budget: Budget | None = None


class Filter(Protocol):
    """A named batch filter."""

    name: str

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """Judge every record; one verdict each, in order."""
        ...


class FilterSettings(Component):
    """Base of every filter's settings in the recipe's `filters:` list."""

    name: str | None = Field(None, description="The filter's name in the funnel and in "
                             "records' scores; default: its kind. Two filters of one kind "
                             "(a code and a math verifier) need distinct names.")

    @abstractmethod
    def build(self, context: FilterContext) -> Filter:
        """The filter these settings describe."""

    @property
    def label(self) -> str:
        """The name in the funnel and in records' scores."""
        return self.name or self.kind

    def create(self, context: FilterContext) -> Filter:
        """Build the filter and give it this recipe's name for it."""
        built = self.build(context)
        built.name = self.label
        return built


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
