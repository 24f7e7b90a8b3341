"""On-policy distillation of the microworld student from the microworld teacher (TRL).

The student samples answers to 32 microworld prompts and learns from the teacher's
token-by-token scores; the test measures the KL between the two models on the teacher's
answers to 16 other prompts before and after. Each divergence lowers its own direction of
the KL (`distill.metrics.teacher_kl`): beta 1 (reverse KL, the default) KL(student ||
teacher), beta 0 (forward KL) KL(teacher || student). Method sft_then_on_policy first
trains SFT on the teacher's answers, after which the student's samples end before the
length cap, as the raw student's never do.
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
from distill.train.config import LoraSettings, TrainConfig, TrainResult, TrainSpec
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
    fields.setdefault("method", "on_policy")
    fields.setdefault("lora", LoraSettings())
    return TrainSpec(model=str(world["paths"]["student"]), data_path=str(world["data"]),
                     output_dir=str(out), seed=0, quiet=True, **fields)


def held_out_kl(world, student, direction: str) -> float:
    return mean_token_kl(world["scorers"]["teacher"], student, world["held_out"],
                         direction=direction)


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """The default objective (beta 1, reverse KL), 3 steps of 8 prompts."""
    out = tmp_path_factory.mktemp("on-policy") / "train"
    return train_on_policy(spec_for(world, out, args={"max_steps": 3}))


def test_registered_under_its_method():
    assert TRAINERS.get("on_policy") is TRAINERS.get("sft_then_on_policy") is train_on_policy


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


def test_the_raw_students_samples_all_run_to_the_length_cap(trained):
    """TRL's logged completion lengths, recorded: the raw student never ends an answer."""
    cap = trained.args["max_completion_length"]
    assert trained.completion_clipped_ratio_start == trained.completion_clipped_ratio_end == 1
    assert trained.completion_mean_length_start == trained.completion_mean_length_end == cap
    assert trained.sft_step is None


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


# -- sft_then_on_policy ----------------------------------------------------------------------

# SFT long enough for the student to end its answers: 8 epochs of the 32 chats, batches
# of 8 (32 steps).
SFT_ARGS = {"num_train_epochs": 8, "learning_rate": 2e-3, "per_device_train_batch_size": 8}
# The microworld student was pretrained on plain sentences and never produced the chat's
# end token, so its output row for `<|end|>` is untrained: an adapter on the linear layers
# alone ("all-linear" leaves the output layer out) raised P(<|end|> after an answer) only
# from 4e-8 to 0.012 in 160 SFT steps on 128 chats; with the output layer trained beside
# it, to 0.79 in 64 steps.
ENDING_LORA = LoraSettings(modules_to_save=["lm_head"])


def own_samples(model: str | Path, prompts: list[list[dict[str, str]]], cap: int
                ) -> tuple[list[list[dict[str, str]]], float]:
    """Four samples per prompt as TRL draws them (temperature 1, at most `cap` tokens).

    Returns each prompt with one sample as its answer, and the share of samples that
    ended (an end token) before the cap.
    """
    from distill.backends.base import GenerationRequest, Sampling
    from distill.backends.hf import HFBackend

    backend = HFBackend(str(model), device="cpu", seed=0)
    try:
        sampling = Sampling(temperature=1.0, max_tokens=cap, n=4)
        generations = backend.generate([GenerationRequest(id=str(i), messages=prompt,
                                                          sampling=sampling)
                                        for i, prompt in enumerate(prompts)])
    finally:
        backend.close()
    chats = [[*prompts[int(g.request_id)], {"role": "assistant", "content": g.text}]
             for g in generations]
    return chats, sum(g.finish_reason == "stop" for g in generations) / len(generations)


@pytest.mark.slow  # 32 SFT and 4 on-policy steps, three models sampled: 40-90 s
def test_sft_then_on_policy_ends_its_answers_and_moves_towards_the_teacher(world, tmp_path):
    out = tmp_path / "train"
    result = train_on_policy(spec_for(world, out, method="sft_then_on_policy",
                                      sft_args=SFT_ARGS, args={"max_steps": 4},
                                      lora=ENDING_LORA))

    # Two steps: SFT into sft/ with sft_args, then on-policy from its merged model
    sft = TrainResult.model_validate(result.sft_step)
    assert sft.method == "sft" and sft.steps == 32 and sft.loss_mask == "assistant"
    assert Path(sft.merged_dir) == out / "sft" / "merged"
    assert sft.final_loss < sft.first_loss
    assert result.method == "sft_then_on_policy" and result.steps == 4
    assert result.args["num_train_epochs"] == 1  # DistillationConfig's, not sft_args' 8
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == "sft/merged"  # relative: survives renames
    saved = TrainResult.load(out / "train_log.json")
    assert Path(saved.sft_step["merged_dir"]) == out / "sft" / "merged"

    # The on-policy step's samples (from the SFT model) ended before the cap, which
    # none of the raw student's do (test_the_raw_students_samples_all_run_to_the_length_cap)
    assert result.completion_clipped_ratio_start < 0.5
    cap = result.args["max_completion_length"]
    prompts = [chat[:-1] for chat in world["held_out"]]
    raw_samples, raw_ended = own_samples(world["paths"]["student"], prompts, cap)
    sft_samples, _ = own_samples(sft.merged_dir, prompts, cap)
    final_samples, final_ended = own_samples(result.merged_dir, prompts, cap)
    assert raw_ended < 0.1 and final_ended > 0.5, (raw_ended, final_ended)

    # Held-out KL(student || teacher), the direction beta 1 lowers: on the teacher's
    # answers, below the raw student's; on the student's own samples (the on-policy
    # objective), below the SFT model's on its own
    teacher = world["scorers"]["teacher"]
    before = held_out_kl(world, world["scorers"]["student"], "reverse")
    after = held_out_kl(world, result.merged_dir, "reverse")
    assert after < 0.8 * before, (before, after)
    on_sft = mean_token_kl(teacher, sft.merged_dir, sft_samples, direction="reverse")
    on_final = mean_token_kl(teacher, result.merged_dir, final_samples, direction="reverse")
    on_raw = mean_token_kl(teacher, world["scorers"]["student"], raw_samples,
                           direction="reverse")
    assert on_final < 0.9 * on_sft < on_raw, (on_raw, on_sft, on_final)


def test_sft_then_on_policy_refuses_a_teacher_before_its_sft_step(world, tiny_model_dir,
                                                                   tmp_path):
    spec = spec_for(world, tmp_path / "t", method="sft_then_on_policy", sft_args=SFT_ARGS,
                    teacher_model=str(tiny_model_dir))
    with pytest.raises(ValueError, match="do not map the same strings to the same ids"):
        train_on_policy(spec)
    assert not (tmp_path / "t").exists()  # no SFT step ran


def test_sft_args_are_the_sft_steps_and_the_global_batch_covers_both():
    config = TrainConfig(method="sft_then_on_policy", sft_args={"num_train_epochs": "2"},
                         args={"beta": 0.0})
    assert config.sft_args == {"num_train_epochs": 2} and config.args == {"beta": 0.0}
    with pytest.raises(ValueError, match="train.sft_args.per_device_train_batch_size 3"):
        TrainConfig(method="sft_then_on_policy", global_batch_size=8,
                    sft_args={"per_device_train_batch_size": 3})
    with pytest.raises(ValueError, match="only used by method sft_then_dpo or "
                                         "sft_then_on_policy"):
        TrainConfig(method="on_policy", sft_args={"num_train_epochs": 2})


@pytest.mark.parametrize("method", ["on_policy", "sft_then_on_policy"])
def test_a_recipe_with_a_served_teacher_is_refused(tmp_path, method):
    import yaml

    from distill.recipe import RecipeError, load_recipe

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "teacher": {"model": "org/teacher", "backend": "openai"},
        "student": {"model": "org/student"},
        "generate": {"kind": "self_instruct", "num_instructions": 10},
        "eval": {"tasks": ["microworld"]}, "train": {"method": method}}))
    with pytest.raises(RecipeError, match=f"train.method {method} scores the student's "
                                          "samples .* teacher.backend openai only serves it"):
        load_recipe(path)
