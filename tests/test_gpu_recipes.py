"""The GPU recipes at their papers' scale, their `smoke` profiles, and recipe profiles.

At full size each recipe must generate (and train on) as much as the paper it reproduces,
in a number of optimizer steps that follows from its global batch on any GPU count, and
its header must say so with the same numbers; the `smoke` profile must be a small first
try that validates without any downloaded data. Recipes whose full size reads prepared
data (Alpaca's instructions, UltraFeedback's prompts, your corpus, wikitext blocks) are
validated with stand-in files of the paper's size in their place.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from distill.cli import app
from distill.recipe import RecipeError, load_recipe
from distill.train.config import ARGS_TRAINER, accumulation_steps, per_device_batch

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"

# The papers' figures (/work/shared/references.md, the recipes' headers).
ALPACA_INSTRUCTIONS = 52_002       # Alpaca's released data; also Evol-Instruct's pool
WIZARDLM_EVOLVED = 250_000         # WizardLM: Alpaca's 52K evolved into ~250K ...
WIZARDLM_TRAINED = 70_000          # ... of which 70K trained its 7B
ULTRAFEEDBACK_PROMPTS = 64_000     # UltraFeedback: ~64K prompts, 4 completions each
ULTRAFEEDBACK_ANSWERS = 4
WIKITEXT_BLOCKS = 40_000           # wikitext-2 train in 64-token OPT blocks (~2.1M words)
CORPUS_WORDS = 1_000_000           # domain_qa's header example


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, list[str]]:
    """Overrides that put stand-ins of the papers' sizes where the full recipes read data."""
    root = tmp_path_factory.mktemp("prepared")
    alpaca = root / "alpaca_data.json"
    alpaca.write_text(json.dumps([{"instruction": f"Task {i}.", "input": "", "output": "ok"}
                                  for i in range(ALPACA_INSTRUCTIONS)]))
    prompts = root / "ultrafeedback_prompts.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": f"Question {i}?"}) + "\n"
                               for i in range(ULTRAFEEDBACK_PROMPTS)))
    corpus = root / "corpus"
    corpus.mkdir()
    (corpus / "manual.txt").write_text(" ".join(f"w{i % 997}" for i in range(CORPUS_WORDS)))
    blocks = root / "blocks.jsonl"
    blocks.write_text(json.dumps({"id": "b", "instruction": "", "text": "some text"}) + "\n")
    return {
        "alpaca.yaml": [],
        "evol_instruct.yaml": [f"generate.instructions={alpaca}"],
        "ultrafeedback_dpo.yaml": [f"generate.prompts={prompts}"],
        "phi_textbooks.yaml": [],
        "domain_qa.yaml": [f"generate.documents=[{corpus}]"],
        "collapse/base/opt125m_wikitext.yaml": [f"data.real.path={blocks}",
                                                f"data.real.held_out_path={blocks}"],
        # hub datasets are named, not read, when a recipe is validated
        "kd_logits.yaml": [], "on_policy.yaml": [], "reasoning_s1.yaml": [],
    }


GPU_RECIPES = ["alpaca.yaml", "evol_instruct.yaml", "ultrafeedback_dpo.yaml",
               "phi_textbooks.yaml", "domain_qa.yaml", "collapse/base/opt125m_wikitext.yaml",
               "kd_logits.yaml", "on_policy.yaml", "reasoning_s1.yaml"]
# s1 trains 1,000 traces for 5 epochs at batch 16 (315 steps); on-policy distillation
# needs few steps, each sampling long answers: fewer steps than instruction tuning
FEW_STEPS = {"reasoning_s1.yaml": 300, "on_policy.yaml": 100}


def header(name: str) -> str:
    """The recipe's opening comment as one line of text (wrapped lines joined)."""
    lines = (RECIPES / name).read_text(encoding="utf-8").splitlines()
    comment = lines[:next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    return " ".join(" ".join(line.lstrip("#").split()) for line in comment)


@functools.cache
def corpus_pairs(files: tuple[str, ...], chunk_words: int, overlap_words: int,
                 questions: int) -> int:
    """What doc_qa asks for from these documents: chunks x questions per chunk."""
    from distill.generate.documents import chunk_text, load_documents

    documents = load_documents([Path(f) for f in files])
    return questions * sum(len(chunk_text(d.text, chunk_words, overlap_words))
                           for d in documents)


def generated(recipe) -> int:
    """How many examples the generation step is configured to make, at most."""
    g = recipe.generate
    if g.kind == "self_instruct":
        return g.num_instructions
    if g.kind == "evol_instruct":
        pool = ALPACA_INSTRUCTIONS if g.instructions else 75  # distill's seed tasks
        return min(pool, g.max_initial or pool) * (1 + g.evolution_rounds)
    if g.kind == "preference":  # one pair per prompt at most
        pool = ULTRAFEEDBACK_PROMPTS if g.prompts else 75
        return min(pool, g.num_prompts or pool)
    if g.kind == "textbook":
        from distill.generate.textbook import cross_product

        sections = len(cross_product(g, "section")) if g.sections == "all" else g.sections
        exercises = len(cross_product(g, "exercise")) if g.exercises == "all" else g.exercises
        return sections + exercises
    if g.kind == "doc_qa":
        return corpus_pairs(tuple(map(str, g.files())), g.chunk_words, g.overlap_words,
                            g.questions_per_chunk)
    if g.kind == "continuation":
        return recipe.data.real.count or WIKITEXT_BLOCKS
    if g.kind == "reasoning":  # problems with a kept trace, k traces each at most
        problems = min(g.problems.count, g.max_problems or g.problems.count)
        return problems * g.keep
    raise AssertionError(f"no size rule for generate.kind {g.kind}")


def trained(recipe) -> int:
    policy = recipe.rounds.data_policy
    budget = getattr(policy, "budget", None)
    return min(generated(recipe), budget) if budget else generated(recipe)


def optimizer_steps(recipe) -> int:
    args = recipe.train.args
    if "max_steps" in args:
        return args["max_steps"]
    batches = math.ceil(trained(recipe) / recipe.train.global_batch_size)
    return int(args["num_train_epochs"]) * batches


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_full_size_validates_and_sizes_follow_the_paper(name, prepared):
    recipe = load_recipe(RECIPES / name, prepared[name])
    g = recipe.generate
    if g.kind == "self_instruct":  # Alpaca: 52,002
        assert g.num_instructions >= 52_000
    if g.kind == "evol_instruct":
        assert g.max_initial is None and g.evolution_rounds == 4  # all of Alpaca's 52K
        assert generated(recipe) >= WIZARDLM_EVOLVED and trained(recipe) == WIZARDLM_TRAINED
    if g.kind == "preference":
        assert g.num_prompts is None  # all of UltraFeedback's prompts
        answers = len(g.models) * len(g.temperatures) * len(g.system_prompts) * g.samples
        assert answers == ULTRAFEEDBACK_ANSWERS
        assert trained(recipe) >= ULTRAFEEDBACK_PROMPTS
    if g.kind == "textbook":  # phi-1's CodeExercises, ~180M tokens at 300-450 each
        assert g.exercises >= 400_000 and g.sections == "all"
    if g.kind == "doc_qa":  # no paper figure: one pair per 50 words of corpus at least
        assert g.max_chunks is None and generated(recipe) >= CORPUS_WORDS // 50
    if g.kind == "continuation":  # Shumailov: all of wikitext-2, 10 generations
        assert recipe.data.real.count is None and recipe.rounds.count == 10
    if g.kind == "reasoning" and g.preset == "s1":  # s1K: 1,000 problems, 1 trace each
        assert generated(recipe) == 1000


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_global_batch_fixes_the_steps_on_any_gpu_count(name, prepared):
    recipe = load_recipe(RECIPES / name, prepared[name])
    train = recipe.train
    assert train.global_batch_size is not None
    assert "gradient_accumulation_steps" not in train.args
    per_device = per_device_batch(train.args, ARGS_TRAINER[train.method])
    gpus = (1, 2, 4) if recipe.generate.kind == "continuation" else (1, 2, 4, 8)
    for count in gpus:  # the global batch is whole on each of these GPU counts
        accumulation_steps(train.global_batch_size, per_device, count)
    steps = optimizer_steps(recipe)
    assert FEW_STEPS.get(name, 500) <= steps <= 10_000, f"{name}: {steps} optimizer steps"


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_header_states_the_numbers_the_settings_give(name, prepared):
    recipe = load_recipe(RECIPES / name, prepared[name])
    text = header(name)
    assert f"{name.removesuffix('.yaml').split('/')[-1]}-smoke" in text
    assert f"recipes/{name} --profile smoke" in text, "the smoke launch line"
    assert f"{generated(recipe):,}" in text, f"{name}: header lacks {generated(recipe):,}"
    steps = (f"{optimizer_steps(recipe):,} optimizer steps" if recipe.rounds.count == 1
             else f"({optimizer_steps(recipe):,} for N = {WIKITEXT_BLOCKS:,})")
    assert steps in text, f"{name}: header lacks {steps!r}"
    assert f"global batch of {recipe.train.global_batch_size}" in text
    smoke = load_recipe(RECIPES / name, prepared[name], profile="smoke")
    assert f"{smoke.train.args['max_steps']} optimizer steps" in text


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_smoke_profile_is_a_small_first_try(name, prepared):
    # only the wikitext blocks are needed for smoke: everything else ships
    needs = prepared[name] if "collapse" in name else []
    full = load_recipe(RECIPES / name, prepared[name])
    smoke = load_recipe(RECIPES / name, needs, profile="smoke")
    assert smoke.name == f"{full.name}-smoke"
    assert generated(smoke) < generated(full) and generated(smoke) <= 512
    assert optimizer_steps(smoke) <= 20 < optimizer_steps(full)
    assert smoke.eval.limit is not None and full.eval.limit is None


def test_full_size_data_is_named_in_the_header():
    """A recipe that reads prepared data says where it comes from, and where it goes."""
    for name, key in [("evol_instruct.yaml", "instructions"),
                      ("ultrafeedback_dpo.yaml", "prompts")]:
        raw = yaml.safe_load((RECIPES / name).read_text(encoding="utf-8"))
        assert f"recipes/{raw['generate'][key]}" in header(name)
    raw = yaml.safe_load((RECIPES / "domain_qa.yaml").read_text(encoding="utf-8"))
    assert raw["generate"]["documents"] == ["data/corpus"]
    assert "recipes/data/corpus" in header("domain_qa.yaml")


# -- profiles --------------------------------------------------------------------------

BASE = {
    "name": "t",
    "teacher": {"model": "org/teacher"},
    "student": {"model": "org/student"},
    "generate": {"kind": "self_instruct", "num_instructions": 1000},
    "filters": [{"kind": "heuristics"}, {"kind": "novelty"}],
    "eval": {"tasks": ["microworld"]},
    "profiles": {"smoke": {"generate.num_instructions": 20, "filters.1.threshold": 0.9,
                           "train.args.max_steps": 5},
                 "named": {"name": "other", "rounds.count": 2}},
}


def write(tmp_path, data) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_profile_applies_its_keys_and_renames_the_run(tmp_path):
    path = write(tmp_path, BASE)
    full, smoke = load_recipe(path), load_recipe(path, profile="smoke")
    assert (full.name, full.generate.num_instructions, full.filters[1].threshold) == \
        ("t", 1000, 0.7)
    assert (smoke.name, smoke.generate.num_instructions, smoke.filters[1].threshold) == \
        ("t-smoke", 20, 0.9)
    assert smoke.train.args["max_steps"] == 5
    named = load_recipe(path, profile="named")
    assert (named.name, named.rounds.count) == ("other", 2)
    # an empty profile (`full:` with nothing under it) only renames the run
    empty = load_recipe(write(tmp_path, {**BASE, "profiles": {"full": None}}), profile="full")
    assert (empty.name, empty.generate.num_instructions) == ("t-full", 1000)


def test_command_line_overrides_come_after_the_profile(tmp_path):
    path = write(tmp_path, BASE)
    recipe = load_recipe(path, ["generate.num_instructions=30", "name=mine"], profile="smoke")
    assert (recipe.generate.num_instructions, recipe.name) == (30, "mine")


@pytest.mark.parametrize(("profiles", "profile", "expected"), [
    (BASE["profiles"], "smok", "--profile smok: unknown profile; this recipe has: named, smoke"),
    ({}, "smoke", "--profile smoke: unknown profile; this recipe has: none"),
    ({"smoke": {"filters.5.threshold": 0.9}}, "smoke",
     "profiles.smoke.filters.5.threshold: filters.5 is not an index of a list of 2"),
])
def test_bad_profiles_are_one_line_errors(tmp_path, profiles, profile, expected):
    with pytest.raises(RecipeError) as error:
        load_recipe(write(tmp_path, {**BASE, "profiles": profiles}), profile=profile)
    assert str(error.value) == expected


@pytest.mark.parametrize(("profiles", "expected"), [
    ({"bad name": {}}, "profiles: 'bad name': use letters"),
    ({"smoke": {"profiles.x": 1}}, "profiles: smoke: 'profiles.x' is not a dotted key"),
    ({"smoke": {"generate..kind": 1}}, "profiles: smoke: 'generate..kind' is not a dotted key"),
])
def test_profiles_are_checked_with_the_recipe(tmp_path, profiles, expected):
    with pytest.raises(RecipeError, match=re.escape(expected)):
        load_recipe(write(tmp_path, {**BASE, "profiles": profiles}))


def test_cli_takes_a_profile_and_exits_2_on_an_unknown_one(tmp_path):
    path = write(tmp_path, BASE)
    ok = CliRunner().invoke(app, ["validate", str(path), "--profile", "smoke"])
    assert ok.exit_code == 0 and "t-smoke" in ok.output
    bad = CliRunner().invoke(app, ["validate", str(path), "--profile", "tiny"])
    assert bad.exit_code == 2
    assert "unknown profile; this recipe has: named, smoke" in bad.output
    assert len(bad.output.strip().splitlines()) == 1
