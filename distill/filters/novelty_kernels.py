"""The novelty join's native kernels (numba): probe, count, verify, resolve in order.

`join` replays a stream of token sequences against a growing pool (seeds + kept texts)
and answers, for each text, whether its ROUGE-L F-measure with some pool text is above
the threshold and, if so, the exact maximum and the first pool text with it. Only pairs
that pass an exact prefix / positional filter are verified; see
`distill.filters.novelty_join` for the arithmetic and the guarantees, and for the arrays'
layout.

Compiled on first use (`cache=True` keeps the machine code in `__pycache__`, or numba's
user-wide cache when the package directory is read-only, and compiles in memory when
neither is writable).
"""

from __future__ import annotations

from collections.abc import Callable
from math import ceil
from typing import Any

import numba
import numpy as np
from numba import prange


def _jit(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """numba.njit with an on-disk cache where one can be written, in memory otherwise."""
    def decorate(function: Callable[..., Any]) -> Any:
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # numba found no writable cache directory
            return numba.njit(cache=False, **options)(function)
    return decorate


_ONE = np.uint64(1)
_ZERO = np.uint64(0)
_ALL = ~np.uint64(0)


@_jit()
def occurrences(seq: np.ndarray, offsets: np.ndarray, vocabulary: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each token's occurrence number within its text, and its most in one text.

    "a b a" gives occurrences 0, 0, 1, and "a" is held at most twice.
    """
    seen = np.zeros(vocabulary, dtype=np.int32)
    most = np.zeros(vocabulary, dtype=np.int64)
    out = np.empty(len(seq), dtype=np.int32)
    for x in range(len(offsets) - 1):
        for k in range(offsets[x], offsets[x + 1]):
            out[k] = seen[seq[k]]
            seen[seq[k]] += 1
        for k in range(offsets[x], offsets[x + 1]):
            most[seq[k]] = max(most[seq[k]], seen[seq[k]])
            seen[seq[k]] = 0
    return out, most


@_jit()
def sort_each(values: np.ndarray, offsets: np.ndarray) -> None:
    """Sort each text's slice of `values` in place."""
    for x in range(len(offsets) - 1):
        values[offsets[x]:offsets[x + 1]].sort()


@_jit()
def fmeasure(lcs: int, target_length: int, prediction_length: int) -> float:
    """rouge_score's F-measure with its float operations (`novelty.rouge_l_fmeasure`)."""
    precision = lcs / max(prediction_length, 1)
    recall = lcs / max(target_length, 1)
    total = precision + recall
    if total > 0:
        return 2 * precision * recall / total
    return 0.0


@_jit()
def needed_overlap(la: int, lb: int, t_low: float) -> int:
    """The fewest shared tokens a pair scoring above the threshold can have (at least 1).

    F = 2 * LCS / (la + lb) and LCS <= multiset overlap; `t_low` is the threshold minus a
    margin far above the float error of F, so no pair that rouge_score's floats put above
    the threshold is ever left out.
    """
    return max(1, ceil(t_low * (la + lb) / 2))


@_jit()
def _set_masks(masks: np.ndarray, seq: np.ndarray, start: int, length: int) -> None:
    for k in range(length):
        token = seq[start + k]
        masks[token] = masks[token] | (_ONE << np.uint64(k))


@_jit()
def _clear_masks(masks: np.ndarray, seq: np.ndarray, start: int, length: int) -> None:
    for k in range(length):
        masks[seq[start + k]] = _ZERO


@_jit()
def _lcs_bits(masks: np.ndarray, length: int, seq: np.ndarray, start: int, other: int) -> int:
    """Token LCS of the text whose match masks are set (<= 64 tokens) with another one.

    Bit-parallel (Allison-Dix / Hyyro): one word update per token of the other text.
    """
    v = _ALL
    for k in range(other):
        u = v & masks[seq[start + k]]
        v = (v + u) | (v - u)
    low = _ALL if length == 64 else (_ONE << np.uint64(length)) - _ONE
    return _popcount(~v & low)


@_jit()
def _popcount(word: np.uint64) -> int:
    """Set bits of a word (SWAR: a dozen operations, no branches)."""
    word = word - ((word >> np.uint64(1)) & np.uint64(0x5555555555555555))
    word = (word & np.uint64(0x3333333333333333)) + (
        (word >> np.uint64(2)) & np.uint64(0x3333333333333333))
    word = (word + (word >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return int((word * np.uint64(0x0101010101010101)) >> np.uint64(56))


@_jit()
def _lcs_table(x_seq: np.ndarray, a: int, la: int, y_seq: np.ndarray, b: int, lb: int
               ) -> int:
    """Token LCS by dynamic programming, for texts past one machine word."""
    row = np.zeros(lb + 1, dtype=np.int32)
    for i in range(la):
        diagonal = 0
        token = x_seq[a + i]
        for j in range(lb):
            above = row[j + 1]
            if token == y_seq[b + j]:
                row[j + 1] = diagonal + 1
            elif row[j] > above:
                row[j + 1] = row[j]
            diagonal = above
    return row[lb]


@_jit()
def _overlap_reaches(x_ranks: np.ndarray, a: int, la: int, y_ranks: np.ndarray, b: int,
                     lb: int, needed: int) -> bool:
    """Whether two texts' sorted rank lists share at least `needed` elements.

    Stops as soon as the shared elements so far plus the shorter remainder fall short.
    """
    i = j = shared = 0
    while i < la and j < lb:
        if shared + min(la - i, lb - j) < needed:
            return False
        if x_ranks[a + i] == y_ranks[b + j]:
            shared += 1
            i += 1
            j += 1
        elif x_ranks[a + i] < y_ranks[b + j]:
            i += 1
        else:
            j += 1
    return shared >= needed


@_jit()
def _score(seq: np.ndarray, ranks: np.ndarray, a: int, la: int, y_seq: np.ndarray,
           y_ranks: np.ndarray, b: int, lb: int, masks: np.ndarray, t_low: float,
           verified: np.ndarray, slot: int) -> float:
    """The F-measure of x with y if the length bound lets it exceed the threshold, else 0.

    x's match masks must be set when x has at most 64 tokens: then the bit-parallel LCS
    (one word operation per token of y) is cheaper than merging the two rank lists, so
    it runs directly; longer texts merge first and run the table only when the overlap
    can reach the threshold.
    """
    needed = needed_overlap(la, lb, t_low)
    if min(la, lb) < needed:
        return 0.0
    if la <= 64:
        lcs = _lcs_bits(masks, la, y_seq, b, lb)
    elif _overlap_reaches(ranks, a, la, y_ranks, b, lb, needed):
        lcs = _lcs_table(seq, a, la, y_seq, b, lb)
    else:
        return 0.0
    verified[slot] += 1
    return fmeasure(lcs, la, lb)


@_jit()
def _probe(x: int, seq: np.ndarray, ranks: np.ndarray, offsets: np.ndarray,
           prefix: np.ndarray, post_start: np.ndarray, post_fill: np.ndarray,
           post_pool: np.ndarray, post_length: np.ndarray, post_at: np.ndarray,
           pool_seq: np.ndarray, pool_ranks: np.ndarray, pool_offsets: np.ndarray,
           threshold: float, t_low: float, count: np.ndarray,
           touched: np.ndarray, masks: np.ndarray, verified: np.ndarray, slot: int
           ) -> tuple[float, int]:
    """The best score of x above the threshold against the indexed pool, and its pool position.

    Walks the postings of x's prefix ranks; a pool text is counted while the positional
    bound (shared so far + 1 + the shorter remainder) can still reach the needed overlap,
    and marked -1 (out) once it cannot. Survivors are verified exactly. Returns (0, -1)
    when no pool text scores above the threshold.
    """
    a, la = offsets[x], offsets[x + 1] - offsets[x]
    n_touched = 0
    for i in range(prefix[x]):
        rank = ranks[a + i]
        for p in range(post_start[rank], post_start[rank] + post_fill[rank]):
            y = post_pool[p]
            seen = count[y]
            if seen < 0:
                continue
            if seen == 0:
                touched[n_touched] = y
                n_touched += 1
            lb = post_length[p]  # kept in the postings: no look-up in the pool
            rest = min(la - i - 1, lb - post_at[p] - 1)
            if seen + 1 + rest < needed_overlap(la, lb, t_low):
                count[y] = -1
            else:
                count[y] = seen + 1
    best, best_at = 0.0, -1
    for k in range(n_touched):
        y = touched[k]
        if count[y] > 0:
            b = pool_offsets[y]
            score = _score(seq, ranks, a, la, pool_seq, pool_ranks, b, pool_offsets[y + 1] - b,
                           masks, t_low, verified, slot)
            if score > threshold and (score > best or (score == best and y < best_at)):
                best, best_at = score, y
        count[y] = 0
    return best, best_at


@_jit()
def _add(text: int, position: int, seq: np.ndarray, ranks: np.ndarray, offsets: np.ndarray,
         prefix: np.ndarray, post_start: np.ndarray, post_fill: np.ndarray,
         post_pool: np.ndarray, post_length: np.ndarray, post_at: np.ndarray,
         pool_text: np.ndarray, pool_seq: np.ndarray, pool_ranks: np.ndarray,
         pool_offsets: np.ndarray) -> None:
    """Add a text to the pool: its copy, and its prefix ranks to the postings.

    Each postings list stays in pool order.
    """
    pool_text[position] = text
    start = pool_offsets[position]
    end = start + offsets[text + 1] - offsets[text]
    pool_seq[start:end] = seq[offsets[text]:offsets[text + 1]]
    pool_ranks[start:end] = ranks[offsets[text]:offsets[text + 1]]
    pool_offsets[position + 1] = end
    for k in range(prefix[text]):
        rank = ranks[offsets[text] + k]
        at = post_start[rank] + post_fill[rank]
        post_pool[at] = position
        post_length[at] = offsets[text + 1] - offsets[text]
        post_at[at] = k
        post_fill[rank] += 1


@_jit()
def _mark_rows(start: int, size: int, ranks: np.ndarray, offsets: np.ndarray,
               prefix: np.ndarray, block_rows: np.ndarray, bit: np.uint64) -> None:
    """Set (bit 1) or clear (bit 0) each block row's bit under its prefix elements."""
    for row in range(size):
        x = start + row
        for k in range(prefix[x]):
            rank = ranks[offsets[x] + k]
            word = row // 64
            if bit:
                block_rows[rank, word] |= _ONE << np.uint64(row % 64)
            else:
                block_rows[rank, word] = _ZERO


@_jit(parallel=True)
def join(seq: np.ndarray, ranks: np.ndarray, offsets: np.ndarray, prefix: np.ndarray,
         post_start: np.ndarray, vocabulary: int, n_seeds: int, threshold: float,
         t_low: float, block: int, slots: int
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Replay texts n_seeds.. against the pool of seeds and kept texts, in order.

    Blocks of texts probe the pool as it stood before the block (in parallel, `slots`
    interleaved shares with their own scratch arrays), score the block's earlier texts,
    then are resolved one by one in order, as `novelty.full_scan` does.

    Returns:
        keep (bool per stream text), score (the exact maximum for dropped texts, 0 for
        kept ones), similar (the text index of the first pool text with that maximum;
        -1 for kept texts) and the number of pairs verified (per slot).
    """
    n_texts = len(offsets) - 1
    n_stream = n_texts - n_seeds
    post_fill = np.zeros(len(post_start) - 1, dtype=np.int64)
    post_pool = np.empty(post_start[-1], dtype=np.int32)
    post_length = np.empty(post_start[-1], dtype=np.int32)
    post_at = np.empty(post_start[-1], dtype=np.int32)
    # The pool's texts: which they are, and their tokens and ranks copied in pool order
    # (verifying reads them at random: a compact copy stays in cache longer).
    pool_text = np.empty(n_texts, dtype=np.int64)
    pool_seq = np.empty(len(seq), dtype=np.int32)
    pool_ranks = np.empty(len(seq), dtype=np.int32)
    pool_offsets = np.zeros(n_texts + 1, dtype=np.int64)
    for s in range(n_seeds):
        _add(s, s, seq, ranks, offsets, prefix, post_start, post_fill, post_pool,
             post_length, post_at, pool_text, pool_seq, pool_ranks, pool_offsets)
    pool_size = n_seeds

    keep = np.zeros(n_stream, dtype=np.bool_)
    score = np.zeros(n_stream)
    similar = np.full(n_stream, -1, dtype=np.int64)
    count = np.zeros((slots, n_texts), dtype=np.int32)
    touched = np.empty((slots, n_texts), dtype=np.int32)
    masks = np.zeros((slots, vocabulary), dtype=np.uint64)
    verified = np.zeros(slots, dtype=np.int64)
    best = np.zeros(block)
    best_at = np.empty(block, dtype=np.int64)  # a text index, -1 for none
    inner = np.zeros((block, block))
    kept_here = np.empty(block, dtype=np.int64)
    # Per element, the block's rows holding it in their prefix, as bits.
    words = (block + 63) // 64
    block_rows = np.zeros((len(post_start) - 1, words), dtype=np.uint64)

    for start in range(n_seeds, n_texts, block):
        size = min(block, n_texts - start)
        _mark_rows(start, size, ranks, offsets, prefix, block_rows, _ONE)
        for slot in prange(slots):
            for row in range(slot, size, slots):
                x = start + row
                a, la = offsets[x], offsets[x + 1] - offsets[x]
                best[row], best_at[row] = 0.0, -1
                inner[row, :row] = 0.0
                if la == 0:  # no tokens: F is 0 against everything
                    continue
                if la <= 64:
                    _set_masks(masks[slot], seq, a, la)
                top, at = _probe(x, seq, ranks, offsets, prefix, post_start, post_fill,
                                 post_pool, post_length, post_at, pool_seq, pool_ranks,
                                 pool_offsets, threshold, t_low,
                                 count[slot], touched[slot], masks[slot], verified, slot)
                if at >= 0:
                    best[row], best_at[row] = top, pool_text[at]
                # The block's earlier texts sharing a prefix element (the pool's filter):
                # counted later, only for those that are kept.
                for word in range((row + 63) // 64):
                    rows = _ZERO
                    for k in range(prefix[x]):
                        rows |= block_rows[ranks[a + k], word]
                    if word == row // 64:  # earlier rows only
                        rows &= (_ONE << np.uint64(row % 64)) - _ONE
                    while rows:
                        lowest = rows & (~rows + _ONE)
                        other = word * 64 + _popcount(lowest - _ONE)
                        y = start + other
                        inner[row, other] = _score(
                            seq, ranks, a, la, seq, ranks, offsets[y],
                            offsets[y + 1] - offsets[y], masks[slot], t_low, verified, slot)
                        rows ^= lowest
                if la <= 64:
                    _clear_masks(masks[slot], seq, a, la)

        _mark_rows(start, size, ranks, offsets, prefix, block_rows, _ZERO)
        n_kept = 0
        for row in range(size):
            top, at = best[row], best_at[row]
            for k in range(n_kept):  # strictly: on a tie the earlier pool text stays
                if inner[row, kept_here[k]] > top:
                    top, at = inner[row, kept_here[k]], start + kept_here[k]
            x = start + row - n_seeds
            if top > threshold:
                score[x], similar[x] = top, at
            else:
                keep[x] = True
                kept_here[n_kept] = row
                n_kept += 1
        for k in range(n_kept):
            text = start + kept_here[k]
            _add(text, pool_size, seq, ranks, offsets, prefix, post_start, post_fill,
                 post_pool, post_length, post_at, pool_text, pool_seq, pool_ranks,
                 pool_offsets)
            pool_size += 1
    return keep, score, similar, verified
