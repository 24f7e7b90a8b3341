"""Several answers per prompt at temperature 0 are one greedy answer repeated: refused.

vLLM refuses greedy sampling with n > 1 at request time (`SamplingParams`: "n must be 1
when using greedy sampling"), after the teacher has loaded; the hf backend and servers
return identical copies, which make no preference pair and no pass rate. The recipe
refuses both up front, naming the fields, and `distill validate` exits 2.
"""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.recipe import RecipeError, load_recipe

ROOT = Path(__file__).resolve().parents[2]
REASONING = ROOT / "recipes" / "methods" / "base" / "microworld_reasoning.yaml"
PREFERENCE = ROOT / "recipes" / "small" / "ultrafeedback_dpo.yaml"


@pytest.mark.parametrize(("recipe", "overrides", "message"), [
    (REASONING, ["generate.samples=2", "generate.sampling.temperature=0"],
     r"generate\.reasoning: samples \(2\) at sampling.temperature 0 are one greedy trace"),
    (PREFERENCE, ["generate.samples=2"],
     r"generate\.preference: 2 answers per model and system prompt at temperature 0 "
     r"\(samples 2 x temperatures \[0.0, 0.7, 1.0, 1.3\]\)"),
    (PREFERENCE, ["generate.temperatures=[0, 0, 1.0]"],
     r"generate\.preference: 2 answers .* are one greedy answer repeated"),
])
def test_several_greedy_answers_per_prompt_are_refused(recipe, overrides, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(recipe, overrides)
    result = CliRunner().invoke(app, ["validate", str(recipe), *overrides])
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize(("recipe", "overrides"), [
    (REASONING, ["generate.samples=2", "generate.sampling.temperature=0.6"]),
    (REASONING, ["generate.samples=1", "generate.keep=1", "generate.sampling.temperature=0"]),
    (PREFERENCE, []),  # temperature 0 once, beside sampled answers
    (PREFERENCE, ["generate.samples=2", "generate.temperatures=[0.7, 1.0]"]),
])
def test_one_greedy_answer_or_sampled_answers_still_load(recipe, overrides):
    load_recipe(recipe, overrides)
