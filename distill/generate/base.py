"""The generation-method seam: a registered settings class with one entry point.

A method is one module: its settings class derives from `GeneratorSettings`, registers
under its `kind` (`@GENERATORS.register`), declares what its output depends on
(`dependencies()`), and implements `run(ctx)`. It asks the teacher through
`ctx.generate(key, requests)` (checkpointed; the stage's executor runs it), reads the run inputs
it declared through the context (`ctx.seed_tasks()`, `ctx.real_records()`), and returns
records with lineage, every refused completion as a `Rejected` record, and stats for the
report. Its `report_section` turns those stats into the report's Markdown, and
`reject_counts` names the stats key that counts what the teacher's output lost.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from distill.component import Component

if TYPE_CHECKING:
    from distill.generate.context import GenerationContext, GenerationResult


class GeneratorSettings(Component):
    """Base of every generation method's `generate:` settings."""

    # What the method writes: instruction examples, or preference pairs (for DPO).
    OUTPUT: ClassVar[Literal["examples", "pairs"]] = "examples"

    def keeps_teacher_tokens(self) -> bool:
        """Whether each record's output is one teacher answer, as generated.

        Then the context can keep that answer's tokens and top-k log-probabilities
        (`ctx.top_logprobs`), which train.method kd learns from.
        """
        return False

    @abstractmethod
    def run(self, ctx: GenerationContext) -> GenerationResult:
        """Generate this round's candidates with the context's teacher."""

    @classmethod
    def report_section(cls, stats: dict[str, Any]) -> list[str]:
        """Markdown lines the run report shows for this method's stats (none by default)."""
        return []

    @classmethod
    def reject_counts(cls, stats: dict[str, Any]) -> dict[str, int]:
        """Refused teacher outputs by reason, from this method's stats (`parse_rejected`)."""
        return stats.get("parse_rejected", {})
