"""A faulty OpenAI-compatible server on loopback, for the chaos tests.

`ChaosServer(model_dir, faults)` serves `/v1/completions` and `/v1/chat/completions`
with distill's own HF backend on a real local model (requests answered one at a time,
each with its own seed, so an answer never depends on what else is in flight), and
injects faults at the given rates: 429 with Retry-After, 500 and 503, a dropped
connection, a 200 whose JSON is cut off, a 200 without `choices`, and a reply slower
than the client's timeout. Whether an attempt is faulty is drawn from the request body
and how often that body was sent before, so a run meets faults at the same attempts on
every try of the test (the first faults go round every kind, then kinds are drawn).
`faults` can be changed while the server runs (`server.faults = {}`).

Log-probabilities are served in vLLM's form: `logprobs` / `top_logprobs` (chat) or an
integer `logprobs` (completions), tokens as "token_id:<id>" when the body asks
`return_tokens_as_token_ids` (unless `token_ids=False`: a server that names tokens by
their text), and each position's alternatives built as vLLM builds them, from a dict that
starts with the sampled token (chat keeps its first n entries, completions n + 1).
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from distill.backends.base import GenerationRequest, Sampling
from distill.backends.hf import HFBackend

FAULTS = ("429", "500", "503", "drop", "truncated", "no_choices", "slow")
# rates seen from busy hosted endpoints at peak: a few percent each
REALISTIC = {"429": 0.06, "500": 0.02, "503": 0.03, "drop": 0.02, "truncated": 0.02,
             "no_choices": 0.02, "slow": 0.02}


class ChaosServer:
    """The server; `url` is its base URL, `served` counts answered requests by kind."""

    def __init__(self, model_dir: str, faults: dict[str, float], slow_s: float = 3.0,
                 token_ids: bool = True) -> None:
        self.backend = HFBackend(model=model_dir, batch_size=1)
        self.token_ids = token_ids  # whether return_tokens_as_token_ids is honoured
        self.faults = dict(faults)
        self.slow_s = slow_s
        self.sent: Counter[str] = Counter()  # attempts per request body
        self.injected: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()  # answers per request body
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_port}/v1"

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self.backend.close()

    def _fault(self, body: bytes) -> str | None:
        digest = hashlib.sha256(body).hexdigest()
        with self._lock:
            attempt = self.sent[digest]
            self.sent[digest] += 1
        draw = random.Random(f"{digest}:{attempt}").random()
        for fault in FAULTS:
            draw -= self.faults.get(fault, 0.0)
            if draw < 0:
                with self._lock:
                    # the first faults go round every kind, so a short run meets them all
                    unseen = [f for f in FAULTS if self.faults.get(f) and f not in self.injected]
                    fault = unseen[0] if unseen else fault
                    self.injected[fault] += 1
                return fault
        return None

    def answer(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The completion a healthy server gives (OpenAI's response shapes)."""
        chat = path.endswith("/chat/completions")
        sampling = Sampling(
            temperature=float(payload.get("temperature", 1.0)),
            top_p=float(payload.get("top_p", 1.0)),
            max_tokens=int(payload.get("max_tokens") or payload.get("max_completion_tokens")
                           or 16),
            n=int(payload.get("n", 1)), stop=tuple(payload.get("stop") or ()),
            # the sampled tokens' log-probabilities, and the top-n (at least the ids)
            seed=payload.get("seed"), logprobs=payload.get("logprobs") not in (None, False),
            top_logprobs=max(1, self._alternatives(chat, payload))
            if payload.get("logprobs") not in (None, False) else 0)
        request = GenerationRequest(
            id="r", sampling=sampling, messages=payload["messages"] if chat else None,
            prompt=None if chat else payload["prompt"])
        with self._model_lock:
            generations = self.backend.generate([request])
        as_ids = self.token_ids and bool(payload.get("return_tokens_as_token_ids"))
        choices = [({"index": g.index, "message": {"role": "assistant", "content": g.text},
                     "logprobs": self._logprobs(g, chat, payload, as_ids)}
                    if chat else {"index": g.index, "text": g.text,
                                  "logprobs": self._logprobs(g, chat, payload, as_ids)})
                   | {"finish_reason": g.finish_reason} for g in generations]
        completion = sum(g.completion_tokens for g in generations)
        return {"id": "chaos", "object": "chat.completion" if chat else "text_completion",
                "created": 0, "model": payload.get("model", ""), "choices": choices,
                "usage": {"prompt_tokens": generations[0].prompt_tokens,
                          "completion_tokens": completion,
                          "total_tokens": generations[0].prompt_tokens + completion}}

    @staticmethod
    def _alternatives(chat: bool, payload: dict[str, Any]) -> int:
        """How many top tokens per position the reply shows (vLLM's `num_logprobs`)."""
        if chat:
            return int(payload.get("top_logprobs") or 0) if payload.get("logprobs") else 0
        return int(payload.get("logprobs") or 0)

    def _logprobs(self, generation: Any, chat: bool, payload: dict[str, Any],
                  as_ids: bool) -> dict[str, Any] | None:
        """A choice's `logprobs` as vLLM's server writes them (None when not asked)."""
        if payload.get("logprobs") in (None, False):
            return None
        shown = self._alternatives(chat, payload)
        tokens = generation.tokens
        assert tokens is not None  # asked for whenever logprobs are

        def name(token_id: int) -> str:
            return (f"token_id:{token_id}" if as_ids
                    else self.backend.tokenizer.decode([token_id]))

        steps = []
        for position, sampled in enumerate(tokens.token_ids.tolist()):
            # vLLM's dict for one position: the sampled token first, then the top n
            step = {sampled: generation.logprobs[position]}
            step.update(zip(tokens.top_ids[position].tolist(),
                            tokens.top_logprobs[position].tolist(), strict=True))
            steps.append((sampled, step))
        if chat:
            return {"content": [
                {"token": name(sampled), "logprob": step[sampled], "bytes": None,
                 "top_logprobs": [{"token": name(t), "logprob": lp, "bytes": None}
                                  for t, lp in list(step.items())[:shown]]}
                for sampled, step in steps]}
        return {"tokens": [name(sampled) for sampled, _ in steps],
                "token_logprobs": [step[sampled] for sampled, step in steps],
                "top_logprobs": [{name(t): lp for t, lp in list(step.items())[:shown + 1]}
                                 for _, step in steps],
                "text_offset": [0] * len(steps)}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None
                      ) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - the http.server hook
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                fault = server._fault(body)
                error = json.dumps({"error": {"message": f"injected {fault}"}}).encode()
                try:
                    if fault == "drop":
                        self.close_connection = True
                        self.connection.close()
                        return
                    if fault in ("429", "500", "503"):
                        headers = {"retry-after": "0.1"} if fault == "429" else {}
                        self._send(int(fault), error, headers)
                        return
                    if fault == "slow":
                        time.sleep(server.slow_s)
                    reply = server.answer(self.path, json.loads(body))
                    if fault == "no_choices":
                        reply.pop("choices")
                    data = json.dumps(reply).encode()
                    if fault == "truncated":
                        data = data[:len(data) // 2]
                    elif fault is None:
                        with server._lock:
                            server.answered[hashlib.sha256(body).hexdigest()] += 1
                    self._send(200, data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
