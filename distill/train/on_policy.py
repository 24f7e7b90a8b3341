"""On-policy distillation: the student samples, the teacher scores each token (TRL).

    python -m distill.train.on_policy spec.json
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m distill.train.on_policy spec.json

`spec.json` is a `TrainSpec` (distill.train.config) with method `on_policy` and a
`teacher_model` (a local checkpoint or a hub id). TRL's `DistillationTrainer` (Agarwal et
al. 2024, "On-Policy Distillation of Language Models"; Qwen3's and Thinking Machines'
recipe) trains the student's LoRA adapter: for each prompt of the training JSONL (every
record's `messages` but the final answer) the student writes a completion with its current
weights, and both models score that completion token by token; the loss is the
generalised Jensen-Shannon divergence between their next-token distributions over the full
vocabulary (`beta`: 0 forward KL(teacher || student), 1 reverse KL, TRL's and distill's
default), averaged over the completion's tokens. The teacher's own answers in the JSONL
are not trained on; they only bound the completion length (`max_completion_length`).

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

The teacher loads in every training process, beside the student, and must share the
student's vocabulary (`distill.train.vocab.check_shared_vocabulary`) and output size:
token ids are compared one by one. It reads the prompts as the student's chat template
renders them. Outputs as for SFT (`distill.train.sft`): adapter/, merged/ and
train_log.json, whose loss is TRL's divergence per completion token, and whose
`loss_mask` is "completion" (the student learnt on answers given their prompts).
"""

from __future__ import annotations

import logging
import time
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
from distill.train.sft import read_conversations

if __name__ == "__main__":  # before any definition: see run_as_main
    run_as_main("distill.train.on_policy")

__all__ = ["main", "prepare_on_policy", "train_on_policy"]

log = logging.getLogger("distill.train")


def prepare_on_policy(spec: TrainSpec, callbacks: list | None = None) -> PreparedTraining:
    """Check the teacher, load tokenizer and prompts, build the `DistillationTrainer`.

    Raises:
        ValueError: the spec names no teacher, or teacher and student differ in their
            tokenizers' vocabularies or in their output sizes.
    """
    from datasets import Dataset
    from trl import DistillationConfig, DistillationTrainer

    from distill.train.vocab import check_shared_vocabulary

    if spec.teacher_model is None:
        raise ValueError("method on_policy needs the teacher that scores the student's "
                         "samples: spec.teacher_model (a checkpoint directory or hub id)")
    if spec.quiet:
        silence_progress_bars()

    # Teacher and student (both loaded by the trainer, from their paths): one vocabulary
    check_shared_vocabulary(spec.teacher_model, spec.tokenizer or spec.model)
    check_output_sizes(spec.teacher_model, spec.model)
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
                            loss_mask="completion", num_examples=len(dataset))


@TRAINERS.register("on_policy")
def train_on_policy(spec: TrainSpec, callbacks: list | None = None) -> TrainResult:
    """Distil the teacher into the student on its own samples; save as `train_sft` does.

    Call it on every rank of a distributed launch: training is collective, and the main
    rank alone writes files. Every rank returns the same result.
    """
    started = time.perf_counter()
    return train_and_save(spec, prepare_on_policy(spec, callbacks), started)


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m distill.train.on_policy spec.json` (under accelerate or not)."""
    return run_entry_point(train_on_policy, lambda result: (
        f"{result.num_examples} prompts, {result.steps} steps, divergence {result.first_loss} "
        f"-> {result.final_loss}, merged model in {result.merged_dir}"), argv)


def check_output_sizes(teacher: str, student: str) -> None:
    """Refuse a teacher whose output layer has another size than the student's.

    TRL compares the two full next-token distributions, so it refuses such a pair too, but
    only once both models are loaded; their configs tell at once. One tokenizer does not
    make one size: Qwen2.5-7B-Instruct pads its vocabulary to 152,064 rows, Qwen2.5-0.5B
    and 1.5B to 151,936.

    Raises:
        ValueError: naming both sizes.
    """
    from transformers import AutoConfig

    sizes = [AutoConfig.from_pretrained(model).get_text_config().vocab_size
             for model in (teacher, student)]
    if sizes[0] != sizes[1]:
        raise ValueError(
            f"the teacher ({teacher}) has {sizes[0]} output rows and the student ({student}) "
            f"{sizes[1]}, although they share a tokenizer: on-policy distillation compares "
            "their full next-token distributions, so they must have the same vocabulary "
            "size; choose a teacher of the student's size class (Qwen2.5-1.5B or 3B-Instruct "
            "for Qwen2.5-0.5B), or train with method kd, which compares the teacher's top-k "
            "token ids only")


def longest_answer(tokenizer: Any, conversations: list[list[dict[str, str]]]) -> int:
    """Tokens in the longest final answer, up to and including the token that ends it.

    These are the tokens the student would generate for it (`teacher_kl.answer_tokens`):
    after the prompt rendered with its generation prompt, up to the first EOS.
    """
    from distill.metrics.teacher_kl import answer_tokens

    return max(1, *(sum(answer_tokens(tokenizer, c, {tokenizer.eos_token_id})[1])
                    for c in conversations))
