"""`train.global_batch_size`: the same optimizer steps on one process as on two."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.recipe import RecipeError, load_recipe
from distill.train.config import (
    accumulation_steps,
    resolve_dpo_args,
    resolve_sft_args,
)
from distill.train.launch import launch_training

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "accelerate"


@pytest.mark.parametrize(("per_device", "processes", "expected"),
                         [(16, 1, 8), (16, 2, 4), (16, 8, 1), (4, 2, 16)])
def test_accumulation_keeps_the_global_batch(per_device, processes, expected):
    assert accumulation_steps(128, per_device, processes) == expected
    assert expected * per_device * processes == 128


def test_a_global_batch_that_does_not_divide_is_refused():
    with pytest.raises(ValueError, match=r"global_batch_size 128 is not a multiple of "
                       r"per_device_train_batch_size 16 x 3 process\(es\) = 48"):
        accumulation_steps(128, 16, 3)


def test_the_training_process_sets_accumulation_from_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = resolve_sft_args({"per_device_train_batch_size": 16}, full_finetune=False,
                            seed=0, global_batch_size=128)
    assert args["gradient_accumulation_steps"] == 4
    # DPO the same; its per-device default is TRL's (8)
    assert resolve_dpo_args({}, full_finetune=False, seed=0,
                            global_batch_size=64)["gradient_accumulation_steps"] == 4
    # without a global batch, nothing is decided for the recipe
    assert "gradient_accumulation_steps" not in resolve_sft_args(
        {}, full_finetune=False, seed=0)


RECIPE = {
    "name": "t",
    "teacher": {"model": "org/teacher"},
    "student": {"model": "org/student"},
    "generate": {"kind": "self_instruct", "num_instructions": 10},
    "eval": {"tasks": ["microworld"]},
}


def load_with_train(tmp_path, train):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**RECIPE, "train": train}))
    return load_recipe(path)


@pytest.mark.parametrize(("train", "expected"), [
    ({"global_batch_size": 128, "args": {"gradient_accumulation_steps": 8}},
     "train.global_batch_size: train.args.gradient_accumulation_steps is set too"),
    ({"global_batch_size": 128, "args": {"auto_find_batch_size": True}},
     "train.global_batch_size: train.args.auto_find_batch_size"),
    ({"global_batch_size": 100, "args": {"per_device_train_batch_size": 16}},
     "train.global_batch_size: global_batch_size 100 is not a multiple of "
     "train.args.per_device_train_batch_size 16"),
    ({"method": "sft_then_dpo", "global_batch_size": 64,
      "sft_args": {"gradient_accumulation_steps": 2}},
     "train.global_batch_size: train.sft_args.gradient_accumulation_steps is set too"),
    ({"global_batch_size": 0}, "train.global_batch_size"),
])
def test_recipe_refuses_settings_that_change_the_global_batch(tmp_path, train, expected):
    with pytest.raises(RecipeError) as error:
        load_with_train(tmp_path, train)
    assert expected in str(error.value)


def test_recipe_keeps_a_global_batch(tmp_path):
    recipe = load_with_train(tmp_path, {"global_batch_size": 128,
                                        "args": {"per_device_train_batch_size": 16}})
    assert recipe.train.global_batch_size == 128


def test_the_launcher_refuses_a_batch_its_processes_cannot_share(make_spec, tmp_path):
    # 12 = 3 x 4 on one process, but not on cpu_2proc.yaml's two: refused before launching
    spec = make_spec(args={"per_device_train_batch_size": 4}, global_batch_size=12)
    with pytest.raises(ValueError, match=r"4 x 2 process\(es\) = 8"):
        launch_training(spec, CONFIGS / "cpu_2proc.yaml", log_path=tmp_path / "train.log")
    assert not (Path(spec.output_dir) / "train_spec.json").exists()


# 60 records, global batch 16 of per-device batches of 4, 2 epochs: 4 steps an epoch on any
# number of processes (one: 15 batches / accumulation 4; two: 8 each / accumulation 2).
ARGS = {"per_device_train_batch_size": 4}
STEPS = 2 * 4


def test_one_process_accumulates_to_the_global_batch(make_spec):
    result = launch_training(make_spec("one", args=ARGS, global_batch_size=16), None)
    assert (result.num_processes, result.args["gradient_accumulation_steps"]) == (1, 4)
    assert result.steps == STEPS


@pytest.mark.slow  # two CPU ranks through the shipped config (about a minute here)
def test_two_processes_take_the_same_steps(make_spec):
    result = launch_training(make_spec("two", args=ARGS, global_batch_size=16),
                             CONFIGS / "cpu_2proc.yaml")
    assert (result.num_processes, result.args["gradient_accumulation_steps"]) == (2, 2)
    assert result.steps == STEPS
    assert result.ranks_in_sync is True
