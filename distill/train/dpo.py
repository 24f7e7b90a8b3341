"""Preference tuning of the student: TRL's `DPOTrainer` with a PEFT LoRA adapter.

    python -m distill.train.dpo spec.json
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m distill.train.dpo spec.json

`spec.json` is a `TrainSpec` (distill.train.config) whose data are preference pairs
(`distill.records.PreferencePair`: TRL's conversational prompt / chosen / rejected
columns). The reference model is the student itself with the adapter disabled (TRL does
this when it wraps the model with `peft_config`), so no second copy is loaded; a full
fine-tune (no LoRA) makes TRL load one. `spec.args` go to `trl.DPOConfig` untouched after
`dpo_defaults` (Zephyr: lr 5e-6 LoRA / 5e-7 full, 1 epoch, cosine, warm-up 0.1; beta is
TRL's 0.1).

Method `sft_then_dpo` runs Zephyr's two steps on the same pairs: SFT on the chosen
answers (`spec.sft_args`, into `sft/`), then DPO starting from the merged SFT model, which
is also the DPO reference. Outputs as for SFT (`distill.train.sft`): adapter/, merged/
(base + adapter, the next round's teacher) and train_log.json, whose `TrainResult`
records TRL's chosen-minus-rejected reward margin in the first and last logged steps.
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
from distill.train.config import LossPoint, TrainResult, TrainSpec, resolve_dpo_args
from distill.train.sft import train_sft

if __name__ == "__main__":  # before any definition: see run_as_main
    run_as_main("distill.train.dpo")

__all__ = ["load_pairs", "main", "prepare_dpo", "train_dpo"]

log = logging.getLogger("distill.train")


def prepare_dpo(spec: TrainSpec, callbacks: list | None = None) -> PreparedTraining:
    """Load tokenizer, pairs and model and build the `DPOTrainer`, without training."""
    from trl import DPOConfig, DPOTrainer

    if spec.quiet:
        silence_progress_bars()

    # Tokenizer (the trainer loads the model from `spec.model`, and with LoRA uses it with
    # the adapter disabled as the reference)
    tokenizer = load_tokenizer(spec)

    # Dataset
    dataset = load_pairs(spec.data_path)

    # TRL arguments and trainer
    args = resolve_dpo_args(spec.args, full_finetune=spec.lora is None, seed=spec.seed,
                            quiet=spec.quiet, global_batch_size=spec.global_batch_size)
    trainer = DPOTrainer(model=spec.model, args=DPOConfig(output_dir=trainer_dir(spec), **args),
                         train_dataset=dataset, processing_class=tokenizer,
                         peft_config=spec.lora and spec.lora.to_peft(), callbacks=callbacks)
    return PreparedTraining(trainer=trainer, tokenizer=tokenizer, args=args,
                            loss_mask="completion", num_examples=len(dataset),
                            summarize=reward_margins)


@TRAINERS.register("dpo", "sft_then_dpo")
def train_dpo(spec: TrainSpec, callbacks: list | None = None) -> TrainResult:
    """DPO (or SFT then DPO) on the spec's pairs; saves adapter, merged model and log.

    Call it on every rank of a distributed launch; every rank returns the same result.
    """
    started = time.perf_counter()
    sft_step = None
    if spec.method == "sft_then_dpo":
        sft_spec = spec.model_copy(update={"method": "sft", "args": spec.sft_args,
                                           "sft_args": {},
                                           "output_dir": str(Path(spec.output_dir) / "sft")})
        sft_result = train_sft(sft_spec, callbacks)
        sft_step = sft_result.model_dump(mode="json", exclude={"args"})
        # DPO starts from, and is anchored to, the SFT model (its tokenizer and template
        # were saved with it)
        spec = spec.model_copy(update={"model": sft_result.merged_dir, "tokenizer": None})
        log.info("sft_then_dpo: SFT done (loss %s -> %s), DPO from %s",
                 sft_result.first_loss, sft_result.final_loss, sft_result.merged_dir)
    return train_and_save(spec, prepare_dpo(spec, callbacks), started, sft_step=sft_step)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m distill.train.dpo spec.json` (under accelerate or not)."""
    return run_entry_point(train_dpo, lambda result: (
        f"{result.num_examples} pairs, {result.steps} steps, reward margin "
        f"{result.reward_margin_start} -> {result.reward_margin_end}, merged model in "
        f"{result.merged_dir}"), argv)


# -- DPO's data and its record -------------------------------------------------------------

def load_pairs(path: str | Path):
    """The pairs' `prompt`, `chosen` and `rejected` columns as a `datasets.Dataset`.

    Only those columns are read: lineage and scores differ in shape between files and
    are not trained on. SFT examples (`messages`, e.g. real data a policy mixed in) are
    skipped: the SFT step of sft_then_dpo trains on them.
    """
    from datasets import Dataset

    from distill.records import iter_jsonl

    rows, skipped = [], 0
    for number, row in enumerate(iter_jsonl(path), start=1):
        if "chosen" not in row and isinstance(row.get("messages"), list):
            skipped += 1
            continue
        if not all(isinstance(row.get(key), list) and row[key]
                   for key in ("prompt", "chosen", "rejected")):
            raise ValueError(f"{path}: record {number} is not a preference pair (non-empty "
                             "`prompt`, `chosen` and `rejected` message lists); DPO trains on "
                             "the output of `generate.kind: preference`")
        rows.append({key: [{"role": m["role"], "content": m["content"]} for m in row[key]]
                     for key in ("prompt", "chosen", "rejected")})
    if skipped:
        log.info("DPO: %d SFT examples in %s are not pairs and are left out", skipped, path)
    if not rows:
        raise ValueError(f"{path}: no preference pairs; DPO trains on the output of "
                         "`generate.kind: preference`")
    return Dataset.from_list(rows)


def reward_margins(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """DPO's logged chosen-minus-rejected reward margins: first, last and per step."""
    points = [LossPoint(step=entry["step"], loss=entry["rewards/margins"])
              for entry in log_history if "rewards/margins" in entry and "step" in entry]
    if not points:
        return {}
    accuracies = [entry["rewards/accuracies"] for entry in log_history
                  if "rewards/accuracies" in entry]
    return {"reward_margin_start": points[0].loss, "reward_margin_end": points[-1].loss,
            "reward_accuracy_end": accuracies[-1] if accuracies else None,
            "reward_margin_history": points}
