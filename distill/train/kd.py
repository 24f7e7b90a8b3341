"""Logit distillation from the teacher's top-k log-probabilities (method kd).

    python -m distill.train.kd spec.json
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m distill.train.kd spec.json

`spec.json` is a `TrainSpec` (distill.train.config) with `teacher_tokens_path`: the
teacher's tokens and top-k log-probabilities of every training record, kept while it
wrote them (`distill.teacher_tokens`, by record id), so no teacher is loaded here. Each
example is the record's prompt (its messages but the last, rendered with the student's
chat template and its generation prompt, as TRL renders a prompt) followed by exactly the
tokens the teacher generated; the loss on those tokens is

    (1 - ce_weight) * divergence(student || teacher's top-k) + ce_weight * cross-entropy

with the divergence of `train.kd` (`distill.train.kd_loss`: TRL's generalised JSD over the
k tokens and a bucket for the rest, or renormalised over the k tokens).

TRL's `SFTTrainer` trains (LoRA, accelerate, logging, `train.args` as `SFTConfig`) on the
examples tokenised here; only the loss (`compute_loss`) and the batches (the teacher's
top-k beside the tokens) are this module's. The outputs are those of SFT
(`distill.train.sft`): adapter/, merged/, train_log.json; the logs add `kd_divergence` and
`kd_cross_entropy` per step.

Every record is checked before training: its teacher tokens must exist and decode to its
final assistant message, and their ids must be the student's. Training on distributions
that belong to other text would teach nothing true and show nothing wrong.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
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
from distill.train.config import KDSettings, TrainResult, TrainSpec, resolve_sft_args

if __name__ == "__main__":  # before any definition: see run_as_main
    run_as_main("distill.train.kd")

__all__ = ["KDCollator", "build_examples", "check_kd_args", "main", "prepare_kd",
           "read_rows", "train_kd"]

log = logging.getLogger("distill.train")

# SFTConfig arguments that kd cannot honour, and why: refused rather than ignored.
REFUSED_ARGS = {
    "packing": "kd's batches carry the teacher's top-k per position; they are padded, not packed",
    "padding_free": "kd's batches carry the teacher's top-k per position; they are padded",
    "loss_type": "kd's loss is train.kd's divergence (and ce_weight), not SFT's loss_type",
    "label_smoothing_factor": "kd's targets are the teacher's distributions already",
    "truncation_mode": "kd keeps the start of each example (the prompt and the first "
                       "answer tokens); set max_length instead",
}
# Values of those arguments that mean "off" (as TRL's defaults): accepted.
_HARMLESS = {"packing": (False,), "padding_free": (False,), "loss_type": ("nll",),
             "label_smoothing_factor": (0, 0.0), "truncation_mode": ("keep_start",)}


def prepare_kd(spec: TrainSpec, callbacks: list | None = None) -> PreparedTraining:
    """Load tokenizer, records and teacher tokens and build the trainer, without training."""
    from trl import SFTConfig

    from distill.teacher_tokens import load_teacher_tokens

    if spec.quiet:
        silence_progress_bars()
    settings = spec.kd or KDSettings()
    if spec.teacher_tokens_path is None:
        raise ValueError("method kd needs the teacher's tokens (spec.teacher_tokens_path)")

    # Tokenizer, which must be the teacher's where the spec names the teacher
    tokenizer = load_tokenizer(spec)
    if spec.teacher_model is not None:
        from distill.train.vocab import check_shared_vocabulary

        check_shared_vocabulary(spec.teacher_model, tokenizer)

    # TRL arguments: SFT's, less what kd decides itself
    check_kd_args(spec.args)
    args = resolve_sft_args(spec.args, full_finetune=spec.lora is None, seed=spec.seed,
                            quiet=spec.quiet, global_batch_size=spec.global_batch_size)
    args.update(assistant_only_loss=False, completion_only_loss=None,
                remove_unused_columns=False,  # the collator reads each row's record id
                dataset_kwargs={**(args.get("dataset_kwargs") or {}),
                                "skip_prepare_dataset": True})

    config = SFTConfig(output_dir=trainer_dir(spec), **args)

    # Dataset: each record's prompt, then the teacher's tokens exactly
    rows = read_rows(spec.data_path)
    teacher = load_teacher_tokens(spec.teacher_tokens_path, dict.fromkeys(i for i, _ in rows))
    teacher = {record_id: checked_tokens(tokenizer, record_id, messages, teacher[record_id],
                                         settings.top_k)
               for record_id, messages in rows}
    dataset = build_examples(tokenizer, rows, teacher, config.max_length)

    trainer = _trainer_class()(
        model=spec.model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=KDCollator(teacher, pad_token_id=_pad_id(tokenizer)),
        peft_config=spec.lora and spec.lora.to_peft(),
        callbacks=callbacks,
        kd=settings,
    )
    return PreparedTraining(trainer=trainer, tokenizer=tokenizer, args=args,
                            loss_mask="completion", num_examples=len(dataset))


@TRAINERS.register("kd")
def train_kd(spec: TrainSpec, callbacks: list | None = None) -> TrainResult:
    """Distil the teacher's top-k into the student; save adapter, merged model and log.

    Call it on every rank of a distributed launch; every rank returns the same result.
    """
    started = time.perf_counter()
    return train_and_save(spec, prepare_kd(spec, callbacks), started)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m distill.train.kd spec.json` (under accelerate or not)."""
    return run_entry_point(train_kd, lambda result: (
        f"{result.num_examples} examples, {result.steps} steps, loss {result.first_loss} -> "
        f"{result.final_loss}, merged model in {result.merged_dir}"), argv)


def check_kd_args(args: Mapping[str, Any]) -> None:
    """Refuse `train.args` that kd would otherwise ignore or break.

    Raises:
        ValueError: naming the argument (`train.args.<key>`) and why.
    """
    for key, why in REFUSED_ARGS.items():
        if key in args and args[key] not in _HARMLESS[key]:
            raise ValueError(f"{key}: not with method kd: {why}")


# -- the records and the teacher's tokens ----------------------------------------------------

Row = tuple[str, list[dict[str, str]]]


def read_rows(path: str | Path) -> list[Row]:
    """(record id, messages) of every record; each must end with an assistant turn."""
    from distill.records import iter_jsonl

    rows = []
    for number, row in enumerate(iter_jsonl(path), start=1):
        messages = row.get("messages")
        if not isinstance(row.get("id"), str) or not isinstance(messages, list) or not (
                messages and all(isinstance(m, dict) and "role" in m and "content" in m
                                 for m in messages)):
            raise ValueError(f"{path}: record {number} has no `id` and `messages` list of "
                             "{role, content} turns; method kd trains on teacher answers")
        if messages[-1]["role"] != "assistant":
            raise ValueError(f"{path}: record {row['id']!r} does not end with an assistant turn")
        rows.append((row["id"], [{"role": m["role"], "content": m["content"]}
                                 for m in messages]))
    if not rows:
        raise ValueError(f"{path}: no training records")
    return rows


def checked_tokens(tokenizer: Any, record_id: str, messages: list[dict[str, str]],
                   tokens: Any, top_k: int) -> Any:
    """A record's teacher tokens, with their top `top_k`, once they are known to fit it.

    Raises:
        ValueError: naming the record: the tokens do not decode to its final assistant
            message, an id is not one of the student's tokens, the top-k are fewer than
            `top_k`, repeat an id, or are not log-probabilities.
    """
    import numpy

    from distill.teacher_tokens import TeacherTokens

    where = f"record {record_id!r}"
    if tokens.k < top_k:
        raise ValueError(f"{where}: the teacher kept its top {tokens.k} log-probabilities, "
                         f"fewer than train.kd.top_k {top_k}")
    top_ids, top_logprobs = tokens.top_ids[:, :top_k], tokens.top_logprobs[:, :top_k]
    vocab = len(tokenizer)
    for name, ids in (("token", tokens.token_ids), ("top-k", top_ids)):
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"{where}: a teacher {name} id ({ids.min()}..{ids.max()}) lies "
                             f"outside the student's {vocab} tokens: the teacher's tokenizer "
                             "is another one")
    unknown = [i for i in numpy.unique(top_ids).tolist()
               if tokenizer.convert_ids_to_tokens(i) is None]
    if unknown:
        raise ValueError(f"{where}: teacher top-k ids {unknown[:5]} are no token of the "
                         "student's tokenizer")
    if top_k > 1 and (numpy.diff(numpy.sort(top_ids, axis=1), axis=1) == 0).any():
        raise ValueError(f"{where}: the teacher's top-k repeat a token id at some position")
    if numpy.isnan(top_logprobs).any() or (top_logprobs > 1e-3).any():
        raise ValueError(f"{where}: the teacher's top-k values are not log-probabilities "
                         f"(max {float(numpy.nanmax(top_logprobs))}, or NaN)")
    text = tokenizer.decode(tokens.token_ids.tolist(), skip_special_tokens=True).strip()
    answer = messages[-1]["content"].strip()
    if text != answer:
        raise ValueError(f"{where}: the teacher's tokens decode to {_clip(text)!r}, not to the "
                         f"record's answer {_clip(answer)!r}; kd trains only on the tokens "
                         "of the very answer kept (was the answer edited after generation, "
                         "or cut at a stop string, whose tokens the teacher still generated?)")
    return TeacherTokens(tokens.token_ids, numpy.ascontiguousarray(top_ids),
                         numpy.ascontiguousarray(top_logprobs))


def _clip(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[:width] + "..."


def build_examples(tokenizer: Any, rows: list[Row], teacher: Mapping[str, Any],
                   max_length: int | None):
    """The training examples: `id`, `input_ids` (prompt + teacher tokens) and `labels`.

    Labels are the teacher's tokens, -100 on the prompt. An example longer than
    `max_length` keeps its start; one with no answer token left is dropped (logged), as
    SFT drops it.
    """
    from datasets import Dataset

    examples, dropped = [], []
    for record_id, messages in rows:
        prompt = list(tokenizer.apply_chat_template(messages[:-1], tokenize=True,
                                                    add_generation_prompt=True,
                                                    return_dict=True)["input_ids"])
        answer = teacher[record_id].token_ids.tolist()
        input_ids = (prompt + answer)[:max_length]
        if len(input_ids) <= len(prompt):
            dropped.append(record_id)
            continue
        examples.append({"id": record_id, "input_ids": input_ids,
                         "labels": [-100] * len(prompt) + input_ids[len(prompt):]})
    if dropped:
        log.warning("kd: %d record(s) have no answer token within max_length %s and are not "
                    "trained on (first: %r)", len(dropped), max_length, dropped[0])
    if not examples:
        raise ValueError(f"no record has an answer token within max_length {max_length}")
    return Dataset.from_list(examples)


def _pad_id(tokenizer: Any) -> int:
    # SFTTrainer's choice: the tokenizer's pad token, else its EOS
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id


class KDCollator:
    """Right-padded batches with the teacher's top-k at each answer position.

    `top_ids` / `top_logprobs` [B, L, k] sit at the positions of the tokens they describe,
    as `labels` do (the loss shifts them as a causal LM's loss shifts labels); elsewhere
    they are zero, and no loss reads them.
    """

    def __init__(self, teacher: Mapping[str, Any], pad_token_id: int) -> None:
        """Keep the teacher's tokens by record id (`checked_tokens`' output)."""
        self.teacher = teacher
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Pad `rows` (id, input_ids, labels) into tensors."""
        import torch

        width = max(len(row["input_ids"]) for row in rows)
        k = next(iter(self.teacher.values())).top_ids.shape[1]
        batch = {
            "input_ids": torch.full((len(rows), width), self.pad_token_id, dtype=torch.long),
            "attention_mask": torch.zeros((len(rows), width), dtype=torch.long),
            "labels": torch.full((len(rows), width), -100, dtype=torch.long),
            "top_ids": torch.zeros((len(rows), width, k), dtype=torch.long),
            "top_logprobs": torch.zeros((len(rows), width, k), dtype=torch.float32),
        }
        for b, row in enumerate(rows):
            length = len(row["input_ids"])
            start = next(i for i, label in enumerate(row["labels"]) if label != -100)
            tokens = self.teacher[row["id"]]
            batch["input_ids"][b, :length] = torch.tensor(row["input_ids"])
            batch["attention_mask"][b, :length] = 1
            batch["labels"][b, :length] = torch.tensor(row["labels"])
            batch["top_ids"][b, start:length] = torch.from_numpy(tokens.top_ids[:length - start])
            batch["top_logprobs"][b, start:length] = torch.from_numpy(
                tokens.top_logprobs[:length - start])
        return batch


# -- the trainer ---------------------------------------------------------------------------

@functools.cache
def _trainer_class() -> type:
    # Built on first use, so that importing this module does not import TRL.
    from trl import SFTTrainer

    from distill.train.kd_loss import kd_loss

    class KDTrainer(SFTTrainer):
        """TRL's SFTTrainer whose loss is the divergence to the teacher's top-k."""

        def __init__(self, *args: Any, kd: KDSettings, **kwargs: Any) -> None:
            self.kd = kd
            super().__init__(*args, **kwargs)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            labels = inputs.pop("labels")
            top_ids, top_logprobs = inputs.pop("top_ids"), inputs.pop("top_logprobs")
            outputs = model(**inputs, use_cache=False)
            if hasattr(num_items_in_batch, "to"):
                num_items_in_batch = num_items_in_batch.to(outputs.logits.device)
            result = kd_loss(outputs.logits, labels, top_ids, top_logprobs, beta=self.kd.beta,
                             tail=self.kd.tail, ce_weight=self.kd.ce_weight,
                             num_items=num_items_in_batch)
            loss = result.loss
            # As SFTTrainer: `num_items_in_batch` counts every rank's tokens, and DDP
            # averages the gradients over the ranks.
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            self._log_parts(mode, result, inputs["attention_mask"])
            return (loss, outputs) if return_outputs else loss

        def _log_parts(self, mode: str, result: Any, attention_mask) -> None:
            """The step's divergence and cross-entropy (token means over every rank)."""
            import torch

            gather = self.accelerator.gather_for_metrics
            tokens = result.tokens.float()
            sums = gather(torch.stack([result.divergence * tokens,
                                       result.cross_entropy * tokens, tokens])[None]).sum(0)
            if sums[2] > 0:
                self._metrics[mode]["kd_divergence"].append((sums[0] / sums[2]).item())
                self._metrics[mode]["kd_cross_entropy"].append((sums[1] / sums[2]).item())
            if mode == "train":  # what SFTTrainer logs as num_tokens (distill's tokens_seen)
                self._total_train_tokens += gather(attention_mask.sum()).sum().item()
            self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    return KDTrainer
