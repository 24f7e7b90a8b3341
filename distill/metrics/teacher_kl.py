"""How far a student's next-token distribution is from its teacher's: the mean token KL.

`mean_token_kl(teacher, student, conversations)` teacher-forces each conversation through
both models and averages, over every token of the final assistant turn, the forward KL

    KL(teacher || student) = sum over the vocabulary of p_t(v) * (log p_t(v) - log p_s(v))

of the two next-token distributions at that position, over the full vocabulary; or, with
`direction="reverse"`, KL(student || teacher). The mean is pooled over tokens (a long
answer weighs more than a short one), in nats.

Each direction is what some training lowers: logit distillation (`train.method: kd`) and
on-policy distillation with beta 0 minimise the forward KL (mass-covering: the student
must give probability wherever the teacher does); on-policy distillation with beta 1
(TRL's and distill's default) the reverse KL (mode-seeking: the student must put its mass
where the teacher's is, and may drop some of the teacher's options). Measured on the
teacher's answers to 16 held-out prompts, 12 on-policy steps from the raw microworld
student moved the direction they optimise and not the other (tests/train/test_on_policy.py,
lr 2e-3): beta 1, reverse 7.69 -> 4.44 and forward 7.34 -> 7.65; beta 0, forward 7.34 ->
3.49 and reverse 7.69 -> 6.17. So compare methods on the direction they optimise, or on both.

The tokens scored are the answer as a student would generate it: the conversation is
rendered with the student's chat template, and the final turn runs from the end of the
prompt (rendered with its generation prompt) up to and including the first token that
ends a generation (the tokenizer's or the model's EOS), not what the template puts after
it. Both models read the same token ids, so they must share the vocabulary.

    from distill.metrics.teacher_kl import mean_token_kl, teacher_answers
    held_out = teacher_answers("microworld:teacher", ["What is 3 plus 4?", ...])
    kl = mean_token_kl("microworld:teacher", "runs/x/round_0/train/merged", held_out)

`teacher_answers` makes such held-out conversations: the teacher's greedy answers to
prompts, through distill's `hf` backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from distill.metrics.perplexity import Scorer, load_scorer

Conversation = list[dict[str, str]]


def mean_token_kl(teacher: str | Path | Scorer, student: str | Path | Scorer,
                  conversations: Sequence[Conversation], *, batch_size: int = 8,
                  max_length: int = 1024, device: str | None = None,
                  direction: Literal["forward", "reverse"] = "forward") -> float:
    """Mean per-token KL(teacher || student) over each conversation's final answer.

    Args:
        teacher: a checkpoint path, hub id or `microworld:` reference, or a loaded `Scorer`.
        student: the same for the student (a merged checkpoint that distill trained, say).
        conversations: chats ending with the assistant's answer (`teacher_answers` makes
            them from held-out prompts).
        batch_size: conversations per forward pass (speed only).
        max_length: tokens kept per conversation (its first ones); answer tokens cut off
            are not scored.
        device: where to load models given by path.
        direction: "forward", KL(teacher || student); "reverse", KL(student || teacher).

    Returns:
        The mean KL in nats per answer token.

    Raises:
        ValueError: the two tokenizers differ, or no answer token is left to score.
    """
    import torch

    teacher, student = _scorer(teacher, device), _scorer(student, device)
    check_same_vocabulary(teacher, student)
    sequences = [answer_tokens(student.tokenizer, list(c), _eos_ids(student))
                 for c in conversations]
    sequences = [(ids[:max_length], scored[:max_length]) for ids, scored in sequences]
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(sequences), batch_size):
            batch_total, batch_count = _batch_kl(teacher, student,
                                                 sequences[start:start + batch_size],
                                                 reverse=direction == "reverse")
            total += batch_total
            count += batch_count
    if count == 0:
        raise ValueError("no answer token to score: the conversations have no final "
                         "assistant turn within max_length")
    return total / count


def answer_tokens(tokenizer: Any, conversation: Conversation,
                  eos_ids: set[int]) -> tuple[list[int], list[bool]]:
    """A conversation's token ids, and which of them are its final answer.

    The answer starts where the prompt rendered with its generation prompt stops matching
    the whole chat, and ends with the first EOS token in it (included).
    """
    from trl.data_utils import common_prefix_length

    if not conversation or conversation[-1]["role"] != "assistant":
        raise ValueError("a conversation must end with the assistant's answer")
    ids = list(tokenizer.apply_chat_template(conversation, tokenize=True,
                                             return_dict=True)["input_ids"])
    prompt = tokenizer.apply_chat_template(conversation[:-1], tokenize=True, return_dict=True,
                                           add_generation_prompt=True)["input_ids"]
    start = common_prefix_length(list(prompt), ids)
    end = next((i + 1 for i in range(start, len(ids)) if ids[i] in eos_ids), len(ids))
    # the first token has nothing before it to predict it from
    return ids, [max(start, 1) <= i < end for i in range(len(ids))]


def check_same_vocabulary(teacher: Scorer, student: Scorer) -> None:
    """Refuse two models whose token ids do not mean the same tokens.

    Raises:
        ValueError: the tokenizers map strings to different ids
            (`distill.train.vocab.check_shared_vocabulary`), or the output layers have
            different sizes (`distill.train.vocab.check_output_sizes`: the two
            distributions have different supports).
    """
    from distill.train.vocab import check_output_sizes, check_shared_vocabulary

    check_shared_vocabulary(teacher.tokenizer, student.tokenizer)
    check_output_sizes(teacher.model, student.model)


def teacher_answers(teacher: str | Path, prompts: Sequence[str | Conversation], *,
                    max_tokens: int = 256, batch_size: int = 16,
                    device: str | None = None) -> list[Conversation]:
    """Held-out conversations: each prompt with the teacher's greedy answer.

    Args:
        teacher: a checkpoint path, hub id or `microworld:` reference.
        prompts: user messages, or conversations up to the turn the teacher answers.
        max_tokens: the longest answer; a longer one is cut there (and then scored as if
            its turn ended there).
        batch_size: prompts decoded together (speed only).
        device: where the teacher runs; default CUDA when there is one.

    Returns:
        One conversation per prompt, in order, ending with the teacher's answer.
    """
    from distill.backends.base import GenerationRequest, Sampling
    from distill.backends.hf import HFBackend
    from distill.models import model_path

    chats = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p)
             for p in prompts]
    backend = HFBackend(model_path(str(teacher)), batch_size=batch_size, device=device)
    try:
        sampling = Sampling(temperature=0.0, max_tokens=max_tokens)
        generations = backend.generate([GenerationRequest(id=str(i), sampling=sampling,
                                                          messages=chat)
                                        for i, chat in enumerate(chats)])
    finally:
        backend.close()
    return [[*chat, {"role": "assistant", "content": generation.text}]
            for chat, generation in zip(chats, generations, strict=True)]


def _scorer(model: str | Path | Scorer, device: str | None) -> Scorer:
    return model if isinstance(model, Scorer) else load_scorer(model, device=device)


def _eos_ids(scorer: Scorer) -> set[int]:
    from distill.backends.hf import eos_token_ids

    return eos_token_ids(scorer.tokenizer, getattr(scorer.model, "generation_config", None))


def _batch_kl(teacher: Scorer, student: Scorer,
              batch: list[tuple[list[int], list[bool]]], *, reverse: bool = False
              ) -> tuple[float, int]:
    """Summed token KL over the scored positions of right-padded sequences, and their count."""
    import torch

    batch = [(ids, scored) for ids, scored in batch if any(scored)]
    if not batch:
        return 0.0, 0
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.zeros((len(batch), width), dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    scored = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, (ids, mask) in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
        scored[row, :len(mask)] = torch.tensor(mask)
    # Position t predicts token t + 1: the distributions that produced scored tokens.
    predicting = scored[:, 1:]
    log_probs = []
    for scorer in (teacher, student):
        logits = scorer.model(input_ids=input_ids.to(scorer.device),
                              attention_mask=attention.to(scorer.device)).logits
        kept = logits[:, :-1][predicting.to(scorer.device)]
        log_probs.append(torch.log_softmax(kept.float(), dim=-1).to(student.device))
    first, second = log_probs[::-1] if reverse else log_probs
    kl = (first.exp() * (first - second)).sum(dim=-1)
    return float(kl.double().sum()), int(kl.numel())
