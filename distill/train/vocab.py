"""Whether a teacher and a student share a vocabulary, as logit distillation needs.

The teacher's top-k log-probabilities (method kd) and its per-token scores of the
student's samples (method on_policy) are indexed by token id: they mean the same to the
student only if both tokenizers map the same strings to the same ids. Qwen2.5-7B-Instruct
and Qwen2.5-0.5B do; Llama 3 and Qwen do not, and distilling across them would train the
student on another model's numbering, which no loss value would reveal.

    check_shared_vocabulary("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-0.5B")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Differing tokens named in an error message: enough to see the pattern.
SHOWN = 5


def check_shared_vocabulary(teacher: str | Path | Any, student: str | Path | Any) -> None:
    """Raise unless the two tokenizers map the same strings to the same ids.

    Args:
        teacher: A tokenizer directory or hub id (loaded with `AutoTokenizer`), or a
            loaded tokenizer.
        student: The same, for the student.

    Raises:
        ValueError: naming both tokenizers, their vocabulary sizes and the first ids
            whose tokens differ.
        OSError: a tokenizer that does not load (no such directory, hub id not cached
            offline).
    """
    teacher_tokenizer, student_tokenizer = _load(teacher), _load(student)
    teacher_vocab, student_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if teacher_vocab == student_vocab:
        return
    teacher_ids, student_ids = _by_id(teacher_vocab), _by_id(student_vocab)
    differing = sorted(token_id for token_id in teacher_ids.keys() | student_ids.keys()
                       if teacher_ids.get(token_id) != student_ids.get(token_id))
    shown = ", ".join(f"{token_id}: teacher {teacher_ids.get(token_id)!r}, student "
                      f"{student_ids.get(token_id)!r}" for token_id in differing[:SHOWN])
    more = f" and {len(differing) - SHOWN} more" if len(differing) > SHOWN else ""
    raise ValueError(
        f"the teacher's tokenizer ({_name(teacher)}, {len(teacher_vocab)} tokens) and the "
        f"student's ({_name(student)}, {len(student_vocab)} tokens) do not map the same "
        f"strings to the same ids: {len(differing)} ids differ ({shown}{more}); logit "
        "distillation (train.method kd, on_policy or sft_then_on_policy) compares the two "
        "models token id by token id, so they must share one tokenizer: choose a student "
        "of the teacher's family, or train with method sft on the teacher's text")


def _load(tokenizer: str | Path | Any) -> Any:
    if not isinstance(tokenizer, str | Path):
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer))


def _by_id(vocab: dict[str, int]) -> dict[int, str]:
    return {token_id: token for token, token_id in vocab.items()}


def _name(loaded: str | Path | Any) -> str:
    """A tokenizer's or model's location, as given or as it was loaded from."""
    if isinstance(loaded, str | Path):
        return str(loaded)
    return getattr(loaded, "name_or_path", None) or type(loaded).__name__


def check_output_sizes(teacher: str | Path | Any, student: str | Path | Any) -> None:
    """Raise unless teacher and student have output layers of one size.

    On-policy distillation (TRL's DistillationTrainer) and `distill.metrics.teacher_kl`
    compare the two models' full next-token distributions, which needs one support. One
    tokenizer does not make one size: Qwen2.5-7B-Instruct pads its output layer to 152,064
    rows, Qwen2.5-0.5B, 1.5B and 3B to 151,936. TRL refuses such a pair too, but only once
    both models are loaded; their configs tell at once, so the run stops before any work.

    Args:
        teacher: A model directory or hub id (its config is read), or a loaded model.
        student: The same, for the student.

    Raises:
        ValueError: naming both models and their sizes.
    """
    sizes = {"teacher": _output_rows(teacher), "student": _output_rows(student)}
    if sizes["teacher"] != sizes["student"]:
        raise ValueError(
            f"the teacher ({_name(teacher)}) has {sizes['teacher']} output rows and the "
            f"student ({_name(student)}) {sizes['student']}: on-policy distillation and the "
            "teacher KL compare the two full next-token distributions, so they need one "
            "vocabulary size, whatever the tokenizers say; choose a teacher of the student's "
            "size class (Qwen2.5-1.5B or 3B-Instruct for Qwen2.5-0.5B), or train with method "
            "kd, which compares only the teacher's top-k token ids")


def _output_rows(model: str | Path | Any) -> int:
    """Rows of the output layer: from the config of a path or hub id, or a loaded model."""
    if isinstance(model, str | Path):
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(model)).get_text_config().vocab_size
    return model.get_output_embeddings().weight.shape[0]
