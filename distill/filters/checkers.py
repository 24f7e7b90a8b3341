r"""The generic answer checkers of the verify filter: `code` and `math`.

A checker is a function `(records, config) -> list[Check]`, one `Check` per record in
order, registered by name in `distill.registry.CHECKERS`:

    @CHECKERS.register("code")
    def check_code_records(records, config): ...

`config` is the verify filter's settings (`distill.filters.verify.Config`): the sandbox
limits, `workers` and `tolerance` live there. Checkers that belong to a plugin register
in the plugin's own module (the microworld's: `distill.microworld.plugin`), so the core
never names them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distill.records import Example
from distill.registry import CHECKERS

if TYPE_CHECKING:
    from distill.filters.verify import Config

# (status, reason, scores): status is "correct", "wrong_answer" or "unverifiable"; the
# reason is what the funnel reports for a dropped record.
Check = tuple[str, str, dict[str, Any]]


@CHECKERS.register("code")
def check_code_records(records: list[Example], config: Config) -> list[Check]:
    """Run each record's code against its `code_tests` in the sandbox."""
    from distill.filters.code_check import check_code

    return check_code(records, config.sandbox, config.workers)


@CHECKERS.register("math")
def check_math_records(records: list[Example], config: Config) -> list[Check]:
    """Compare each record's final answer with its `answer` field."""
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
