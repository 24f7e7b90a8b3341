import math

import pytest

from distill.metrics.perplexity import load_scorer, sequence_perplexities


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return load_scorer(tiny_model_dir, device="cpu")


TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hi",
    "List three colours: red, green and blue. Sort these numbers: 9, 3, 7, 1.",
    "",
    "What is 12 plus 30?",
]


def test_agrees_with_the_models_own_loss(scorer):
    import torch

    values = sequence_perplexities(scorer, TEXTS, batch_size=2)
    tokenizer = scorer.tokenizer
    for text, value in zip(TEXTS, values, strict=True):
        if not text:
            assert math.isnan(value)
            continue
        ids = [tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([ids])
        with torch.no_grad():
            loss = scorer.model(input_ids=ids, labels=ids).loss
        assert value == pytest.approx(math.exp(float(loss)), rel=1e-4)


def test_batching_and_order_do_not_change_results(scorer):
    one = sequence_perplexities(scorer, TEXTS, batch_size=1)
    many = sequence_perplexities(scorer, TEXTS, batch_size=8)
    reversed_ = sequence_perplexities(scorer, TEXTS[::-1], batch_size=3)[::-1]
    for a, b, c in zip(one, many, reversed_, strict=True):
        if math.isnan(a):
            assert math.isnan(b) and math.isnan(c)
        else:
            assert a == pytest.approx(b, rel=1e-4) and a == pytest.approx(c, rel=1e-4)


def test_path_tuple_and_progress(tiny_model_dir, scorer):
    seen = []
    by_path = sequence_perplexities(str(tiny_model_dir), TEXTS[:2], device="cpu",
                                    progress=lambda done, total: seen.append((done, total)))
    by_pair = sequence_perplexities((scorer.model, scorer.tokenizer), TEXTS[:2])
    assert by_path == pytest.approx(by_pair, rel=1e-5)
    assert seen[-1] == (2, 2)


def test_max_length_scores_the_first_tokens(scorer):
    import torch

    long = " ".join(["the quick brown fox"] * 50)
    prefix = sequence_perplexities(scorer, [long], max_length=8)[0]
    ids = [scorer.tokenizer.bos_token_id]
    ids += scorer.tokenizer(long, add_special_tokens=False)["input_ids"][:7]
    ids = torch.tensor([ids])
    with torch.no_grad():
        loss = scorer.model(input_ids=ids, labels=ids).loss
    assert prefix == pytest.approx(math.exp(float(loss)), rel=1e-4)
    with pytest.raises(ValueError, match="max_length"):
        sequence_perplexities(scorer, ["x"], max_length=1)


def test_context_conditions_but_is_not_scored(scorer):
    import torch

    context, text = "What is 12 plus 30?", " The answer is 42."
    value = sequence_perplexities(scorer, [text], contexts=[context])[0]
    tokenizer = scorer.tokenizer
    prefix = [tokenizer.bos_token_id] + tokenizer(context, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prefix + tokenizer(text, add_special_tokens=False)["input_ids"]])
    labels = ids.clone()
    labels[0, :len(prefix)] = -100
    with torch.no_grad():
        loss = scorer.model(input_ids=ids, labels=labels).loss
    assert value == pytest.approx(math.exp(float(loss)), rel=1e-4)
    with pytest.raises(ValueError, match="contexts"):
        sequence_perplexities(scorer, [text], contexts=[])
