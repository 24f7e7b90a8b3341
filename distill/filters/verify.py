"""Verification: keep only records whose answer an exact checker accepts.

The "check the math answers" filter. The checker derives each task's true answer from
the task text itself (the instruction and input a teacher wrote), never from the
record's claimed output, then reads the record's output as a free-text answer:

    filters:
      - kind: verify
        checker: microworld

Verdicts: kept ("correct"), `wrong_answer`, or `unverifiable` (no checker can solve the
task text: an unknown kind of task or a malformed one). Every record's scores hold
`{"correct": bool, "family": str | None, "expected": str}` (the true answer), and
`unverifiable_reason` ("unknown_task" or "malformed") when there is no true answer.

Checkers are named in `CHECKERS`; another one (say a symbolic math checker for GSM8K-
style data) is one more function with the same signature and one more name in
`Config.checker`'s Literal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.filters.base import FilterContext, Verdict
from distill.records import Example


class Config(BaseModel):
    """Keep records whose output the checker verifies as correct."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["verify"] = "verify"
    checker: Literal["microworld"] = Field(
        "microworld", description="microworld: the microworld's exact verifiers "
        "(distill.microworld.tasks.check).")
    keep_unverifiable: bool = Field(
        False, description="Keep records no checker can solve instead of dropping them as "
        "`unverifiable` (e.g. for a mix of checkable and open-ended data).")


def _microworld(record: Example) -> tuple[str, dict[str, Any]]:
    from distill.microworld.tasks import check

    result = check(record)
    scores: dict[str, Any] = {"correct": result.correct, "family": result.family}
    if result.expected is not None:
        scores["expected"] = result.expected
    if result.reason:
        scores["unverifiable_reason"] = result.reason  # "unknown_task" or "malformed"
    return result.status, scores


# checker name -> function(record) -> (status, scores); status is "correct",
# "wrong_answer" or "unverifiable".
CHECKERS: dict[str, Callable[[Example], tuple[str, dict[str, Any]]]] = {
    "microworld": _microworld,
}


class VerifyFilter:
    """Drops records whose answer is wrong or cannot be verified."""

    name = "verify"

    def __init__(self, config: Config, context: FilterContext | None = None) -> None:
        self.config = config
        self.check = CHECKERS[config.checker]

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """One verdict per record, in order."""
        verdicts = []
        for record in records:
            status, scores = self.check(record)
            keep = status == "correct" or (status == "unverifiable"
                                           and self.config.keep_unverifiable)
            verdicts.append(Verdict(keep=keep, reason="" if keep else status, scores=scores))
        return verdicts
