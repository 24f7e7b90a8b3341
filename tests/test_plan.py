"""`distill plan` against real generation on the microworld models.

Each recipe's generate stage runs for real twice, in process (the runner's own stage):
a calibration run (another seed, a smaller size) that `--from` reads, and the target
run. The plan of the target, calibrated by the other run, must come within 25 % of the
target's measured prompt + completion tokens; its prompt tokens, rendered from the
templates on the seed data and never read from a run, within 25 % as well.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.models import ModelRef
from distill.recipe import load_recipe
from distill.records import read_json
from distill.runner import Runner

ROOT = Path(__file__).resolve().parents[1]

# (recipe, overrides of the target run, overrides of the calibration run)
CASES = {
    "quickstart": ("recipes/quickstart.yaml",
                   ["generate.num_instructions=96", "generate.prompts_per_step=16",
                    "teacher.checkpoint_every=16"],
                   ["generate.num_instructions=48", "seed=1"]),
    "evol_instruct": ("recipes/small/evol_instruct.yaml", [],
                      ["seed=1"]),
    "preference": ("recipes/small/ultrafeedback_dpo.yaml", ["generate.num_prompts=64"],
                   ["generate.num_prompts=32", "seed=1"]),
}


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT)}


def plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "distill", "plan", *args], cwd=ROOT, env=env(),
                          capture_output=True, text=True, timeout=600)


def generate(recipe: str, out: Path, overrides: list[str]) -> dict:
    """Run the recipe's round-0 generate stage for real; its manifest."""
    loaded = load_recipe(ROOT / recipe, [f"output_dir={out}", "rounds.count=1", *overrides])
    runner = Runner(loaded)
    stage = runner.generate("round_0", 0, ModelRef.resolve(loaded.teacher))
    return read_json(stage.path / "manifest.json") | {"run_dir": str(runner.store.root)}


@pytest.fixture(scope="module")
def microworld_models():
    from distill.microworld.build import build_models

    return build_models(quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_is_within_a_quarter_of_the_measured_tokens(case, tmp_path, microworld_models):
    recipe, target, calibration = CASES[case]
    measured = generate(recipe, tmp_path / "target", target)["tokens"]
    calibrated = generate(recipe, tmp_path / "calibration", calibration)
    result = plan(recipe, "rounds.count=1", *target, "--from", calibrated["run_dir"], "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    planned = json.loads(result.stdout)["generate"]
    total = measured["prompt_tokens"] + measured["completion_tokens"]
    error = planned["tokens"] / total - 1
    prompt_error = planned["prompt_tokens"] / measured["prompt_tokens"] - 1
    print(f"{case}: planned {planned['tokens']} tokens ({planned['prompt_tokens']} prompt), "
          f"measured {total} ({measured['prompt_tokens']} prompt): error {error:+.1%}, "
          f"prompt {prompt_error:+.1%}")
    assert abs(error) <= 0.25
    assert abs(prompt_error) <= 0.25


def test_plan_prints_its_table_and_names_its_assumptions():
    result = plan("recipes/quickstart.yaml", "--throughput", "1000")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for expected in ("instructions", "responses", "assumptions:",
                     "prompt tokens: counted with the teacher's tokenizer",
                     "tasks parsed per prompt", "(assumed: --fill 0.5)",
                     "wall time: 1000 tokens/s", "cost: not estimated"):
        assert expected in out, expected


def test_plan_counts_the_requests_the_method_makes_and_prices_them():
    price = "teacher.price={prompt_per_million: 2.0, completion_per_million: 6.0}"
    result = plan("recipes/small/ultrafeedback_dpo.yaml", price, "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    estimate = json.loads(result.stdout)
    # 192 prompts x 4 temperatures, each answered once; the verifier judges without a model
    assert [(line["key"], line["requests"]) for line in estimate["lines"]] == \
        [("responses-m0", 768)]
    line = estimate["lines"][0]
    assert line["completion_tokens"] == 768 * 12  # 0.5 x max_tokens 24, stated
    totals = estimate["totals"]
    assert totals["cost"] == pytest.approx((totals["prompt_tokens"] * 2.0
                                            + totals["completion_tokens"] * 6.0) / 1e6)
    assert any("cost: teacher.price" in a for a in estimate["assumptions"])


def test_each_request_is_priced_at_the_model_it_goes_to(tmp_path):
    import yaml

    recipe = yaml.safe_load((ROOT / "recipes/quickstart.yaml").read_text())
    for section, key in (("data", "seed_tasks"), ("train", "accelerate_config")):
        recipe[section][key] = str(ROOT / "recipes" / recipe[section][key])  # from its folder
    recipe["teacher"]["price"] = {"prompt_per_million": 2.0, "completion_per_million": 6.0}
    judge = {"kind": "judge", "max_tokens": 8, "aspects": ["helpfulness"],
             "model": {"model": "microworld:teacher", "backend": "hf"}}
    recipe["filters"].append(judge)
    path = tmp_path / "judged.yaml"
    path.write_text(yaml.safe_dump(recipe))
    index = len(recipe["filters"]) - 1

    unpriced = json.loads(plan(str(path), "rounds.count=1", "--json").stdout)
    # a partial sum is no total: the judge's own model has no price
    assert unpriced["totals"]["cost"] is None
    assert unpriced["generate"]["cost"] is not None  # the teacher's lines are priced
    assert any(f"no filters.{index}.model.price" in a for a in unpriced["assumptions"])

    judge["model"]["price"] = {"prompt_per_million": 100.0, "completion_per_million": 300.0}
    path.write_text(yaml.safe_dump(recipe))
    result = plan(str(path), "rounds.count=1", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    estimate = json.loads(result.stdout)
    by = {line["key"]: line for line in estimate["lines"]}
    assert by["judge"]["priced_by"] == f"filters.{index}.model.price"
    assert by["responses"]["priced_by"] == "teacher.price"
    rates = {"teacher.price": (2.0, 6.0), f"filters.{index}.model.price": (100.0, 300.0)}
    expected = sum((line["prompt_tokens"] * rates[line["priced_by"]][0]
                    + line["completion_tokens"] * rates[line["priced_by"]][1]) / 1e6
                   for line in estimate["lines"])
    assert estimate["totals"]["cost"] == pytest.approx(expected)
    at_teacher = (estimate["totals"]["prompt_tokens"] * 2.0
                  + estimate["totals"]["completion_tokens"] * 6.0) / 1e6
    assert estimate["totals"]["cost"] > at_teacher  # the judge's dearer tokens count


def test_plan_refuses_a_run_directory_without_checkpoints(tmp_path):
    result = plan("recipes/quickstart.yaml", "--from", str(tmp_path))
    assert result.returncode == 2
    assert "--from" in result.stderr and "no generation checkpoints" in result.stderr
