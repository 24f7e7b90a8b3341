"""ROUGE-L novelty against a growing pool: Self-Instruct's and Alpaca's filter, made fast.

A candidate instruction is dropped (`rouge_l>0.7`) when its ROUGE-L F-measure with any
pool instruction exceeds the threshold. The pool starts with the seed tasks'
instructions and grows with every instruction this filter keeps, in stream order.

The decisions and scores are exactly those of
`rouge_score.rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)` as Alpaca calls it
(`_score_lcs(candidate_tokens, pool_tokens)`), bit for bit:

- tokens: rouge_score's tokenizer without stemming: `text.lower()` (Unicode lower-casing,
  so "İ" gives "i" and the Kelvin sign "K" gives "k"), then runs of `[a-z0-9]`; every
  other character, including all other non-ASCII letters, separates tokens;
- score: from the integer LCS length L of the two token sequences, precision = L / len(pool
  tokens), recall = L / len(candidate tokens), F = 2 * precision * recall / (precision +
  recall), evaluated with the same float operations in the same order, so that boundary
  cases round the same way (7 common tokens out of 7 and 13 is 0.7000000000000001 in
  rouge_score, which rejects it, while 7 of 10 and 10 is exactly 0.7, kept); F is 0 when
  either side has no tokens.

How it is fast. By default (`score_kept: false`) the filter runs an exact threshold
join (`distill.filters.novelty_join`): prefix filtering over the tokens ranked rarest
first, a positional overlap bound, and only the surviving pairs scored (bit-parallel
token LCS in numba, on all cores). Its decisions are the full scan's for any threshold,
and a dropped record's `rouge_l_max`, `most_similar` and `most_similar_id` are exact
(every pair above the threshold is scored); kept records carry no novelty scores, since
proving a low maximum exact means scoring most of the pool. A million instructions take
minutes (docs/perf_novelty.md).

`score_kept: true` runs the full scan (`full_scan`): each distinct token becomes one
character, so an instruction is a short string and the token LCS is rapidfuzz's
bit-parallel `LCSseq`, computed in C++ for a block of candidates against the whole pool
at once (`process.cdist`, all cores). Every pair is scored, so every record gets its
exact maximum and most similar instruction; the cost is quadratic in the stream.

    filters:
      - kind: novelty
        threshold: 0.7
"""

from __future__ import annotations

import re
from typing import Any, Literal, NamedTuple

import numpy as np
from pydantic import Field

from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings, Verdict
from distill.records import Example
from distill.registry import FILTERS

_TOKEN = re.compile(r"[a-z0-9]+")
# Candidates per block: bounds the float matrices (rows x pool size) numpy holds at once.
_BLOCK_CELLS = 4_000_000
_MAX_BLOCK = 256
_NEAR = 1e-6


@FILTERS.register
class Config(FilterSettings):
    """ROUGE-L novelty against the seed tasks and every instruction kept so far."""

    kind: Literal["novelty"] = "novelty"
    threshold: float = Field(
        0.7, ge=0.0, le=1.0, description="An instruction whose ROUGE-L F-measure with any "
        "pool instruction is above this is dropped (`rouge_l>0.7`); a score equal to it is "
        "kept. Self-Instruct and Alpaca use 0.7.")
    include_seed_tasks: bool = Field(
        True, description="Start the pool with the seed tasks' instructions, as Self-Instruct "
        "and Alpaca do; false starts it empty.")
    fields: list[Literal["instruction", "input", "output"]] = Field(
        default_factory=lambda: ["instruction"], min_length=1,
        description="Record fields compared, joined by a space. Self-Instruct compares "
        "instructions; add `input` where instructions are templated and the input carries "
        "the task (the microworld).")
    score_kept: bool = Field(
        False, description="Also record `rouge_l_max`, `most_similar` and `most_similar_id` "
        "for kept records (dropped ones always have them). True scores every pair (the "
        "full scan: quadratic, hours at a million instructions); false runs an exact "
        "threshold join with the same decisions (minutes at a million).")

    def dependencies(self) -> Dependencies:
        """The seed tasks, which start the pool (unless `include_seed_tasks` is false)."""
        return Dependencies(inputs=("seed_tasks",) if self.include_seed_tasks else ())

    def build(self, context: FilterContext) -> NoveltyFilter:
        """The novelty filter, its pool started with the seed tasks."""
        return NoveltyFilter(self, context)


def rouge_tokens(text: str) -> list[str]:
    """rouge_score's default tokens without stemming: lower-case, then runs of [a-z0-9].

    Equal to `rouge_score.tokenize.tokenize(text, None)`, which lower-cases, replaces every
    run of other characters by a space, splits and drops empty tokens.
    """
    return _TOKEN.findall(text.lower())


def rouge_l_fmeasure(lcs: Any, target_lengths: Any, prediction_lengths: Any) -> np.ndarray:
    """rouge_score's ROUGE-L F-measure from LCS lengths, with its float operations.

    Element-wise, with numpy broadcasting.

    Args:
        lcs: LCS lengths of target / prediction pairs.
        target_lengths: the targets' token counts (the candidates, in Alpaca's call).
        prediction_lengths: the predictions' token counts (the pool instructions).

    Returns:
        The F-measures as float64; 0 where either side has no tokens, as in rouge_score.
    """
    lcs = np.asarray(lcs)
    # An empty side has LCS 0, so dividing by 1 instead of 0 gives rouge_score's 0.
    precision = lcs / np.maximum(prediction_lengths, 1)
    recall = lcs / np.maximum(target_lengths, 1)
    total = precision + recall
    fmeasure = np.asarray(2 * precision * recall)  # rouge_score: 2 * p * r / (p + r)
    np.divide(fmeasure, total, out=fmeasure, where=total > 0)  # 0 / 0 stays 0, as there
    return fmeasure


def _best_matches(lcs: np.ndarray, lengths: np.ndarray, pool_lengths: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Per row of an LCS matrix: the highest exact F-measure and the first column with it.

    LCS / (la + lb) is half the F-measure up to rounding; one float32 pass over the matrix
    finds, per row, the few columns within a hair of the row's maximum (all columns whose
    exact F-measure could be the maximum: float32 is off by < 3e-8 here), and only those get
    rouge_score's float64 formula, so ties that round differently (0.7 and
    0.7000000000000001) are settled exactly as rouge_score settles them.
    """
    best = np.zeros(len(lcs))
    best_at = np.zeros(len(lcs), dtype=np.intp)
    key = np.add.outer(lengths.astype(np.float32), pool_lengths.astype(np.float32))
    np.maximum(key, 1, out=key)
    np.divide(lcs, key, out=key, dtype=np.float32)
    top = key.max(axis=1)
    # Rows whose best LCS is 0 score 0 against everything; they get no candidates.
    floor = np.where(top > 0, top - _NEAR, np.inf).astype(np.float32)
    rows, cols = np.nonzero(key >= floor[:, None])  # row-major: columns ascend in each row
    if rows.size:
        exact = rouge_l_fmeasure(lcs[rows, cols], lengths[rows], pool_lengths[cols])
        starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        maxima = np.maximum.reduceat(exact, starts)
        at_max = np.flatnonzero(exact == np.repeat(maxima, np.diff(np.r_[starts, rows.size])))
        hit_rows, first = np.unique(rows[at_max], return_index=True)
        best[hit_rows] = exact[at_max[first]]
        best_at[hit_rows] = cols[at_max[first]]
    return best, best_at


class _Encoder:
    """Maps each distinct token to one code, so a token sequence is a string of them."""

    # Codes are code points, skipping the surrogates; past the last one (over a million
    # distinct tokens) sequences become lists of the same integers, which rapidfuzz also
    # takes, only more slowly.
    LIMIT = 0x110000 - 0x800

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    @property
    def overflowed(self) -> bool:
        return len(self.ids) > self.LIMIT

    def encode(self, tokens: list[str]) -> str | list[int]:
        ids = self.ids
        codes = [ids.setdefault(token, len(ids)) for token in tokens]
        codes = [code if code < 0xD800 else code + 0x800 for code in codes]
        return codes if self.overflowed else "".join(map(chr, codes))


class _Pool:
    """The texts a candidate is compared with: their indices, token codes and lengths."""

    def __init__(self) -> None:
        self.encoder = _Encoder()
        self.ids: list[int] = []
        self.codes: list[str | list[int]] = []
        self.lengths: list[int] = []

    def encode(self, texts: list[str]) -> tuple[list[str | list[int]], np.ndarray]:
        tokens = [rouge_tokens(text) for text in texts]
        return [self.encoder.encode(t) for t in tokens], np.array([len(t) for t in tokens])

    def add(self, index: int, codes: str | list[int], length: int) -> None:
        self.ids.append(index)
        self.codes.append(codes)
        self.lengths.append(length)

    def lcs(self, queries: list[Any], choices: list[Any]) -> np.ndarray:
        """Token LCS lengths of every query with every choice, on all cores."""
        if self.encoder.overflowed:
            queries, choices = _as_lists(queries), _as_lists(choices)
        return _lcs(queries, choices, workers=-1)


class Replay(NamedTuple):
    """A stream replayed against the growing pool, one entry per text."""

    keep: list[bool]
    score: list[float]  # the highest ROUGE-L F-measure against the pool as it stood
    similar: list[int]  # where the first pool text with that score is: an index into
    # seeds + texts, -1 when the score is 0


def full_scan(seeds: list[str], texts: list[str], threshold: float) -> Replay:
    """Score every text against every pool text: the reference the threshold join must equal.

    Blocks of texts are scored against the whole pool at once (rapidfuzz's `cdist`, all
    cores), then against the block's earlier kept texts in order, so the result equals a
    one-by-one replay.
    """
    pool = _Pool()
    seed_codes, seed_lengths = pool.encode(seeds)
    for index, (codes, length) in enumerate(zip(seed_codes, seed_lengths, strict=True)):
        pool.add(index, codes, int(length))

    replay = Replay([], [], [])
    start = 0
    while start < len(texts):
        rows = max(1, min(_MAX_BLOCK, _BLOCK_CELLS // max(len(pool.codes), 1)))
        block = texts[start:start + rows]
        codes, lengths = pool.encode(block)

        # Against the pool as it stood before the block: each text's best match.
        if pool.codes:
            best, best_at = _best_matches(pool.lcs(codes, pool.codes), lengths,
                                          np.array(pool.lengths))
        else:
            best, best_at = np.zeros(len(block)), np.zeros(len(block), dtype=np.intp)
        # Against the block's earlier texts: counted only for those that were kept.
        inner = rouge_l_fmeasure(pool.lcs(codes, codes), lengths[:, None], lengths[None, :])

        base = len(pool.ids)  # where the block's kept texts join the pool
        kept_here: list[int] = []
        for i in range(len(block)):
            score, similar = float(best[i]), int(best_at[i])
            if kept_here:
                row = inner[i, kept_here]
                j = int(row.argmax())
                if row[j] > score:  # strictly: on a tie the earlier pool entry stays
                    score, similar = float(row[j]), base + j
            keep = not score > threshold
            replay.keep.append(keep)
            replay.score.append(score)
            replay.similar.append(pool.ids[similar] if score > 0 else -1)
            if keep:
                kept_here.append(i)
                pool.add(len(seeds) + start + i, codes[i], int(lengths[i]))
        start += len(block)
    return replay


def _lcs(queries: list[Any], choices: list[Any], workers: int) -> np.ndarray:
    """Token LCS lengths of every query with every choice, in C++."""
    from rapidfuzz import process
    from rapidfuzz.distance import LCSseq

    return process.cdist(queries, choices, scorer=LCSseq.similarity, dtype=np.int32,
                         workers=workers)


class NoveltyFilter:
    """Drops instructions too similar (ROUGE-L) to the seeds or to one kept earlier."""

    name = "novelty"

    def __init__(self, config: Config, context: FilterContext) -> None:
        self.config = config
        seeds = context.seed_tasks() if config.include_seed_tasks else []
        self._seeds = [(example.id, self._text(example)) for example in seeds]

    def _text(self, record: Example) -> str:
        return " ".join(getattr(record, name) for name in self.config.fields)

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """Replay the records in order against a pool of the seeds and what was kept.

        Each call starts from the seed pool again, so a call's result depends only on its
        records. Dropped records get their maximum score and most similar text; kept ones
        too with `score_kept`, otherwise no scores.
        """
        from distill.filters.novelty_join import threshold_join

        threshold = self.config.threshold
        texts = [text for _, text in self._seeds] + [self._text(r) for r in records]
        ids = [seed_id for seed_id, _ in self._seeds] + [r.id for r in records]
        seeds, stream = texts[:len(self._seeds)], texts[len(self._seeds):]
        scan = full_scan if self.config.score_kept else threshold_join
        keeps, scores, similars = scan(seeds, stream, threshold)[:3]
        return [Verdict(keep=keep, reason="" if keep else f"rouge_l>{threshold:g}",
                        scores={} if score is None else {
                            "rouge_l_max": score,
                            "most_similar": texts[similar] if similar >= 0 else None,
                            "most_similar_id": ids[similar] if similar >= 0 else None})
                for keep, score, similar in zip(keeps, scores, similars, strict=True)]


def _as_lists(codes: list[Any]) -> list[list[int]]:
    """Strings of token codes as lists of the same integers."""
    return [[ord(c) for c in code] if isinstance(code, str) else code for code in codes]
