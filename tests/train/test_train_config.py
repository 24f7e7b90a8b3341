"""The `train` recipe section, LoRA settings and the job spec."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from distill.registry import TRAINERS
from distill.train.config import (
    LoraSettings,
    TrainConfig,
    TrainResult,
    TrainSpec,
    check_sft_args,
    resolve_sft_args,
)


def error_of(**fields) -> tuple[tuple, str]:
    with pytest.raises(ValidationError) as caught:
        TrainConfig(**fields)
    (item,) = caught.value.errors()
    return item["loc"], item["msg"]


def test_unknown_trl_argument_is_named_with_a_suggestion():
    loc, msg = error_of(args={"learnin_rate": 1e-4})
    assert loc[:2] == ("args", "learnin_rate")
    assert "not an argument of trl.SFTConfig" in msg and "learning_rate" in msg
    with pytest.raises(ValueError, match=r"^train\.args\.learnin_rate: not an argument"):
        check_sft_args({"learnin_rate": 1e-4})


def test_output_dir_belongs_to_distill():
    loc, msg = error_of(args={"output_dir": "/tmp/elsewhere"})
    assert loc[:2] == ("args", "output_dir") and "set by distill" in msg


def test_bad_value_is_reported_by_sftconfig():
    loc, msg = error_of(args={"lr_scheduler_type": "sideways"})
    assert loc == ("args",) and "trl.SFTConfig rejects" in msg and "sideways" in msg


def test_gpu_arguments_validate_on_a_cpu_machine():
    config = TrainConfig(args={"bf16": True, "per_device_train_batch_size": 4})
    assert config.args == {"bf16": True, "per_device_train_batch_size": 4}  # untouched


def test_validation_leaves_accelerate_state_alone():
    from accelerate.state import AcceleratorState, PartialState

    before = (dict(PartialState._shared_state), dict(AcceleratorState._shared_state))
    TrainConfig(args={"learning_rate": 1e-4})
    assert (dict(PartialState._shared_state), dict(AcceleratorState._shared_state)) == before


def test_unknown_section_key_and_method():
    assert error_of(argz={})[0] == ("argz",)
    assert error_of(method="ppo")[0] == ("method",)


def test_defaults_fill_only_missing_keys():
    lora = resolve_sft_args({}, full_finetune=False, seed=7)
    full = resolve_sft_args({}, full_finetune=True, seed=7, quiet=True)
    assert lora["learning_rate"] == 2e-4 and full["learning_rate"] == 2e-5
    assert lora["assistant_only_loss"] is True and lora["lr_scheduler_type"] == "cosine"
    assert lora["seed"] == 7 and full["disable_tqdm"] is True
    mine = {"learning_rate": 1e-3, "seed": 3, "assistant_only_loss": False, "bf16": True}
    assert resolve_sft_args(mine, full_finetune=False, seed=7).items() >= mine.items()


def test_bf16_default_follows_the_hardware():
    import torch

    resolved = resolve_sft_args({}, full_finetune=False, seed=0)
    if not torch.cuda.is_available():
        assert resolved["bf16"] is False
    else:
        assert "bf16" not in resolved or resolved["bf16"] is False


def test_lora_settings_map_onto_peft():
    settings = LoraSettings(r=8, alpha=16, dropout=0.1, target_modules=["q_proj", "v_proj"])
    peft_config = settings.to_peft()
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (8, 16, 0.1)
    assert set(peft_config.target_modules) == {"q_proj", "v_proj"}
    assert peft_config.task_type == "CAUSAL_LM"
    assert LoraSettings().to_peft().target_modules == "all-linear"
    with pytest.raises(ValidationError):
        LoraSettings(rank=8)


def test_spec_and_result_round_trip_through_json():
    spec = TrainSpec(model="m", data_path="d.jsonl", output_dir="o", args={"bf16": False},
                     lora=None)
    assert TrainSpec.model_validate_json(spec.model_dump_json()) == spec
    result = TrainResult(output_dir="o", merged_dir="o/merged", num_examples=3)
    assert TrainResult.model_validate_json(result.model_dump_json()) == result


def test_numbers_yaml_leaves_as_strings_are_read_as_numbers():
    # YAML 1.1 reads `1e-3` as a string; TrainingArguments would pass it to the optimizer.
    config = TrainConfig(args={"learning_rate": "1e-3", "max_length": "128"})
    assert config.args == {"learning_rate": 0.001, "max_length": 128}
    with pytest.raises(ValueError, match="learning_rate: expected a number, got 'fast'"):
        TrainConfig(args={"learning_rate": "fast"})


def test_methods_are_the_registered_trainers():
    from distill.train.dpo import train_dpo
    from distill.train.on_policy import train_on_policy
    from distill.train.sft import train_sft

    assert TRAINERS.get("sft") is train_sft
    assert TRAINERS.get("dpo") is TRAINERS.get("sft_then_dpo") is train_dpo
    assert TRAINERS.get("on_policy") is TRAINERS.get("sft_then_on_policy") is train_on_policy
    names = ["dpo", "kd", "on_policy", "sft", "sft_then_dpo", "sft_then_on_policy"]
    schema = TrainConfig.model_json_schema()["properties"]["method"]
    assert schema["enum"] == TRAINERS.names() == names
    loc, msg = error_of(method="ppo")
    assert loc == ("method",) and f"choose one of {names}" in msg

    TRAINERS.register("gkd")(lambda spec, callbacks=None: None)  # a new method: one module
    try:
        assert TrainSpec(method="gkd", model="m", data_path="d", output_dir="o").method == "gkd"
    finally:
        TRAINERS.unregister("gkd")


def test_spec_and_result_files_name_the_job_files_relative_to_their_directory(tmp_path):
    out = tmp_path / ".train.work"
    out.mkdir()
    spec = TrainSpec(model="org/model", data_path=str(out / "train.jsonl"),
                     output_dir=str(out), progress_path=str(out / "progress.jsonl"),
                     chat_template=str(tmp_path / "template.jinja"))
    spec.save(out / "train_spec.json")
    result = TrainResult(output_dir=str(out), merged_dir=str(out / "merged"),
                         adapter_dir=str(out / "adapter"), num_examples=3,
                         sft_step={"output_dir": str(out / "sft"), "adapter_dir": None,
                                   "merged_dir": str(out / "sft" / "merged")})
    result.save(out / "train_log.json")

    written = json.loads((out / "train_spec.json").read_text())
    assert (written["data_path"], written["output_dir"], written["progress_path"]) == (
        "train.jsonl", ".", "progress.jsonl")
    assert written["model"] == "org/model"  # not a path of the job's: kept as given
    assert written["chat_template"] == str(tmp_path / "template.jinja")
    logged = json.loads((out / "train_log.json").read_text())
    assert (logged["output_dir"], logged["merged_dir"], logged["adapter_dir"]) == (
        ".", "merged", "adapter")
    assert logged["sft_step"]["merged_dir"] == "sft/merged"

    committed = out.rename(tmp_path / "train")  # what the runner does when the stage commits
    assert TrainSpec.load(committed / "train_spec.json") == spec.model_copy(update={
        "data_path": str(committed / "train.jsonl"), "output_dir": str(committed),
        "progress_path": str(committed / "progress.jsonl")})
    loaded = TrainResult.load(committed / "train_log.json")
    assert (loaded.output_dir, loaded.merged_dir, loaded.adapter_dir) == (
        str(committed), str(committed / "merged"), str(committed / "adapter"))
    assert loaded.sft_step["merged_dir"] == str(committed / "sft" / "merged")
    # a spec written by hand with absolute paths reads as it is
    (tmp_path / "spec.json").write_text(spec.model_dump_json())
    assert TrainSpec.load(tmp_path / "spec.json") == spec
