"""Shared fixtures. Everything runs offline: no model hub, no network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest  # noqa: E402

# A small, varied corpus: prose, numbered lists, chat-ish lines, digits and punctuation,
# so the trained tokenizer covers what prompts in tests look like.
TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Write a short poem about the sea and the wind.",
    "List three colours: red, green and blue.",
    "1. Explain gravity to a child.\n2. Name a fruit that is yellow.\n3. Translate hello.",
    "Instruction: Summarise the following paragraph in one sentence.",
    "Input: The cat sat on the mat. Output: A cat sat down.",
    "What is 12 plus 30? The answer is 42.",
    "Give me a list of five animals that live in the forest.",
    "Question: Why is the sky blue? Answer: Because of Rayleigh scattering.",
    "Sort these numbers: 9, 3, 7, 1, 5, 0, 2, 4, 6, 8.",
    "Hello! How can I help you today? Thank you, goodbye.",
] * 8


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised tiny Llama checkpoint (head size 64, chat template) on disk."""
    from distill.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model", TINY_CORPUS)


@pytest.fixture(scope="session")
def fake_hub_cache(tmp_path_factory):
    """A local hub cache with a tiny Qwen2.5-base-like student and a Llama teacher (fakehub)."""
    from fakehub import build_fake_hub

    return build_fake_hub(tmp_path_factory.mktemp("fake-hub"), TINY_CORPUS)


@pytest.fixture
def fake_hub(fake_hub_cache, monkeypatch):
    """The fake hub's cache, active for one test: HF_HUB_CACHE points at it, offline."""
    from fakehub import activate

    activate(monkeypatch, fake_hub_cache.cache)
    return fake_hub_cache
