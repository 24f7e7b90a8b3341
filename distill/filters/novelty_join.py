"""The novelty filter's exact threshold join: `full_scan`'s decisions from far fewer pairs.

`threshold_join(seeds, texts, threshold)` replays the texts in order against the growing
pool (seeds + kept texts) and gives, for every text, exactly the full scan's decision
(rouge_score's float F-measure `> threshold`, for any threshold in [0, 1], boundary
cases such as 0.7000000000000001 included) and, for a DROPPED text, the exact maximum
and the first pool text with it. For a kept text it gives no maximum: proving a low
maximum exact means scoring most of the pool, which is what made an exact pruned scan
slower than the full scan (docs/perf_novelty.md).

Why it is exact (prefix filtering, PPJoin, Xiao et al. 2008):

- F = 2 * LCS / (la + lb) up to rounding, and the token LCS is at most the multiset
  overlap O of the two texts. A pair whose float F is above t has exact F above
  t_low = t - 1e-9 (the float error of F is ~1e-16), so O >= ceil(t_low * (la + lb) / 2)
  =: o(la, lb), and since O <= lb, O >= t_low * la / (2 - t_low) =: a(la) whatever lb is.
- Tokens are counted with their occurrence number ("the" twice is ("the", 0) and
  ("the", 1)), so O is the size of the intersection of two sets of such elements.
  Elements are ranked rarest first over the whole input (one fixed order). Two sets with
  at least c shared elements share one among each one's first l - c + 1 (its prefix);
  with c = max(1, ceil(a(l))) that prefix depends on the text's own length only, so every
  pool text is indexed once, by the elements of its prefix.
- A text probes the postings of its prefix elements. A pool text met there is counted
  while "shared so far + 1 + the shorter remainder of the two sorted lists" can still
  reach o(la, lb) (the positional filter; it subsumes the length filter) and dropped from
  the candidates once it cannot. The rest are verified: their overlap, then the token LCS
  (bit-parallel over int32 token ids) and rouge_score's float formula.
- So every pool text scoring above the threshold is verified: the best verified score,
  when above the threshold, is the exact maximum, its first pool text the full scan's.

Blocks of texts probe the pool as it stood before the block on all cores, score the
block's earlier texts that share a prefix element with them (the same filter), then are
resolved one by one in order (as `full_scan`), so the result equals a one-by-one replay.
The kernels are numba (`novelty_kernels`), compiled on first use and cached on disk;
inputs small enough for the dense full scan to take about a second run that instead
(same outputs for what this reports), so quickstart-size runs never compile.
"""

from __future__ import annotations

import os
from array import array
from typing import NamedTuple

import numpy as np

from distill.filters.novelty import full_scan, rouge_tokens

# Below this many pairs (texts x (seeds + texts), an upper bound on the full scan's), the
# dense full scan takes about a second and needs no compiling (bench_novelty.py --scale).
_DENSE_PAIRS = 30_000_000
# Texts per block: each is probed against the pool as it stood before its block.
_BLOCK = 256
# Far above the float error of rouge_score's F (~1e-16): bounds derived from the threshold
# minus this never leave out a pair whose float F is above the threshold.
_MARGIN = 1e-9


class Decisions(NamedTuple):
    """A stream replayed against the growing pool, one entry per text."""

    keep: list[bool]
    score: list[float | None]  # the exact maximum for a dropped text; None for a kept one
    similar: list[int]  # a dropped text's first pool text with that maximum (an index
    # into seeds + texts); -1 for a kept text
    verified: int  # pairs whose LCS was computed (-1 when the dense full scan ran)


def threshold_join(seeds: list[str], texts: list[str], threshold: float,
                   block: int | None = None, dense_pairs: int | None = None) -> Decisions:
    """The full scan's decisions, and for dropped texts its maximum and most similar text.

    Args:
        seeds: texts that start the pool.
        texts: the stream, in order; a text joins the pool when it is kept.
        threshold: a text is dropped when its F-measure with a pool text is above this.
        block: texts per block (default `_BLOCK`); any value gives the same result.
        dense_pairs: run the dense full scan up to this many pairs (default
            `_DENSE_PAIRS`; 0 always joins).
    """
    dense_pairs = _DENSE_PAIRS if dense_pairs is None else dense_pairs
    if len(texts) * (len(seeds) + len(texts)) <= dense_pairs:
        full = full_scan(seeds, texts, threshold)
        return Decisions(full.keep, [None if k else s for k, s in zip(full.keep, full.score,
                                                                       strict=True)],
                         [-1 if k else s for k, s in zip(full.keep, full.similar,
                                                         strict=True)], -1)
    from distill.filters.novelty_kernels import join

    seq, offsets, vocabulary = _token_ids([*seeds, *texts])
    ranks = _sorted_ranks(seq, offsets, vocabulary)
    lengths = np.diff(offsets)
    t_low = threshold - _MARGIN
    prefix = lengths - np.maximum(1, np.ceil(t_low * lengths / (2 - t_low))) + 1
    prefix = np.clip(prefix, 0, lengths).astype(np.int64)
    # Each element's postings can hold every text with it in its prefix: that is the room.
    in_prefix = np.arange(len(ranks)) - np.repeat(offsets[:-1], lengths) < np.repeat(
        prefix, lengths)
    room = np.bincount(ranks[in_prefix], minlength=int(ranks.max(initial=-1)) + 1)
    post_start = np.concatenate([[0], np.cumsum(room)]).astype(np.int64)
    keep, score, similar, verified = join(
        seq, ranks, offsets, prefix, post_start, max(vocabulary, 1), len(seeds),
        float(threshold), t_low, block or _BLOCK, _slots())
    keep = keep.tolist()
    return Decisions(keep, [None if k else s for k, s in zip(keep, score.tolist(),
                                                              strict=True)],
                     similar.tolist(), int(verified.sum()))


def _slots() -> int:
    """Parallel shares of a block: numba's threads (all cores unless NUMBA_NUM_THREADS).

    numba's default threading layer here is OpenMP, whose idle threads busy-wait between
    parallel regions: on 2 cores shared with another job, 2 threads took 1.7x as long as
    1 (bench stream, 50K). Its `workqueue` layer sleeps instead and was as fast as 1
    thread there, so it is chosen unless the user picked a layer or numba already started
    one in this process.
    """
    import numba
    from numba.np.ufunc import parallel

    if not parallel._is_initialized and "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"
    return numba.get_num_threads()


def _token_ids(texts: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """rouge_score's tokens of every text as int32 ids: flat ids, offsets, vocabulary.

    The ids go straight into a C array: a million texts' tokens kept as Python lists of
    strings and ints would take over a gigabyte.
    """
    ids: dict[str, int] = {}
    flat = array("i")
    lengths = np.empty(len(texts), dtype=np.int64)
    for at, text in enumerate(texts):
        tokens = rouge_tokens(text)
        flat.extend([ids.setdefault(token, len(ids)) for token in tokens])
        lengths[at] = len(tokens)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return np.frombuffer(flat, dtype=np.int32).copy(), offsets, len(ids)


def _sorted_ranks(seq: np.ndarray, offsets: np.ndarray, vocabulary: int) -> np.ndarray:
    """Every text's elements (token, occurrence) as ranks, rarest first, sorted per text.

    Element ids run token by token, then by occurrence; an element is held at most once
    per text, so its count is how many texts hold it. Ties keep the id order, so the order
    is one fixed total order.
    """
    from distill.filters.novelty_kernels import occurrences, sort_each

    occurrence, per_token = occurrences(seq, offsets, vocabulary)
    first = np.concatenate([[0], np.cumsum(per_token)[:-1]]).astype(np.int64)
    element = first[seq] + occurrence
    held = np.bincount(element, minlength=int(per_token.sum()))
    rank = np.empty(len(held), dtype=np.int32)
    rank[np.argsort(held, kind="stable")] = np.arange(len(held), dtype=np.int32)
    ranks = rank[element]
    sort_each(ranks, offsets)
    return ranks
