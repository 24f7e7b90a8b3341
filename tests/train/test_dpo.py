"""DPO with TRL + PEFT LoRA on a tiny model: the policy learns to prefer the chosen answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_data import CHATS, OBJECTS

from distill.records import Example, PreferencePair, write_jsonl
from distill.train.config import LoraSettings, TrainConfig, TrainSpec
from distill.train.dpo import load_pairs, train_dpo

WRONG = {"blue": "green", "green": "black", "white": "blue", "black": "white"}

# Fast settings that still move the policy in a few steps on a CPU.
DPO_ARGS = {
    "gradient_checkpointing": False,
    "learning_rate": 5e-3,
    "lr_scheduler_type": "constant",
    "warmup_steps": 0,
    "num_train_epochs": 3,
    "per_device_train_batch_size": 8,
    "max_length": 64,
}


def learnable_pairs() -> list[PreferencePair]:
    """Twenty prompts whose chosen answer names the right colour and rejected a wrong one."""
    pairs = []
    for i, (question, answer) in enumerate(CHATS):
        thing = next(t for t in OBJECTS if f" {t}?" in question)
        wrong = answer.replace(OBJECTS[thing], WRONG[OBJECTS[thing]])
        pairs.append(PreferencePair.build(f"p{i}", Example(id=f"q{i}", instruction=question),
                                          answer, wrong, score_chosen=5.0, score_rejected=1.0))
    return pairs


@pytest.fixture(scope="module")
def pairs_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dpo-data") / "pairs.jsonl"
    write_jsonl(path, learnable_pairs())
    return path


def logp_margins(model_dir: str | Path, pairs: list[PreferencePair]) -> torch.Tensor:
    """log p(chosen) - log p(rejected) of each pair's answer tokens, with plain transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    def answer_logp(pair: PreferencePair, answer: list[dict[str, str]]) -> float:
        prompt = tokenizer.apply_chat_template(pair.prompt, add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
        full = tokenizer.apply_chat_template([*pair.prompt, *answer], tokenize=True,
                                             return_dict=True)["input_ids"]
        ids = torch.tensor([full])
        with torch.no_grad():
            logps = model(ids).logits[0, :-1].log_softmax(-1)
        targets = ids[0, 1:]
        token_logps = logps.gather(1, targets[:, None])[:, 0]
        return float(token_logps[len(prompt) - 1:].sum())

    return torch.tensor([answer_logp(p, p.chosen) - answer_logp(p, p.rejected) for p in pairs])


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir, pairs_path, tmp_path_factory):
    spec = TrainSpec(method="dpo", model=str(tiny_model_dir), data_path=str(pairs_path),
                     output_dir=str(tmp_path_factory.mktemp("dpo") / "out"), seed=0,
                     quiet=True, lora=LoraSettings(dropout=0.0), args=DPO_ARGS)
    return spec, train_dpo(spec)


def test_policy_prefers_the_chosen_answers_after_dpo(dpo_run, tiny_model_dir):
    _, result = dpo_run
    pairs = learnable_pairs()
    before = logp_margins(tiny_model_dir, pairs)
    after = logp_margins(result.merged_dir, pairs)
    # The merged student (base + DPO adapter) puts clearly more probability on the right
    # colour than the untrained base, on (nearly) every training pair.
    assert after.mean() > before.mean() + 1.0
    assert (after > before).float().mean() >= 0.9


def test_train_log_records_reward_margins(dpo_run):
    spec, result = dpo_run
    log = json.loads((Path(spec.output_dir) / "train_log.json").read_text())
    assert log["method"] == "dpo" and log["num_examples"] == 20
    assert log["steps"] == 3 * 3  # 20 pairs / batch 8 -> 3 steps per epoch
    # TRL's implicit reward margin: zero before the first update (policy == reference),
    # clearly positive at the end.
    assert abs(result.reward_margin_start) < 1e-4
    assert result.reward_margin_end > 0.1 and result.reward_accuracy_end >= 0.75
    assert len(result.reward_margin_history) == result.steps
    assert log["args"]["learning_rate"] == DPO_ARGS["learning_rate"]
    assert log["args"]["num_train_epochs"] == 3
    assert "beta" not in log["args"]  # TRL's own default (0.1) applies
    # adapter and merged checkpoint, as for SFT
    assert (Path(result.adapter_dir) / "adapter_config.json").is_file()
    assert not (Path(result.merged_dir) / "adapter_config.json").exists()


def test_reference_is_the_adapter_disabled_student(tiny_model_dir, pairs_path, tmp_path):
    from distill.train.dpo import prepare_dpo

    spec = TrainSpec(method="dpo", model=str(tiny_model_dir), data_path=str(pairs_path),
                     output_dir=str(tmp_path / "out"), quiet=True, args=DPO_ARGS)
    trainer = prepare_dpo(spec).trainer
    assert trainer.ref_model is None  # no copy: TRL disables the adapter for the reference
    assert type(trainer.model).__name__ == "PeftModelForCausalLM"


@pytest.mark.slow  # two trainings and two merges (~40 s on 2 busy cores)
def test_sft_then_dpo_trains_sft_first_then_dpo_from_it(tiny_model_dir, pairs_path, tmp_path):
    spec = TrainSpec(method="sft_then_dpo", model=str(tiny_model_dir),
                     data_path=str(pairs_path), output_dir=str(tmp_path / "out"), quiet=True,
                     lora=LoraSettings(dropout=0.0), args={**DPO_ARGS, "num_train_epochs": 1},
                     sft_args={"gradient_checkpointing": False, "learning_rate": 5e-3,
                               "num_train_epochs": 2, "per_device_train_batch_size": 8,
                               "max_length": 64})
    result = train_dpo(spec)
    sft = result.sft_step
    assert sft["method"] == "sft" and sft["num_examples"] == 20
    assert sft["final_loss"] < sft["first_loss"]  # SFT learnt the chosen answers
    assert Path(sft["merged_dir"]).parent == tmp_path / "out" / "sft"
    assert result.method == "sft_then_dpo" and result.steps == 3
    # the DPO adapter sits on the SFT model, and the final merge is based on it
    adapter_config = json.loads((Path(result.adapter_dir) / "adapter_config.json").read_text())
    # named relative to the training output directory, which the runner renames at commit
    assert adapter_config["base_model_name_or_path"] == "sft/merged"
    assert sft["merged_dir"] == str(tmp_path / "out" / "sft" / "merged")
    log = json.loads((tmp_path / "out" / "train_log.json").read_text())
    assert log["sft_step"]["final_loss"] == sft["final_loss"]
    assert log["sft_step"]["merged_dir"] == "sft/merged"  # relative to the log's directory
    assert json.loads((tmp_path / "out" / "sft" / "train_log.json").read_text())[
        "merged_dir"] == "merged"


def test_sft_examples_are_left_out_and_a_file_without_pairs_is_named(tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    write_jsonl(mixed, [Example(id="x", instruction="hi", output="there"),
                        *learnable_pairs()[:2]])
    assert load_pairs(mixed).column_names == ["prompt", "chosen", "rejected"]
    assert len(load_pairs(mixed)) == 2
    sft_only = tmp_path / "sft.jsonl"
    write_jsonl(sft_only, [Example(id="x", instruction="hi", output="there")])
    with pytest.raises(ValueError, match=r"sft.jsonl: no preference pairs"):
        load_pairs(sft_only)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "y", "prompt": "hi"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl: record 1 is not a preference pair"):
        load_pairs(bad)


def test_dpo_args_are_checked_against_dpoconfig():
    from pydantic import ValidationError

    assert TrainConfig(method="dpo", args={"beta": 0.01}).args == {"beta": 0.01}
    with pytest.raises(ValidationError, match=r"trl.DPOConfig; did you mean beta"):
        TrainConfig(method="dpo", args={"bta": 0.01})
    with pytest.raises(ValidationError, match="not an argument of trl.SFTConfig"):
        TrainConfig(method="sft", args={"beta": 0.01})
    with pytest.raises(ValidationError, match="only used by method sft_then_dpo"):
        TrainConfig(method="dpo", sft_args={"max_length": 64})
    config = TrainConfig(method="sft_then_dpo", sft_args={"assistant_only_loss": False},
                         args={"loss_type": ["sigmoid"]})
    assert config.sft_args == {"assistant_only_loss": False}
