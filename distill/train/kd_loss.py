"""The loss of logit distillation from the teacher's top-k log-probabilities (method kd).

The teacher's full distribution is not kept, only its k most likely tokens at each
position of its answer (vLLM's `logprobs=k`). The divergence is therefore taken between
two distributions over the same k + 1 classes: the k tokens, and one bucket for the mass
left outside them (`tail="bucket"`: the teacher's 1 - sum of its top-k probabilities
against the student's probability outside the same k ids); or over the k tokens alone,
both distributions renormalised (`tail="renormalize"`).

`beta` has the meaning of TRL's generalised Jensen-Shannon divergence (GKD, Agarwal et
al. 2024, Eq. 1; `trl.experimental.gkd.GKDTrainer.generalized_jsd_loss` and the
chunked kernel of `trl.DistillationTrainer`): 0 is the forward KL(teacher || student),
1 the reverse KL(student || teacher), and in between

    JSD_beta = beta * KL(teacher || m) + (1 - beta) * KL(student || m),
    m = (1 - beta) * student + beta * teacher,

summed over the classes of each token and averaged over the trained tokens. Everything
is computed in log space in float32: the bucket's mass can be ~0 (a peaked teacher's top
20 can sum to 1 in float32), which `MIN_LOGPROB` floors so that no term is infinite.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, NamedTuple

if TYPE_CHECKING:
    import torch

Tail = Literal["bucket", "renormalize"]

# The least log-probability a class is given: a teacher's bucket of exactly zero mass
# (or a top-k log-probability of -inf) would make the reverse KL infinite, and a student
# whose k tokens hold all of its mass would make the forward KL infinite. 1e-12 changes
# no divergence by more than ~1e-10 per class.
MIN_LOGPROB = math.log(1e-12)


class KDLoss(NamedTuple):
    """A batch's training loss and, for the logs, its two parts (means over its tokens)."""

    loss: torch.Tensor  # (1 - ce_weight) * divergence + ce_weight * cross-entropy
    divergence: torch.Tensor  # detached
    cross_entropy: torch.Tensor  # detached
    tokens: torch.Tensor  # trained positions in this batch


class TokenLosses(NamedTuple):
    """Per-token losses of the trained positions (shape [N])."""

    divergence: torch.Tensor  # the generalised JSD between student and teacher top-k
    cross_entropy: torch.Tensor  # -log student probability of the teacher's sampled token


def kd_loss(logits: torch.Tensor, labels: torch.Tensor, top_ids: torch.Tensor,
            top_logprobs: torch.Tensor, *, beta: float, tail: Tail, ce_weight: float,
            num_items: torch.Tensor | int | None = None) -> KDLoss:
    """The training loss of a batch, aligned as transformers' causal LM loss.

    The logits at position t predict the token at t + 1: `labels`, `top_ids` and
    `top_logprobs` are indexed by the position of the token they describe (the teacher's
    sampled token, -100 where nothing is trained; its top-k there).

    Args:
        logits: [B, L, V] the student's logits over the whole sequence.
        labels: [B, L] the teacher's sampled tokens at completion positions, else -100.
        top_ids: [B, L, k] the teacher's top-k token ids at completion positions.
        top_logprobs: [B, L, k] their log-probabilities under the teacher.
        beta: as for `topk_divergence`.
        tail: as for `topk_divergence`.
        ce_weight: share of the cross-entropy on the labels in the loss.
        num_items: the trained tokens of the whole accumulated (and gathered) batch, when
            the Trainer counts them: the loss is a sum over this batch divided by it, so
            that gradient accumulation weighs every token alike. None: the batch's mean.
    """
    targets = labels[:, 1:]
    mask = targets != -100
    per_token = token_losses(logits[:, :-1][mask], targets[mask], top_ids[:, 1:][mask],
                             top_logprobs[:, 1:][mask], beta, tail)
    tokens = mask.sum()
    divisor = tokens.clamp(min=1) if num_items is None else num_items
    divergence, cross_entropy = per_token.divergence.sum(), per_token.cross_entropy.sum()
    loss = ((1 - ce_weight) * divergence + ce_weight * cross_entropy) / divisor
    count = tokens.clamp(min=1)
    return KDLoss(loss, divergence.detach() / count, cross_entropy.detach() / count, tokens)


def topk_divergence(student_logits: torch.Tensor, top_ids: torch.Tensor,
                    top_logprobs: torch.Tensor, mask: torch.Tensor, beta: float,
                    tail: Tail) -> torch.Tensor:
    """Mean divergence over the positions `mask` selects (0 when it selects none).

    Args:
        student_logits: [..., V] the student's logits at each position.
        top_ids: [..., k] the teacher's k most likely token ids at the same positions.
        top_logprobs: [..., k] their log-probabilities under the teacher (temperature 1).
        mask: [...] True where the position is trained.
        beta: 0 forward KL(teacher || student), 1 reverse KL, between: JSD_beta (TRL's).
        tail: "bucket" (the mass outside the k tokens is one more class) or "renormalize".
    """
    divergence = token_divergence(student_logits[mask], top_ids[mask], top_logprobs[mask],
                                  beta, tail)
    return divergence.sum() / mask.sum().clamp(min=1)


def token_losses(student_logits: torch.Tensor, targets: torch.Tensor, top_ids: torch.Tensor,
                 top_logprobs: torch.Tensor, beta: float, tail: Tail) -> TokenLosses:
    """Divergence to the teacher's top-k and cross-entropy on `targets`, per position.

    Args:
        student_logits: [N, V] at the trained positions only (the logits are upcast to
            float32, and the bucket needs one more [N, V] copy).
        targets: [N] the token the teacher sampled at each position.
        top_ids: [N, k] the teacher's top-k token ids.
        top_logprobs: [N, k] their log-probabilities under the teacher.
        beta: as for `topk_divergence`.
        tail: as for `topk_divergence`.
    """
    logits = student_logits.float()
    log_z = logits.logsumexp(-1, keepdim=True)
    student, teacher = _over_topk(logits, log_z, top_ids.long(), top_logprobs.float(), tail)
    cross_entropy = (log_z.squeeze(-1) - logits.gather(-1, targets.long()[:, None]).squeeze(-1))
    return TokenLosses(generalized_jsd(student, teacher, beta), cross_entropy)


def token_divergence(student_logits: torch.Tensor, top_ids: torch.Tensor,
                     top_logprobs: torch.Tensor, beta: float, tail: Tail) -> torch.Tensor:
    """[N] divergence per position ([N, V] logits, [N, k] teacher top-k)."""
    logits = student_logits.float()
    log_z = logits.logsumexp(-1, keepdim=True)
    student, teacher = _over_topk(logits, log_z, top_ids.long(), top_logprobs.float(), tail)
    return generalized_jsd(student, teacher, beta)


def generalized_jsd(student: torch.Tensor, teacher: torch.Tensor, beta: float) -> torch.Tensor:
    """TRL's generalised JSD between two log-distributions over the last dimension, summed.

    beta 0 is KL(teacher || student), 1 is KL(student || teacher), and in between
    beta KL(teacher || m) + (1 - beta) KL(student || m), m = (1 - beta) student + beta teacher.
    """
    import torch

    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return _kl(teacher, student)
    if beta == 1.0:
        return _kl(student, teacher)
    mixture = torch.logaddexp(student + math.log(1 - beta), teacher + math.log(beta))
    return beta * _kl(teacher, mixture) + (1 - beta) * _kl(student, mixture)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dimension, from log-probabilities (all finite here)."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _over_topk(logits: torch.Tensor, log_z: torch.Tensor, top_ids: torch.Tensor,
               top_logprobs: torch.Tensor, tail: Tail) -> tuple[torch.Tensor, torch.Tensor]:
    """(student, teacher) log-probabilities over the same classes: [N, k + 1] or [N, k]."""
    import torch

    student = logits.gather(-1, top_ids) - log_z
    teacher = top_logprobs.clamp(min=MIN_LOGPROB)
    if tail == "renormalize":
        return (student - student.logsumexp(-1, keepdim=True),
                teacher - teacher.logsumexp(-1, keepdim=True))
    if tail != "bucket":
        raise ValueError(f"tail must be 'bucket' or 'renormalize', got {tail!r}")
    # The student's mass outside the k ids, summed directly over the other logits: 1 minus
    # its top-k probabilities would cancel catastrophically when the bucket is tiny. A
    # finite fill (not -inf) keeps the gradient defined even when k covers the vocabulary.
    outside = logits.scatter(-1, top_ids, torch.finfo(logits.dtype).min)
    student_tail = (outside.logsumexp(-1, keepdim=True) - log_z).clamp(min=MIN_LOGPROB)
    # The teacher's bucket: log(1 - sum p) from log(sum p), which rounding can put at or
    # just above 0 (no mass left).
    teacher_tail = _log1mexp(top_logprobs.logsumexp(-1, keepdim=True).clamp(max=0.0))
    return (torch.cat([student, student_tail], -1),
            torch.cat([teacher, teacher_tail.clamp(min=MIN_LOGPROB)], -1))


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012)."""
    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
