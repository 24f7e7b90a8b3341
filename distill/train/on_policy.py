"""On-policy distillation: the student samples, the teacher scores each token (TRL).

    python -m distill.train.on_policy spec.json
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m distill.train.on_policy spec.json

`spec.json` is a `TrainSpec` (distill.train.config) with method `on_policy` (or
`sft_then_on_policy`) and a `teacher_model` (a local checkpoint or a hub id). TRL's
`DistillationTrainer` (Agarwal et al. 2024, "On-Policy Distillation of Language Models";
Qwen3's and Thinking Machines' recipe) trains the student's LoRA adapter: for each prompt
of the training JSONL (every record's `messages` but the final answer) the student writes
a completion with its current weights, and both models score that completion token by
token; the loss is the generalised Jensen-Shannon divergence between their next-token
distributions over the full vocabulary (`beta`: 0 forward KL(teacher || student), 1
reverse KL, TRL's and distill's default), averaged over the completion's tokens. The
teacher's own answers in the JSONL are not trained on; they only bound the completion
length (`max_completion_length`).

Each beta lowers its own direction of the KL to the teacher: from the raw microworld
student, 12 steps with beta 1 took the reverse KL on the teacher's held-out answers from
7.69 to 4.44 nats per token and left the forward one where it was (7.34 -> 7.65); beta 0
the forward one to 3.49 (`distill.metrics.teacher_kl`, tests/train/test_on_policy.py).

TRL 1.16's `DistillationTrainer` is purely on-policy: it has no `lmbda` (the share of
batches that train on the dataset's answers instead of the student's samples). GKD's mix
of on- and off-policy batches is `trl.experimental.gkd.GKDTrainer`; distill does not wire
it. Nor a teacher served by vLLM (`trl.experimental.server_distillation`, which scores
through vLLM's `prompt_logprobs`): a server returns only top-k log-probabilities, so TRL
restricts that loss to the sampled token and a tail bucket for any beta > 0, and to the
teacher's top k for beta 0, other objectives than this full-vocabulary one; the recipe
refuses on_policy with a teacher it only serves.

Method `sft_then_on_policy` runs the two steps on-policy distillation takes in practice
(Thinking Machines 2025: SFT on teacher traces, then on-policy; Qwen3's strong-to-weak
distillation: off-policy, then on-policy): SFT on the records' teacher answers
(`spec.sft_args`, SFTConfig arguments with method sft's defaults, into `sft/`), then
on-policy distillation from the merged SFT model with `spec.args`. A student that has not
learnt to end an answer samples every completion up to `max_completion_length`, and on
such samples on-policy distillation does not teach it to: from the raw microworld student
(its output layer trained too), 12 on-policy steps on 32 prompts left every sample at the
cap, and none of 64 held-out samples ended. After 32 SFT steps on the teacher's answers
to the same prompts, 88 % of the first on-policy step's samples and 77 % of the held-out
ones ended; 4 on-policy steps then took KL(student || teacher) on the student's own
held-out samples, the objective, from 5.09 to 2.80 nats per token (raw student: 7.31)
(tests/train/test_on_policy.py). A student whose pretraining never produced the chat
template's end token (the microworld's; a base model whose chat tokens are untrained)
learns to end its answers only with its output layer trained beside the adapter
(`student.lora.modules_to_save: [lm_head]`): an adapter on the linear layers alone took
the microworld student's P(end token after an answer) from 4e-8 to 0.012 in 160 SFT
steps on 128 chats, with the output layer to 0.79 in 64.

The teacher loads in every training process, beside the student, and must share the
student's vocabulary (`distill.train.vocab.check_shared_vocabulary`) and output size:
token ids are compared one by one. It reads the prompts as the student's chat template
renders them. Outputs as for SFT (`distill.train.sft`): adapter/, merged/ and
train_log.json, whose loss is TRL's divergence per completion token, and whose
`loss_mask` is "completion" (the student learnt on answers given their prompts). It also
records TRL's logged mean completion length and share of completions cut at the length
cap, in the first and last logged steps; with sft_then_on_policy, `sft_step` holds the SFT
step's own result.
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
from distill.train.config import TrainResult, TrainSpec, resolve_distillation_args
from distill.train.sft import read_conversations, train_sft
from distill.train.vocab import check_output_sizes, check_shared_vocabulary

if __name__ == "__main__":  # before any definition: see run_as_main
    run_as_main("distill.train.on_policy")

__all__ = ["check_teacher", "main", "prepare_on_policy", "train_on_policy"]

log = logging.getLogger("distill.train")


def prepare_on_policy(spec: TrainSpec, callbacks: list | None = None) -> PreparedTraining:
    """Check the teacher, load tokenizer and prompts, build the `DistillationTrainer`.

    Raises:
        ValueError: as `check_teacher`.
    """
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    check_teacher(spec)
    if spec.quiet:
        silence_progress_bars()
    tokenizer = load_tokenizer(spec)

    # Prompts: every record's conversation up to its final answer
    conversations = read_conversations(spec.data_path)
    dataset = Dataset.from_list([{"prompt": c[:-1]} for c in conversations])

    # TRL arguments
    args = resolve_distillation_args(spec.args, full_finetune=spec.lora is None,
                                     seed=spec.seed, quiet=spec.quiet,
                                     global_batch_size=spec.global_batch_size)
    if "max_completion_length" not in spec.args:
        # TRL's 512 would let a student that has not learnt to stop yet write 512 tokens
        # per prompt (generation is most of the step's time); the teacher's answers to the
        # same prompts say how long an answer needs to be.
        args["max_completion_length"] = longest_answer(tokenizer, conversations)

    # Trainer
    trainer = DistillationTrainer(
        model=spec.model,
        teacher_model=spec.teacher_model,
        args=DistillationConfig(output_dir=trainer_dir(spec), **args),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=spec.lora and spec.lora.to_peft(),
        callbacks=callbacks,
    )
    return PreparedTraining(trainer=trainer, tokenizer=tokenizer, args=args,
                            loss_mask="completion", num_examples=len(dataset),
                            summarize=completion_lengths)


@TRAINERS.register("on_policy", "sft_then_on_policy")
def train_on_policy(spec: TrainSpec, callbacks: list | None = None) -> TrainResult:
    """Distil the teacher into the student on its samples (sft_then_on_policy: SFT first).

    Saves as `train_sft` does; sft_then_on_policy also writes the SFT step's outputs into
    `sft/`, and the on-policy adapter sits on `sft/merged`.

    Call it on every rank of a distributed launch: training is collective, and the main
    rank alone writes files. Every rank returns the same result.
    """
    started = time.perf_counter()
    sft_step = None
    if spec.method == "sft_then_on_policy":
        check_teacher(spec)  # before the SFT step, not after its work
        sft_spec = spec.model_copy(update={"method": "sft", "args": spec.sft_args,
                                           "sft_args": {}, "teacher_model": None,
                                           "output_dir": str(Path(spec.output_dir) / "sft")})
        sft_result = train_sft(sft_spec, callbacks)
        sft_step = sft_result.model_dump(mode="json", exclude={"args"})
        # the student samples from the SFT model (its tokenizer and template were saved
        # with it); the adapter of this step sits on it
        spec = spec.model_copy(update={"model": sft_result.merged_dir, "tokenizer": None})
        log.info("sft_then_on_policy: SFT done (loss %s -> %s), on-policy from %s",
                 sft_result.first_loss, sft_result.final_loss, sft_result.merged_dir)
    return train_and_save(spec, prepare_on_policy(spec, callbacks), started,
                          sft_step=sft_step)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m distill.train.on_policy spec.json` (under accelerate or not)."""
    return run_entry_point(train_on_policy, lambda result: (
        f"{result.num_examples} prompts, {result.steps} steps, divergence {result.first_loss} "
        f"-> {result.final_loss}, merged model in {result.merged_dir}"), argv)


def check_teacher(spec: TrainSpec) -> None:
    """Refuse, before any model loads, a spec whose teacher cannot score its student.

    Raises:
        ValueError: the spec names no teacher, or teacher and student differ in their
            tokenizers' vocabularies or in their output sizes (`distill.train.vocab`).
    """
    if spec.teacher_model is None:
        raise ValueError(f"method {spec.method} needs the teacher that scores the student's "
                         "samples: spec.teacher_model (a checkpoint directory or hub id)")
    check_shared_vocabulary(spec.teacher_model, spec.tokenizer or spec.model)
    check_output_sizes(spec.teacher_model, spec.model)


def completion_lengths(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """TRL's logged mean length of the student's samples and share cut at the length cap.

    First and last logged steps: whether the student learnt to end its answers.
    """
    fields = {"completion_mean_length": "completions/mean_length",
              "completion_clipped_ratio": "completions/clipped_ratio"}
    summary: dict[str, Any] = {}
    for field, key in fields.items():
        values = [entry[key] for entry in log_history if key in entry]
        if values:
            summary[f"{field}_start"], summary[f"{field}_end"] = values[0], values[-1]
    return summary


def longest_answer(tokenizer: Any, conversations: list[list[dict[str, str]]]) -> int:
    """Tokens in the longest final answer, up to and including the token that ends it.

    These are the tokens the student would generate for it (`teacher_kl.answer_tokens`):
    after the prompt rendered with its generation prompt, up to the first EOS.
    """
    from distill.metrics.teacher_kl import answer_tokens

    return max(1, *(sum(answer_tokens(tokenizer, c, {tokenizer.eos_token_id})[1])
                    for c in conversations))
