"""Method kd on the microworld: the teacher's top-k, kept while it answered, train the student.

The teacher answers microworld tasks through the hf backend with its top-20
log-probabilities (tests/train/kd_data.py); the student (LoRA) trains on them with TRL's
SFTTrainer and kd's loss. Held-out prompts measure the token KL to the teacher
(`distill.metrics.teacher_kl`) before and after.
"""

from __future__ import annotations

import json

import pytest
from kd_data import teacher_records
from train_data import FAST_ARGS

from distill.records import iter_jsonl, write_jsonl
from distill.teacher_tokens import TeacherTokens, save_teacher_tokens
from distill.train.config import KDSettings, LoraSettings, TrainSpec
from distill.train.kd import prepare_kd, train_kd
from distill.train.vocab import check_shared_vocabulary

TOP_K = 20


@pytest.fixture(scope="module")
def microworld():
    from distill.microworld.build import build_models

    return build_models()


@pytest.fixture(scope="module")
def kd_data(microworld, tmp_path_factory):
    """64 teacher answers with their tokens: (records, tokens file, tokens by id)."""
    return teacher_records(microworld["teacher"], tmp_path_factory.mktemp("kd-data"),
                           count=64, seed=11, top_k=TOP_K)


def kd_spec(microworld, kd_data, out, **fields) -> TrainSpec:
    records, tokens_path, _ = kd_data
    fields["args"] = {**FAST_ARGS, "max_length": 128, **fields.get("args", {})}
    fields = {"data_path": str(records), "teacher_tokens_path": str(tokens_path),
              "kd": KDSettings(top_k=TOP_K), **fields}
    fields.setdefault("lora", LoraSettings())
    return TrainSpec(method="kd", model=str(microworld["student"]), output_dir=str(out),
                     seed=0, quiet=True, **fields)


def test_kd_lowers_the_kl_to_the_teacher_on_held_out_prompts(microworld, kd_data, tmp_path):
    from distill.metrics.teacher_kl import mean_token_kl, teacher_answers
    from distill.microworld.tasks import generate_tasks

    records, _, tokens = kd_data
    held_out = teacher_answers(microworld["teacher"],
                               [t.to_example().prompt_text for t in generate_tasks(16, seed=12)],
                               max_tokens=64)
    before = mean_token_kl(microworld["teacher"], microworld["student"], held_out)

    spec = kd_spec(microworld, kd_data, tmp_path / "out", progress_path=str(tmp_path / "p.jsonl"),
                   args={"per_device_train_batch_size": 8})  # 16 steps
    result = train_kd(spec)

    after = mean_token_kl(microworld["teacher"], result.merged_dir, held_out)
    # measured on microworld build 7: 7.57 -> 4.07 nats per token (in 8 steps 5.11; build 6's
    # models went 8.27 -> 4.01 in 8)
    assert after < 0.6 * before, (before, after)
    # every record trained, on every teacher token (none dropped or cut)
    assert result.method == "kd" and result.loss_mask == "completion"
    assert result.num_examples == len(tokens) == sum(1 for _ in iter_jsonl(records))
    assert result.loss_tokens_per_epoch == sum(len(t) for t in tokens.values())
    assert result.final_loss < result.first_loss
    logged = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert any("kd_divergence" in line and "kd_cross_entropy" in line for line in logged)


def test_the_first_step_trains_on_the_teacher_distribution_of_each_answer_token(
        microworld, kd_data, tmp_path):
    # One step on the whole data set: its logged loss, divergence and cross-entropy are
    # those of the untrained student (LoRA starts as the identity), computed here apart
    # from the trainer: the prompt rendered with its generation prompt, the teacher's
    # tokens after it, and the logits at position t scored against the top-k of token t.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.train.kd_loss import token_losses

    records, _, tokens = kd_data
    settings = KDSettings(top_k=TOP_K, beta=0.5, ce_weight=0.3, tail="bucket")
    spec = kd_spec(microworld, kd_data, tmp_path / "out", kd=settings,
                   args={"max_steps": 1, "per_device_train_batch_size": len(tokens)},
                   progress_path=str(tmp_path / "p.jsonl"))
    train_kd(spec)
    step = next(json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()
                if "kd_divergence" in json.loads(line))

    tokenizer = AutoTokenizer.from_pretrained(microworld["student"])
    model = AutoModelForCausalLM.from_pretrained(microworld["student"]).eval()
    divergence = cross_entropy = count = 0.0
    with torch.no_grad():
        for row in iter_jsonl(records):
            teacher = tokens[row["id"]]
            prompt = tokenizer.apply_chat_template(row["messages"][:-1], tokenize=True,
                                                   add_generation_prompt=True,
                                                   return_dict=True)["input_ids"]
            ids = torch.tensor([list(prompt) + teacher.token_ids.tolist()])
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
            losses = token_losses(logits, torch.from_numpy(teacher.token_ids).long(),
                                  torch.from_numpy(teacher.top_ids),
                                  torch.from_numpy(teacher.top_logprobs), 0.5, "bucket")
            divergence += losses.divergence.sum().item()
            cross_entropy += losses.cross_entropy.sum().item()
            count += len(teacher)
    assert step["kd_divergence"] == pytest.approx(divergence / count, rel=1e-4)
    assert step["kd_cross_entropy"] == pytest.approx(cross_entropy / count, rel=1e-4)
    assert step["loss"] == pytest.approx((0.7 * divergence + 0.3 * cross_entropy) / count,
                                         rel=1e-4)


def test_examples_cut_at_max_length_keep_their_start_and_aligned_top_k(microworld, kd_data):
    import torch
    from transformers import AutoTokenizer

    from distill.train.kd import KDCollator, build_examples, read_rows

    records, _, tokens = kd_data
    tokenizer = AutoTokenizer.from_pretrained(microworld["student"])
    rows = read_rows(records)
    prompts = {record_id: len(tokenizer.apply_chat_template(
        messages[:-1], tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])
        for record_id, messages in rows}
    max_length = sorted(prompts.values())[len(prompts) // 2] + 2
    dataset = build_examples(tokenizer, rows, tokens, max_length)
    kept = [record_id for record_id, length in prompts.items() if length < max_length]
    assert 0 < len(kept) < len(rows) and dataset["id"] == kept  # the others have no answer
    batch = KDCollator(tokens, pad_token_id=0)(list(dataset))
    for b, record_id in enumerate(dataset["id"]):
        start, teacher = prompts[record_id], tokens[record_id]
        answer = min(len(teacher), max_length - start)  # tokens left after the prompt
        assert batch["attention_mask"][b].sum() == start + answer
        assert (batch["labels"][b, :start] == -100).all()
        assert batch["labels"][b, start:start + answer].tolist() == \
            teacher.token_ids[:answer].tolist()
        assert torch.equal(batch["top_ids"][b, start:start + answer],
                           torch.from_numpy(teacher.top_ids[:answer]).long())
        assert torch.equal(batch["top_logprobs"][b, start:start + answer],
                           torch.from_numpy(teacher.top_logprobs[:answer]))
        assert (batch["labels"][b, start + answer:] == -100).all()


def rewritten(records, out, change) -> str:
    rows = [change(row) for row in iter_jsonl(records)]
    write_jsonl(out, [row for row in rows if row is not None])
    return str(out)


def test_a_record_whose_tokens_are_another_answer_is_refused(microworld, kd_data, tmp_path):
    records, _, _ = kd_data
    first = next(iter_jsonl(records))["id"]

    def edit(row):
        if row["id"] == first:  # the answer edited after generation
            row["messages"][-1]["content"] += " (edited)"
        return row

    spec = kd_spec(microworld, kd_data, tmp_path / "out",
                   data_path=rewritten(records, tmp_path / "edited.jsonl", edit))
    with pytest.raises(ValueError, match=f"record '{first}'.*decode to"):
        prepare_kd(spec)


def test_a_record_without_teacher_tokens_is_refused(microworld, kd_data, tmp_path):
    records, _, _ = kd_data
    first = next(iter_jsonl(records))["id"]

    def rename(row):
        if row["id"] == first:
            row["id"] = "written-by-someone-else"
        return row

    spec = kd_spec(microworld, kd_data, tmp_path / "out",
                   data_path=rewritten(records, tmp_path / "renamed.jsonl", rename))
    with pytest.raises(ValueError, match="written-by-someone-else"):
        prepare_kd(spec)


def test_teacher_ids_outside_the_students_vocabulary_are_refused(microworld, kd_data,
                                                                 tmp_path):
    import numpy

    records, _, tokens = kd_data
    first = next(iter_jsonl(records))["id"]
    changed = dict(tokens)
    top_ids = tokens[first].top_ids.copy()
    top_ids[0, -1] = 5000  # the student has 1024 tokens
    changed[first] = TeacherTokens(tokens[first].token_ids, top_ids,
                                   tokens[first].top_logprobs)
    path = save_teacher_tokens(tmp_path / "t.safetensors", changed)
    spec = kd_spec(microworld, kd_data, tmp_path / "out", teacher_tokens_path=str(path))
    with pytest.raises(ValueError, match=f"record '{first}'.*outside the student's 1024"):
        prepare_kd(spec)
    # and top-k that repeat a token (not k distinct classes)
    top_ids = tokens[first].top_ids.copy()
    top_ids[0, 1] = top_ids[0, 0]
    changed[first] = TeacherTokens(tokens[first].token_ids, top_ids,
                                   numpy.array(tokens[first].top_logprobs))
    save_teacher_tokens(path, changed)
    with pytest.raises(ValueError, match=f"record '{first}'.*repeat"):
        prepare_kd(spec)


def test_another_vocabulary_is_refused(microworld, kd_data, tmp_path):
    from distill.tinymodel import train_tokenizer

    other = tmp_path / "other-tokenizer"
    corpus = ["What is 12 plus 30? The answer is 42.", "Sort these words: sky, grass."] * 20
    train_tokenizer(corpus, vocab_size=300).save_pretrained(other)
    check_shared_vocabulary(microworld["teacher"], microworld["student"])  # one tokenizer
    with pytest.raises(ValueError, match=r"1024 tokens\).*300 tokens\).*ids differ"):
        check_shared_vocabulary(microworld["teacher"], other)
    # kd checks the teacher it is told of before it reads a record
    spec = kd_spec(microworld, kd_data, tmp_path / "out", teacher_model=str(other))
    with pytest.raises(ValueError, match="do not map the same strings to the same ids"):
        prepare_kd(spec)


@pytest.mark.parametrize(("key", "value"), [("packing", True), ("padding_free", True),
                                            ("loss_type", "dft")])
def test_sft_arguments_kd_cannot_honour_are_refused(microworld, kd_data, tmp_path, key,
                                                    value):
    spec = kd_spec(microworld, kd_data, tmp_path / "out", args={key: value})
    with pytest.raises(ValueError, match=f"{key}: not with method kd"):
        prepare_kd(spec)


@pytest.mark.slow  # two CPU ranks over gloo: about a minute on two cores
def test_two_ranks_take_the_step_one_process_takes(microworld, kd_data, tmp_path):
    """DDP (2 x 8 examples) and one process (16) train the same first step.

    The loss is a sum over each rank's tokens divided by the global batch's token count
    and scaled by the ranks (DDP averages gradients): with plain SGD, whose step scales
    with the gradient, both give the same adapter and log the same loss.
    """
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file
    from test_train_launch import ROOT, cpu_ranks_env, free_port

    results = {}
    for processes, batch in ((1, 16), (2, 8)):
        out = tmp_path / f"p{processes}"
        spec = kd_spec(microworld, kd_data, out, kd=KDSettings(top_k=TOP_K, ce_weight=0.5),
                       progress_path=str(out / "progress.jsonl"),
                       lora=LoraSettings(dropout=0.0),  # no random masks that differ by rank
                       args={"max_steps": 1, "per_device_train_batch_size": batch,
                             "optim": "sgd", "learning_rate": 0.5})
        spec_path = tmp_path / f"spec{processes}.json"
        spec_path.write_text(spec.model_dump_json())
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes",
                   str(processes), "--main_process_port", str(free_port()),
                   *(["--multi_gpu"] if processes > 1 else []),
                   "-m", "distill.train.kd", str(spec_path)]
        proc = subprocess.run(command, env={**cpu_ranks_env(), "OMP_NUM_THREADS": "1"},
                              cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        step = next(json.loads(line) for line in (out / "progress.jsonl").read_text()
                    .splitlines() if "kd_divergence" in line)
        adapter = load_file(os.path.join(out, "adapter", "adapter_model.safetensors"))
        results[processes] = step, adapter
    (one, one_adapter), (two, two_adapter) = results[1], results[2]
    for key in ("loss", "kd_divergence", "kd_cross_entropy"):
        assert two[key] == pytest.approx(one[key], rel=1e-4), key
    changed = [name for name in one_adapter if "lora_B" in name]
    assert changed and all(one_adapter[name].abs().max() > 0 for name in changed)
    for name, tensor in one_adapter.items():
        assert two_adapter[name].allclose(tensor, rtol=1e-3, atol=1e-6), name
