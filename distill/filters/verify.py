r"""Verification: keep only records whose answer a checker accepts.

    filters:
      - kind: verify
        checker: microworld      # or code, or math

Checkers:
- `microworld`: the checker derives each task's true answer from the task text itself
  (the instruction and input a teacher wrote), never from the record's claimed output,
  then reads the record's output as a free-text answer.
- `code`: runs the record's code (its ```python blocks) against its `code_tests` field
  (Python asserts; optional `entry_point`) in the sandbox (`distill.filters.sandbox`),
  `workers` programs at a time under the `sandbox` limits.
- `math`: extracts the final answer of the output (\boxed{}, "The answer is", the last
  number) and compares it with the record's `answer` field: numerically within
  `tolerance` (fractions, decimals, percentages), element-wise, or symbolically (sympy).

Verdicts: kept ("correct"), dropped as wrong with a reason (microworld and math:
`wrong_answer`, `no_final_answer`; code: `tests_failed`, `syntax_error`, `runtime_error`,
`timeout`, `resource_limit`, `missing_entry_point`, `exited_early`, `no_code`), or
`unverifiable` (no true answer: an unknown or malformed task, a record without tests or
reference answer). Every record's scores hold `correct` and what the checker found
(`expected`, `predicted`, the sandbox's status, ...), and `unverifiable_reason` when
there is no true answer.

Checkers are named in `CHECKERS`; another one is one more batch function with the same
signature and one more name in `Config.checker`'s Literal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from distill.filters.base import FilterContext, Verdict
from distill.filters.sandbox import SandboxConfig
from distill.records import Example

# (status, reason, scores): status is "correct", "wrong_answer" or "unverifiable"; the
# reason is what the funnel reports for a dropped record.
Check = tuple[str, str, dict[str, Any]]


class Config(BaseModel):
    """Keep records whose output the checker verifies as correct."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["verify"] = "verify"
    checker: Literal["microworld", "code", "math"] = Field(
        "microworld", description="microworld: the microworld's exact verifiers "
        "(distill.microworld.tasks.check); code: run the output's code against the "
        "record's `code_tests` in the sandbox; math: compare the output's final answer "
        "with the record's `answer`.")
    keep_unverifiable: bool = Field(
        False, description="Keep records no checker can solve instead of dropping them as "
        "`unverifiable` (e.g. for a mix of checkable and open-ended data).")
    sandbox: SandboxConfig = Field(
        default_factory=SandboxConfig, description="code: limits and isolation of each "
        "program run (timeout_s, cpu_s, memory_mb, nproc, ...).")
    workers: int = Field(2, ge=1, description="code: programs run at the same time.")
    tolerance: float = Field(1e-6, ge=0, description="math: relative tolerance when "
                             "comparing numbers.")


def _microworld(records: list[Example], config: Config) -> list[Check]:
    from distill.microworld.tasks import check

    checks = []
    for record in records:
        result = check(record)
        scores: dict[str, Any] = {"correct": result.correct, "family": result.family}
        if result.expected is not None:
            scores["expected"] = result.expected
        if result.reason:
            scores["unverifiable_reason"] = result.reason  # "unknown_task" or "malformed"
        checks.append((result.status, result.status, scores))
    return checks


def _code(records: list[Example], config: Config) -> list[Check]:
    from distill.filters.code_check import check_code

    return check_code(records, config.sandbox, config.workers)


def _math(records: list[Example], config: Config) -> list[Check]:
    from distill.filters.math_check import equivalent, extract_answer

    checks: list[Check] = []
    for record in records:
        reference = (record.model_extra or {}).get("answer")
        if reference is None or not str(reference).strip():
            checks.append(("unverifiable", "unverifiable",
                           {"correct": False, "unverifiable_reason": "no_reference"}))
            continue
        scores: dict[str, Any] = {"expected": str(reference)}
        predicted = extract_answer(record.output)
        if predicted is None:
            checks.append(("wrong_answer", "no_final_answer", {"correct": False, **scores}))
            continue
        correct, method = equivalent(predicted, str(reference), config.tolerance)
        scores.update(correct=correct, predicted=predicted, method=method)
        checks.append(("correct", "correct", scores) if correct
                      else ("wrong_answer", "wrong_answer", scores))
    return checks


# checker name -> function(records, config) -> one Check per record, in order.
CHECKERS: dict[str, Callable[[list[Example], Config], list[Check]]] = {
    "microworld": _microworld,
    "code": _code,
    "math": _math,
}


class VerifyFilter:
    """Drops records whose answer is wrong or cannot be verified."""

    name = "verify"

    def __init__(self, config: Config, context: FilterContext | None = None) -> None:
        self.config = config
        # Distinct names, so that a code and a math verifier chained with
        # keep_unverifiable (one mixed exercise set) keep their own scores and funnel rows.
        if config.checker != "microworld":
            self.name = f"verify_{config.checker}"
        self.check = CHECKERS[config.checker]

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """One verdict per record, in order."""
        verdicts = []
        for status, reason, scores in self.check(records, self.config):
            keep = status == "correct" or (status == "unverifiable"
                                           and self.config.keep_unverifiable)
            verdicts.append(Verdict(keep=keep, reason="" if keep else reason, scores=scores))
        return verdicts
