"""An exact pruned novelty scan: `full_scan`'s result, scoring fewer pairs. Not run by the filter.

`pruned_scan` gives the novelty filter's decisions, recorded maxima and most similar
instructions bit for bit while scoring only the pool instructions that could hold each
maximum (prefix filtering over an index of rare-token combinations, level by level).
The filter does not use it: because the recorded maximum must stay exact, a candidate
whose maximum is low has to look at most of the pool, and on 2 cores it was slower than
the full scan on scripts/bench_novelty.py's templated stream (0.7-0.9x at 10K-200K
instructions) and on a Zipf-vocabulary stream of novel texts (0.1x at 50K). It stays as
the tested base of what would make a million instructions take minutes (a decision-only
mode and a native pairwise kernel: docs/perf_novelty.md), and `bench_novelty.py --scale`
measures it.
"""

from __future__ import annotations

from itertools import combinations
from math import comb
from typing import Any

import numpy as np

from distill.filters.novelty import (
    _MAX_BLOCK,
    Replay,
    _as_lists,
    _best_matches,
    _Encoder,
    _lcs,
    rouge_l_fmeasure,
    rouge_tokens,
)

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
