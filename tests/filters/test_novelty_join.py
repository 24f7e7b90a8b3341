"""The threshold join gives the full scan's decisions, and its maxima for dropped texts.

Seeded streams with planted near-duplicates, texts built to score exactly 0.7 and
0.7000000000000001, equal maxima, empty, one-token and long (past one machine word)
texts go through both and every decision, every dropped text's maximum and most similar
text are compared; the overlap bound is checked against rouge_score's own floats; the
filter's two modes are run on records; and the join is checked to verify far fewer
pairs than the full scan scores. The join is forced (`dense_pairs=0`) wherever the size
would pick the dense full scan.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from rouge_score import scoring

from distill.filters import novelty_join
from distill.filters.base import FilterContext
from distill.filters.novelty import Config, full_scan
from distill.filters.novelty_join import threshold_join
from distill.records import Example

ROOT = Path(__file__).resolve().parents[2]
VOCAB = [f"w{i}" for i in range(60)] + ["the", "a", "of", "write", "list", "for", "and"]


def planted_stream(rng: random.Random, n: int, longest: int = 16) -> list[str]:
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
            out.append(" ".join(rng.choice(VOCAB) for _ in range(rng.randint(1, longest))))
    return out


def assert_same(seeds: list[str], stream: list[str], threshold: float = 0.7,
                block: int | None = None):
    """The join equals the full scan on decisions and on every dropped text's outputs."""
    full = full_scan(seeds, stream, threshold)
    joined = threshold_join(seeds, stream, threshold, block=block, dense_pairs=0)
    assert joined.keep == full.keep
    for keep, score, similar, joined_score, joined_similar in zip(
            full.keep, full.score, full.similar, joined.score, joined.similar, strict=True):
        if keep:
            assert (joined_score, joined_similar) == (None, -1)
        else:  # floats bit for bit, and the first pool text with the maximum
            assert (joined_score, joined_similar) == (score, similar)
    return full, joined


@pytest.mark.parametrize("seed", range(6))
def test_join_equals_full_scan_on_planted_streams(seed):
    rng = random.Random(seed)
    seeds, stream = planted_stream(rng, 20), planted_stream(rng, 700)
    full, _ = assert_same(seeds, stream)
    # The stream exercises what it should: both outcomes, exact ties, empty texts.
    assert 50 < sum(full.keep) < 650
    assert 0.7 in full.score and 0.7000000000000001 in full.score
    assert 0.0 in full.score


@pytest.mark.parametrize("block", [1, 5, 256])
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.7000000000000001, 0.8, 0.95,
                                       1.0])
def test_join_equals_full_scan_at_any_threshold_and_block(block, threshold):
    rng = random.Random(100 + block)
    assert_same(planted_stream(rng, 10), planted_stream(rng, 300), threshold, block)


def test_boundary_scores_are_settled_by_rouge_scores_floats():
    seed_10 = " ".join(f"w{i}" for i in range(10))
    at = " ".join([f"w{i}" for i in range(7)] + ["x", "y", "z"])  # exactly 0.7: kept
    seed_13 = " ".join([f"y{i}" for i in range(7)] + [f"v{i}" for i in range(6)])
    above = " ".join(f"y{i}" for i in range(7))  # 0.7000000000000001: dropped
    joined = threshold_join([seed_10, seed_13], [at, above], 0.7, dense_pairs=0)
    assert joined.keep == [True, False]
    assert joined.score == [None, 0.7000000000000001] and joined.similar == [-1, 1]
    # At a threshold just below, the exact 0.7 goes too; within a block, in order.
    joined = threshold_join([], [seed_10, at, seed_13, above], 0.6999999999999999,
                            dense_pairs=0)
    assert joined.keep == [True, False, True, False]
    assert joined.score == [None, 0.7, None, 0.7000000000000001]
    assert joined.similar == [-1, 0, -1, 2]


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.5, 0.6, 0.7, 0.7000000000000001, 0.75,
                                       0.8, 0.9, 1.0])
def test_needed_overlap_never_exceeds_the_lcs_of_a_pair_above_the_threshold(threshold):
    """The bound the join prunes with, against rouge_score's own F-measure: every pair
    whose float F is above the threshold has LCS >= the needed overlap. Without the
    margin it fails: 28 of 29 and 51 tokens (exactly 0.7) is above 0.7000000000000001 in
    rouge_score's floats, and ceil(0.7000000000000001 * 80 / 2) is 29."""
    from distill.filters.novelty_kernels import needed_overlap

    t_low = threshold - novelty_join._MARGIN
    checked = 0
    for la in range(1, 61):
        for lb in range(1, 61):
            for lcs in range(min(la, lb) + 1):
                # rouge_score's _score_lcs from an LCS length, with its own float function
                if scoring.fmeasure(lcs / lb, lcs / la) > threshold:
                    assert lcs >= needed_overlap(la, lb, t_low), (la, lb, lcs)
                    checked += 1
    assert checked > 100 or threshold == 1.0


def test_equal_maxima_name_the_first_pool_text():
    # Both seeds score 0.75 against the candidate through different rare tokens.
    seeds = ["a1 a2 a3 b1", "b2 a2 a3 a4"]
    joined = threshold_join(seeds, ["a1 a2 a3 a4"], 0.7, dense_pairs=0)
    assert joined.score == [0.75] and joined.similar == [0]
    # A seed and a kept text of the same block tie at 0.8 (the kept one is 0.6 from the
    # seed): the seed stays, whether the kept text is in the pool or earlier in the block.
    for block in (1, 256):
        joined = threshold_join(["a b c d e"], ["a b c f g", "a b c d f"], 0.65,
                                block=block, dense_pairs=0)
        assert joined.keep == [True, False]
        assert joined.score == [None, 0.8000000000000002] and joined.similar == [-1, 0]


def test_empty_pool_empty_and_one_token_texts():
    assert threshold_join([], [], 0.7, dense_pairs=0).keep == []
    stream = ["", "x", "x", "?", "x y", "y x", ""]
    _, joined = assert_same([], stream)
    assert joined.keep == [True, True, False, True, True, True, True]
    assert threshold_join(["", "?"], ["", "a"], 0.0, dense_pairs=0).keep == [True, True]


@pytest.mark.parametrize("longest", [64, 65, 150])
def test_texts_past_one_machine_word(longest):
    """64 tokens fill the bit-parallel LCS's word; longer texts take the table."""
    rng = random.Random(longest)
    stream = planted_stream(rng, 200, longest=longest)
    stream += [" ".join(rng.choice(VOCAB) for _ in range(longest)) for _ in range(20)]
    stream += [text + " tail" for text in stream[-20:]]  # near-duplicates of the long ones
    full, _ = assert_same(planted_stream(rng, 5, longest=longest), stream)
    assert not all(full.keep[-20:])


def test_small_inputs_take_the_dense_scan_with_the_same_outputs():
    rng = random.Random(5)
    seeds, stream = planted_stream(rng, 10), planted_stream(rng, 400)
    dense = threshold_join(seeds, stream, 0.7)  # 400 x 410 pairs: under _DENSE_PAIRS
    joined = threshold_join(seeds, stream, 0.7, dense_pairs=0)
    assert dense.verified == -1 and joined.verified > 0  # the two paths did run
    assert dense[:3] == joined[:3]


def test_join_verifies_far_fewer_pairs_than_the_full_scan():
    """Fails if the join scores (nearly) every pair: on a stream with a large vocabulary
    most pool texts share no prefix token with a candidate and are never verified."""
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
    full, joined = assert_same([], stream)
    assert not all(full.keep)
    kept_before = [0, *(sum(full.keep[:i]) for i in range(1, len(stream)))]
    assert joined.verified < 0.01 * sum(kept_before), (joined.verified, sum(kept_before))


def test_elements_are_ranked_rarest_first_with_occurrence_numbers():
    seq, offsets, vocabulary = novelty_join._token_ids(["a b a", "a", "a c"])
    ranks = novelty_join._sorted_ranks(seq, offsets, vocabulary)
    per_text = [ranks[offsets[i]:offsets[i + 1]].tolist() for i in range(3)]
    # ("a", 0) is in all three texts, ("a", 1), "b" and "c" in one each.
    assert [len(t) for t in per_text] == [3, 1, 2]
    assert per_text[1] == [3] and max(ranks) == 3
    assert all(t == sorted(t) for t in per_text)
    assert sorted(set(ranks.tolist())) == [0, 1, 2, 3]


def records_run(stream: list[str], seeds: list[str], **config):
    seed_tasks = [Example(id=f"s{i}", instruction=t) for i, t in enumerate(seeds)]
    records = [Example(id=str(i), instruction=t) for i, t in enumerate(stream)]
    return Config(**config).build(FilterContext(seed_tasks=lambda: seed_tasks))(records)


@pytest.mark.parametrize("dense_pairs", [0, None])
def test_filter_scores_dropped_records_only_unless_score_kept(dense_pairs, monkeypatch):
    if dense_pairs is not None:
        monkeypatch.setattr(novelty_join, "_DENSE_PAIRS", dense_pairs)
    rng = random.Random(8)
    seeds, stream = planted_stream(rng, 10), planted_stream(rng, 300)
    default = records_run(stream, seeds)
    everything = records_run(stream, seeds, score_kept=True)
    assert [v.keep for v in default] == [v.keep for v in everything]
    assert 20 < sum(v.keep for v in default) < 280
    for at, (short, full) in enumerate(zip(default, everything, strict=True)):
        assert set(full.scores) == {"rouge_l_max", "most_similar", "most_similar_id"}
        if short.keep:
            assert short.scores == {}  # kept records carry no novelty scores
        else:
            assert short.scores == full.scores and short.reason == "rouge_l>0.7"
            assert full.scores["most_similar"] in [*seeds, *stream[:at]]


def test_score_kept_enters_the_fingerprint():
    assert Config().semantic_settings()["score_kept"] is False
    assert Config().semantic_settings() != Config(score_kept=True).semantic_settings()


@pytest.mark.slow  # compiles every kernel again: about 10 s
def test_kernels_compile_in_memory_when_no_cache_directory_is_writable():
    """numba raises at decoration when it finds no cache locator; the kernels then compile
    without a cache instead of failing to import."""
    code = ("from distill.filters.novelty_join import threshold_join; "
            "print(threshold_join(['a b c'], ['a b c', 'd e'], 0.7, dense_pairs=0).keep)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=ROOT,
                          env={**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES":
                               "_IPythonCacheLocator"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[False, True]"


def test_bench_scale_mode_finds_no_differences():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_novelty.py"),
                           "--scale", "--check-n", "600", "--sizes", "300,600",
                           "--dense-pairs", "0"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "differing decisions: 0; differing dropped maxima: 0; differing most similar: 0" \
        in done.stdout
    assert "join alone" in done.stdout
