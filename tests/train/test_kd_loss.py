"""The kd loss against values worked out by hand on a four-token vocabulary.

The student's distribution at one position is (0.4, 0.3, 0.2, 0.1) over tokens 0..3 (its
logits are the log-probabilities, so its softmax is exactly that). The teacher kept its
top k = 2: token 1 with 0.5 and token 0 with 0.25, so 0.25 lies outside its top 2.

Over the classes (token 1, token 0, rest):
    bucket:       teacher (0.5, 0.25, 0.25)   student (0.3, 0.4, 0.2 + 0.1 = 0.3)
    renormalize:  teacher (2/3, 1/3)          student (3/7, 4/7)      [0.3/0.7, 0.4/0.7]
"""

from __future__ import annotations

import math

import pytest
import torch

from distill.train.kd_loss import MIN_LOGPROB, kd_loss, topk_divergence

ln = math.log
STUDENT = [0.4, 0.3, 0.2, 0.1]
TOP_IDS = [1, 0]
TOP_PROBS = [0.5, 0.25]

# Each sum written out term by term: sum_i p_i ln(p_i / q_i).
FORWARD_BUCKET = 0.5 * ln(0.5 / 0.3) + 0.25 * ln(0.25 / 0.4) + 0.25 * ln(0.25 / 0.3)  # 0.09233
REVERSE_BUCKET = 0.3 * ln(0.3 / 0.5) + 0.4 * ln(0.4 / 0.25) + 0.3 * ln(0.3 / 0.25)  # 0.08939
# beta 0.5: m = (student + teacher) / 2 = (0.4, 0.325, 0.275)
JSD_BUCKET = (0.5 * (0.5 * ln(0.5 / 0.4) + 0.25 * ln(0.25 / 0.325) + 0.25 * ln(0.25 / 0.275))
              + 0.5 * (0.3 * ln(0.3 / 0.4) + 0.4 * ln(0.4 / 0.325) + 0.3 * ln(0.3 / 0.275)))
FORWARD_RENORM = 2 / 3 * ln((2 / 3) / (3 / 7)) + 1 / 3 * ln((1 / 3) / (4 / 7))  # 0.11510
REVERSE_RENORM = 3 / 7 * ln((3 / 7) / (2 / 3)) + 4 / 7 * ln((4 / 7) / (1 / 3))  # 0.11846
# beta 0.25: m = 0.75 student + 0.25 teacher = (0.75 * 3/7 + 0.25 * 2/3, 0.75 * 4/7 + 0.25 / 3)
M1, M2 = 0.75 * 3 / 7 + 0.25 * 2 / 3, 0.75 * 4 / 7 + 0.25 / 3
JSD25_RENORM = (0.25 * (2 / 3 * ln((2 / 3) / M1) + 1 / 3 * ln((1 / 3) / M2))
                + 0.75 * (3 / 7 * ln((3 / 7) / M1) + 4 / 7 * ln((4 / 7) / M2)))


def one_position(student=STUDENT, top_ids=TOP_IDS, top_probs=TOP_PROBS):
    """Logits [1, 4], top ids [1, 2], top log-probs [1, 2], mask [1]."""
    logits = torch.tensor([student], dtype=torch.float64).log().float()
    return (logits, torch.tensor([top_ids]), torch.tensor([top_probs]).log(),
            torch.tensor([True]))


@pytest.mark.parametrize(("beta", "tail", "expected"), [
    (0.0, "bucket", FORWARD_BUCKET),
    (1.0, "bucket", REVERSE_BUCKET),
    (0.5, "bucket", JSD_BUCKET),
    (0.0, "renormalize", FORWARD_RENORM),
    (1.0, "renormalize", REVERSE_RENORM),
    (0.25, "renormalize", JSD25_RENORM),
])
def test_divergence_equals_the_hand_computed_value(beta, tail, expected):
    value = topk_divergence(*one_position(), beta=beta, tail=tail)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_the_numbers_are_not_all_alike():
    # the cases must be able to tell the divergences and tails apart
    values = [FORWARD_BUCKET, REVERSE_BUCKET, JSD_BUCKET, FORWARD_RENORM, REVERSE_RENORM]
    assert min(abs(a - b) for i, a in enumerate(values) for b in values[i + 1:]) > 1e-3


def test_zero_when_the_student_is_the_teacher():
    teacher = [0.25, 0.5, 0.15, 0.1]  # token 1: 0.5, token 0: 0.25, the rest 0.25
    for tail in ("bucket", "renormalize"):
        for beta in (0.0, 0.5, 1.0):
            value = topk_divergence(*one_position(student=teacher), beta=beta, tail=tail)
            assert abs(value.item()) < 1e-6
    # renormalised, only the k tokens' ratio matters: a student with another tail but the
    # same 2:1 ratio on tokens 1 and 0 has nothing left to learn
    same_ratio = [0.2, 0.4, 0.3, 0.1]
    assert abs(topk_divergence(*one_position(student=same_ratio), beta=0.0,
                               tail="renormalize").item()) < 1e-6
    # but its bucket holds 0.4 against the teacher's 0.25: (0.5, 0.25, 0.25) vs (0.4, 0.2, 0.4)
    assert topk_divergence(*one_position(student=same_ratio), beta=0.0,
                           tail="bucket").item() == pytest.approx(
        0.5 * ln(0.5 / 0.4) + 0.25 * ln(0.25 / 0.2) + 0.25 * ln(0.25 / 0.4), rel=1e-5)


def test_mean_over_masked_positions_only():
    logits, ids, logprobs, _ = one_position()
    # position 0: the hand-computed case; position 1: the student equals the teacher
    # (divergence 0); position 2: masked out, with a wildly different student
    logits = torch.cat([logits, torch.tensor([[0.25, 0.5, 0.15, 0.1]]).log(),
                        torch.tensor([[9.0, -9.0, 0.0, 0.0]])])
    ids, logprobs = ids.repeat(3, 1), logprobs.repeat(3, 1)
    mask = torch.tensor([True, True, False])
    value = topk_divergence(logits, ids, logprobs, mask, beta=0.0, tail="bucket")
    assert value.item() == pytest.approx(FORWARD_BUCKET / 2, rel=1e-5)


def test_kd_loss_shifts_like_a_causal_lm_and_mixes_cross_entropy():
    # Two positions; the logits at position 0 predict the token at position 1, which the
    # teacher sampled as token 2 (student probability 0.2). Position 0 is prompt (-100).
    logits = torch.tensor([[STUDENT, [0.25] * 4]]).log()
    labels = torch.tensor([[-100, 2]])
    top_ids = torch.tensor([[[0, 1], TOP_IDS]])
    top_logprobs = torch.tensor([[[0.0, 0.0], TOP_PROBS]]).log()
    result = kd_loss(logits, labels, top_ids, top_logprobs, beta=0.0, tail="bucket",
                     ce_weight=0.25)
    assert result.loss.item() == pytest.approx(0.75 * FORWARD_BUCKET + 0.25 * -ln(0.2),
                                               rel=1e-5)
    assert result.divergence.item() == pytest.approx(FORWARD_BUCKET, rel=1e-5)
    assert result.cross_entropy.item() == pytest.approx(-ln(0.2), rel=1e-5)
    assert result.tokens.item() == 1
    # the accumulated batch's token count divides the sum instead of this batch's count
    halved = kd_loss(logits, labels, top_ids, top_logprobs, beta=0.0, tail="bucket",
                     ce_weight=0.25, num_items=2)
    assert halved.loss.item() == pytest.approx(result.loss.item() / 2, rel=1e-6)


def test_a_teacher_with_no_mass_left_stays_finite_with_finite_gradients():
    # float32 top-k probabilities that sum to (or round above) 1: the bucket is empty
    logits = torch.tensor([[2.0, 1.0, -3.0, -4.0]], requires_grad=True)
    ids = torch.tensor([[0, 1]])
    logprobs = torch.tensor([[math.log(0.9), math.log(0.1000001)]])
    for beta in (0.0, 0.5, 1.0):
        for tail in ("bucket", "renormalize"):
            value = topk_divergence(logits, ids, logprobs, torch.tensor([True]), beta, tail)
            (grad,) = torch.autograd.grad(value, logits)
            assert torch.isfinite(value) and torch.isfinite(grad).all()
    # reverse KL charges the student for mass the teacher left no room for: with the
    # teacher's bucket floored at 1e-12 the cost is finite but large
    student_tail = float(torch.softmax(logits.detach(), -1)[0, 2:].sum())
    reverse = topk_divergence(logits, ids, logprobs, torch.tensor([True]), 1.0, "bucket")
    assert reverse.item() > student_tail * (ln(student_tail) - MIN_LOGPROB) * 0.99


def test_k_covering_the_vocabulary_and_minus_infinity_stay_finite():
    logits = torch.tensor([[0.0, 1.0]], requires_grad=True)
    ids = torch.tensor([[1, 0]])
    logprobs = torch.tensor([[0.0, -math.inf]])  # a one-hot teacher
    for beta in (0.0, 0.5, 1.0):
        value = topk_divergence(logits, ids, logprobs, torch.tensor([True]), beta, "bucket")
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and torch.isfinite(grad).all()
    # forward KL to a one-hot teacher is the cross-entropy of its token: -ln softmax(1.0)
    forward = topk_divergence(logits, ids, logprobs, torch.tensor([True]), 0.0, "bucket")
    assert forward.item() == pytest.approx(-ln(math.e / (1 + math.e)), rel=1e-5)


def test_the_gradient_moves_the_student_toward_the_teacher():
    logits = torch.tensor([STUDENT]).log().requires_grad_(True)
    ids, logprobs = torch.tensor([TOP_IDS]), torch.tensor([TOP_PROBS]).log()
    optimizer = torch.optim.SGD([logits], lr=1.0)
    for _ in range(200):
        optimizer.zero_grad()
        topk_divergence(logits, ids, logprobs, torch.tensor([True]), 0.5, "bucket").backward()
        optimizer.step()
    probs = torch.softmax(logits.detach(), -1)[0]
    assert probs[1].item() == pytest.approx(0.5, abs=1e-3)
    assert probs[0].item() == pytest.approx(0.25, abs=1e-3)
    assert (probs[2] + probs[3]).item() == pytest.approx(0.25, abs=1e-3)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
def test_with_k_the_whole_vocabulary_it_is_trls_generalized_jsd(beta, monkeypatch):
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDTrainer

    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 7, generator=generator) * 2  # [B=1 x 5 positions, V=7]
    labels = torch.tensor([-100, 3, 1, 6, -100])
    trl_value = GKDTrainer.generalized_jsd_loss(student[None], teacher[None], labels[None],
                                                beta=beta)
    teacher_logprobs = teacher.log_softmax(-1)
    top_logprobs, top_ids = teacher_logprobs.sort(-1, descending=True)
    for tail in ("bucket", "renormalize"):
        value = topk_divergence(student, top_ids, top_logprobs, labels != -100, beta, tail)
        assert value.item() == pytest.approx(trl_value.item(), rel=1e-5, abs=1e-7)
    # with fewer tokens kept, the bucket merges classes: no f-divergence can grow by that
    kept = topk_divergence(student, top_ids[:, :3], top_logprobs[:, :3], labels != -100,
                           beta, "bucket")
    assert 0 < kept.item() < trl_value.item()


def test_beta_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="beta"):
        topk_divergence(*one_position(), beta=1.5, tail="bucket")
