"""Train the microworld's tokenizer and small Llama models from scratch, on a CPU.

A plain PyTorch loop (no Trainer): documents are tokenised once, grouped into batches of
similar length under a token budget, and trained with AdamW and a warm-up + cosine
schedule for a fixed number of steps, so a build does the same work on every machine.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distill.microworld.corpus import Document

IGNORE = -100


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and training schedule of one model (see build.BuildConfig)."""

    hidden_size: int = 128
    layers: int = 4
    heads: int = 2  # hidden_size / heads = 64: vLLM's CPU kernels need head size 64
    intermediate_size: int = 512
    steps: int = 1000
    batch_tokens: int = 4096  # padded tokens per batch
    lr: float = 2e-3
    warmup: float = 0.05  # fraction of steps
    weight_decay: float = 0.01
    max_length: int = 512

    def as_dict(self) -> dict[str, Any]:
        """For the build config hash and `microworld.json`."""
        return asdict(self)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer whose numbers split into single digits.

    Like `distill.tinymodel.train_tokenizer` (same special tokens and chat template), plus
    a digit-by-digit pre-tokeniser: carrying and comparing digits becomes learnable for
    a model this small, where BPE would merge "42" into one opaque token.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from distill.tinymodel import CHAT_TEMPLATE, SPECIAL_TOKENS

    tokenizer = Tokenizer(models.BPE(unk_token="<|unk|>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|bos|>",
                                      eos_token="<|end|>", pad_token="<|pad|>",
                                      unk_token="<|unk|>")
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def encode(documents: Sequence[Document], tokenizer, max_length: int, *,
           mask_prompts: set[str]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per document; prompts of kinds in `mask_prompts` get no loss.

    Prompt and target are tokenised separately, as at inference, where the backend
    tokenises the rendered prompt alone and the model continues it.
    """
    prompts = tokenizer([d.prompt for d in documents], add_special_tokens=False).input_ids
    targets = tokenizer([d.target for d in documents], add_special_tokens=False).input_ids
    encoded = []
    for document, prompt, target in zip(documents, prompts, targets, strict=True):
        ids = (prompt + target)[:max_length]
        masked = IGNORE if document.kind in mask_prompts else None
        labels = ([masked if masked is not None else t for t in prompt] + target)[:max_length]
        encoded.append((ids, labels))
    return encoded


def batches(encoded: list[tuple[list[int], list[int]]], batch_tokens: int,
            rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length, at most `batch_tokens` padded tokens each."""
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i][0]), rng.random()))
    groups: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = len(encoded[index][0])  # sorted: the newest is the longest
        if current and longest * (len(current) + 1) > batch_tokens:
            groups.append(current)
            current = []
        current.append(index)
    if current:
        groups.append(current)
    rng.shuffle(groups)
    return groups


def train_model(documents: Sequence[Document], tokenizer, spec: ModelSpec, out_dir: Path, *,
                seed: int, mask_prompts: set[str],
                progress: Callable[[int, int, float], None] | None = None,
                init_dir: Path | None = None,
                threads: int | Callable[[int], int] | None = None) -> dict[str, Any]:
    """Pretrain a Llama from scratch (or go on from `init_dir`) on `documents`; save it.

    `threads`: a count (default: every usable CPU), or the count for each step, which may
    wait until cores are free. It is part of what determines the weights: the matrix
    products sum in another order on another thread count.
    Returns training statistics (steps, tokens, first and last loss, seconds, and
    `threads`, {first step: count} for each change).
    """
    import torch
    from transformers import GenerationConfig, LlamaForCausalLM

    from distill.tinymodel import llama_config

    torch.manual_seed(seed)
    rng = random.Random(seed)
    if callable(threads):
        threads_at = threads
    else:
        count = threads or usable_cpus()
        threads_at = lambda step: count  # noqa: E731
    used: dict[int, int] = {}
    config = llama_config(len(tokenizer), hidden_size=spec.hidden_size, layers=spec.layers,
                          heads=spec.heads, intermediate_size=spec.intermediate_size,
                          max_positions=spec.max_length, tokenizer=tokenizer)
    model = (LlamaForCausalLM.from_pretrained(init_dir) if init_dir is not None
             else LlamaForCausalLM(config))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    # fused: one kernel for every parameter's update, 1.08x a step on one thread
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr, betas=(0.9, 0.98), eps=1e-8, fused=True)
    warmup = max(1, int(spec.warmup * spec.steps))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = (step - warmup) / max(1, spec.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    encoded = encode(documents, tokenizer, spec.max_length, mask_prompts=mask_prompts)
    pad = tokenizer.pad_token_id
    plan: list[list[int]] = []
    losses: list[float] = []
    tokens = 0
    started = time.perf_counter()
    # torch's own function: vLLM's CPU worker, once started in this process, replaces
    # `torch.set_num_threads` with a no-op for good (vllm/v1/worker/cpu_worker.py), and
    # the weights must not quietly come out of another thread count.
    set_threads = torch._C.set_num_threads
    before = torch.get_num_threads()  # the caller's, given back at the end
    try:
        for step in range(spec.steps):
            wanted = threads_at(step)
            if not used or wanted != used[max(used)]:
                set_threads(wanted)
                used[step] = wanted
            if not plan:
                plan = batches(encoded, spec.batch_tokens, rng)
            group = plan.pop()
            width = max(len(encoded[i][0]) for i in group)
            ids = torch.full((len(group), width), pad, dtype=torch.long)
            labels = torch.full((len(group), width), IGNORE, dtype=torch.long)
            attention = torch.zeros((len(group), width), dtype=torch.long)
            for row, index in enumerate(group):
                seq, lab = encoded[index]
                ids[row, : len(seq)] = torch.tensor(seq)
                labels[row, : len(lab)] = torch.tensor(lab)
                attention[row, : len(seq)] = 1
            loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += int(attention.sum())
            if progress is not None:
                progress(step + 1, spec.steps, losses[-1])
    finally:
        set_threads(before)
    seconds = time.perf_counter() - started

    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    window = max(1, min(50, len(losses) // 10))
    return {"steps": spec.steps, "documents": len(documents), "tokens": tokens,
            "seconds": round(seconds, 1), "threads": used,
            "loss_first": round(sum(losses[:window]) / window, 4),
            "loss_last": round(sum(losses[-window:]) / window, 4),
            "parameters": sum(p.numel() for p in model.parameters())}
