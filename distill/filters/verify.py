r"""Verification: keep only records whose answer a checker accepts.

    filters:
      - kind: verify
        checker: code            # or math, or a plugin's checker (microworld)

Checkers are registered by name in `distill.registry.CHECKERS`; the generic ones live in
`distill.filters.checkers`, a plugin's in the plugin (the microworld's checker is
`distill.microworld.plugin`):
- `code`: runs the record's code (its ```python blocks) against its `code_tests` field
  (Python asserts; optional `entry_point`) in the sandbox (`distill.filters.sandbox`),
  `workers` programs at a time under the `sandbox` limits.
- `math`: extracts the final answer of the output (\boxed{}, "The answer is", the last
  number) and compares it with the record's `answer` field: numerically within
  `tolerance` (fractions, decimals, percentages), element-wise, or symbolically (sympy).
- `microworld` (plugin): derives each task's true answer from the task text itself (the
  instruction and input a teacher wrote), never from the record's claimed output, then
  reads the record's output as a free-text answer.

Verdicts: kept ("correct"), dropped as wrong with a reason (math and microworld:
`wrong_answer`, `no_final_answer`; code: `tests_failed`, `syntax_error`, `runtime_error`,
`timeout`, `resource_limit`, `missing_entry_point`, `exited_early`, `no_code`), or
`unverifiable` (no true answer: an unknown or malformed task, a record without tests or
reference answer). Every record's scores hold `correct` and what the checker found
(`expected`, `predicted`, the sandbox's status, ...), and `unverifiable_reason` when
there is no true answer.

The filter is named `verify` in the funnel and in `scores` (its kind, as every filter's
default name); two verifiers chained with `keep_unverifiable` (a code and a math checker
over one mixed exercise set) each take a `name` of their own, so they keep their own rows.

Another checker is one function `(records, config) -> list[Check]` registered with
`@CHECKERS.register("name")` (see `distill.filters.checkers`).
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings, Verdict
from distill.filters.sandbox import SandboxConfig
from distill.records import Example
from distill.registry import CHECKERS, FILTERS

# An answer checker: a name in distill.registry.CHECKERS (listed in the JSON schema).
CheckerName = CHECKERS.name_type()


@FILTERS.register
class Config(FilterSettings):
    """Keep records whose output the checker verifies as correct."""

    kind: Literal["verify"] = "verify"
    checker: CheckerName = Field(
        description="The answer checker (distill.registry.CHECKERS). code: run the output's "
        "code against the record's `code_tests` in the sandbox; math: compare the output's "
        "final answer with the record's `answer`; microworld (plugin): the microworld's "
        "exact verifiers.")
    keep_unverifiable: bool = Field(
        False, description="Keep records no checker can solve instead of dropping them as "
        "`unverifiable` (e.g. for a mix of checkable and open-ended data).")
    sandbox: SandboxConfig = Field(
        default_factory=SandboxConfig, description="code: limits and isolation of each "
        "program run (timeout_s, cpu_s, memory_mb, nproc, ...).")
    # Not operational: programs run at once share the CPUs, which moves runs near the
    # wall-clock `sandbox.timeout_s` across it.
    workers: int = Field(2, ge=1, description="code: programs run at the same time.")
    tolerance: float = Field(1e-6, ge=0, description="math: relative tolerance when "
                             "comparing numbers.")

    def dependencies(self) -> Dependencies:
        """The sandbox's interpreter when one is named; the checkers read only the records."""
        if self.checker == "code" and self.sandbox.python is not None:
            return Dependencies(files={"sandbox_python": os.path.realpath(self.sandbox.python)})
        return Dependencies()

    def build(self, context: FilterContext) -> VerifyFilter:
        """The verify filter with this checker."""
        return VerifyFilter(self, context)


class VerifyFilter:
    """Drops records whose answer is wrong or cannot be verified."""

    name = "verify"

    def __init__(self, config: Config, context: FilterContext | None = None) -> None:
        self.config = config
        self.check = CHECKERS.get(config.checker)

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """One verdict per record, in order."""
        verdicts = []
        for status, reason, scores in self.check(records, self.config):
            keep = status == "correct" or (status == "unverifiable"
                                           and self.config.keep_unverifiable)
            verdicts.append(Verdict(keep=keep, reason="" if keep else reason, scores=scores))
        return verdicts
