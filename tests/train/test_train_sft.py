"""SFT with TRL + PEFT LoRA on a tiny model: weights change, loss falls, loss is masked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_data import CHATS, FAST_ARGS

from distill.tinymodel import CHAT_TEMPLATE
from distill.train.config import LoraSettings, TrainResult, TrainSpec
from distill.train.sft import prepare_sft, train_sft

# A template without {% generation %} markers, which TRL does not know how to patch.
PLAIN_TEMPLATE = CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")


@pytest.fixture(scope="module")
def trained(tiny_model_dir, chat_data, tmp_path_factory):
    """One LoRA run long enough for the loss to fall clearly (40 steps)."""
    out = tmp_path_factory.mktemp("sft") / "out"
    spec = TrainSpec(model=str(tiny_model_dir), data_path=str(chat_data), output_dir=str(out),
                     progress_path=str(out / "progress.jsonl"), seed=0, quiet=True,
                     lora=LoraSettings(), args={**FAST_ARGS, "num_train_epochs": 5})
    return spec, train_sft(spec)


def linear_weights(model) -> dict[str, torch.Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def test_lora_adapter_trained_and_merged_into_a_plain_checkpoint(trained, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec, result = trained
    adapter_dir, merged_dir = Path(result.adapter_dir), Path(result.merged_dir)

    # The adapter loads with PEFT, and training moved it: LoRA's B matrices start at zero.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base_weights = linear_weights(base)
    peft_model = PeftModel.from_pretrained(base, adapter_dir)
    lora_b = {n: p for n, p in peft_model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b.values())

    # The merged model is a plain checkpoint: no adapter files, no LoRA tensors.
    assert not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert type(merged).__name__ == "LlamaForCausalLM"
    merged_weights = linear_weights(merged)
    assert merged_weights.keys() == base_weights.keys()

    # It differs from the base exactly by the adapter's update (alpha / r) * B @ A, and
    # only where adapters sit: embeddings and norms are the base's own.
    scale = spec.lora.alpha / spec.lora.r
    adapter = dict(peft_model.named_parameters())
    changed = 0
    for name, weight in merged_weights.items():
        prefix = f"base_model.model.{name.removesuffix('.weight')}"
        a = adapter.get(f"{prefix}.lora_A.default.weight")
        if a is None:
            assert torch.equal(weight, base_weights[name]), name
            continue
        b = adapter[f"{prefix}.lora_B.default.weight"]
        expected = base_weights[name] + scale * (b @ a)
        assert torch.allclose(weight, expected, atol=1e-6), name
        assert not torch.equal(weight, base_weights[name]), name
        changed += 1
    assert changed == 2 * 7  # two layers of q, k, v, o, gate, up, down

    # The tokenizer and its chat template travel with the merged model.
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    assert merged.config.use_cache is True


def test_loss_falls_on_a_learnable_set(trained):
    _, result = trained
    losses = [point.loss for point in result.loss_history]
    assert len(losses) == result.steps == 5 * 8  # 60 records / batch 8 -> 8 steps per epoch
    assert result.first_loss == losses[0] and result.final_loss == losses[-1]
    assert result.final_loss < 0.7 * result.first_loss
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 1.5


def test_train_log_records_the_run(trained):
    spec, result = trained
    path = Path(spec.output_dir) / "train_log.json"
    log = json.loads(path.read_text())
    # paths relative to the log's directory, which the runner renames on commit
    assert (log["output_dir"], log["merged_dir"], log["adapter_dir"]) == (".", "merged", "adapter")
    assert TrainResult.load(path) == result.model_copy(update={"wall_time_s": log["wall_time_s"]})
    assert log["num_examples"] == 60 and log["num_processes"] == 1
    assert log["loss_mask"] == "assistant"
    assert 0 < log["trainable_params"] < log["total_params"]
    assert log["tokens_seen"] > log["loss_tokens_per_epoch"] * 5 > 0
    assert log["wall_time_s"] > 0
    # distill's defaults fill only what the spec left out; the spec's own keys win.
    assert log["args"]["learning_rate"] == FAST_ARGS["learning_rate"]
    assert log["args"]["assistant_only_loss"] is True and log["args"]["seed"] == 0


def test_progress_callback_writes_a_json_line_per_step(trained):
    spec, result = trained
    lines = [json.loads(line) for line in Path(spec.progress_path).read_text().splitlines()]
    assert lines[0] == {"step": 0, "max_steps": 40, "epoch": 0.0}  # training began
    assert [line["step"] for line in lines] == sorted(line["step"] for line in lines)
    # every step logs (logging_steps 1): one line each, with the loss the log records
    losses = [(line["step"], line["loss"]) for line in lines if "loss" in line]
    assert losses == [(point.step, point.loss) for point in result.loss_history]
    assert all(line["max_steps"] == 40 for line in lines)
    assert lines[-1]["step"] == lines[-1]["max_steps"] == result.steps
    assert lines[-1]["train_loss"] == pytest.approx(result.train_loss)  # the closing line
    assert lines[-1]["epoch"] == pytest.approx(5.0)


def labelled_text(tokenizer, row) -> str:
    ids = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    return tokenizer.decode(ids)


def collated_rows(trainer, count: int = 4) -> list[dict[str, list[int]]]:
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(count)])
    return [{"input_ids": ids.tolist(), "labels": labels.tolist()}
            for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True)]


def test_only_assistant_tokens_carry_loss(make_spec):
    prepared = prepare_sft(make_spec())
    assert prepared.loss_mask == "assistant"
    tokenizer = prepared.tokenizer
    for index, row in enumerate(collated_rows(prepared.trainer)):
        question, answer = CHATS[index]
        full = tokenizer.decode([t for t in row["input_ids"] if t != tokenizer.pad_token_id])
        assert question in full and answer in full
        # Exactly the answer and its end-of-turn token are trained; the user turn, the role
        # headers and the padding are not.
        assert labelled_text(tokenizer, row) == answer + "<|end|>"


def test_template_without_generation_markers_falls_back_to_completion_loss(make_spec):
    prepared = prepare_sft(make_spec(chat_template=PLAIN_TEMPLATE))
    assert prepared.loss_mask == "completion"
    assert prepared.args["assistant_only_loss"] is False
    assert prepared.args["completion_only_loss"] is True
    for index, row in enumerate(collated_rows(prepared.trainer)):
        question, answer = CHATS[index]
        text = labelled_text(prepared.tokenizer, row)
        assert text.startswith(answer + "<|end|>") and question not in text


@pytest.mark.parametrize(("fields", "expected_mask"), [
    ({}, "assistant"),
    ({"chat_template": PLAIN_TEMPLATE}, "completion"),
    ({"args": {"assistant_only_loss": False}}, "none"),
])
def test_loss_tokens_are_the_tokens_trl_trains(make_spec, fields, expected_mask):
    """`loss_tokens` (what perplexity under a student scores) equals TRL's own labels."""
    from distill.train.sft import loss_tokens

    prepared = prepare_sft(make_spec(**fields))
    assert prepared.loss_mask == expected_mask
    dataset = prepared.trainer.train_dataset
    for index, (question, answer) in enumerate(CHATS):
        chat = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        ids, scored = loss_tokens(prepared.tokenizer, chat, prepared.loss_mask)
        assert ids == dataset[index]["input_ids"]
        trained = [label != -100 for label in dataset[index]["labels"]]
        assert scored[1:] == trained[1:]  # the first token is never a target


def test_full_finetune_writes_only_a_merged_checkpoint(make_spec, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    spec = make_spec("full", lora=None, args={"num_train_epochs": 1, "learning_rate": 1e-3})
    result = train_sft(spec)
    assert result.adapter_dir is None and not (Path(spec.output_dir) / "adapter").exists()
    assert result.trainable_params == result.total_params
    base = linear_weights(AutoModelForCausalLM.from_pretrained(tiny_model_dir))
    merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
    assert merged.config.use_cache is True
    changed = [n for n, w in linear_weights(merged).items() if not torch.equal(w, base[n])]
    assert "model.embed_tokens.weight" in changed and len(changed) > len(base) // 2


def test_record_without_messages_is_named(make_spec, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "instruction": "hi"}) + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl: record 1 has no `messages`"):
        prepare_sft(make_spec(data_path=bad))


def test_max_length_that_leaves_no_answer_token_is_a_clear_error(make_spec):
    """TRL drops an example whose loss tokens truncation removed; with none left, say so."""
    with pytest.raises(ValueError, match=r"max_length 4.*none of the \d+ training examples"):
        prepare_sft(make_spec(args={"max_length": 4}))
