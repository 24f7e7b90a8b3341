"""Each diversity and coverage metric against values worked out by hand."""

import math

import pytest

from distill.metrics.coverage import kl_divergence, microworld_coverage, tail_mass
from distill.metrics.diversity import (
    compression_ratio,
    distinct_n,
    lexical_diversity,
    mean_pairwise_distance,
    self_bleu,
    tokenize,
    type_token_ratio,
)


def test_tokenize_splits_punctuation_and_lowers():
    assert tokenize("The cat, the DOG.") == ["the", "cat", ",", "the", "dog", "."]


def test_distinct_n():
    assert distinct_n(["a b a b"], 1) == 2 / 4
    assert distinct_n(["a b a b"], 2) == 2 / 3  # ab, ba, ab
    assert distinct_n(["a b", "a c"], 1) == 3 / 4
    assert distinct_n(["a b", "a c"], 2) == 1.0  # n-grams never span two texts
    assert math.isnan(distinct_n(["a"], 2))


def test_type_token_ratio():
    assert type_token_ratio(["The cat, the dog."]) == 5 / 6
    assert type_token_ratio(["x y", "x y"]) == 2 / 4


def test_self_bleu_by_hand():
    # each text against the other: p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0 -> 0.1 (NLTK
    # smoothing method 1: epsilon 0.1 on a zero count), equal lengths so no brevity penalty
    expected = (0.75 * (2 / 3) * 0.5 * 0.1) ** 0.25
    assert self_bleu(["a b c d", "a b c e"]) == pytest.approx(expected, abs=1e-12)
    assert self_bleu(["a b c d", "a b c d"]) == pytest.approx(1.0)
    assert math.isnan(self_bleu(["only one"]))


def test_compression_ratio():
    # zlib level 9 writes 11 bytes for b"abc" (2 header, 5 deflate, 4 checksum)
    assert compression_ratio(["abc"]) == 3 / 11
    # "ab\nab\nab\nab" (11 bytes) compresses to 13 bytes
    assert compression_ratio(["ab"] * 4) == 11 / 13
    repetitive = compression_ratio(["the same sentence again"] * 50)
    varied = compression_ratio([f"sentence {i} about topic {i * 7919 % 1000}" for i in range(50)])
    assert repetitive > varied


def test_mean_pairwise_distance():
    # pairs: orthogonal (1), identical (0), orthogonal (1)
    assert mean_pairwise_distance([[1, 0], [0, 1], [2, 0]]) == pytest.approx(2 / 3)
    assert mean_pairwise_distance([[1, 1], [3, 3]]) == pytest.approx(0.0)


def test_kl_divergence_by_hand():
    true = {"a": 0.5, "b": 0.5}
    exact = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert kl_divergence(true, {"a": 3, "b": 1}, smoothing=0) == pytest.approx(exact)
    smoothed = 0.5 * math.log(0.5 / 0.7) + 0.5 * math.log(0.5 / 0.3)  # (3.5, 1.5) / 5
    assert kl_divergence(true, {"a": 3, "b": 1}) == pytest.approx(smoothed)
    assert kl_divergence(true, {"a": 2, "b": 2}) == pytest.approx(0.0)
    assert kl_divergence(true, {"a": 4}, smoothing=0) == math.inf


def test_tail_mass_by_hand():
    counts = {"a": 6, "b": 3, "c": 1}
    assert tail_mass(counts, ["c"]) == 0.1
    assert tail_mass(counts, ["b", "c"]) == 0.4
    assert math.isnan(tail_mass({}, ["c"]))


def test_microworld_coverage_of_true_and_headless_data():
    from distill.microworld.tasks import generate_tasks

    true = [t.to_example() for t in generate_tasks(1000, seed=1)]
    coverage = microworld_coverage(true)
    assert coverage["recognised"] == 1000
    assert coverage["families_covered"] == 14
    assert coverage["kl_families"] < 0.02
    assert coverage["tail_mass"] == pytest.approx(coverage["true_tail_mass"], abs=0.04)
    head_only = [e for e in true if e.family in ("add", "subtract")]
    collapsed = microworld_coverage(head_only)
    assert collapsed["tail_mass"] == 0.0
    assert collapsed["families_covered"] == 2
    assert collapsed["kl_families"] > coverage["kl_families"] + 1.0
    # free text: a record without family or difficulty fields is recognised from its wording
    from distill.records import Example

    bare = Example(id="x", instruction="Add the two numbers.", input="3 + 4", output="7")
    unknown = Example(id="y", instruction="Write a poem.", output="...")
    free = microworld_coverage([bare, unknown])
    assert free["recognised"] == 1 and free["families"]["add"] == 1.0
    assert free["difficulties"]["1"] == 1.0


def test_lexical_diversity_uses_a_fixed_seeded_sample():
    texts = [f"text number {i} with words {i % 7}" for i in range(300)]
    first = lexical_diversity(texts, sample_size=100, bleu_sample_size=20, seed=3)
    again = lexical_diversity(list(reversed(texts)), sample_size=100, bleu_sample_size=20,
                              seed=3)
    assert first["n"] == 100
    assert set(first) >= {"distinct_1", "distinct_2", "distinct_3", "ttr", "self_bleu",
                          "compression_ratio"}
    assert first == lexical_diversity(texts, sample_size=100, bleu_sample_size=20, seed=3)
    assert again["n"] == 100
