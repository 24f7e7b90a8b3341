"""`budget:` caps: generation stops at a chunk boundary, resumably, and the run says so.

The fast tests drive the generation context with a real (tiny, random) model through
the hf backend; the slow one runs the quickstart through the CLI, stops it with a
request cap and resumes it with the cap lifted.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.backends.base import GenerationRequest, Sampling
from distill.budget import Budget, BudgetReached, BudgetSettings, Price
from distill.generate.context import GenerationContext
from distill.models import ModelRef
from distill.recipe import RecipeError, load_recipe
from distill.records import read_json
from distill.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
REQUESTS = [GenerationRequest(id=f"q{i}", prompt=f"Count to {i}:",
                              sampling=Sampling(temperature=1.0, max_tokens=6, seed=i))
            for i in range(20)]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    from distill.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), batch_size=4, seed=0, dtype="float32")
    yield backend
    backend.close()


def context(backend, checkpoints: Path, **caps) -> GenerationContext:
    return GenerationContext(backend=backend, checkpoint_dir=checkpoints, chunk_size=4,
                             budget=Budget(BudgetSettings(**caps)) if caps else None)


def texts(generations) -> list[tuple[str, str]]:
    return [(g.request_id, g.text) for g in generations]


def test_a_request_cap_stops_before_the_chunk_that_would_pass_it_and_resumes(backend,
                                                                              tmp_path):
    uncapped = context(backend, tmp_path / "uncapped").generate("key", REQUESTS)
    with pytest.raises(BudgetReached) as stopped:
        context(backend, tmp_path / "capped", max_requests=10).generate("key", REQUESTS)
    # chunks of 4: the third would make 12 > 10, so two chunks ran and were saved
    assert stopped.value.cap == "max_requests" and stopped.value.spent["requests"] == 8
    assert "budget.max_requests (10) reached" in str(stopped.value)
    assert len(list((tmp_path / "capped" / "key").glob("chunk*.jsonl"))) == 2
    # the same cap again: the saved chunks count, nothing new starts
    with pytest.raises(BudgetReached):
        context(backend, tmp_path / "capped", max_requests=10).generate("key", REQUESTS)
    resumed = context(backend, tmp_path / "capped", max_requests=20)
    assert texts(resumed.generate("key", REQUESTS)) == texts(uncapped)
    assert resumed.stats.resumed_requests == 8


def test_a_token_cap_stops_once_reached_and_counts_money(backend, tmp_path):
    budget = Budget(BudgetSettings(max_tokens=1))
    ctx = GenerationContext(backend=backend, checkpoint_dir=tmp_path, chunk_size=4,
                            budget=budget, price=Price(prompt_per_million=1e6,
                                                       completion_per_million=0))
    with pytest.raises(BudgetReached) as stopped:
        ctx.generate("key", REQUESTS)
    assert stopped.value.cap == "max_tokens"
    assert budget.requests == 4  # the first chunk, then no more
    assert budget.spent_cost == pytest.approx(sum(
        g["prompt_tokens"] for g in _rows(tmp_path / "key")))


def _rows(folder: Path) -> list[dict]:
    import json

    return [json.loads(line) for shard in folder.glob("chunk*.jsonl")
            for line in shard.read_text().splitlines()]


def test_max_cost_needs_a_price():
    with pytest.raises(RecipeError, match="budget.max_cost counts money from teacher.price"):
        load_recipe(ROOT / "recipes" / "quickstart.yaml", ["budget.max_cost=5"])
    priced = load_recipe(ROOT / "recipes" / "quickstart.yaml", [
        "budget.max_cost=5", "teacher.price={prompt_per_million: 1, completion_per_million: 3}"])
    assert priced.teacher.price.cost(1e6, 1e6) == 4


@pytest.mark.slow
def test_a_capped_run_stops_says_so_and_resumes_to_the_uncapped_data(tmp_path):
    from distill.microworld.build import build_models

    build_models(quiet=True)
    small = ["rounds.count=1", "generate.num_instructions=48", "generate.prompts_per_step=16",
             "teacher.checkpoint_every=8", "eval.limit=4"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}

    def run(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "distill", "run", "recipes/quickstart.yaml",
                               f"output_dir={tmp_path / 'capped'}", *small, *overrides,
                               "--stop-after", "generate", "--quiet"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)

    stopped = run("budget.max_requests=20")
    assert stopped.returncode == 4, stopped.stderr[-3000:]
    assert "stopped by the budget: budget.max_requests (20) reached at round_0/generate" \
        in stopped.stderr
    run_dir = tmp_path / "capped" / "quickstart"
    assert not (run_dir / "round_0" / "generate").exists()  # not committed as finished
    assert read_json(run_dir / "budget.json")["spent"]["requests"] == 16
    assert "Stopped by the budget" in (run_dir / "report.md").read_text()

    finished = run("budget.max_requests=100000")
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert not (run_dir / "budget.json").exists()
    assert "Stopped by the budget" not in (run_dir / "report.md").read_text()
    resumed = run_dir / "round_0" / "generate"
    assert read_json(resumed / "manifest.json")["resumed_requests"] == 16

    recipe = load_recipe(ROOT / "recipes" / "quickstart.yaml",
                         [f"output_dir={tmp_path / 'uncapped'}", *small])
    uncapped = Runner(recipe).generate("round_0", 0, ModelRef.resolve(recipe.teacher))
    assert uncapped.fingerprint == read_json(resumed / "manifest.json")["fingerprint"]
    assert (resumed / "candidates.jsonl").read_bytes() == \
        (uncapped.path / "candidates.jsonl").read_bytes()
