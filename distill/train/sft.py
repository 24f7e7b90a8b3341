"""Supervised fine-tuning of the student: TRL's `SFTTrainer` with a PEFT LoRA adapter.

    python -m distill.train.sft spec.json
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m distill.train.sft spec.json

`spec.json` is a `TrainSpec` (distill.train.config). The job trains on the `messages`
of each record in the spec's JSONL, with the loss on the assistant's tokens only, then
writes into the spec's output directory:

    adapter/          the LoRA adapter and tokenizer (loads with peft.PeftModel)
    merged/           base + adapter merged into a plain checkpoint, with the tokenizer and
                      its chat template: what the next round's teacher and vLLM load
    train_log.json    loss per step, final loss, examples, tokens, wall time, parameters
    progress.jsonl    one line per step (where the spec names it: `progress_path`)

A full fine-tune (no LoRA) writes only merged/. Under `accelerate launch` every rank
trains; the main rank alone writes files. What every method shares (the train-and-save
tail, progress, the entry point) is in `distill.train.common`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from distill.registry import TRAINERS
from distill.train.common import (
    PreparedTraining,
    load_tokenizer,
    run_as_main,
    run_entry_point,
    silence_progress_bars,
    train_and_save,
    trainer_dir,
)
from distill.train.config import (
    LoraSettings,
    TrainResult,
    TrainSpec,
    attention_implementation,
    check_examples_apart,
    packing_mode,
    resolve_sft_args,
    with_packing_default,
)

if __name__ == "__main__":  # before any definition: see run_as_main
    run_as_main("distill.train.sft")

__all__ = ["LoraSettings", "TrainResult", "TrainSpec", "main", "prepare_sft", "train_sft"]

log = logging.getLogger("distill.train")


def prepare_sft(spec: TrainSpec, callbacks: list | None = None) -> PreparedTraining:
    """Load tokenizer, data and model and build the `SFTTrainer`, without training.

    `callbacks` are `transformers.TrainerCallback`s (progress reporting, for instance).
    """
    from trl import SFTConfig, SFTTrainer

    if spec.quiet:
        silence_progress_bars()

    # Tokenizer (the model is loaded by the trainer, from `spec.model`)
    tokenizer = load_tokenizer(spec)

    # TRL arguments: they decide which tokens carry the loss, and so the dataset's format
    args = resolve_sft_args(with_packing_default(spec.args), full_finetune=spec.lora is None,
                            seed=spec.seed, quiet=spec.quiet,
                            global_batch_size=spec.global_batch_size)
    check_examples_apart(args)  # again here: a spec written by hand was never validated
    log_packing(spec.args, args)
    loss_mask = choose_loss_mask(tokenizer, args)

    # Dataset
    dataset = build_dataset(read_conversations(spec.data_path), loss_mask)

    # Trainer
    trainer = SFTTrainer(
        model=spec.model,
        args=SFTConfig(output_dir=trainer_dir(spec), **args),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=spec.lora and spec.lora.to_peft(),
        callbacks=callbacks,
    )
    if not args.get("packing"):
        check_truncation(len(dataset), len(trainer.train_dataset), args.get("max_length"))
    return PreparedTraining(trainer=trainer, tokenizer=tokenizer, args=args,
                            loss_mask=loss_mask, num_examples=len(dataset))


def check_truncation(examples: int, kept: int, max_length: int | None) -> None:
    """Say how many examples TRL dropped because truncation left them no loss token.

    TRL (since 1.x) filters them out while it prepares the dataset and says nothing; with
    none left, training would stop on an empty sampler with no word of why.
    """
    if kept == 0:
        raise ValueError(f"train.args.max_length {max_length}: none of the {examples} "
                         "training examples keeps a token with loss after truncation "
                         "(the prompt alone fills it); raise max_length")
    if kept < examples:
        log.warning("train.args.max_length %s: %d of %d training examples lost every token "
                    "with loss to truncation and are not trained on", max_length,
                    examples - kept, examples)


@TRAINERS.register("sft")
def train_sft(spec: TrainSpec, callbacks: list | None = None) -> TrainResult:
    """Train the student on the spec's data; save adapter, merged model and train log.

    Call it on every rank of a distributed launch: training is collective, and the main
    rank alone writes files. Every rank returns the same result.
    """
    started = time.perf_counter()
    prepared = prepare_sft(spec, callbacks)
    return train_and_save(spec, prepared, started, packing=packing_mode(prepared.args))


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m distill.train.sft spec.json` (under accelerate or not)."""
    return run_entry_point(train_sft, lambda result: (
        f"{result.num_examples} examples, {result.steps} steps, loss {result.first_loss} -> "
        f"{result.final_loss}, merged model in {result.merged_dir}"), argv)


def log_packing(asked: dict[str, Any], args: dict[str, Any]) -> None:
    """Say how the examples are batched, and why (train_log.json's `packing` records it)."""
    attention = attention_implementation(args) or "sdpa (transformers' default)"
    mode = packing_mode(args)
    why = ("distill's default under flash attention" if "packing" not in asked
           and args.get("packing") else "the recipe's setting" if
           {"packing", "padding_free"} & asked.keys() else "TRL's default")
    log.info("batches: %s, %s; attention: %s", mode, why, attention)
    if mode == "padded" and why == "TRL's default" and "flash" not in attention \
            and _flash_attn_usable():
        log.info("flash_attn is installed: model_init_kwargs.attn_implementation "
                 "flash_attention_2 would train packed, without padding")


def _flash_attn_usable() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


# -- SFT's data and loss mask --------------------------------------------------------------

def read_conversations(path: str | Path) -> list[list[dict[str, str]]]:
    """The `messages` of every record in a JSONL file (other fields are not trained on)."""
    from distill.records import iter_jsonl

    conversations = []
    for number, row in enumerate(iter_jsonl(path), start=1):
        messages = row.get("messages")
        if messages is None and isinstance(row.get("chosen"), list):
            # a preference pair trains on its prompt and chosen answer
            messages = [*(row.get("prompt") or []), *row["chosen"]]
        if (not isinstance(messages, list) or not messages
                or not all(isinstance(m, dict) and "role" in m and "content" in m
                           for m in messages)):
            raise ValueError(f"{path}: record {number} has no `messages` list of "
                             "{role, content} turns")
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{path}: record {number} does not end with an assistant turn")
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if not conversations:
        raise ValueError(f"{path}: no training records")
    return conversations


def template_marks_assistant(tokenizer) -> bool:
    """True if TRL can mask the loss to assistant turns with this chat template.

    That needs `{% generation %}` markers in the template, or a template TRL knows how
    to patch (its training templates for Llama 3, Qwen, Gemma, Phi, ...).
    """
    from trl.chat_template_utils import get_training_chat_template

    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        return False
    return True


def choose_loss_mask(tokenizer, args: dict[str, Any]) -> str:
    """Which tokens carry the loss, and adjust `args` so that TRL does exactly that.

    `assistant_only_loss` needs generation markers in the chat template. Without them,
    the conversation is split into prompt (every turn but the last) and completion (the
    final assistant turn) and TRL's `completion_only_loss` masks the prompt: the same
    tokens for the single-turn records distill writes.
    """
    if args.get("assistant_only_loss"):
        if template_marks_assistant(tokenizer):
            return "assistant"
        log.warning("the chat template has no {%% generation %%} markers and TRL cannot patch "
                    "it: training on the final assistant turn as a completion instead")
        args["assistant_only_loss"] = False
        args["completion_only_loss"] = True
        return "completion"
    if args.get("completion_only_loss"):
        return "completion"
    return "none"


def build_dataset(conversations: list[list[dict[str, str]]], loss_mask: str):
    """The conversations as a `datasets.Dataset` in the format the loss mask needs."""
    from datasets import Dataset

    if loss_mask == "completion":
        rows = [{"prompt": c[:-1], "completion": c[-1:]} for c in conversations]
    else:
        rows = [{"messages": c} for c in conversations]
    return Dataset.from_list(rows)


def loss_tokens(tokenizer, conversation: list[dict[str, str]],
                loss_mask: str) -> tuple[list[int], list[bool]]:
    """A conversation's token ids as SFT trains on them, and which ones carry the loss.

    The rendering is TRL's (`SFTTrainer`'s tokenization of the dataset `build_dataset`
    makes): with loss mask `assistant` the chat template (TRL's training version of it
    when the template has no `{% generation %}` markers) marks the assistant's tokens;
    with `completion` the completion starts where the prompt rendered with its generation
    prompt stops matching the whole chat; with `none` every token is trained. Perplexity
    under a student scores the same tokens (`distill.metrics.perplexity`), and
    tests/train/test_train_sft.py checks them against TRL's own labels.
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers
    from trl.data_utils import common_prefix_length

    def render(messages, **kwargs) -> dict[str, list[int]]:
        return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                             **kwargs)

    if loss_mask == "assistant":
        template = None if has_generation_markers(tokenizer.chat_template) else \
            get_training_chat_template(tokenizer)
        rendered = render(conversation, chat_template=template,
                          return_assistant_tokens_mask=True)
        return list(rendered["input_ids"]), [bool(m) for m in rendered["assistant_masks"]]
    ids = list(render(conversation)["input_ids"])
    if loss_mask == "completion":
        prompt = render(conversation[:-1], add_generation_prompt=True)["input_ids"]
        start = common_prefix_length(list(prompt), ids)
        return ids, [position >= start for position in range(len(ids))]
    return ids, [True] * len(ids)
