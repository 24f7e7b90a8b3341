"""OpenAIBackend's own retry loop, concurrency bound and key hygiene, against a stub
OpenAI-compatible server on loopback (the real-server test is test_openai_server.py)."""

import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from distill.backends.base import FAILED, GenerationRequest, Sampling, load_backend

KEY = "sk-test-DO-NOT-LEAK-0123456789"
KEY_ENV = "DISTILL_TEST_OPENAI_KEY"


def chat_body(n=1, text="hello"):
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "stub",
        "choices": [{"index": i, "message": {"role": "assistant", "content": f"{text} {i}"},
                     "finish_reason": "length" if i == 0 else "stop", "logprobs": None}
                    for i in range(n)],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5 * n, "total_tokens": 7 + 5 * n},
    }


def completion_body(text="done"):
    return {
        "id": "cmpl-1", "object": "text_completion", "created": 0, "model": "stub",
        "choices": [{"index": 0, "text": text, "finish_reason": "stop",
                     "logprobs": {"tokens": ["do", "ne"], "token_logprobs": [-0.5, -0.25],
                                  "text_offset": [0, 2], "top_logprobs": None}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


class Stub:
    """A scripted server: each POST takes the next (status, body, delay) step."""

    def __init__(self, steps=None, default=(200, None, 0.0)):
        self.steps = list(steps or [])
        self.default = default
        self.requests = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                with stub.lock:
                    stub.requests.append({"path": self.path, "json": payload,
                                          "auth": self.headers.get("authorization")})
                    step = stub.steps.pop(0) if stub.steps else stub.default
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                status, body, delay = step
                try:
                    time.sleep(delay)
                    if body is None:
                        body = (chat_body(payload.get("n", 1)) if "chat" in self.path
                                else completion_body())
                    data = body if isinstance(body, bytes) else json.dumps(body).encode()
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    if status == 429:
                        self.send_header("retry-after", "0")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with stub.lock:
                        stub.in_flight -= 1

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub():
    servers = []

    def make(steps=None, default=(200, None, 0.0)):
        server = Stub(steps, default)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    return KEY_ENV


def make_backend(url, **options):
    options.setdefault("api_key_env", KEY_ENV)
    options.setdefault("backoff_base", 0.01)
    options.setdefault("backoff_max", 0.05)
    return load_backend("openai", model="stub", base_url=url, **options)


def chat_request(rid="c", n=1, **sampling):
    return GenerationRequest(id=rid, sampling=Sampling(n=n, **sampling),
                             messages=[{"role": "user", "content": "hi"}])


def test_retries_429_then_503_then_succeeds(stub, key_env, caplog):
    server = stub([(429, {"error": {"message": "slow down"}}, 0.0),
                   (503, {"error": {"message": "overloaded"}}, 0.0)])
    backend = make_backend(server.url)
    caplog.set_level(logging.DEBUG)  # every logger, the SDK's and httpx's included
    [generation] = backend.generate([chat_request(max_tokens=5)])
    assert generation.text == "hello 0"
    assert len(server.requests) == 3
    assert backend.attempts == 3 and backend.retries == 2
    assert all(r["auth"] == f"Bearer {KEY}" for r in server.requests)  # the key is sent...
    retries = [r for r in caplog.records if r.name == "distill.backends.openai"]
    assert any("HTTP 429" in r.getMessage() for r in retries)
    assert any("HTTP 503" in r.getMessage() for r in retries)
    # ...but never logged, never in the identity, never in the repr.
    assert KEY not in caplog.text
    assert KEY not in json.dumps(backend.identity())
    assert KEY not in repr(backend)
    assert KEY not in repr(vars(backend))
    assert backend.identity()["base_url"] == server.url
    assert backend.identity()["model"] == "stub"


def test_gives_up_after_max_retries_with_a_failed_generation(stub, key_env):
    # the request that ran out of retries comes back failed, and the others are kept
    server = stub([(200, None, 0.0)], default=(500, {"error": {"message": "broken"}}, 0.0))
    backend = make_backend(server.url, max_retries=2, max_concurrency=1)
    answered, failed = backend.generate([chat_request("ok"), chat_request("c", n=3)])
    assert answered.text == "hello 0"
    assert (failed.request_id, failed.index, failed.text) == ("c", 0, "")
    assert failed.finish_reason == FAILED and failed.extra["retry"] is True
    assert failed.extra["error"] == f"HTTP 500 from {server.url} after 3 attempts"
    assert len(server.requests) == 1 + 3


def test_client_errors_are_not_retried(stub, key_env):
    server = stub([(400, {"error": {"message": "prompt is  too long"}}, 0.0)])
    backend = make_backend(server.url)
    [failed] = backend.generate([chat_request()])
    assert failed.finish_reason == FAILED and failed.extra["retry"] is False
    assert failed.extra["error"] == f"HTTP 400 from {server.url}: prompt is too long"
    assert len(server.requests) == 1


def test_a_wrong_key_or_model_stops_at_once(stub, key_env):
    import openai

    server = stub(default=(404, {"error": {"message": "no such model"}}, 0.0))
    with pytest.raises(openai.NotFoundError):
        make_backend(server.url).generate([chat_request()])
    assert len(server.requests) == 1


TRUNCATED = json.dumps(chat_body()).encode()[:60]


@pytest.mark.parametrize("body, why", [
    (TRUNCATED, "JSONDecodeError"),
    (b"[]", "no choices"),
    ({k: v for k, v in chat_body().items() if k != "choices"}, "no choices, expected 1"),
    ({**chat_body(), "choices": [{"index": 0, "finish_reason": "stop"}]}, "has no message"),
    (chat_body(n=2), "2 choices, expected 1"),
], ids=["cut-off-json", "not-an-object", "no-choices", "no-message", "wrong-n"])
def test_malformed_replies_are_retried(stub, key_env, caplog, body, why):
    server = stub([(200, body, 0.0)])
    backend = make_backend(server.url)
    [generation] = backend.generate([chat_request()])
    assert generation.text == "hello 0"  # the second reply was whole
    assert len(server.requests) == 2
    assert "malformed reply" in caplog.text and why in caplog.text


def test_malformed_replies_run_out_of_retries_as_a_failed_generation(stub, key_env):
    server = stub(default=(200, TRUNCATED, 0.0))
    [failed] = make_backend(server.url, max_retries=1).generate([chat_request()])
    assert failed.finish_reason == FAILED and failed.extra["retry"] is True
    assert failed.extra["error"].startswith("malformed reply (JSONDecodeError")


def test_timeouts_are_retried(stub, key_env, caplog):
    server = stub([(200, None, 2.0)])  # the first answer comes too late
    backend = make_backend(server.url, timeout=0.3)
    [generation] = backend.generate([chat_request()])
    assert generation.text == "hello 0"
    assert len(server.requests) == 2
    assert "APITimeoutError" in caplog.text


def test_connection_errors_are_retried(key_env, caplog):
    import socket

    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = make_backend(f"http://127.0.0.1:{port}/v1", max_retries=2)
    [failed] = backend.generate([chat_request()])
    assert failed.finish_reason == FAILED
    assert failed.extra["error"].startswith("APIConnectionError from ")
    assert backend.attempts == 3
    assert caplog.text.count("APIConnectionError") >= 2


def test_bounded_concurrency_and_progress(stub, key_env):
    server = stub(default=(200, None, 0.2))
    backend = make_backend(server.url, max_concurrency=2)
    seen = []
    requests = [chat_request(f"r{i}") for i in range(6)]
    generations = backend.generate(requests, progress=seen.append)
    assert [g.request_id for g in generations] == [f"r{i}" for i in range(6)]
    assert server.max_in_flight == 2
    assert seen == [1, 2, 3, 4, 5, 6]


def test_request_mapping_chat_and_completion(stub, key_env):
    server = stub()
    backend = make_backend(server.url, extra_body={"top_k": 5})
    chat = chat_request("c", n=2, temperature=0.3, top_p=0.9, max_tokens=11,
                        presence_penalty=0.5, frequency_penalty=0.25, stop=("\n\n",), seed=9)
    prompt = GenerationRequest(id="p", prompt="1. Name",
                               sampling=Sampling(max_tokens=4, logprobs=True))
    generations = backend.generate([chat, prompt])
    sent = {r["path"]: r["json"] for r in server.requests}
    body = sent["/v1/chat/completions"]
    assert body["messages"] == [{"role": "user", "content": "hi"}]
    assert (body["n"], body["temperature"], body["top_p"], body["max_tokens"]) == (2, 0.3, 0.9, 11)
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, 0.25)
    assert body["stop"] == ["\n\n"] and body["seed"] == 9 and body["top_k"] == 5
    assert "logprobs" not in body
    completion = sent["/v1/completions"]
    assert completion["prompt"] == "1. Name" and completion["logprobs"] == 0
    assert isinstance(completion["seed"], int)  # derived from the request id
    c0, c1, p0 = generations
    assert (c0.request_id, c0.index, c0.finish_reason) == ("c", 0, "length")
    assert (c1.index, c1.finish_reason, c1.text) == (1, "stop", "hello 1")
    assert c0.prompt_tokens == 7 and c0.completion_tokens + c1.completion_tokens == 10
    assert c0.extra["completion_tokens_estimated"] is True
    assert (p0.text, p0.completion_tokens, p0.logprobs) == ("done", 2, [-0.5, -0.25])


def test_max_tokens_param_for_chat(stub, key_env):
    server = stub()
    backend = make_backend(server.url, max_tokens_param="max_completion_tokens")
    backend.generate([chat_request(max_tokens=7)])
    body = server.requests[0]["json"]
    assert body["max_completion_tokens"] == 7 and "max_tokens" not in body


def test_missing_key_variable_is_an_error(monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=KEY_ENV):
        load_backend("openai", model="m", base_url="http://127.0.0.1:9/v1",
                     api_key_env=KEY_ENV)


def test_no_key_for_local_servers_and_chat_template_warning(stub, caplog):
    server = stub()
    backend = load_backend("openai", model="stub", base_url=server.url, api_key_env=None,
                           chat_template="{{ messages }}")
    assert "chat_template is ignored" in caplog.text
    backend.generate([chat_request()])
    assert server.requests[0]["auth"] == "Bearer EMPTY"


def test_generate_inside_a_running_event_loop(stub, key_env):
    import asyncio

    server = stub()
    backend = make_backend(server.url)

    async def main():
        return backend.generate([chat_request()])

    [generation] = asyncio.run(main())
    assert generation.text == "hello 0"
