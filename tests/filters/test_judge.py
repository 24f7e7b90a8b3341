"""The LLM judge's parsing, both-orders combination, and the judge filter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from distill.filters import judge as judge_filter
from distill.filters.base import FilterContext, run_funnel
from distill.filters.judge import Config
from distill.judge import ASPECTS, combine_orders, parse_rubric, parse_verdict
from distill.models import ServedModel
from distill.records import Example, PreferencePair

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generate"))
from scripted_teacher import ScriptedTeacher  # noqa: E402

ALL = list(ASPECTS)
GOOD = """Instruction following: 4
Rationale: It does what was asked.
Truthfulness: 5
Rationale: Nothing false.
Honesty: 3
Rationale: A little overconfident.
Helpfulness: 4
Rationale: Useful."""


def test_rubric_scores_and_rationales_are_read():
    rating = parse_rubric(GOOD, ALL)
    assert rating.ok and rating.score == 4.0
    assert rating.scores == {"instruction_following": 4.0, "truthfulness": 5.0,
                             "honesty": 3.0, "helpfulness": 4.0}
    assert rating.rationales["honesty"] == "A little overconfident."


@pytest.mark.parametrize("text", [
    "**Instruction following:** 4/5 - does it\n**Truthfulness**: 5 out of 5\n"
    "### Honesty: [3]\n- Helpfulness = 4",
    '{"instruction_following": 4, "Truthfulness": {"score": 5, "rationale": "ok"}, '
    '"honesty": "3", "helpfulness": 4.0}',
    "Here is my rating.\n\n" + GOOD.lower() + "\n\nThanks!",
])
def test_rubric_formats_small_judges_write(text):
    rating = parse_rubric(text, ALL)
    assert rating.ok, rating.reason
    assert rating.scores == {"instruction_following": 4.0, "truthfulness": 5.0,
                             "honesty": 3.0, "helpfulness": 4.0}


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty"),
    ("   \n", "empty"),
    ("The response is great, 10/10.", "missing:instruction_following"),
    (GOOD.replace("Honesty: 3", "Honesty: 0"), "out_of_range:honesty"),
    (GOOD.replace("Helpfulness: 4", "Helpfulness: 7"), "out_of_range:helpfulness"),
    (GOOD.replace("Truthfulness: 5\n", ""), "missing:truthfulness"),
    ('{"instruction_following": 4', "missing:instruction_following"),  # broken JSON
])
def test_malformed_rubrics_are_reasons_not_exceptions(text, reason):
    rating = parse_rubric(text, ALL)
    assert not rating.ok and rating.reason == reason and rating.score is None


def test_only_the_asked_aspects_are_needed():
    rating = parse_rubric("Helpfulness: 2\nRationale: thin.", ["helpfulness"])
    assert rating.ok and rating.score == 2.0 and rating.rationales == {"helpfulness": "thin."}


@pytest.mark.parametrize(("text", "verdict"), [
    ("Rationale: A is precise.\nWinner: A", "A"),
    ("Rationale: B.\n**Winner:** Response B", "B"),
    ("Winner: tie", "tie"),
    ("[[B]]", "B"),
    ("A", "A"),
    ("Verdict: both are equal", "tie"),
    ("Winner: A\n...on reflection...\nWinner: B", "B"),  # the last verdict is final
    ("I like the first one.", None),
    ("", None),
])
def test_pairwise_verdicts(text, verdict):
    assert parse_verdict(text)[0] == verdict


def test_both_orders_cancel_position_bias():
    # x shown first wins, and x shown second wins: x is better, the orders agree
    agree = combine_orders("A", "B")
    assert agree.ok and agree.share == 1.0 and agree.agree
    # the judge always picks the first position: no preference, the orders disagree
    biased = combine_orders("A", "A")
    assert biased.ok and biased.share == 0.5 and not biased.agree
    assert combine_orders("tie", "tie").agree and combine_orders("tie", "tie").share == 0.5
    assert combine_orders("A", "tie").share == 0.75
    missing = combine_orders("A", None)
    assert not missing.ok and missing.reason == "no_verdict"


# -- the filter ---------------------------------------------------------------------------

def judge_script(request):
    """Rates a response by the digit it ends with; "???" for a response with none."""
    response = request.messages[-1]["content"].split("### Response\n", 1)[1]
    response = response.split("\n\n### Your rating")[0]
    digits = [c for c in response if c.isdigit()]
    if not digits:
        return "???", "stop"
    return GOOD.replace("4", digits[-1]).replace("5", digits[-1]).replace("3", digits[-1]), \
        "stop"


RECORDS = [Example(id=f"r{i}", instruction="Rate me.", output=text)
           for i, text in enumerate(["quality 5", "quality 2", "no digits here", "quality 4"])]


@pytest.fixture
def scripted_judge(monkeypatch):
    judges = []

    def open_backend(model, seed):
        judges.append((model, ScriptedTeacher(judge_script)))
        return judges[-1][1]

    monkeypatch.setattr(judge_filter, "open_judge_backend", open_backend)
    return judges


TEACHER = ServedModel(model="org/teacher")  # the recipe's teacher, as the runner hands it over


def test_judge_filter_keeps_scores_and_rationales(scripted_judge, tmp_path):
    context = FilterContext(teacher=TEACHER, work_dir=tmp_path, seed=0)
    result = run_funnel([Config(threshold=4.0).build(context)],
                        [r.model_copy(deep=True) for r in RECORDS])
    assert [r.id for r in result.kept] == ["r0", "r3"]
    assert {r.id: r.reason for r in result.rejected} == {"r1": "judge_score<4",
                                                          "r2": "judge_malformed"}
    kept = result.kept[0].scores["judge"]
    assert kept["mean"] == 5.0 and kept["aspects"]["honesty"] == 5.0
    assert kept["rationales"]["truthfulness"] == "Nothing false."
    assert result.rejected[1].record["scores"]["judge"] == {
        "malformed": "missing:instruction_following"}
    assert result.funnel[0]["dropped"] == {"judge_score<4": 1, "judge_malformed": 1}
    # the judge defaulted to the teacher, greedy, once per record
    (model, backend), = scripted_judge
    assert model is TEACHER
    assert [r.sampling.temperature for r in backend.requests] == [0.0] * 4

    # a second run (a resumed filter stage) reads the checkpoints: no judge calls
    again = Config(threshold=4.0).build(context)([r.model_copy() for r in RECORDS])
    assert scripted_judge[-1][1].calls == 0
    assert [v.keep for v in again] == [True, False, False, True]


def test_unjudged_records_can_be_kept(scripted_judge, tmp_path):
    context = FilterContext(teacher=TEACHER, work_dir=tmp_path)
    verdicts = Config(threshold=1.0, keep_unjudged=True).build(context)(RECORDS)
    assert all(v.keep for v in verdicts)


def test_a_pair_is_judged_by_its_chosen_answer(scripted_judge, tmp_path):
    pair = PreferencePair.build("p0", Example(id="q", instruction="Rate me."), "quality 5",
                                "quality 1")
    context = FilterContext(teacher=TEACHER, work_dir=tmp_path)
    (verdict,) = Config(threshold=4.5).build(context)([pair])
    assert verdict.keep and verdict.scores["mean"] == 5.0


def test_judge_filter_settings_and_their_dependencies():
    from typing import Annotated, Union

    from pydantic import Field, TypeAdapter

    from distill.registry import FILTERS

    # the recipe's `filters:` entries: a kind-discriminated union of the registered classes
    union = TypeAdapter(Annotated[Union[tuple(FILTERS.classes())],  # noqa: UP007
                                  Field(discriminator="kind")])
    parsed = union.validate_python(
        {"kind": "judge", "threshold": 4.5, "aspects": ["helpfulness"],
         "model": {"model": "org/judge", "backend": "vllm"}})
    assert isinstance(parsed, Config) and parsed.model.backend == "vllm"
    assert parsed.dependencies().models == {"judge": parsed.model}
    assert parsed.dependencies().templates == ("judge_rubric",)
    assert Config().dependencies().models == {"judge": "teacher"}
    with pytest.raises(ValueError, match="aspects"):
        union.validate_python({"kind": "judge", "aspects": ["wit"]})
    with pytest.raises(ValueError, match="no judge model and no teacher"):
        Config().build(FilterContext(work_dir=Path(".")))(RECORDS)


def test_a_real_model_that_cannot_judge_is_counted_not_fatal(tiny_model_dir, tmp_path):
    """The tiny random model writes nonsense: every record is judge_malformed, no crash."""
    # one aspect: the whole rubric prompt must fit the tiny model's 512 positions
    config = Config.model_validate({"model": {"model": str(tiny_model_dir)}, "max_tokens": 8,
                                    "aspects": ["helpfulness"]})
    verdicts = config.build(FilterContext(work_dir=tmp_path))(RECORDS[:2])
    assert [v.reason for v in verdicts] == ["judge_malformed"] * 2
    assert not any(v.keep for v in verdicts)
