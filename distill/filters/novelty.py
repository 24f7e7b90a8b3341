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

What is fast: Alpaca ran a pure-Python dynamic programme per pair, O(N^2) pairs. Here each
distinct token becomes one character, so an instruction is a short string and the token
LCS is rapidfuzz's bit-parallel `LCSseq` (a few machine words per pair), computed in C++
for a block of candidates against the whole pool at once (`process.cdist`, all cores);
the F-measures follow in numpy (`full_scan`). Every pair is scored, so the recorded
maximum and most similar instruction are exact, not only the decision.

`pruned_scan` gives the same result bit for bit while scoring only the pool instructions
that could hold each maximum (prefix filtering, below). It is not what the filter runs:
because the recorded maximum must stay exact, a candidate whose maximum is low has to
look at most of the pool, and measured on 2 cores it was slower than the full scan both
on scripts/bench_novelty.py's templated stream (0.7-0.8x at 10K-200K instructions) and
on a Zipf-vocabulary stream of novel texts (0.1x at 50K); see docs/perf_novelty.md.

    filters:
      - kind: novelty
        threshold: 0.7
"""

from __future__ import annotations

import re
from itertools import combinations
from math import comb
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
    """Score every text against every pool text: the reference the pruned scan must equal.

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


# The candidate search. A probe at a level finds every pool text whose F-measure with the
# candidate could reach the level; when the best of those is above the level, it is the
# exact maximum. The last level, an index of single tokens, finds every pool text sharing
# one with the candidate (any F-measure of 0.01 or more).
_LEVELS = ((0.85, 3), (0.7, 3), (0.55, 2), (0.01, 1))
# Below this many pool texts, scoring the whole pool in blocks is faster than probing an
# index for each candidate (measured with scripts/bench_novelty.py --scale).
_PRUNE_FROM = 10_000
# Margin on bounds computed in floats, always on the safe side: far above their rounding
# error (1e-16); being off by it costs at most an extra pair scored or level tried.
_SAFE = 1e-9


def pruned_scan(seeds: list[str], texts: list[str], threshold: float) -> Replay:
    """The full scan's result, scoring only the pool texts that could hold the maximum.

    The LCS of two token sequences is at most their multiset overlap, so a pair whose
    F-measure reaches a level L shares at least t = ceil(L * l / (2 - L)) tokens, for l
    either side's token count. Prefix filtering (Chaudhuri et al. 2006) finds every such
    pair through an inverted index: order the tokens of all texts by how many texts hold
    them, rarest first; the k rarest tokens two such texts share lie within each one's
    first l - t + k tokens, so the two share a key made of k ranks from their prefixes.
    Each level L (with its k) has its own index of pool texts. A block's candidates probe
    the highest level first and score what they find (exact LCS, rouge_score's F formula);
    a candidate whose best is above L is done, since every pool text left out scores below
    L. The others go on to the next level (pairs already scored are not scored again), the
    last being single tokens (every pool text sharing one), and in the end to the whole
    pool. Until the pool holds `_PRUNE_FROM` texts the whole pool is scored at once: faster
    there. Then, as in the full scan, each candidate is checked against the block's earlier
    kept texts in order. So the maximum, its first pool text and the decision are the full
    scan's, bit for bit, whatever the threshold.
    """
    encoder = _Encoder()
    tokens = [rouge_tokens(text) for text in [*seeds, *texts]]
    codes = [encoder.encode(t) for t in tokens]
    if encoder.overflowed:
        codes = _as_lists(codes)
    lengths = np.array([len(t) for t in tokens], dtype=np.intp)
    ranks, offsets = _signatures(tokens)
    longest = int(lengths.max(initial=0))
    prefixes, usable = zip(*(_prefix_lengths(longest, level, k) for level, k in _LEVELS),
                           strict=True)
    indexes = [_Index() for _ in _LEVELS]
    size = int(ranks.max(initial=0)) + 1
    pool_ids: list[int] = []  # pool position -> index into seeds + texts
    pool_codes: list[Any] = []

    def join(joining: list[int]) -> None:
        pool_ids.extend(joining)
        pool_codes.extend(codes[t] for t in joining)
        if len(pool_ids) < _PRUNE_FROM:
            return
        # The index is built once the pool is large enough to prune, then kept up to date.
        start = indexes[0].size
        texts = np.array(pool_ids[start:], dtype=np.intp)
        for (_, k), index, prefix in zip(_LEVELS, indexes, prefixes, strict=True):
            keys, which = _keys(texts, prefix[lengths[texts]], k, ranks, offsets, size)
            index.add(keys, which + start, len(texts))

    join(list(range(len(seeds))))
    replay = Replay([], [], [])
    for start in range(len(seeds), len(tokens), _MAX_BLOCK):
        block = np.arange(start, min(start + _MAX_BLOCK, len(tokens)))
        best, best_at = np.zeros(len(block)), np.full(len(block), -1)
        pool = np.array(pool_ids, dtype=np.intp)
        open_rows = np.flatnonzero(lengths[block] > 0) if pool.size else np.zeros(0, np.intp)
        # Against the pool as it stood before the block, level by level; a small pool is
        # scored whole (below), which is faster there than probing.
        levels = zip(_LEVELS, indexes, prefixes, usable, strict=True)
        scored = _NONE  # pairs row << 32 | pool position scored so far, sorted
        for (level, k), index, prefix, use in levels if pool.size >= _PRUNE_FROM else ():
            probed = open_rows[use[lengths[block[open_rows]]]]
            keys, which = _keys(block[probed], prefix[lengths[block[probed]]], k, ranks,
                                offsets, size)
            pairs = index.probe(keys, probed[which])
            pairs = pairs[~_members(pairs, scored)]
            rows, found = pairs >> 32, pairs & 0xFFFFFFFF
            la, lb = lengths[block[rows]], lengths[pool[found]]
            fit = 2 * np.minimum(la, lb) >= (level - _SAFE) * (la + lb)
            scored = np.sort(np.concatenate([scored, pairs[fit]]))
            rows, found = rows[fit], found[fit]
            lcs = _pair_lcs([codes[t] for t in block.tolist()], pool_codes, rows, found)
            hit, top, at = _row_maxima(rows, rouge_l_fmeasure(lcs, la[fit], lb[fit]))
            # Better than what earlier levels found, or equal and earlier in the pool.
            better = (top > best[hit]) | ((top == best[hit]) & (found[at] < best_at[hit]))
            best[hit[better]], best_at[hit[better]] = top[better], found[at][better]
            open_rows = open_rows[best[open_rows] <= level + _SAFE]
        if open_rows.size:  # no level settled these: the whole pool
            best[open_rows], best_at[open_rows] = _best_matches(
                _lcs([codes[t] for t in block[open_rows]], [codes[t] for t in pool], -1),
                lengths[block[open_rows]], lengths[pool])
        best_at = np.where(best > 0, pool[best_at] if pool.size else -1, -1)
        # Against the block's earlier texts: counted only for those that were kept.
        inner = rouge_l_fmeasure(_lcs([codes[t] for t in block], [codes[t] for t in block],
                                      -1), lengths[block][:, None], lengths[block][None, :])
        kept_here: list[int] = []
        for i in range(len(block)):
            score, similar = float(best[i]), int(best_at[i])
            if kept_here:
                row = inner[i, kept_here]
                j = int(row.argmax())
                if row[j] > score:  # strictly: on a tie the earlier pool entry stays
                    score, similar = float(row[j]), int(block[kept_here[j]])
            keep = not score > threshold
            replay.keep.append(keep)
            replay.score.append(score)
            replay.similar.append(similar if score > 0 else -1)
            if keep:
                kept_here.append(i)
        join(block[kept_here].tolist())
    return replay


def _row_maxima(rows: np.ndarray, scores: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct row (rows ascending): the highest positive score and its first index."""
    positive = scores > 0
    rows, index = rows[positive], np.flatnonzero(positive)
    if not rows.size:
        return rows, np.zeros(0), index
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    top = np.maximum.reduceat(scores[index], starts)
    at_top = np.flatnonzero(scores[index] == np.repeat(top, np.diff(np.r_[starts, rows.size])))
    hit, first = np.unique(rows[at_top], return_index=True)
    return hit, top, index[at_top[first]]


def _prefix_lengths(longest: int, level: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per token count l: the prefix (rarest tokens) two texts reaching `level` share k of.

    F = 2 * LCS / (la + lb) >= L with LCS <= lb gives LCS >= L * la / (2 - L) =: t (the
    margin keeps the ceiling from rounding up past an exact integer). The j-th rarest of
    the t or more tokens two texts share sits among each one's first l - t + j tokens, so
    their k rarest shared tokens are in both prefixes of l - t + k. Texts with t < k may
    share fewer: the level is not usable for them (they go to the next, or the whole pool).
    """
    length = np.arange(longest + 1)
    shared = np.ceil(level * length / (2 - level) - _SAFE)
    return np.clip(length - shared + k, 0, length).astype(np.intp), shared >= k


def _signatures(tokens: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """Every text's tokens as ranks, rarest first: flat ranks and each text's offset.

    A token is counted with its occurrence number ("the" twice gives ("the", 0) and
    ("the", 1)), so the multiset overlap of two texts is the size of the intersection of
    their rank sets. Ranks order these by how many texts hold them, over the whole stream
    (prefix filtering needs one fixed order; rarest first keeps posting lists short).
    """
    ids: dict[tuple[str, int], int] = {}
    flat: list[int] = []
    for text_tokens in tokens:
        seen: dict[str, int] = {}
        for token in text_tokens:
            occurrence = seen.get(token, 0)
            seen[token] = occurrence + 1
            flat.append(ids.setdefault((token, occurrence), len(ids)))
    elements = np.array(flat, dtype=np.int64)
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.argsort(np.bincount(elements, minlength=len(ids)), kind="stable")] = np.arange(
        len(ids))
    lengths = np.array([len(t) for t in tokens], dtype=np.int64)
    owner = np.repeat(np.arange(len(tokens)), lengths)
    ranks = rank[elements]
    ranks = ranks[np.lexsort((ranks, owner))]
    return ranks, np.concatenate([[0], np.cumsum(lengths)])


class _Index:
    """Pool positions by key (k ranks all in a text's prefix), in sorted runs.

    The pool only grows, so each join adds a run, and runs of similar size merge (a binary
    counter): a few runs at any time, each entry re-sorted O(log n) times. A run holds its
    distinct keys, where each one's positions start, and the positions.
    """

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.size = 0  # pool texts indexed: positions 0 .. size - 1

    def add(self, keys: np.ndarray, positions: np.ndarray, texts: int) -> None:
        self.size += texts
        while self.runs and len(self.runs[-1][2]) <= 2 * len(positions):
            run_keys, starts, run_positions = self.runs.pop()
            keys = np.concatenate([np.repeat(run_keys, np.diff(starts)), keys])
            positions = np.concatenate([run_positions, positions])
        order = np.argsort(keys, kind="stable")
        keys, positions = keys[order], positions[order]
        first = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if keys.size else _NONE
        self.runs.append((keys[first], np.r_[first, len(keys)], positions))

    def probe(self, keys: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Pairs row << 32 | pool position for every pool text under a row's key, sorted."""
        found = [_NONE]
        for run_keys, starts, positions in self.runs:
            if not run_keys.size:
                continue
            at = np.searchsorted(run_keys, keys)
            hit = np.flatnonzero(run_keys[np.minimum(at, len(run_keys) - 1)] == keys)
            low, counts = starts[at[hit]], starts[at[hit] + 1] - starts[at[hit]]
            total = int(counts.sum())
            if total:
                # low[i], low[i] + 1, ..., for each key i in turn
                steps = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
                hits = positions[np.repeat(low, counts) + steps]
                found.append(np.repeat(rows[hit].astype(np.int64), counts) << 32 | hits)
        found = np.sort(np.concatenate(found))
        return found[np.r_[True, found[1:] != found[:-1]]] if found.size else found


def _members(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Whether each value is in the sorted array."""
    if not sorted_set.size:
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[at] == values


def _keys(texts: np.ndarray, prefixes: np.ndarray, k: int, ranks: np.ndarray,
          offsets: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every k ranks within each text's prefix as one key, and which text it is of.

    Keys of three ranks wrap around int64 past 2 million distinct tokens; two texts that
    share the ranks always share the key, so a collision only adds a pair to score.
    """
    keys, which = [_NONE], [_NONE]
    for prefix in np.unique(prefixes).tolist():
        if prefix < k:
            continue
        chosen = np.flatnonzero(prefixes == prefix)
        window = ranks[offsets[texts[chosen]][:, None] + np.arange(prefix)]  # ascending
        key = np.zeros((len(chosen), comb(prefix, k)), dtype=np.int64)
        for column in np.array(list(combinations(range(prefix), k))).T:
            key = key * size + window[:, column]
        keys.append(key.ravel())
        which.append(np.repeat(chosen, key.shape[1]))
    return np.concatenate(keys), np.concatenate(which)


_NONE = np.zeros(0, dtype=np.int64)


def _lcs(queries: list[Any], choices: list[Any], workers: int) -> np.ndarray:
    """Token LCS lengths of every query with every choice, in C++."""
    from rapidfuzz import process
    from rapidfuzz.distance import LCSseq

    return process.cdist(queries, choices, scorer=LCSseq.similarity, dtype=np.int32,
                         workers=workers)


def _pair_lcs(queries: list[Any], choices: list[Any], rows: np.ndarray,
              columns: np.ndarray) -> np.ndarray:
    """Token LCS lengths of the pairs (queries[rows[i]], choices[columns[i]]), rows sorted.

    rapidfuzz converts each text once per `cdist` call, which costs more than the LCS
    (about 250 ns a pair with one query, 70 with many; its pairwise `cpdist` converts
    both sides of every pair). So the pairs are scored one `cdist` per query, unless they
    are dense enough that all queries against all their choices at once costs less.
    """
    if not rows.size:
        return np.zeros(0, dtype=np.int32)
    used_rows, row_at = np.unique(rows, return_inverse=True)
    used_columns, column_at = np.unique(columns, return_inverse=True)
    if len(used_rows) * len(used_columns) * _DENSE_PAIR_COST < len(rows):
        lcs = _lcs([queries[r] for r in used_rows.tolist()],
                   [choices[c] for c in used_columns.tolist()], -1)
        return lcs[row_at, column_at]
    lcs = np.zeros(len(rows), dtype=np.int32)
    bounds = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1], True])
    for start, end in zip(bounds[:-1], bounds[1:], strict=False):
        lcs[start:end] = _lcs([queries[rows[start]]],
                              [choices[c] for c in columns[start:end].tolist()], 1)[0]
    return lcs


# A pair in a full `cdist` on both cores costs this fraction of one scored query by query.
_DENSE_PAIR_COST = 0.15


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
        records.
        """
        threshold = self.config.threshold
        texts = [text for _, text in self._seeds] + [self._text(r) for r in records]
        ids = [seed_id for seed_id, _ in self._seeds] + [r.id for r in records]
        replay = full_scan(texts[:len(self._seeds)], texts[len(self._seeds):], threshold)
        return [Verdict(keep=keep, reason="" if keep else f"rouge_l>{threshold:g}",
                        scores={"rouge_l_max": score,
                                "most_similar": texts[similar] if similar >= 0 else None,
                                "most_similar_id": ids[similar] if similar >= 0 else None})
                for keep, score, similar in zip(*replay, strict=True)]


def _as_lists(codes: list[Any]) -> list[list[int]]:
    """Strings of token codes as lists of the same integers."""
    return [[ord(c) for c in code] if isinstance(code, str) else code for code in codes]
