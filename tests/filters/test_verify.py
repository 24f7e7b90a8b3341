"""The verify filter: correct answers kept, wrong and unverifiable ones dropped with reasons."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

import distill.microworld.plugin  # noqa: F401 - registers the microworld checker
from distill.filters.base import FilterContext, run_funnel
from distill.filters.verify import Config, VerifyFilter
from distill.records import Example


def record(id: str, instruction: str, input: str, output: str) -> Example:
    return Example(id=id, instruction=instruction, input=input, output=output)


RECORDS = [
    record("right", "Add the two numbers.", "17 + 25", "42"),
    record("right-free-text", "Convert 3 meters to centimeters.", "", "That is 300 cm."),
    record("off-by-one", "Add the two numbers.", "17 + 25", "43"),
    record("wrong-unit", "Convert 3 meters to centimeters.", "", "300 meters"),
    record("wrong-order", "Sort the numbers in ascending order.", "5, 3, 9", "3, 9, 5"),
    record("unknown", "Write a haiku about autumn.", "", "Leaves fall..."),
    record("malformed", "Add the two numbers.", "seventeen plus", "42"),
]


def test_verdicts_reasons_and_scores() -> None:
    flt = Config(checker="microworld").build(FilterContext())
    assert isinstance(flt, VerifyFilter) and flt.name == "verify"  # the kind, by default
    verdicts = flt(RECORDS)
    assert [v.keep for v in verdicts] == [True, True, False, False, False, False, False]
    assert [v.reason for v in verdicts] == ["", "", "wrong_answer", "wrong_answer",
                                             "wrong_answer", "unverifiable", "unverifiable"]
    assert verdicts[0].scores == {"correct": True, "family": "add", "expected": "42"}
    assert verdicts[2].scores["correct"] is False and verdicts[2].scores["family"] == "add"
    assert verdicts[5].scores == {"correct": False, "family": None,
                                  "unverifiable_reason": "unknown_task"}
    assert verdicts[6].scores["unverifiable_reason"] == "malformed"


def test_funnel_counts_and_keeps_rejected_records() -> None:
    flt = Config(checker="microworld").build(FilterContext())
    result = run_funnel([flt], [r.model_copy(deep=True) for r in RECORDS])
    assert [r.id for r in result.kept] == ["right", "right-free-text"]
    assert result.funnel[0]["dropped"] == {"wrong_answer": 3, "unverifiable": 2}
    assert {r.id for r in result.rejected} == {"off-by-one", "wrong-unit", "wrong-order",
                                               "unknown", "malformed"}
    assert result.kept[0].scores["verify"]["correct"] is True


def test_keep_unverifiable() -> None:
    flt = Config(checker="microworld", keep_unverifiable=True).build(FilterContext())
    verdicts = flt(RECORDS)
    assert [v.keep for v in verdicts] == [True, True, False, False, False, True, True]


def test_config_is_strict() -> None:
    with pytest.raises(ValidationError, match="unknown answer checker 'sql'.*microworld"):
        Config(checker="sql")
    with pytest.raises(ValidationError):
        Config(checker="microworld", threshold=0.5)
    with pytest.raises(ValidationError, match="checker"):
        Config()  # no default: the core names no plugin's checker
