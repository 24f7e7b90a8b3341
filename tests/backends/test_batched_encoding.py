"""`encode_requests`: one template render and one tokenizer call per kind, same ids.

The backends encode a whole batch at once (scripts/bench_generation.py measured the
per-request calls at a few per cent of vLLM's wall time on a small model); each prompt
must still get exactly the ids it got alone.
"""

import pytest
from backend_requests import chat, raw

from distill.backends.hf import encode_request, encode_requests

TEXTS = ["The quick brown fox", "", "List three colours: red, green and blue",
         "1. Explain gravity\n2.", "Hello! How can I help you today?  Thank you"]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def alone(tokenizer, request):
    """The encoding before batching: one render and one tokenizer call for this request."""
    if request.messages is not None:
        text = tokenizer.apply_chat_template(request.messages, add_generation_prompt=True,
                                             tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(request.prompt)["input_ids"])


def mixed_requests():
    requests = []
    for i, text in enumerate(TEXTS):
        requests.append(chat(f"c{i}", text or "x", max_tokens=4))
        requests.append(raw(f"r{i}", text, max_tokens=4))
    return requests


def test_batch_gives_each_request_its_own_ids(tokenizer):
    requests = mixed_requests()
    batched = encode_requests(tokenizer, requests)
    assert batched == [alone(tokenizer, r) for r in requests]
    assert batched == [encode_request(tokenizer, r) for r in requests]
    assert len({len(ids) for ids in batched}) > 3  # lengths differ: no padding crept in


class CountingTokenizer:
    """The real tokenizer, counting the calls made to it."""

    def __init__(self, tokenizer):
        self.tokenizer, self.calls, self.renders = tokenizer, 0, 0
        self.chat_template = tokenizer.chat_template

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.tokenizer(*args, **kwargs)

    def apply_chat_template(self, *args, **kwargs):
        self.renders += 1
        return self.tokenizer.apply_chat_template(*args, **kwargs)


def test_one_render_and_one_call_per_kind(tokenizer):
    counting = CountingTokenizer(tokenizer)
    encode_requests(counting, mixed_requests())
    assert (counting.renders, counting.calls) == (1, 2)
    only_chats = [r for r in mixed_requests() if r.messages is not None]
    counting = CountingTokenizer(tokenizer)
    encode_requests(counting, only_chats)
    assert (counting.renders, counting.calls) == (1, 1)


def test_bad_chats_are_named(tokenizer):
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    bare.chat_template = None
    with pytest.raises(ValueError, match="request c1: chat messages given but the tokenizer"):
        encode_requests(bare, [raw("r0", "a"), chat("c1", "b")])
    empty = chat("e", "x")
    empty.messages.clear()
    with pytest.raises(ValueError, match="request e: messages is empty"):
        encode_requests(tokenizer, [chat("c0", "a"), empty])
