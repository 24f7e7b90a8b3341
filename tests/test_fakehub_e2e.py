"""A run that names its teacher and student by hub id, killed mid-generation and rerun.

The fake hub (tests/fakehub.py) stands in for the Hugging Face hub, offline. Before hub
ids were resolved to their commits up front, a run's first start on a fresh machine
fingerprinted them without a commit and its restart with one: the restart moved finished
stages to `.stale/` and threw away the interrupted generation's checkpoints. Here the
rerun must pick up the generation where the kill left it and finish the run; the trained
Qwen2.5-base-like student must stop at `<|im_end|>`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fakehub import STUDENT, TEACHER

from distill.records import read_json

ROOT = Path(__file__).resolve().parents[1]
DISTILL = [sys.executable, "-m", "distill", "run"]


def hub_recipe(out: Path) -> dict:
    """One round, textbook sections from a random teacher (any text is a section here)."""
    return {
        "name": "hub_ids",
        "seed": 0,
        "output_dir": str(out),
        "teacher": {"model": TEACHER, "backend": "hf", "engine": {"batch_size": 2},
                    "checkpoint_every": 2},
        "student": {"model": STUDENT, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "generate": {"kind": "textbook", "topics": ["Fractions", "Gravity", "Rivers", "Bees"],
                     "audiences": ["young children"], "styles": ["textbook"],
                     "levels": ["introductory", "intermediate", "advanced"],
                     "sections": "all", "exercises": 0, "min_section_words": 1,
                     "sampling": {"temperature": 1.0, "max_tokens": 24}},
        "decontamination": {"enabled": False},
        "train": {"accelerate_config": str(ROOT / "recipes" / "accelerate" / "cpu.yaml"),
                  "args": {"num_train_epochs": 1, "per_device_train_batch_size": 4,
                           "gradient_checkpointing": False, "max_length": 128,
                           "logging_steps": 1}},
        "eval": {"tasks": ["distill_fixture_mc"],
                 "include_path": str(ROOT / "tests" / "assets" / "tasks"), "limit": 2,
                 "batch_size": 2},
        "measure": {"enabled": False},
        "rounds": {"count": 1},
    }


@pytest.mark.slow
def test_a_run_by_hub_id_resumes_its_killed_generation(fake_hub, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(hub_recipe(tmp_path / "runs")))
    run_dir = tmp_path / "runs" / "hub_ids"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOKENIZERS_PARALLELISM": "false"}
    command = [*DISTILL, str(recipe), "--quiet"]

    # Kill the run (the whole process group) once a few generation chunks are on disk.
    chunks = run_dir / "round_0" / ".generate.work" / "checkpoints"
    process = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and len(list(chunks.glob("*/chunk*.jsonl"))) < 2:
        assert process.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # chunks of `checkpoint_every` (2) requests; one the kill cut short is not counted
    written = {p.name: p.read_bytes() for p in chunks.glob("*/chunk*.jsonl")
               if p.read_bytes().count(b"\n") == 2}
    assert written and not (run_dir / "round_0" / "generate").exists()
    base_eval = read_json(run_dir / "base" / "evaluate" / "manifest.json")

    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    # Same fingerprints as the killed run: nothing finished was redone or set aside.
    assert not list(run_dir.rglob(".stale"))
    assert read_json(run_dir / "base" / "evaluate" / "manifest.json") == base_eval
    generated = read_json(run_dir / "round_0" / "generate" / "manifest.json")
    assert generated["inputs"]["teacher"]["commit"] == fake_hub.commit(TEACHER)
    assert generated["resumed_requests"] >= 2 * len(written)
    resumed = run_dir / "round_0" / "generate" / "checkpoints"
    for name, content in written.items():  # the killed run's chunks, kept as they were
        assert next(resumed.glob(f"*/{name}")).read_bytes() == content
    for stage in ("filter", "decontaminate", "train", "evaluate"):
        assert (run_dir / "round_0" / stage / "manifest.json").is_file(), stage

    # The trained student stops at the end of its turn.
    merged = run_dir / "round_0" / "train" / "merged"
    tokenizer_config = json.loads((merged / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    vocab = json.loads((merged / "tokenizer.json").read_text())["added_tokens"]
    ids = {token["content"]: token["id"] for token in vocab}
    generation = json.loads((merged / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [ids["<|im_end|>"], ids["<|endoftext|>"]]
