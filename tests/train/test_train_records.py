"""The committed train stage names no path into `.train.work/`, and every path it names exists.

The runner trains in `<round>/.train.work/` and renames it `<round>/train/` when the stage
commits, so a record written during training must not name the work directory. These tests
run the real train stage (`Runner.train`, the store's commit) on the tiny model: SFT through
`accelerate launch` with cpu.yaml, as the quickstart trains, and sft_then_dpo in process,
whose DPO adapter sits on the SFT step's merged model inside the stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml
from train_data import CHATS, FAST_ARGS, OBJECTS

from distill.records import Example, PreferencePair, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "accelerate"
FAST_DPO_ARGS = {"gradient_checkpointing": False, "learning_rate": 5e-3,
                 "lr_scheduler_type": "constant", "warmup_steps": 0, "num_train_epochs": 1,
                 "per_device_train_batch_size": 8, "max_length": 64}


def run_train_stage(tmp_path: Path, model_dir: Path, train: dict, generate: dict,
                    records: list) -> Path:
    """Runner.train on `records` as round 1's clean data; the committed stage directory."""
    from distill.models import ModelRef
    from distill.recipe import load_recipe
    from distill.runner import Runner, RunOptions

    recipe_path = tmp_path / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump({
        "name": "t", "teacher": {"model": "org/teacher"}, "student": {"model": str(model_dir)},
        "generate": generate, "eval": {"tasks": ["microworld"]},
        "output_dir": str(tmp_path / "runs"), "train": train}))
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    write_jsonl(clean_dir / "clean.jsonl", records)
    clean = SimpleNamespace(fingerprint="clean", round_dir=tmp_path, path=clean_dir)
    runner = Runner(load_recipe(recipe_path), RunOptions(quiet=True))
    stage = runner.train("round_1", ModelRef(path=str(model_dir),
                                             identity={"fingerprint": "m"}), [clean])
    assert stage.path.name == "train" and not stage.work.exists()
    return stage.path


def assert_no_work_paths(stage_dir: Path) -> None:
    """No committed file, binary ones included (pickled training args), names `.work`."""
    named = [str(path.relative_to(stage_dir)) for path in stage_dir.rglob("*")
             if path.is_file() and b".work" in path.read_bytes()]
    assert named == []


def assert_named_paths_exist(stage_dir: Path) -> None:
    """Every path distill's records name resolves, against the stage directory, to a file."""
    log = json.loads((stage_dir / "train_log.json").read_text())
    assert log["paths_relative_to"] == "the directory of this file"
    steps = [log] + ([log["sft_step"]] if log.get("sft_step") else [])
    for step in steps:
        for key in ("output_dir", "merged_dir", "adapter_dir"):
            assert not Path(step[key]).is_absolute() and (stage_dir / step[key]).is_dir(), key
    spec_path = stage_dir / "train_spec.json"
    if spec_path.exists():  # written when training runs in a launched subprocess
        spec = json.loads(spec_path.read_text())
        assert spec["paths_relative_to"] == "the directory of this file"
        for key in ("data_path", "output_dir", "progress_path"):
            assert (stage_dir / spec[key]).exists(), key
    adapter = json.loads((stage_dir / "adapter" / "adapter_config.json").read_text())
    base = Path(adapter["base_model_name_or_path"])
    assert (base if base.is_absolute() else stage_dir / base).joinpath("config.json").is_file()
    # the manifest's training summary names no path at all
    summary = json.loads((stage_dir / "manifest.json").read_text())["train"]
    assert not {"output_dir", "merged_dir", "adapter_dir"} & set(summary)
    assert not {"output_dir", "merged_dir", "adapter_dir"} & set(summary.get("sft_step") or {})
    # the Trainer's pickled arguments name its directory inside the stage, relatively
    args = torch.load(stage_dir / "adapter" / "training_args.bin", weights_only=False)
    assert args.output_dir == "trainer"


def test_sft_stage_through_accelerate_names_only_committed_paths(tiny_model_dir, tmp_path):
    records = [Example(id=f"e{i}", instruction=q, output=a) for i, (q, a) in enumerate(CHATS)]
    stage_dir = run_train_stage(
        tmp_path, tiny_model_dir,
        {"accelerate_config": str(CONFIGS / "cpu.yaml"),
         "args": {**FAST_ARGS, "num_train_epochs": 1}},
        {"kind": "self_instruct", "num_instructions": 10}, records)
    assert (stage_dir / "train_spec.json").is_file()
    assert_no_work_paths(stage_dir)
    assert_named_paths_exist(stage_dir)


def test_sft_then_dpo_stage_names_only_committed_paths(tiny_model_dir, tmp_path):
    wrong = {"blue": "green", "green": "black", "white": "blue", "black": "white"}
    pairs = []
    for i, (question, answer) in enumerate(CHATS[:8]):
        color = next(c for t, c in OBJECTS.items() if f" {t}?" in question)
        pairs.append(PreferencePair.build(f"p{i}", Example(id=f"q{i}", instruction=question),
                                          answer, answer.replace(color, wrong[color]),
                                          score_chosen=5.0, score_rejected=1.0))
    stage_dir = run_train_stage(
        tmp_path, tiny_model_dir,
        {"method": "sft_then_dpo", "args": FAST_DPO_ARGS,
         "sft_args": {**FAST_ARGS, "num_train_epochs": 1}},
        {"kind": "preference"}, pairs)
    assert_no_work_paths(stage_dir)
    assert_named_paths_exist(stage_dir)
    # the DPO adapter's base is the SFT step's merged model, named inside the stage
    adapter = json.loads((stage_dir / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "sft/merged"
    assert "relative to the training output directory" in (
        stage_dir / "adapter" / "README.md").read_text()
    sft_args = torch.load(stage_dir / "sft" / "adapter" / "training_args.bin",
                          weights_only=False)
    assert sft_args.output_dir == "trainer"  # relative to the SFT step's directory, sft/

