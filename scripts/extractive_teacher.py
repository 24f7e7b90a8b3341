"""A stand-in teacher for doc_qa on machines without a real model: extractive, no LLM.

    python scripts/extractive_teacher.py --port 8765 &
    DISTILL_TEACHER_KEY=none distill run recipes/small/domain_qa.yaml

An OpenAI-compatible chat endpoint on loopback (`/v1/chat/completions`, `/v1/models`)
that answers a doc_qa prompt the way the pipeline expects a teacher to, by copying: it
reads the chunk between the prompt's `\"\"\"` fences, picks sentences of at least eight
words (seeded by the request's seed), and writes for each
`Q<i>: Complete this statement from the documentation: "<first half> ..."` and
`A<i>: <the whole sentence>`. Its pairs are grounded by construction and say nothing
about question quality; it lets the whole loop (openai backend, parsing, filters,
decontamination, LoRA training, lm-eval) run on a CPU with no model hub. With
`--malformed-every K`, every K-th chunk (by content hash) gets a reply without Q/A
markers, so the parser's refusals show up in the funnel too. Replace it with any real
server (`vllm serve Qwen/Qwen2.5-7B-Instruct`) for real data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"'(])")


def chunk_of(prompt: str) -> str:
    """The text between the first and last `\"\"\"` fence (the whole prompt if none)."""
    parts = prompt.split('"""')
    return parts[1].strip() if len(parts) >= 3 else prompt


def extractive_reply(prompt: str, seed: int, malformed_every: int = 0) -> str:
    """Q/A pairs copied from the chunk in `prompt` (see the module docstring)."""
    chunk = chunk_of(prompt)
    digest = int(hashlib.sha256(chunk.encode()).hexdigest()[:8], 16)
    if malformed_every and digest % malformed_every == 0:
        return "Sure! The text is about a tool and how to use it."
    wanted = re.search(r"write (\d+) question", prompt, re.IGNORECASE)
    count = int(wanted.group(1)) if wanted else 3
    lines = [line for line in chunk.splitlines() if not line.lstrip().startswith("#")]
    sentences = [" ".join(s.split()) for s in _SENTENCE.split(" ".join(lines))]
    sentences = [s for s in sentences if len(s.split()) >= 8]
    picked = random.Random(seed).sample(sentences, min(count, len(sentences)))
    pairs = []
    for i, sentence in enumerate(sorted(picked, key=sentences.index), start=1):
        words = sentence.split()
        stem = " ".join(words[: len(words) // 2])
        pairs.append(f'Q{i}: Complete this statement from the documentation: "{stem} ..."\n'
                     f"A{i}: {sentence}")
    return "\n".join(pairs) if pairs else "I cannot find a full sentence in this text."


def serve(port: int, malformed_every: int = 0) -> ThreadingHTTPServer:
    """Start the server (call `.serve_forever()`, or run it in a thread)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _send(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):  # noqa: N802 - http.server's naming
            self._send({"object": "list", "data": [{"id": "extractive", "object": "model"}]})

        def do_POST(self):  # noqa: N802
            payload = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
            prompt = payload["messages"][-1]["content"]
            text = extractive_reply(prompt, int(payload.get("seed") or 0), malformed_every)
            n = int(payload.get("n") or 1)
            self._send({
                "id": "chatcmpl-extractive", "object": "chat.completion", "created": 0,
                "model": payload.get("model", "extractive"),
                "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop", "logprobs": None} for i in range(n)],
                "usage": {"prompt_tokens": len(prompt.split()),
                          "completion_tokens": n * len(text.split()),
                          "total_tokens": len(prompt.split()) + n * len(text.split())},
            })

    return ThreadingHTTPServer(("127.0.0.1", port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--malformed-every", type=int, default=0)
    args = parser.parse_args()
    server = serve(args.port, args.malformed_every)
    print(f"extractive teacher on http://127.0.0.1:{server.server_port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
