"""On-policy distillation of the microworld student from the microworld teacher (TRL).

The student samples answers to 32 microworld prompts and learns from the teacher's
token-by-token scores; the test measures the KL between the two models on the teacher's
answers to 16 other prompts before and after. Each divergence lowers its own direction of
the KL (`distill.metrics.teacher_kl`): beta 1 (reverse KL, the default) KL(student ||
teacher), beta 0 (forward KL) KL(teacher || student).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.metrics.perplexity import load_scorer
from distill.metrics.teacher_kl import mean_token_kl, teacher_answers
from distill.microworld.tasks import generate_tasks
from distill.registry import TRAINERS
from distill.train.config import LoraSettings, TrainResult, TrainSpec
from distill.train.on_policy import longest_answer, prepare_on_policy, train_on_policy

ROOT = Path(__file__).resolve().parents[2]

# Few, large steps: the raw student has never seen a chat, and each step samples answers.
ARGS = {"max_steps": 12, "learning_rate": 2e-3, "lr_scheduler_type": "constant",
        "per_device_train_batch_size": 8}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Microworld models, 32 training chats and 16 held-out ones (teacher's greedy answers)."""
    from distill.microworld.build import build_models

    paths = build_models()
    train_tasks = generate_tasks(32, seed=1, unique=True)
    held_out = generate_tasks(16, seed=2, unique=True, exclude={t.key for t in train_tasks})
    chats = teacher_answers(paths["teacher"], [t.to_example().prompt_text for t in train_tasks]
                            + [t.to_example().prompt_text for t in held_out],
                            max_tokens=48, device="cpu")
    data = tmp_path_factory.mktemp("on-policy-data") / "train.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "messages": chat}) + "\n"
                            for i, chat in enumerate(chats[:32])), encoding="utf-8")
    scorers = {name: load_scorer(path, device="cpu") for name, path in paths.items()}
    return {"paths": paths, "data": data, "held_out": chats[32:], "scorers": scorers}


def spec_for(world, out: Path, **fields) -> TrainSpec:
    fields["args"] = {**ARGS, **fields.get("args", {})}
    fields.setdefault("teacher_model", str(world["paths"]["teacher"]))
    return TrainSpec(method="on_policy", model=str(world["paths"]["student"]),
                     data_path=str(world["data"]), output_dir=str(out), seed=0, quiet=True,
                     lora=LoraSettings(), **fields)


def held_out_kl(world, student, direction: str) -> float:
    return mean_token_kl(world["scorers"]["teacher"], student, world["held_out"],
                         direction=direction)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """The default objective (beta 1, reverse KL), 3 steps of 8 prompts."""
    out = tmp_path_factory.mktemp("on-policy") / "train"
    return train_on_policy(spec_for(world, out, args={"max_steps": 3}))


def test_registered_under_its_method():
    assert TRAINERS.get("on_policy") is train_on_policy


@pytest.mark.slow  # 12 steps and two KL measurements each: 20-60 s on a busy CPU
@pytest.mark.parametrize(("beta", "direction"), [(1.0, "reverse"), (0.0, "forward")])
def test_training_lowers_the_kl_it_optimises_on_held_out_prompts(world, beta, direction,
                                                                  tmp_path):
    beta_arg = {} if beta == 1.0 else {"beta": beta}  # 1.0: TRL's default, distill's
    result = train_on_policy(spec_for(world, tmp_path / "train", args=beta_arg))
    assert result.args.get("beta") == (None if beta == 1.0 else beta)
    before = held_out_kl(world, world["scorers"]["student"], direction)
    after = held_out_kl(world, result.merged_dir, direction)
    assert after < 0.8 * before, (direction, before, after)


def test_outputs_as_every_method(world, trained):
    out = Path(trained.output_dir)
    assert trained.method == "on_policy" and trained.steps == 3
    assert trained.num_examples == 32 and trained.loss_mask == "completion"
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert TrainResult.load(out / "train_log.json").steps == 3
    # the logged loss is TRL's divergence per completion token, each step
    assert [point.step for point in trained.loss_history] == [1, 2, 3]
    assert all(point.loss > 0 for point in trained.loss_history)
    assert trained.tokens_seen > 0
    # the merged student is a plain checkpoint with other weights than the base
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(trained.merged_dir)
    base = world["scorers"]["student"].model
    assert not any("lora" in name for name, _ in merged.named_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(merged.state_dict().values(),
                                                     base.state_dict().values(), strict=True))


def test_defaults_decided_from_the_data_and_the_device(world, trained):
    args = trained.args
    tokenizer = world["scorers"]["student"].tokenizer
    # the teacher's longest answer (with its turn end) bounds the student's samples
    longest = max(len(tokenizer(chat[-1]["content"], add_special_tokens=False)["input_ids"])
                  + 1 for chat in json_chats(world["data"]))
    assert args["max_completion_length"] == longest == longest_answer(
        tokenizer, json_chats(world["data"]))
    assert args["gradient_checkpointing"] is False  # no GPU here: it would only cost time
    assert args["bf16"] is False and args["learning_rate"] == 2e-3
    assert "beta" not in args  # TRL's own default, 1.0 (reverse KL), decides


def test_a_recipe_bound_on_completion_length_is_kept(world, tmp_path):
    prepared = prepare_on_policy(spec_for(world, tmp_path / "t",
                                          args={"max_completion_length": 5}))
    assert prepared.trainer.args.max_completion_length == 5
    assert prepared.args["max_completion_length"] == 5


def json_chats(path: Path) -> list[list[dict[str, str]]]:
    return [json.loads(line)["messages"] for line in path.read_text().splitlines()]


def test_a_teacher_with_another_tokenizer_is_refused(world, tiny_model_dir, tmp_path):
    spec = spec_for(world, tmp_path / "t", teacher_model=str(tiny_model_dir))
    with pytest.raises(ValueError, match="do not map the same strings to the same ids"):
        prepare_on_policy(spec)
    assert not (tmp_path / "t").exists()  # refused before anything was loaded or written


def test_a_teacher_with_another_output_size_is_refused(world, tmp_path):
    """The student's tokenizer, a vocabulary padded to another size (Qwen2.5-7B vs 0.5B)."""
    from transformers import AutoModelForCausalLM

    padded = AutoModelForCausalLM.from_pretrained(world["paths"]["teacher"])
    padded.resize_token_embeddings(1024 + 64)
    padded.save_pretrained(tmp_path / "padded")
    world["scorers"]["teacher"].tokenizer.save_pretrained(tmp_path / "padded")
    with pytest.raises(ValueError, match="1088 output rows and the student .* 1024"):
        prepare_on_policy(spec_for(world, tmp_path / "t", teacher_model=str(tmp_path /
                                                                          "padded")))


def test_a_spec_without_teacher_is_refused(world, tmp_path):
    with pytest.raises(ValueError, match="spec.teacher_model"):
        prepare_on_policy(spec_for(world, tmp_path / "t", teacher_model=None))


def test_two_cpu_processes_under_accelerate(world, tmp_path):
    """`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m ...`.

    About 20 s: two ranks load both models and train 4 steps.
    """
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = spec_for(world, tmp_path / "train", args={"max_steps": 4,
                                                     "per_device_train_batch_size": 4})
    spec_path = spec.save(tmp_path / "spec.json")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--main_process_port", str(port),
               "-m", "distill.train.on_policy", str(spec_path)]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": path}
    proc = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "distill.train.on_policy: 32 prompts, 4 steps" in proc.stdout
    result = TrainResult.load(tmp_path / "train" / "train_log.json")
    # each step: 4 prompts per rank, both ranks' gradients averaged into identical weights
    assert result.num_processes == 2 and result.steps == 4
    assert result.ranks_in_sync is True
    assert Path(result.merged_dir, "model.safetensors").is_file()
