"""`budget:` counts every request the run sends: judges' and other answer models' too.

The judge filter and the preference method's other models ask their own models through a
generation context; their requests count against the run's caps, priced at their own
model's `price`, checked between chunks, and a stopped filter resumes to the same bytes.
A tiny random model answers through the hf backend (the judge finds its answers
malformed, which changes nothing here: what is counted is what was asked).
"""

import json
from pathlib import Path

import pytest

from distill.backends.base import GenerationRequest, Sampling
from distill.budget import Budget, BudgetReached, BudgetSettings, Price
from distill.filters.base import FilterContext
from distill.filters.judge import Config as JudgeFilterConfig
from distill.generate.context import GenerationContext
from distill.judge import judge_context
from distill.models import ServedModel
from distill.recipe import RecipeError, load_recipe
from distill.records import Example
from distill.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
RECORDS = [Example(id=f"r{i}", instruction="Rate me.", output=f"answer {i}") for i in range(4)]
JUDGE_PRICE = Price(prompt_per_million=1e6, completion_per_million=3e6)  # 1 and 3 per token
TEACHER_PRICE = Price(prompt_per_million=100e6, completion_per_million=100e6)


def rows(folder: Path) -> list[dict]:
    return [json.loads(line) for shard in sorted(folder.glob("*/chunk*.jsonl"))
            for line in shard.read_text().splitlines()]


def judge_filter(model_dir: Path, work: Path, budget: Budget):
    # one aspect: the whole rubric prompt fits the tiny model's 512 positions
    config = JudgeFilterConfig.model_validate({
        "model": {"model": str(model_dir), "price": JUDGE_PRICE.model_dump()},
        "max_tokens": 8, "aspects": ["helpfulness"]})
    return config.build(FilterContext(work_dir=work, budget=budget))


def test_judge_filter_requests_count_at_the_judges_price_and_a_cap_stops_them(
        tiny_model_dir, tmp_path):
    uncapped = Budget(BudgetSettings())
    expected = judge_filter(tiny_model_dir, tmp_path / "uncapped", uncapped)(RECORDS)
    asked = rows(tmp_path / "uncapped" / "judge-checkpoints")
    assert uncapped.requests == len(RECORDS) == len(asked)
    prompt = sum(r["prompt_tokens"] for r in asked)
    completion = sum(r["completion_tokens"] for r in asked)
    assert uncapped.tokens == prompt + completion
    assert uncapped.spent_cost == pytest.approx(prompt + 3 * completion)

    # the judge's chunk (64 requests, all four records) would pass the cap: none starts
    with pytest.raises(BudgetReached) as stopped:
        judge_filter(tiny_model_dir, tmp_path / "capped", Budget(BudgetSettings(
            max_requests=3)))(RECORDS)
    assert stopped.value.cap == "max_requests"
    assert not rows(tmp_path / "capped" / "judge-checkpoints")
    # a cost cap a first chunk reaches stops the rest after it: the judge's cost counts
    with pytest.raises(BudgetReached) as costly:
        judge_filter(tiny_model_dir, tmp_path / "costly", Budget(BudgetSettings(
            max_cost=1.0)))([r.model_copy(update={"id": f"r{i}"})
                             for i, r in enumerate(RECORDS * 17)])
    assert costly.value.cap == "max_cost" and costly.value.spent["cost"] > 1.0

    resumed = Budget(BudgetSettings(max_requests=10))
    verdicts = judge_filter(tiny_model_dir, tmp_path / "capped", resumed)(RECORDS)
    assert [(v.keep, v.reason, v.scores) for v in verdicts] == \
        [(v.keep, v.reason, v.scores) for v in expected]
    assert rows(tmp_path / "capped" / "judge-checkpoints") == asked
    assert resumed.requests == len(RECORDS)


def test_other_models_beside_the_teacher_spend_at_their_own_price(tiny_model_dir, tmp_path):
    """The preference method's answer models and judge run in a `judge_context`."""
    from distill.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), batch_size=4, seed=0, dtype="float32")
    try:
        budget = Budget(BudgetSettings(max_cost=1e12))
        teacher_ctx = GenerationContext(backend=backend, checkpoint_dir=tmp_path, chunk_size=4,
                                        budget=budget, price=TEACHER_PRICE)
        other = ServedModel(model=str(tiny_model_dir), price=JUDGE_PRICE)
        requests = [GenerationRequest(id=f"q{i}", prompt=f"Count to {i}:",
                                      sampling=Sampling(temperature=0.0, max_tokens=4, seed=i))
                    for i in range(4)]
        judge_context(teacher_ctx, backend, other).generate("other", requests)
    finally:
        backend.close()
    asked = rows(tmp_path)
    assert budget.requests == 4
    assert budget.spent_cost == pytest.approx(sum(r["prompt_tokens"] for r in asked)
                                              + 3 * sum(r["completion_tokens"] for r in asked))


def test_a_committed_filter_stage_counts_what_it_spent_when_a_rerun_skips_it(tmp_path):
    recipe = load_recipe(QUICKSTART, [f"output_dir={tmp_path}"])

    def judged(out: Path) -> dict:
        runner.budget.spend(3, 10, 5, JUDGE_PRICE)  # as a judge filter's context does
        return {"counts": {}}

    runner = Runner(recipe)
    stage = runner._stage("round_0", "filter", {"filters": []}, {}, judged)
    assert stage.manifest()["spent"] == {"requests": 3, "tokens": 15, "cost": 25.0}

    rerun = Runner(recipe)
    rerun._stage("round_0", "filter", {"filters": []}, {}, lambda out: pytest.fail("redone"))
    assert (rerun.budget.requests, rerun.budget.tokens, rerun.budget.spent_cost) == (3, 15, 25)


JUDGE = "{model: org/judge, backend: openai, engine: {base_url: 'http://localhost:1/v1'}}"
PRICED = "teacher.price={prompt_per_million: 1, completion_per_million: 3}"


@pytest.mark.parametrize(("overrides", "field"), [
    ([f"filters=[{{kind: judge, model: {JUDGE}}}]"], "filters.0.model.price"),
    (["generate={kind: preference, judge: {kind: llm, model: " + JUDGE + "}}",
      "train.method=dpo"], "generate.judge.model.price"),
    (["generate={kind: preference, models: [teacher, " + JUDGE + "]}", "train.method=dpo"],
     "generate.models.1.price"),
])
def test_max_cost_needs_the_price_of_every_model_that_is_asked(overrides, field):
    with pytest.raises(RecipeError, match=f"budget.max_cost counts money from {field}"):
        load_recipe(QUICKSTART, ["budget.max_cost=5", PRICED, *overrides])
    # with its price, the same recipe loads; without a cost cap, no price is needed
    priced = [o.replace("org/judge,", "org/judge, price: {prompt_per_million: 2, "
                        "completion_per_million: 2},") for o in overrides]
    assert load_recipe(QUICKSTART, ["budget.max_cost=5", PRICED, *priced]).budget.max_cost == 5
    load_recipe(QUICKSTART, ["budget.max_requests=5", *overrides])


def test_a_cap_and_the_paraphrase_judge_are_refused():
    judge = f"decontamination.paraphrase={{judge: {JUDGE}}}"
    with pytest.raises(RecipeError, match="decontamination.paraphrase.judge asks all its"):
        load_recipe(QUICKSTART, ["budget.max_requests=100", judge])
    assert load_recipe(QUICKSTART, [judge]).decontamination.paraphrase.judge is not None
