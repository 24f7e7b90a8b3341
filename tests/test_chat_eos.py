"""A base student trained on its ChatML template stops at `<|im_end|>`, not at `<|endoftext|>`.

Qwen2.5 base models close chat turns with `<|im_end|>` but end sequences with
`<|endoftext|>`. Trained on the template, the student ends every answer with `<|im_end|>`;
if the saved tokenizer and generation config still name `<|endoftext|>` alone, generation
(hf backend, vLLM, lm-eval) runs on past it into made-up turns until max_tokens, and
ifeval scores run-on answers. The fake hub's student is set up like a Qwen2.5 base model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakehub import STUDENT

from distill.records import Example, write_jsonl
from distill.train.common import assistant_turn_end
from distill.train.config import LoraSettings, TrainSpec

# One reply to four questions: a tiny model memorises it in a couple of dozen steps.
REPLY = "Hello! How can I help you today?"
CHATS = [(question, REPLY) for question in
         ("What color is the sky?", "Say hello.", "Who are you?", "Write a short poem.")]
FAST = {"gradient_checkpointing": False, "learning_rate": 1e-2, "lr_scheduler_type": "constant",
        "warmup_steps": 0, "per_device_train_batch_size": 4, "max_length": 128}

def test_the_turn_end_is_the_special_token_that_closes_an_assistant_turn(fake_hub,
                                                                        tiny_model_dir):
    from transformers import AutoTokenizer

    qwen = AutoTokenizer.from_pretrained(STUDENT)
    assert assistant_turn_end(qwen) == "<|im_end|>" != qwen.eos_token
    tiny = AutoTokenizer.from_pretrained(tiny_model_dir)  # its template ends turns with EOS
    assert assistant_turn_end(tiny) == tiny.eos_token == "<|end|>"
    tiny.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    assert assistant_turn_end(tiny) is None  # no special token closes the turn


def chat_data(path: Path) -> Path:
    write_jsonl(path, [Example(id=f"c{i}", instruction=q, output=a)
                       for i, (q, a) in enumerate(CHATS * 4)])
    return path


@pytest.fixture
def trained_student(fake_hub, tmp_path):
    """LoRA SFT of the fake hub's Qwen2.5-base-like student (by hub id) on the chats."""
    from distill.train.sft import train_sft

    spec = TrainSpec(model=STUDENT, data_path=str(chat_data(tmp_path / "train.jsonl")),
                     output_dir=str(tmp_path / "out"), seed=0, quiet=True,
                     lora=LoraSettings(r=16, alpha=32, dropout=0.0),
                     args={**FAST, "num_train_epochs": 5})
    result = train_sft(spec)
    assert result.final_loss < 0.2  # it has learned the reply (from ~13)
    return result


def test_the_trained_student_stops_at_im_end(trained_student):
    from transformers import AutoTokenizer

    from distill.backends.base import GenerationRequest, Sampling, load_backend

    merged, adapter = Path(trained_student.merged_dir), Path(trained_student.adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])

    # what the hf backend, vLLM and lm-eval read: the tokenizer's EOS and the configs
    assert tokenizer.eos_token == "<|im_end|>"
    assert AutoTokenizer.from_pretrained(adapter).eos_token == "<|im_end|>"
    for directory in (merged, adapter):
        generation = json.loads((directory / "generation_config.json").read_text())
        assert generation["eos_token_id"] == [im_end, endoftext], directory
    assert json.loads((merged / "config.json").read_text())["eos_token_id"] == im_end
    assert tokenizer.pad_token == "<|endoftext|>"  # padding is not the end of a turn

    backend = load_backend("hf", model=str(merged), seed=0)
    try:
        generations = backend.generate([
            GenerationRequest(id=f"q{i}", messages=[{"role": "user", "content": question}],
                              sampling=Sampling(temperature=0.0, max_tokens=48))
            for i, (question, _) in enumerate(CHATS)])
    finally:
        backend.close()
    for generation, (_, answer) in zip(generations, CHATS, strict=True):
        # before the fix: the reply again and again up to max_tokens, finish "length"
        assert generation.finish_reason == "stop", generation
        assert generation.text.strip() == answer, generation
        assert generation.completion_tokens < 48


def test_a_full_finetune_keeps_the_base_eos_beside_the_turn_end(fake_hub, tmp_path):
    from transformers import AutoTokenizer

    from distill.train.sft import train_sft

    spec = TrainSpec(model=STUDENT, data_path=str(chat_data(tmp_path / "train.jsonl")),
                     output_dir=str(tmp_path / "out"), seed=0, quiet=True, lora=None,
                     args={**FAST, "max_steps": 1})
    merged = Path(train_sft(spec).merged_dir)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    im_end, endoftext = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    assert tokenizer.eos_token == "<|im_end|>"
    # the Trainer saves a generation config aligned with the tokenizer: <|im_end|> alone
    generation = json.loads((merged / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [im_end, endoftext]
    assert json.loads((merged / "config.json").read_text())["eos_token_id"] == im_end
