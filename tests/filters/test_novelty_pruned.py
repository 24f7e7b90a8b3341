"""The pruned novelty scan equals the full scan: decisions, maximum scores, most similar.

The pruned scan scores only the pool texts an index of rare-token combinations finds;
these tests replay seeded streams with planted near-duplicates, exact-threshold ties,
equal maxima and empty or one-token texts through both, compare every output, check the
prefix bound the index relies on against rouge_score itself, and check that the pruning
actually leaves pairs out.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rouge_score import rouge_scorer

from distill.filters import novelty, novelty_pruned
from distill.filters.novelty import full_scan, rouge_tokens
from distill.filters.novelty_pruned import pruned_scan

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
VOCAB = [f"w{i}" for i in range(60)] + ["the", "a", "of", "write", "list", "for", "and"]


@pytest.fixture(autouse=True)
def prune_from_the_start(monkeypatch):
    """Prune at any pool size (by default small pools are scored whole: faster there)."""
    monkeypatch.setattr(novelty_pruned, "_PRUNE_FROM", 0)


def planted_stream(rng: random.Random, n: int) -> list[str]:
    """Texts over a small vocabulary: fresh ones, edits of earlier ones, exact copies,
    texts built to score exactly 0.7 or 0.7000000000000001 against an earlier one, and
    empty or one-token texts."""
    out: list[str] = []
    for _ in range(n):
        op = rng.random()
        if out and op < 0.45:  # a near-duplicate: a few words swapped, added or dropped
            words = rng.choice(out).split()
            for _ in range(rng.randint(0, 3)):
                edit = rng.random()
                if edit < 0.4 and words:
                    words[rng.randrange(len(words))] = rng.choice(VOCAB)
                elif edit < 0.7:
                    words.insert(rng.randint(0, len(words)), rng.choice(VOCAB))
                elif words:
                    words.pop(rng.randrange(len(words)))
            out.append(" ".join(words))
        elif out and op < 0.55:  # a tie at the threshold: 7 of 10 shared, or 7 inside 13
            base = rng.choice(out).split()
            if len(base) == 10:
                out.append(" ".join(base[:7] + [rng.choice(VOCAB) + "x" for _ in range(3)]))
            elif len(base) == 13:
                out.append(" ".join(base[:7]))
            else:
                out.append(" ".join(rng.choice(VOCAB) for _ in range(rng.choice([10, 13]))))
        elif op < 0.6:
            out.append(rng.choice(["", "?!", "日本", "w1", "the", "w2 w2"]))
        else:
            out.append(" ".join(rng.choice(VOCAB) for _ in range(rng.randint(1, 16))))
    return out


def assert_same(seeds: list[str], stream: list[str], threshold: float = 0.7) -> None:
    full = full_scan(seeds, stream, threshold)
    pruned = pruned_scan(seeds, stream, threshold)
    assert pruned.keep == full.keep
    assert pruned.score == full.score  # floats, bit for bit
    assert pruned.similar == full.similar


@pytest.mark.parametrize("seed", range(6))
def test_pruned_scan_equals_full_scan_on_planted_streams(seed):
    rng = random.Random(seed)
    seeds, stream = planted_stream(rng, 20), planted_stream(rng, 700)
    full = full_scan(seeds, stream, 0.7)
    # The stream exercises what it should: both outcomes, exact ties, empty texts.
    assert 50 < sum(full.keep) < 650
    assert 0.7 in full.score and 0.7000000000000001 in full.score
    assert 0.0 in full.score
    assert_same(seeds, stream)


@pytest.mark.parametrize("block", [1, 5, 256])
@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.7, 0.95, 1.0])
def test_pruned_scan_equals_full_scan_at_any_threshold_and_block(block, threshold,
                                                                   monkeypatch):
    for module in (novelty, novelty_pruned):
        monkeypatch.setattr(module, "_MAX_BLOCK", block)
    rng = random.Random(100 + block)
    assert_same(planted_stream(rng, 10), planted_stream(rng, 300), threshold)


def test_equal_maxima_name_the_first_pool_text():
    # Both seeds score 0.75 against the candidate; they share different rare tokens with
    # it, so the index finds them through different keys.
    seeds = ["a1 a2 a3 b1", "b2 a2 a3 a4"]
    stream = ["a1 a2 a3 a4"]
    full, pruned = full_scan(seeds, stream, 0.7), pruned_scan(seeds, stream, 0.7)
    assert full.score == [0.75] and full.similar == [0]
    assert pruned == full


def test_empty_pool_empty_and_one_token_texts():
    assert pruned_scan([], [], 0.7) == full_scan([], [], 0.7)
    stream = ["", "x", "x", "?", "x y", "y x", ""]
    assert_same([], stream)
    assert pruned_scan([], stream, 0.7).keep == [True, True, False, True, True, True, True]


def test_integer_codes_past_the_code_point_limit(monkeypatch):
    monkeypatch.setattr(novelty._Encoder, "LIMIT", 5)
    rng = random.Random(7)
    assert_same(planted_stream(rng, 10), planted_stream(rng, 200))


@pytest.mark.parametrize("level,k", novelty_pruned._LEVELS)
def test_prefix_bound_holds_for_every_pair_that_reaches_the_level(level, k):
    """The lemma the index relies on, checked against rouge_score's own F-measure: a pair
    scoring at least `level` shares k ranks within both texts' prefixes."""
    rng = random.Random(int(level * 100))
    texts = planted_stream(rng, 400)
    tokens = [rouge_tokens(t) for t in texts]
    ranks, offsets = novelty_pruned._signatures(tokens)
    prefixes, usable = novelty_pruned._prefix_lengths(max(map(len, tokens)), level, k)
    checked = 0
    for i in range(len(texts)):
        for j in range(i):
            if not tokens[i] or not tokens[j]:
                continue
            score = rouge_scorer._score_lcs(tokens[i], tokens[j]).fmeasure
            if score < level or not usable[len(tokens[i])]:
                continue
            mine = set(ranks[offsets[i]:offsets[i] + prefixes[len(tokens[i])]].tolist())
            theirs = set(ranks[offsets[j]:offsets[j] + prefixes[len(tokens[j])]].tolist())
            assert len(mine & theirs) >= k, (texts[i], texts[j], score)
            checked += 1
    assert checked > 100


def test_pruning_scores_a_fraction_of_the_pairs(monkeypatch):
    """Fails if the filter scores every pair: on a stream with a large vocabulary, most
    pool texts share no token with a candidate and are never scored (even the kept
    candidates' maxima, mostly low, are found through the index)."""
    rng = random.Random(3)
    vocabulary = [f"t{i}" for i in range(5000)]
    stream: list[str] = []
    for _ in range(3000):
        if stream and rng.random() < 0.3:
            words = rng.choice(stream).split()
            words[rng.randrange(len(words))] = rng.choice(vocabulary)
        else:
            words = [rng.choice(vocabulary) for _ in range(rng.randint(6, 14))]
        stream.append(" ".join(words))
    scored = []
    original = novelty._lcs

    def counting(queries, choices, workers):
        scored.append(len(queries) * len(choices))
        return original(queries, choices, workers)

    # Blocks of 32: a block's texts are all scored against each other (the in-order part).
    for module in (novelty, novelty_pruned):
        monkeypatch.setattr(module, "_lcs", counting)
        monkeypatch.setattr(module, "_MAX_BLOCK", 32)
    pruned = pruned_scan([], stream, 0.7)
    pruned_pairs, scored[:] = sum(scored), []
    full = full_scan([], stream, 0.7)
    assert pruned == full
    assert not all(full.keep)
    assert pruned_pairs < 0.1 * sum(scored), (pruned_pairs, sum(scored))


def test_signatures_rank_rarest_first_with_occurrences():
    ranks, offsets = novelty_pruned._signatures([["a", "b", "a"], ["a"], ["a", "c"]])
    # ("a", 0) is in all three texts, ("a", 1), "b" and "c" in one each.
    per_text = [ranks[offsets[i]:offsets[i + 1]].tolist() for i in range(3)]
    assert [len(t) for t in per_text] == [3, 1, 2]
    common = per_text[1][0]
    assert common == max(ranks.tolist())
    assert all(t == sorted(t) for t in per_text)
    assert np.unique(ranks).size == 4


def test_pruning_starts_once_the_pool_is_large(monkeypatch):
    monkeypatch.setattr(novelty_pruned, "_PRUNE_FROM", 150)
    rng = random.Random(11)
    assert_same(planted_stream(rng, 10), planted_stream(rng, 600))


def test_bench_scale_mode_finds_no_differences():
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_novelty.py"
    done = subprocess.run([sys.executable, str(script), "--scale", "--check-n", "600",
                           "--sizes", "300,600"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "differing decisions: 0; differing max scores: 0; differing most similar: 0" \
        in done.stdout
    assert "pruned scan alone" in done.stdout


@pytest.mark.parametrize("dense_cost", [0.0, 1e9])
def test_pairs_scored_all_at_once_or_query_by_query_give_the_same(dense_cost, monkeypatch):
    """0 scores every level's pairs as one dense matrix, 1e9 one query at a time."""
    monkeypatch.setattr(novelty_pruned, "_DENSE_PAIR_COST", dense_cost)
    rng = random.Random(21)
    assert_same(planted_stream(rng, 15), planted_stream(rng, 500))
