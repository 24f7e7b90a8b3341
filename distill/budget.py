"""Budget caps on generation: `budget:` in a recipe (tokens, requests, money).

    budget: {max_requests: 5000, max_tokens: 2_000_000, max_cost: 25.0}
    distill run recipe.yaml                      # exits with code 4 when a cap stops it
    distill run recipe.yaml budget.max_cost=50   # resumes where it stopped

A cap bounds the generation of the whole run directory, counted from what its generation
checkpoints hold: a resumed run counts the requests it finds on disk, so raising the cap
and rerunning continues where the last run stopped instead of spending the cap again.
Caps are checked at chunk boundaries (`GenerationContext.generate`): a request cap is
never passed (only chunks that fit are started), a token or money cap can be passed by
the chunks already running when it is reached. The stopped stage is not committed: its
work directory keeps the finished chunks, which the next run reuses, so a run stopped by
a budget and resumed produces the same bytes as one never stopped.

Every request the run sends through a generation context counts: the teacher's, and
those of the models that answer or judge beside it (the preference method's answer models
and judge, the LLM-judge filter), each priced at its own model's `price` (a judge with no
`model` is the teacher, at `teacher.price`). A committed stage's manifest records what it
spent (`spent`), so a resumed run counts finished stages at the prices they ran at.
The decontamination gate's paraphrase judge asks all its questions in one call that no
chunk boundary splits: a recipe with both a cap and that judge is refused.

Caps change where a run stops, never what it produces: the section is left out of every
fingerprint (the runner never puts it in a stage's config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import Field

from distill.settings import Strict


class Price(Strict):
    """What a served model costs per million tokens (API backends), in the user's currency."""

    prompt_per_million: float = Field(ge=0.0, description="Price of a million prompt tokens.")
    completion_per_million: float = Field(ge=0.0, description="Price of a million completion "
                                          "tokens.")

    def cost(self, prompt_tokens: float, completion_tokens: float) -> float:
        """The price of that many tokens."""
        return (prompt_tokens * self.prompt_per_million
                + completion_tokens * self.completion_per_million) / 1e6


class BudgetSettings(Strict):
    """Caps on the run's generation; a run that reaches one stops cleanly and resumably."""

    max_requests: int | None = Field(
        None, ge=1, description="Most generation requests the run sends (all rounds, "
        "resumed runs' requests on disk included); never exceeded.")
    max_tokens: int | None = Field(
        None, ge=1, description="Most prompt + completion tokens the run's generation uses; "
        "checked between chunks, so the chunks running when it is reached finish.")
    max_cost: float | None = Field(
        None, gt=0.0, description="Most money the run's generation costs, from "
        "teacher.price; checked between chunks like max_tokens.")

    # a cap changes where a run stops, never the bytes it writes
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"max_requests", "max_tokens",
                                                       "max_cost"})

    @property
    def capped(self) -> bool:
        """Whether any cap is set."""
        return any(v is not None for v in (self.max_requests, self.max_tokens, self.max_cost))


class BudgetReached(Exception):  # noqa: N818 - a clean stop, not a failure
    """A budget cap stopped generation; the stage stays uncommitted and resumable."""

    def __init__(self, cap: str, limit: float, spent: dict[str, float], where: str) -> None:
        self.cap, self.limit, self.spent, self.where = cap, limit, dict(spent), where
        super().__init__(f"budget.{cap} ({limit:g}) reached at {where}: "
                         f"{_spent_text(spent)} so far; raise budget.{cap} and run again "
                         "to resume")

    def as_dict(self) -> dict[str, Any]:
        """The stop, as `budget.json` in the run directory records it."""
        return {"cap": self.cap, "limit": self.limit, "spent": self.spent,
                "where": self.where, "message": str(self)}


@dataclass
class Budget:
    """What the run has spent on generation, against its caps (one per run)."""

    settings: BudgetSettings
    requests: int = 0
    tokens: int = 0
    spent_cost: float = 0.0
    where: str = ""  # the stage generating now, for the message

    def spend(self, requests: int, prompt_tokens: int, completion_tokens: int,
              price: Price | None) -> None:
        """Count answered requests and their tokens (generated now, or found on disk).

        Args:
            requests: Requests answered.
            prompt_tokens: Their prompt tokens.
            completion_tokens: Their completion tokens.
            price: The price of the model that answered them; None: it costs nothing
                known (validation refuses max_cost unless every model has a price).
        """
        self.add({"requests": requests, "tokens": prompt_tokens + completion_tokens,
                  "cost": price.cost(prompt_tokens, completion_tokens) if price else 0.0})

    def add(self, spent: dict[str, float]) -> None:
        """Count what a committed stage recorded it spent (`snapshot` differences)."""
        self.requests += int(spent.get("requests", 0))
        self.tokens += int(spent.get("tokens", 0))
        self.spent_cost += float(spent.get("cost", 0.0))

    def snapshot(self) -> dict[str, float]:
        """What has been spent so far; a stage's manifest keeps its difference (`since`)."""
        return {"requests": self.requests, "tokens": self.tokens, "cost": self.spent_cost}

    def since(self, before: dict[str, float]) -> dict[str, float]:
        """What was spent since `before` (a `snapshot`)."""
        now = self.snapshot()
        return {"requests": now["requests"] - before["requests"],
                "tokens": now["tokens"] - before["tokens"],
                "cost": round(now["cost"] - before["cost"], 9)}

    def fits(self, requests: int) -> bool:
        """Whether a chunk of `requests` may start: no cap reached, the request cap kept."""
        return self.exceeded(requests) is None

    def exceeded(self, next_requests: int = 0) -> tuple[str, float] | None:
        """The cap (name, limit) that starting `next_requests` more would pass, or None."""
        caps = self.settings
        if caps.max_requests is not None and self.requests + next_requests > caps.max_requests:
            return "max_requests", caps.max_requests
        if caps.max_tokens is not None and self.tokens >= caps.max_tokens:
            return "max_tokens", caps.max_tokens
        if caps.max_cost is not None and self.spent_cost >= caps.max_cost:
            return "max_cost", caps.max_cost
        return None

    def stop(self, key: str, next_requests: int) -> BudgetReached:
        """The exception that stops generation before a chunk of `next_requests`."""
        cap, limit = self.exceeded(next_requests) or ("max_requests", 0)
        spent: dict[str, float] = {"requests": self.requests, "tokens": self.tokens}
        if self.settings.max_cost is not None or self.spent_cost:
            spent["cost"] = round(self.spent_cost, 6)
        return BudgetReached(cap, limit, spent, f"{self.where} {key}".strip())


def _spent_text(spent: dict[str, float]) -> str:
    parts = [f"{spent.get('requests', 0):g} requests", f"{spent.get('tokens', 0):g} tokens"]
    if "cost" in spent:
        parts.append(f"cost {spent['cost']:g}")
    return ", ".join(parts)
