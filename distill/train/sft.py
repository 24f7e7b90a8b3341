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

A full fine-tune (no LoRA) writes only merged/. Under `accelerate launch` every rank
trains; the main rank alone writes files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.train.config import (
    LoraSettings,
    LossPoint,
    TrainResult,
    TrainSpec,
    resolve_sft_args,
)

__all__ = ["LoraSettings", "TrainResult", "TrainSpec", "main", "prepare_sft", "train_and_save",
           "train_sft"]

log = logging.getLogger("distill.train")


def load_chat_template(value: str | None) -> str | None:
    """A chat template given as a file path or as the template text itself."""
    if value is None:
        return None
    if "{{" in value or "{%" in value:
        return value
    path = Path(value)
    if not path.is_file():
        raise FileNotFoundError(f"chat template {value!r}: no such file")
    return path.read_text(encoding="utf-8")


def load_tokenizer(spec: TrainSpec):
    """The student's tokenizer, with the spec's chat template when it overrides one."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer or spec.model)
    template = load_chat_template(spec.chat_template)
    if template is not None:
        tokenizer.chat_template = template
    if not tokenizer.chat_template:
        raise ValueError(f"{spec.tokenizer or spec.model}: the tokenizer has no chat template; "
                         "give the student one (student.chat_template in the recipe)")
    return tokenizer


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


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts; sharded (DeepSpeed ZeRO-3) ones counted whole."""
    trainable = total = 0
    for parameter in model.parameters():
        count = getattr(parameter, "ds_numel", None) or parameter.numel()
        total += count
        if parameter.requires_grad:
            trainable += count
    return trainable, total


def count_loss_tokens(dataset) -> int:
    """Tokens whose prediction is trained (labels not -100, first token excluded)."""
    if "labels" not in dataset.column_names:
        return 0
    return sum(sum(1 for label in row[1:] if label != -100) for row in dataset["labels"])


def ranks_in_sync(trainer) -> bool | None:
    """Under DDP, check that every rank holds the same trained weights (a cheap checksum).

    None where there is nothing to compare: one process, or FSDP / DeepSpeed, whose ranks
    hold different shards by design.
    """
    import torch
    from accelerate.utils import DistributedType

    accelerator = trainer.accelerator
    if accelerator.num_processes < 2 or accelerator.distributed_type in (
            DistributedType.FSDP, DistributedType.DEEPSPEED):
        return None
    with torch.no_grad():
        weights = [p for p in accelerator.unwrap_model(trainer.model).parameters()
                   if p.requires_grad]
        checksum = torch.stack([
            sum((p.double().sum() for p in weights), torch.zeros((), dtype=torch.float64)),
            sum((p.double().abs().sum() for p in weights), torch.zeros((), dtype=torch.float64)),
        ]).to(accelerator.device)
    gathered = accelerator.gather(checksum[None]).cpu()
    return bool(torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=1e-9, atol=0))


@dataclass
class PreparedTraining:
    """A ready SFTTrainer and what was decided on the way (for the log and for tests)."""

    trainer: Any
    tokenizer: Any
    args: dict[str, Any]
    loss_mask: str
    num_examples: int


def prepare_sft(spec: TrainSpec, callbacks: list | None = None) -> PreparedTraining:
    """Load tokenizer, data and model and build the `SFTTrainer`, without training.

    `callbacks` are `transformers.TrainerCallback`s (progress reporting, for instance).
    """
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    if spec.quiet:
        _silence_progress_bars()
    args = resolve_sft_args(spec.args, full_finetune=spec.lora is None, seed=spec.seed,
                            quiet=spec.quiet)
    tokenizer = load_tokenizer(spec)
    loss_mask = choose_loss_mask(tokenizer, args)
    dataset = build_dataset(read_conversations(spec.data_path), loss_mask)
    config = SFTConfig(output_dir=str(Path(spec.output_dir) / "trainer"), **args)
    trainer = SFTTrainer(
        model=spec.model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=None if spec.lora is None else spec.lora.to_peft(),
        callbacks=callbacks,
    )
    if spec.quiet:
        trainer.remove_callback(PrinterCallback)  # it prints every log line without tqdm
    return PreparedTraining(trainer=trainer, tokenizer=tokenizer, args=args,
                            loss_mask=loss_mask, num_examples=len(dataset))


def train_sft(spec: TrainSpec, callbacks: list | None = None) -> TrainResult:
    """Train the student on the spec's data; save adapter, merged model and train log.

    Call it on every rank of a distributed launch: training is collective, and the main
    rank alone writes files. Every rank returns the same result.
    """
    started = time.perf_counter()
    return train_and_save(spec, prepare_sft(spec, callbacks), started)


def train_and_save(spec: TrainSpec, prepared: PreparedTraining, started: float) -> TrainResult:
    """Train a prepared TRL trainer; save adapter, merged model and train log (any method).

    Shared by SFT and DPO. Every rank calls it; the main rank alone writes files.
    """
    from distill.train.merge import merge_adapter

    out = Path(spec.output_dir)
    full_finetune = spec.lora is None
    trainer, tokenizer, args = prepared.trainer, prepared.tokenizer, prepared.args
    trainable, total = count_parameters(trainer.model)
    loss_tokens = count_loss_tokens(trainer.train_dataset)

    output = trainer.train()
    in_sync = ranks_in_sync(trainer)
    if in_sync is False:
        log.warning("the ranks ended training with different weights: check the launch")

    adapter_dir = None if full_finetune else out / "adapter"
    merged_dir = out / "merged"
    # Every rank takes part in saving: FSDP and ZeRO-3 gather the sharded weights first.
    trainer.save_model(str(merged_dir if full_finetune else adapter_dir))
    state = trainer.state
    history = [LossPoint(step=entry["step"], loss=entry["loss"])
               for entry in state.log_history if "loss" in entry and "step" in entry]
    tokens = [entry["num_tokens"] for entry in state.log_history if "num_tokens" in entry]
    accelerator = trainer.accelerator
    is_main = accelerator.is_main_process
    result = TrainResult(
        method=spec.method,
        output_dir=str(out),
        merged_dir=str(merged_dir),
        adapter_dir=None if adapter_dir is None else str(adapter_dir),
        num_examples=prepared.num_examples,
        num_processes=accelerator.num_processes,
        steps=state.global_step,
        epochs=float(state.epoch or 0.0),
        loss_history=history,
        first_loss=history[0].loss if history else None,
        final_loss=history[-1].loss if history else None,
        train_loss=output.training_loss,
        ranks_in_sync=in_sync,
        tokens_seen=int(tokens[-1]) if tokens else 0,
        loss_tokens_per_epoch=loss_tokens,
        loss_mask=prepared.loss_mask,
        trainable_params=trainable,
        total_params=total,
        args=json.loads(json.dumps(args, default=str)),
        **reward_margins(state.log_history),
    )
    del trainer, output, prepared
    accelerator.free_memory()  # drops its model and optimizer, collects, empties the cache

    if is_main:
        if full_finetune:
            _finish_full_checkpoint(merged_dir, tokenizer)
        else:
            merge_adapter(spec.model, adapter_dir, merged_dir, tokenizer=tokenizer)
        result.wall_time_s = round(time.perf_counter() - started, 3)
        result.save(out / "train_log.json")
        with contextlib.suppress(OSError):  # the Trainer's own directory, unless it holds
            (out / "trainer").rmdir()        # checkpoints or logs the recipe asked for
    accelerator.wait_for_everyone()
    result.wall_time_s = round(time.perf_counter() - started, 3)
    return result


def reward_margins(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """DPO's logged chosen-minus-rejected reward margins: first, last and per step.

    Empty for trainers that log none (SFT).
    """
    points = [LossPoint(step=entry["step"], loss=entry["rewards/margins"])
              for entry in log_history if "rewards/margins" in entry and "step" in entry]
    if not points:
        return {}
    accuracies = [entry["rewards/accuracies"] for entry in log_history
                  if "rewards/accuracies" in entry]
    return {"reward_margin_start": points[0].loss, "reward_margin_end": points[-1].loss,
            "reward_accuracy_end": accuracies[-1] if accuracies else None,
            "reward_margin_history": points}


def _finish_full_checkpoint(merged_dir: Path, tokenizer) -> None:
    """Make a fully fine-tuned checkpoint ready for inference like a merged one."""
    from transformers import AutoConfig

    tokenizer.save_pretrained(merged_dir)
    config = AutoConfig.from_pretrained(merged_dir)
    if getattr(config, "use_cache", True) is False:  # turned off for gradient checkpointing
        config.use_cache = True
        config.save_pretrained(merged_dir)


def _silence_progress_bars() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m distill.train.sft spec.json` (under accelerate or not)."""
    return run_entry_point("distill.train.sft", train_sft, lambda result: (
        f"{result.num_examples} examples, {result.steps} steps, loss {result.first_loss} -> "
        f"{result.final_loss}, merged model in {result.merged_dir}"), argv)


def run_entry_point(module: str, train: Callable[[TrainSpec], TrainResult],
                    summary: Callable[[TrainResult], str], argv: list[str] | None) -> int:
    """What `python -m <module> spec.json` does: train, then rank 0 prints `summary`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {module} SPEC.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    spec = TrainSpec.load(argv[0])
    result = train(spec)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"{module}: {summary(result)}", flush=True)
    _close_process_group()
    return 0


def _close_process_group() -> None:
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
