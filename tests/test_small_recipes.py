"""The CPU-sized recipes under recipes/small, run end to end through the CLI.

Each small recipe is the twin of a shipped GPU recipe on the microworld models (built once
per machine). Besides the run itself, its data must be plain data: the filtered and the
training JSONL load with `datasets` and train a stock `trl.SFTTrainer` with no conversion.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.recipe import load_recipe
from distill.records import read_json

ROOT = Path(__file__).resolve().parents[1]
STAGES = {("base", "evaluate"), ("round_0", "generate"), ("round_0", "filter"),
          ("round_0", "decontaminate"), ("round_0", "train"), ("round_0", "evaluate"),
          ("round_0", "measure")}


def run_recipe(recipe: str, out: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "distill", "run", recipe, f"output_dir={out}",
                           *overrides, "--quiet"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def train_two_steps(data_file: Path, model_dir: Path, out: Path) -> tuple[int, list[float]]:
    """Train a plain TRL SFTTrainer on the JSONL exactly as written.

    Returns the number of rows `datasets` read and the two logged losses.
    """
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    dataset = load_dataset("json", data_files=str(data_file), split="train")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = SFTConfig(output_dir=str(out), max_steps=2, per_device_train_batch_size=4,
                     learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[],
                     use_cpu=True, max_length=128, dataloader_num_workers=0)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.train()
    assert trainer.state.global_step == 2
    assert any(not p.equal(before[n]) for n, p in model.named_parameters())
    return len(dataset), [log["loss"] for log in trainer.state.log_history if "loss" in log]


def test_small_alpaca_keeps_the_method_of_recipes_alpaca():
    big, small = load_recipe(ROOT / "recipes" / "alpaca.yaml"), \
        load_recipe(ROOT / "recipes" / "small" / "alpaca.yaml")
    for key in ("kind", "seed_examples_per_prompt", "machine_examples_per_prompt", "responses"):
        assert getattr(small.generate, key) == getattr(big.generate, key), key
    assert (small.generate.sampling.temperature, small.generate.sampling.top_p) == (1.0, 1.0)
    assert [f.kind for f in small.filters] == [f.kind for f in big.filters]
    assert small.filters[-1].threshold == big.filters[-1].threshold == 0.7
    for key in ("num_train_epochs", "lr_scheduler_type", "warmup_steps", "weight_decay",
                "max_length"):
        assert small.train.args[key] == big.train.args[key], key
    assert small.decontamination == big.decontamination


@pytest.mark.slow
def test_small_alpaca_runs_and_its_data_trains_plain_trl(tmp_path, tiny_model_dir):
    from distill.microworld.build import build_models

    build_models(quiet=True)  # outside the run, so a first build does not count against it
    result = run_recipe("recipes/small/alpaca.yaml", tmp_path / "runs")
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    run = tmp_path / "runs" / "alpaca_small"
    manifests = {(p.parent.parent.name, p.parent.name): read_json(p)
                 for p in run.glob("*/*/manifest.json")}
    assert set(manifests) == STAGES
    generated = manifests["round_0", "generate"]["counts"]["candidates"]
    kept = manifests["round_0", "filter"]["counts"]["kept"]
    assert generated == 24 and 0 < kept <= generated
    assert manifests["round_0", "train"]["train"]["num_examples"] == \
        manifests["round_0", "decontaminate"]["counts"]["clean"]
    for data, rows in ((run / "round_0" / "filter" / "kept.jsonl", kept),
                       (run / "round_0" / "train" / "train.jsonl",
                        manifests["round_0", "train"]["train"]["num_examples"])):
        read, losses = train_two_steps(data, tiny_model_dir, tmp_path / f"sft-{data.parent.name}")
        assert read == rows, data
        assert len(losses) == 2 and all(loss > 0 for loss in losses), data
