import math
import random

import pytest
from pydantic import ValidationError

from distill.filters.base import FilterContext, run_funnel
from distill.filters.perplexity import Config
from distill.metrics.perplexity import load_scorer, sequence_perplexities
from distill.records import Example

REPETITIVE = "the cat sat on the mat. " * 12
TRAINING_PROSE = [
    "The quick brown fox jumps over the lazy dog.",
    "Translate hello into French and Spanish, then sort the words.",
    "Name a fruit that is yellow and a vegetable that is green.",
    "Summarise the following paragraph in one sentence, please.",
]
# Held out: scored, never trained on.
PROSE = [
    "The lazy dog sleeps under the brown table.",
    "Write a short poem about the sea and the wind.",
    "List three colours: red, green and blue.",
    "What is 12 plus 30? The answer is 42.",
    "Give me a list of five animals that live in the forest.",
    "Question: Why is the sky blue? Answer: Because of Rayleigh scattering.",
]


def noise(seed):
    rng = random.Random(seed)
    return "".join(rng.choice("qzxjvkw%$#@~^&*()[]{}<>|0123456789") for _ in range(60))


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory):
    """A tiny Llama trained for a few steps on the prose and the repetitive sentence."""
    import torch

    from distill.tinymodel import build_tiny_model

    corpus = TRAINING_PROSE + [REPETITIVE]
    path = build_tiny_model(tmp_path_factory.mktemp("ppl") / "model", corpus * 4,
                            vocab_size=300, hidden_size=64, heads=1, layers=1)
    scorer = load_scorer(path, device="cpu")
    model, tokenizer = scorer.model, scorer.tokenizer
    batch = tokenizer([tokenizer.bos_token + text for text in corpus], padding=True,
                      add_special_tokens=False, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    # One thread: on a loaded machine, intra-op threads spin and make this ~20x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(40):
            model(**batch, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(path)
    return path


def records(outputs):
    return [Example(id=f"r{i}", instruction="Say something.", output=text)
            for i, text in enumerate(outputs)]


def test_training_separates_repetitive_prose_and_noise(reference_model):
    values = sequence_perplexities(reference_model, [REPETITIVE, *PROSE, noise(0)],
                                   device="cpu")
    assert values[0] < min(values[1:-1]) and max(values[1:-1]) < values[-1]


def test_percentile_bounds_drop_both_tails(reference_model):
    outputs = [REPETITIVE, *PROSE, noise(1), REPETITIVE[:70], noise(2)]
    config = Config(model=str(reference_model), low_percentile=20, high_percentile=80,
                    device="cpu")
    result = run_funnel([config.build(FilterContext())], records(outputs))
    dropped = {r.id: r.reason for r in result.rejected}
    assert dropped == {"r0": "too_predictable", "r8": "too_predictable",
                       "r7": "too_surprising", "r9": "too_surprising"}
    kept = {r.id: r.scores["perplexity"]["perplexity"] for r in result.kept}
    assert set(kept) == {f"r{i}" for i in range(1, 7)}
    assert all(math.isfinite(v) and v > 0 for v in kept.values())


def test_absolute_bounds_and_unscorable_records(reference_model):
    values = sequence_perplexities(reference_model, [REPETITIVE, *PROSE, noise(3)],
                                   device="cpu")
    low = (values[0] + min(values[1:-1])) / 2
    high = (max(values[1:-1]) + values[-1]) / 2
    config = Config(model=str(reference_model), min_perplexity=low, max_perplexity=high,
                    device="cpu")
    verdicts = config.build(FilterContext())(records([REPETITIVE, *PROSE, noise(3), ""]))
    assert [v.reason for v in verdicts] == ["too_predictable"] + [""] * 6 + [
        "too_surprising", ""]
    # a base model, not a student trained on responses: its output is scored as raw text
    assert verdicts[0].scores == {"perplexity": pytest.approx(values[0], rel=1e-4),
                                  "bound": low, "scored": "output"}
    assert verdicts[-1].keep and verdicts[-1].scores == {"perplexity": None, "scored": "output"}


def test_output_given_prompt_scores_the_output_only(reference_model):
    config = Config(model=str(reference_model), text="output_given_prompt", device="cpu")
    record = Example(id="a", instruction="What is 12 plus 30?", output="The answer is 42.")
    verdict = config.build(FilterContext())([record])[0]
    expected = sequence_perplexities(reference_model, [record.output], device="cpu",
                                     contexts=[record.prompt_text + "\n\n"])[0]
    assert verdict.keep and verdict.scores["perplexity"] == pytest.approx(expected)
    whole = config.model_copy(update={"text": "prompt_output"}).build(FilterContext())([record])[0]
    assert whole.scores["perplexity"] != pytest.approx(expected)


def test_bounds_are_validated():
    with pytest.raises(ValidationError, match="min_perplexity"):
        Config(model="org/m", min_perplexity=10, max_perplexity=5)
    with pytest.raises(ValidationError, match="low_percentile"):
        Config(model="org/m", low_percentile=90, high_percentile=10)
    with pytest.raises(ValidationError):
        Config(model="org/m", high_percentile=101)


def test_the_model_is_a_model_spec_and_a_declared_dependency(reference_model, tmp_path):
    config = Config(model=str(reference_model))  # a bare string, as recipes write it
    assert config.model.model == str(reference_model)
    assert config.dependencies().models == {"reference": config.model}
    assert Config(model={"model": "org/m"}).dependencies().models["reference"].model == "org/m"
    with pytest.raises(ValidationError, match="not found"):
        Config(model=str(tmp_path / "missing"))
    # the scorer loads the checkpoint as it is: a revision or chat template would be ignored
    with pytest.raises(ValidationError, match="revision"):
        Config(model={"model": "org/m", "revision": "v2"})
