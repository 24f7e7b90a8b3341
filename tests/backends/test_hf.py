"""HFBackend on the tiny checkpoint: real transformers generation on the CPU."""

import pytest
from backend_requests import chat, raw

from distill.backends.base import load_backend

PROMPTS = [
    "The quick brown fox",
    "Write",
    "List three colours: red, green and blue, then five animals of the forest",
    "1. Explain gravity\n2.",
]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    backend = load_backend("hf", model=str(tiny_model_dir), batch_size=16, device="cpu")
    yield backend
    backend.close()


def texts(generations):
    return {(g.request_id, g.index): g.text for g in generations}


def test_n_samples_in_request_order(backend):
    requests = [raw("a", PROMPTS[0], temperature=1.0, max_tokens=12, n=3),
                raw("b", PROMPTS[1], temperature=1.0, max_tokens=12, n=2)]
    generations = backend.generate(requests)
    assert [(g.request_id, g.index) for g in generations] == [
        ("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1)]
    a_texts = {g.text for g in generations if g.request_id == "a"}
    assert len(a_texts) == 3  # three independent samples
    for g in generations:
        assert g.finish_reason in ("stop", "length")
        assert 0 < g.completion_tokens <= 12
        assert g.prompt_tokens == len(backend.tokenizer(PROMPTS[0 if g.request_id == "a" else 1])
                                      ["input_ids"])


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_left_padded_batch_equals_one_by_one(backend, temperature):
    requests = [raw(f"r{i}", p, temperature=temperature, max_tokens=16, n=2, logprobs=True)
                for i, p in enumerate(PROMPTS)]
    batched = backend.generate(requests)
    single = [g for r in requests for g in backend.generate([r])]
    assert [(g.request_id, g.index, g.text, g.completion_tokens, g.finish_reason)
            for g in batched] == [
        (g.request_id, g.index, g.text, g.completion_tokens, g.finish_reason) for g in single]
    for b, s in zip(batched, single, strict=True):
        assert b.logprobs == pytest.approx(s.logprobs, abs=1e-4)


def test_same_seed_same_text_across_batch_compositions(backend):
    sampling = {"temperature": 1.0, "top_p": 0.95, "max_tokens": 16, "n": 2}
    target = raw("target", PROMPTS[2], **sampling)
    others = [raw(f"o{i}", p, **sampling) for i, p in enumerate(PROMPTS)]
    alone = texts(backend.generate([target]))
    first = texts(backend.generate([others[0], target, others[1]]))
    reordered = texts(backend.generate([others[3], others[2], target, others[0]][::-1]))
    original_batch_size = backend.batch_size
    try:
        backend.batch_size = 3
        small_batches = texts(backend.generate(others + [target]))
    finally:
        backend.batch_size = original_batch_size
    for index in range(2):
        key = ("target", index)
        assert alone[key] == first[key] == reordered[key] == small_batches[key]
    # Each request's seed comes from its id (no Sampling.seed): others differ from target.
    assert alone[("target", 0)] != alone[("target", 1)]


def test_explicit_seed_and_backend_seed(backend, tiny_model_dir):
    a = backend.generate([raw("x", PROMPTS[0], temperature=1.0, max_tokens=16, seed=7)])
    b = backend.generate([raw("another-id", PROMPTS[0], temperature=1.0, max_tokens=16, seed=7)])
    c = backend.generate([raw("x", PROMPTS[0], temperature=1.0, max_tokens=16, seed=8)])
    assert a[0].text == b[0].text  # Sampling.seed wins over the request id
    assert a[0].text != c[0].text
    d = backend.generate([raw("x", PROMPTS[0], temperature=1.0, max_tokens=16)])
    original = backend.seed
    try:
        backend.seed = original + 1
        e = backend.generate([raw("x", PROMPTS[0], temperature=1.0, max_tokens=16)])
    finally:
        backend.seed = original
    assert d[0].text != e[0].text  # the backend seed feeds derived request seeds


def test_greedy_is_deterministic(backend):
    request = raw("g", PROMPTS[0], temperature=0.0, max_tokens=20, n=2)
    first = backend.generate([request])
    second = backend.generate([request])
    assert first[0].text == first[1].text == second[0].text
    assert first[0].completion_tokens == 20


def test_finish_reason_length_and_token_counts(backend):
    [generation] = backend.generate([raw("l", PROMPTS[1], temperature=1.0, max_tokens=3,
                                         logprobs=True)])
    assert generation.finish_reason == "length"
    assert generation.completion_tokens == 3
    assert len(generation.logprobs) == 3
    assert all(lp <= 0 for lp in generation.logprobs)


def test_eos_gives_stop(backend, monkeypatch):
    request = raw("e", PROMPTS[0], temperature=0.0, max_tokens=10)
    [free] = backend.generate([request])
    first_token = backend.tokenizer(free.text)["input_ids"][0]
    # Pretend the first greedy token is an end-of-sequence token.
    monkeypatch.setattr(backend, "eos_ids", backend.eos_ids | {first_token})
    [stopped] = backend.generate([request])
    assert stopped.finish_reason == "stop"
    assert stopped.completion_tokens == 1
    assert stopped.text == ""


def test_chat_template_applied(backend, tiny_model_dir):
    messages = [{"role": "user", "content": "Write a poem about the sea."}]
    [generation] = backend.generate([chat("c", messages[0]["content"], max_tokens=4)])
    expected = backend.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                     tokenize=True)
    expected_ids = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert generation.prompt_tokens == len(expected_ids)
    assert backend.encode(chat("c", messages[0]["content"])) == list(expected_ids)
    assert generation.prompt_tokens > len(backend.tokenizer(messages[0]["content"])["input_ids"])


def test_chat_template_override(tiny_model_dir, tmp_path):
    template = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}[assistant] {% endif %}")
    path = tmp_path / "template.jinja"
    path.write_text(template)
    override = load_backend("hf", model=str(tiny_model_dir), chat_template=str(path),
                            device="cpu")
    try:
        request = chat("c", "hello there", max_tokens=2)
        rendered = override.tokenizer.decode(override.encode(request))
        assert rendered == "[user] hello there\n[assistant] "
        default = load_backend("hf", model=str(tiny_model_dir), device="cpu")
        assert (override.identity()["chat_template_sha256"]
                != default.identity()["chat_template_sha256"])
        assert override.identity()["weights_sha256"] == default.identity()["weights_sha256"]
        default.close()
    finally:
        override.close()


def test_stop_strings_cut_text_and_end_generation(backend):
    request = raw("s", PROMPTS[0], temperature=1.0, max_tokens=40, seed=3)
    [free] = backend.generate([request])
    assert free.finish_reason == "length" and len(free.text) > 12
    stop = free.text[8:11]
    cut = free.text.find(stop)
    [stopped] = backend.generate([raw("s", PROMPTS[0], temperature=1.0, max_tokens=40, seed=3,
                                      stop=("never-there", stop))])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut]
    assert stopped.completion_tokens < free.completion_tokens


def test_penalties_change_greedy_repetition(backend):
    base = raw("p", "The quick", temperature=0.0, max_tokens=20)
    [plain] = backend.generate([base])
    tokens = backend.tokenizer(plain.text)["input_ids"]
    assert len(set(tokens)) < len(tokens)  # the random model loops greedily
    [penalised] = backend.generate([raw("p", "The quick", temperature=0.0, max_tokens=20,
                                        presence_penalty=100.0)])
    assert penalised.text != plain.text
    [frequency] = backend.generate([raw("p", "The quick", temperature=0.0, max_tokens=20,
                                        frequency_penalty=100.0)])
    assert frequency.text == penalised.text  # one occurrence is already a huge penalty


def test_progress_reports_finished_requests(backend):
    seen = []
    requests = [raw(f"r{i}", p, temperature=0.0, max_tokens=4, n=2) for i, p in
                enumerate(PROMPTS)]
    original = backend.batch_size
    try:
        backend.batch_size = 3
        backend.generate(requests, progress=seen.append)
    finally:
        backend.batch_size = original
    assert seen == sorted(seen) and seen[-1] == len(requests)


def test_context_limit_caps_max_tokens(backend):
    limit = backend.max_positions
    prompt_ids = backend.tokenizer(PROMPTS[0])["input_ids"]
    long_prompt = PROMPTS[0] + " fox" * (limit - len(prompt_ids) - 10)
    length = len(backend.tokenizer(long_prompt)["input_ids"])
    [generation] = backend.generate([raw("long", long_prompt, temperature=0.0,
                                         max_tokens=100)])
    assert generation.finish_reason == "length"
    assert generation.completion_tokens == limit - length
    with pytest.raises(ValueError, match="context"):
        backend.generate([raw("too-long", PROMPTS[0] + " fox" * limit, max_tokens=4)])


def test_identity_is_cached_and_content_based(backend, tiny_model_dir):
    identity = backend.identity()
    assert identity["backend"] == "hf"
    assert identity["model"] == str(tiny_model_dir.resolve())
    assert identity["source"] == "local"
    assert len(identity["fingerprint"]) == 64
    assert backend.identity() == identity


def test_lora_adapter_directory(tiny_model_dir, tmp_path, backend):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)  # B starts at zero: same outputs as the base
    adapter = load_backend("hf", model=str(adapter_dir), device="cpu")
    try:
        request = raw("a", PROMPTS[0], temperature=1.0, max_tokens=10, seed=1)
        assert adapter.generate([request])[0].text == backend.generate([request])[0].text
        identity = adapter.identity()
        assert identity["base"]["fingerprint"] == backend.identity()["fingerprint"]
        assert identity["fingerprint"] != backend.identity()["fingerprint"]
    finally:
        adapter.close()
