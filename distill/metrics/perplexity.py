"""Per-sequence perplexity under any causal LM checkpoint.

The perplexity of a text is exp of the mean negative log-likelihood of its tokens, each
predicted from the ones before it. The tokenizer's BOS token (when it has one) is put in
front, so the first text token is scored too; padding and the BOS itself are never
scored. Texts are sorted by length and batched with right padding, so batching changes
no result beyond float rounding: `sequence_perplexities(m, [a, b])` equals scoring `a`
and `b` one at a time with `model(ids, labels=ids).loss` on a BOS-prefixed sequence.
With `contexts`, each text is scored conditioned on its context (say, a response given its
instruction), whose own tokens are not scored.

    from distill.metrics.perplexity import sequence_perplexities
    ppl = sequence_perplexities("microworld:teacher", ["some text", "more text"])

Used by the `perplexity` filter (distill/filters/perplexity.py) and by the model-collapse
metrics (perplexity of real held-out data, per-round histograms of generated data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Scorer:
    """A loaded causal LM and its tokenizer, ready to score texts."""

    model: Any
    tokenizer: Any
    device: Any

    @property
    def name(self) -> str:
        """Where the model came from (its `name_or_path`)."""
        return str(getattr(self.model, "name_or_path", "") or "")


def load_scorer(model: str | Path, *, device: str | None = None,
                dtype: str | None = None) -> Scorer:
    """Load a checkpoint for scoring.

    Args:
        model: a local checkpoint directory, a hub name (where a hub can be reached), or a
            `microworld:<name>` reference (built and cached on first use).
        device: "cpu", "cuda", "cuda:1", ...; default: CUDA when available, else CPU.
        dtype: a torch dtype name ("float32", "bfloat16"); default: bfloat16 on a GPU that
            supports it, float32 on CPU (CPU bfloat16 matmuls are slow and less exact).

    Returns:
        The model in eval mode on `device`, with its tokenizer.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from distill.models import model_path

    path = model_path(str(model))
    torch_device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype is None:
        bf16 = torch_device.type == "cuda" and torch.cuda.is_bf16_supported()
        torch_dtype = torch.bfloat16 if bf16 else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(torch_device)
    loaded.eval()
    return Scorer(model=loaded, tokenizer=tokenizer, device=torch_device)


# What a perplexity scored: the response given its prompt, or the whole text.
RESPONSE = "response"
FULL_TEXT = "full text"


def response_loss_mask(model: str | Path) -> str | None:
    """The loss mask to score responses with under `model`, or None for whole texts.

    A student that distill trained with the loss on assistant turns or completions (its
    `train_log.json` beside the merged checkpoint says so) never learnt to predict prompt
    tokens: their surprisal would swamp a whole chat's perplexity (a median of 1e5 with a
    1,024-token vocabulary on the quickstart), so its perplexity is that of the response
    given the prompt (`response_perplexities` with this mask). Any other model (a hub
    model, a base student, a student trained on whole texts) scores the full text.
    """
    from distill.models import model_path
    from distill.train.config import training_record

    record = training_record(model_path(str(model)))
    if record is None or record.loss_mask == "none":
        return None
    return record.loss_mask


def _as_scorer(model: str | Path | Scorer | tuple[Any, Any], device: str | None) -> Scorer:
    if isinstance(model, Scorer):
        return model
    if isinstance(model, tuple):
        loaded, tokenizer = model
        return Scorer(model=loaded, tokenizer=tokenizer, device=next(loaded.parameters()).device)
    return load_scorer(model, device=device)


def _token_ids(tokenizer: Any, texts: Sequence[str], contexts: Sequence[str] | None,
               max_length: int) -> tuple[list[list[int]], list[int]]:
    """Token ids and how many leading tokens go unscored, per text.

    Ids are BOS (when the tokenizer has one), then the context's, then the text's, cut to
    `max_length`; the unscored ones are BOS and the context.
    """
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    prefixes = [[bos] if bos is not None else [] for _ in encoded]
    if contexts is not None:
        if len(contexts) != len(texts):
            raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
        context_ids = tokenizer(list(contexts), add_special_tokens=False)["input_ids"]
        prefixes = [prefix + list(ids) for prefix, ids in zip(prefixes, context_ids,
                                                                strict=True)]
    ids = [(prefix + list(text))[:max_length] for prefix, text in zip(prefixes, encoded,
                                                                         strict=True)]
    # The first token is never scored (nothing predicts it), so at least one is unscored.
    return ids, [max(1, len(prefix)) for prefix in prefixes]


def sequence_perplexities(model: str | Path | Scorer | tuple[Any, Any], texts: Sequence[str],
                          *, batch_size: int = 8, max_length: int = 1024,
                          device: str | None = None, contexts: Sequence[str] | None = None,
                          progress: Callable[[int, int], None] | None = None) -> list[float]:
    """Perplexity of each text under a causal LM, in the order given.

    Args:
        model: a checkpoint path or `microworld:` reference (loaded with `load_scorer`), a
            `Scorer`, or a `(model, tokenizer)` pair already loaded.
        texts: the texts to score.
        batch_size: texts per forward pass (an operational knob: results do not depend on it
            beyond float rounding).
        max_length: tokens kept per text, BOS included; longer texts are scored on their
            first `max_length` tokens.
        device: where to load a model given by path (ignored for a loaded one).
        contexts: optional text put before each text (after BOS) that conditions its
            tokens but is not scored, e.g. the instruction of a response. Text tokens are
            tokenised separately from their context, as a response follows its prompt.
        progress: called as `progress(done, total)` after each batch.

    Returns:
        One perplexity per text; NaN where the text has no scored token (an empty text, a
        one-token text under a tokenizer without BOS, or a text cut off by `max_length`).
    """
    scorer = _as_scorer(model, device)
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2 (got {max_length})")
    ids, unscored = _token_ids(scorer.tokenizer, texts, contexts, max_length)
    sequences = [(row, [position >= first for position in range(len(row))])
                 for row, first in zip(ids, unscored, strict=True)]
    return token_perplexities(scorer, sequences, batch_size=batch_size, max_length=max_length,
                              progress=progress)


def response_perplexities(model: str | Path | Scorer | tuple[Any, Any],
                          conversations: Sequence[list[dict[str, str]]], *,
                          loss_mask: str = "completion", batch_size: int = 8,
                          max_length: int = 1024, device: str | None = None,
                          progress: Callable[[int, int], None] | None = None) -> list[float]:
    """Perplexity of each conversation's response given its prompt, as SFT renders them.

    The conversation goes through the model's chat template exactly as distill's SFT
    tokenizes it for `loss_mask` (`distill.train.sft.loss_tokens`): "assistant", the
    template's assistant tokens; "completion", the final turn after the prompt and its
    generation prompt. Only those tokens are scored (the prompt's are labelled -100), so
    the value is exp of the loss the student was trained to lower on that example.

    Args:
        model: as for `sequence_perplexities`; its tokenizer needs a chat template.
        conversations: chats ending with the assistant's response.
        loss_mask: "assistant" or "completion" (`TrainResult.loss_mask`).
        batch_size: conversations per forward pass (speed only).
        max_length: tokens kept per conversation (the first ones, as SFT truncates).
        device: where to load a model given by path.
        progress: called as `progress(done, total)` after each batch.

    Returns:
        One perplexity per conversation; NaN where no response token is left to score.
    """
    from distill.train.sft import loss_tokens

    scorer = _as_scorer(model, device)
    if not scorer.tokenizer.chat_template:
        raise ValueError(f"{scorer.name or 'the model'}: its tokenizer has no chat template, "
                         "so a response cannot be scored given its prompt as in training")
    sequences = [loss_tokens(scorer.tokenizer, list(c), loss_mask) for c in conversations]
    return token_perplexities(scorer, sequences, batch_size=batch_size, max_length=max_length,
                              progress=progress)


def token_perplexities(model: str | Path | Scorer | tuple[Any, Any],
                       sequences: Sequence[tuple[list[int], list[bool]]], *,
                       batch_size: int = 8, max_length: int = 1024, device: str | None = None,
                       progress: Callable[[int, int], None] | None = None) -> list[float]:
    """Perplexity over the chosen tokens of token sequences.

    Each sequence is (token ids, scored): token t counts when scored[t] is true, predicted
    from the tokens before it, so `exp(model(ids, labels=ids with -100 where not
    scored).loss)`. The first token is never scored (nothing predicts it); sequences are
    cut to `max_length`; NaN where no scored token is left.
    """
    import torch

    scorer = _as_scorer(model, device)
    tokenizer = scorer.tokenizer
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    cut = [(list(ids[:max_length]), [False, *scored[1:max_length]])
           for ids, scored in sequences]
    # Longest first: similar lengths share a batch (little padding), and an out-of-memory
    # error shows up on the first batch rather than at the end.
    order = sorted(range(len(cut)), key=lambda i: -len(cut[i][0]))
    results = [math.nan] * len(cut)
    done = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = [i for i in order[start:start + batch_size] if any(cut[i][1])]
            if rows:
                for i, value in zip(rows, _batch_perplexities(scorer, [cut[i] for i in rows],
                                                              pad), strict=True):
                    results[i] = value
            done += len(order[start:start + batch_size])
            if progress is not None:
                progress(done, len(cut))
    return results


def _batch_perplexities(scorer: Scorer, batch: list[tuple[list[int], list[bool]]],
                        pad: int) -> list[float]:
    """Perplexities of token sequences, right-padded, over each one's scored tokens."""
    import torch

    width = max(len(row) for row, _ in batch)
    input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    scored = torch.zeros((len(batch), width), dtype=torch.bool)
    for i, (row, mask) in enumerate(batch):
        input_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        attention[i, :len(row)] = 1
        scored[i, :len(row)] = torch.tensor(mask, dtype=torch.bool)
    input_ids, attention = input_ids.to(scorer.device), attention.to(scorer.device)
    logits = scorer.model(input_ids=input_ids, attention_mask=attention).logits
    # Position t predicts token t + 1; a target counts when it is a scored real token.
    targets = input_ids[:, 1:]
    scored = scored[:, 1:].to(scorer.device)
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, reduction="none")
    mean = (nll * scored).sum(dim=1) / scored.sum(dim=1)
    return [float(value) for value in torch.exp(mean.double()).cpu()]
