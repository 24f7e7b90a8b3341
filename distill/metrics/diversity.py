"""Lexical and semantic diversity of a set of texts.

After Guo et al. 2024 ("The curious decline of linguistic diversity") and, for self-BLEU,
Zhu et al. 2018 (Texygen).

    from distill.metrics.diversity import lexical_diversity
    lexical_diversity(texts, sample_size=500, bleu_sample_size=100, seed=0)
    # {"n": 500, "distinct_1": ..., "distinct_2": ..., "distinct_3": ..., "ttr": ...,
    #  "self_bleu": ..., "compression_ratio": ...}

Every count depends on how much text there is, so rounds are compared on a fixed-size,
seeded sample. Words are lower-cased runs of letters and digits, and each punctuation mark
is a word of its own (`tokenize`).

- distinct-n: distinct n-grams / all n-grams over the sample (Li et al. 2016). Higher is
  more diverse.
- type-token ratio: distinct words / words. Higher is more diverse.
- self-BLEU: mean BLEU-4 of each text against all the others as references (Texygen's
  definition, computed with NLTK's `sentence_bleu`, uniform weights, smoothing method 1).
  Higher means the texts repeat each other: less diverse.
- compression ratio: bytes of the texts joined by newlines / bytes after zlib level 9.
  Higher means more redundancy: less diverse.
- mean pairwise embedding distance: mean of 1 - cosine over all pairs of (normalised)
  sentence embeddings. Higher is more diverse.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Sequence
from typing import Any

_WORD = re.compile(r"\w+|[^\w\s]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words; each punctuation mark is a word of its own."""
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of a token list, in order (none when it is shorter than n)."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams over all n-grams of all texts; NaN when there is no n-gram."""
    grams = [gram for text in texts for gram in ngrams(tokenize(text), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def type_token_ratio(texts: Sequence[str]) -> float:
    """Distinct words over words, over all texts together; NaN without a word."""
    words = [word for text in texts for word in tokenize(text)]
    return len(set(words)) / len(words) if words else float("nan")


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Mean BLEU of each text against all the others (NaN for fewer than two texts)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    tokenized = [tokenize(text) for text in texts]
    tokenized = [tokens for tokens in tokenized if tokens]
    if len(tokenized) < 2:
        return float("nan")
    weights = tuple([1.0 / max_n] * max_n)
    smoothing = SmoothingFunction().method1
    scores = [sentence_bleu(tokenized[:i] + tokenized[i + 1:], hypothesis, weights=weights,
                            smoothing_function=smoothing)
              for i, hypothesis in enumerate(tokenized)]
    return sum(scores) / len(scores)


def compression_ratio(texts: Sequence[str]) -> float:
    """Raw bytes over zlib-compressed bytes (level 9) of the texts joined by newlines."""
    raw = "\n".join(texts).encode("utf-8")
    if not raw:
        return float("nan")
    return len(raw) / len(zlib.compress(raw, 9))


def mean_pairwise_distance(vectors: Any) -> float:
    """Mean of 1 - cosine similarity over all pairs of rows (NaN for fewer than two)."""
    import numpy as np

    matrix = np.asarray(vectors, dtype=np.float64)
    count = matrix.shape[0]
    if count < 2:
        return float("nan")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms == 0, 1.0, norms)
    cosine = unit @ unit.T
    upper = cosine[np.triu_indices(count, k=1)]
    return float(np.mean(1.0 - upper))


def seeded_sample(texts: Sequence[str], size: int, seed: int) -> list[str]:
    """`size` texts drawn without replacement with `seed` (all of them when fewer)."""
    texts = list(texts)
    if len(texts) <= size:
        return texts
    return random.Random(seed).sample(texts, size)


def lexical_diversity(texts: Sequence[str], *, sample_size: int = 500,
                      bleu_sample_size: int = 100, ngram_sizes: Sequence[int] = (1, 2, 3),
                      seed: int = 0) -> dict[str, float]:
    """Every lexical metric on one seeded sample (self-BLEU on a smaller sub-sample).

    Args:
        texts: the texts of one round's data.
        sample_size: texts the counts are taken over; a fixed size makes rounds comparable.
        bleu_sample_size: texts for self-BLEU, whose cost grows with the square.
        ngram_sizes: the n of each distinct-n.
        seed: seeds both samples.
    """
    sample = seeded_sample(texts, sample_size, seed)
    metrics: dict[str, float] = {"n": len(sample)}
    for n in ngram_sizes:
        metrics[f"distinct_{n}"] = distinct_n(sample, n)
    metrics["ttr"] = type_token_ratio(sample)
    metrics["self_bleu"] = self_bleu(seeded_sample(sample, bleu_sample_size, seed))
    metrics["compression_ratio"] = compression_ratio(sample)
    return metrics
