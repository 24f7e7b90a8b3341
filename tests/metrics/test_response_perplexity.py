"""Perplexity under a student trained on responses only scores the response given its prompt.

distill's SFT puts the loss on the assistant's tokens only, so a student never learns to
predict prompts; a whole chat's perplexity under it is dominated by the prompt (median 1e5
with a 1,024-token vocabulary on the quickstart). Under such a student the measure stage
and the perplexity filter score what it was trained to predict, and say so.
"""

from __future__ import annotations

import math
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from distill.filters.base import FilterContext
from distill.filters.perplexity import Config as PerplexityFilter
from distill.flywheel.measure import MeasureConfig, measure_round, record_text
from distill.metrics.perplexity import (
    load_scorer,
    response_loss_mask,
    response_perplexities,
    sequence_perplexities,
)
from distill.records import Example
from distill.train.config import TrainResult

CHAT = [{"role": "user", "content": "What is 12 plus 30?"},
        {"role": "assistant", "content": "The answer is 42."}]
RECORDS = [Example(id="a", instruction="What is 12 plus 30?", output="The answer is 42."),
           Example(id="b", instruction="List three colours.", output="Red, green and blue."),
           Example(id="c", instruction="Why is the sky blue?",
                   output="Because of Rayleigh scattering.")]


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return load_scorer(tiny_model_dir, device="cpu")


def as_trained_student(model_dir: Path, out: Path, loss_mask: str) -> Path:
    """`model_dir` laid out as a train stage leaves a student: out/merged + train_log.json."""
    shutil.copytree(model_dir, out / "merged")
    TrainResult(output_dir=str(out), merged_dir=str(out / "merged"), num_examples=3,
                loss_mask=loss_mask).save(out / "train_log.json")
    return out / "merged"


def masked_loss_perplexity(model, ids: list[int], scored: list[bool]) -> float:
    """exp of the model's own loss with the unscored tokens labelled -100 (as TRL trains)."""
    labels = torch.tensor([[token if keep else -100 for token, keep in zip(ids, scored,
                                                                           strict=True)]])
    with torch.no_grad():
        return math.exp(float(model(input_ids=torch.tensor([ids]), labels=labels).loss))


def test_assistant_response_is_the_masked_loss_of_its_tokens(scorer):
    tokenizer = scorer.tokenizer
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True,
                                             return_assistant_tokens_mask=True)
    ids, scored = rendered["input_ids"], [bool(m) for m in rendered["assistant_masks"]]
    # what is scored is the response and the token that ends its turn, nothing of the prompt
    assert tokenizer.decode([t for t, keep in zip(ids, scored, strict=True) if keep]) == \
        "The answer is 42.<|end|>"
    (value,) = response_perplexities(scorer, [CHAT], loss_mask="assistant")
    assert value == pytest.approx(masked_loss_perplexity(scorer.model, ids, scored), rel=1e-4)
    # ... which is not the whole chat's perplexity
    (whole,) = sequence_perplexities(scorer, [tokenizer.apply_chat_template(CHAT,
                                                                            tokenize=False)])
    assert abs(math.log(whole) - math.log(value)) > 0.01


def test_completion_response_starts_after_the_generation_prompt(scorer):
    tokenizer = scorer.tokenizer
    prompt = tokenizer.apply_chat_template(CHAT[:1], tokenize=True, return_dict=True,
                                           add_generation_prompt=True)["input_ids"]
    ids = tokenizer.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert ids[:len(prompt)] == prompt
    scored = [position >= len(prompt) for position in range(len(ids))]
    (value,) = response_perplexities(scorer, [CHAT], loss_mask="completion")
    assert value == pytest.approx(masked_loss_perplexity(scorer.model, ids, scored), rel=1e-4)


def test_batches_and_cut_responses(scorer):
    chats = [r.messages() for r in RECORDS]
    one = response_perplexities(scorer, chats, loss_mask="assistant", batch_size=1)
    many = response_perplexities(scorer, chats, loss_mask="assistant", batch_size=3)
    assert many == pytest.approx(one, rel=1e-4)
    # cut before the response starts: nothing left to score
    assert math.isnan(response_perplexities(scorer, chats[:1], loss_mask="assistant",
                                            max_length=4)[0])


def test_the_training_record_says_what_the_student_learnt(tiny_model_dir, tmp_path):
    merged = as_trained_student(tiny_model_dir, tmp_path / ".train.work", "assistant")
    assert response_loss_mask(merged) == "assistant"
    # the stage's commit renames the directory: the record's paths are relative
    committed = (tmp_path / ".train.work").rename(tmp_path / "train")
    assert response_loss_mask(committed / "merged") == "assistant"
    whole = as_trained_student(tiny_model_dir, tmp_path / "whole", "none")
    assert response_loss_mask(whole) is None  # trained on every token: full text
    assert response_loss_mask(tiny_model_dir) is None  # not trained by distill
    assert response_loss_mask("org/model") is None  # a hub id
    # a record beside a checkpoint that is not its merged model does not count
    (tmp_path / "whole" / "other").mkdir()
    assert response_loss_mask(tmp_path / "whole" / "other") is None


def measured(reference: Path, out: Path, round_index: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return measure_round(MeasureConfig(microworld=False), out, round_index=round_index, seed=0,
                         synthetic=RECORDS, held_out=RECORDS, student=str(reference),
                         reference=str(reference), scores={}, manifests={}, microworld=False)


def test_measure_scores_responses_under_a_response_trained_student(tiny_model_dir, scorer,
                                                                    tmp_path):
    student = as_trained_student(tiny_model_dir, tmp_path / "train", "assistant")
    metrics = measured(student, tmp_path / "measure")
    chats = [r.messages() for r in RECORDS]
    expected = response_perplexities(scorer, chats, loss_mask="assistant")
    for key in ("generated_perplexity", "held_out_perplexity"):
        assert metrics[key]["scored"] == "response"
        assert metrics[key]["median"] == pytest.approx(sorted(expected)[1], rel=1e-4)
    # under a model not trained on responses only: the whole chat, as before
    base = measured(tiny_model_dir, tmp_path / "base")
    whole = sequence_perplexities(scorer, [record_text(r, scorer.tokenizer) for r in RECORDS])
    assert base["generated_perplexity"]["scored"] == "full text"
    assert base["generated_perplexity"]["median"] == pytest.approx(sorted(whole)[1], rel=1e-4)


def test_the_report_says_what_was_scored(tiny_model_dir, tmp_path):
    from distill.flywheel.report import flywheel_section

    student = as_trained_student(tiny_model_dir, tmp_path / "train", "assistant")
    measured(student, tmp_path / "run" / "round_0" / "measure")
    (line,) = [line for line in flywheel_section(tmp_path / "run") if "Measured" in line]
    assert ("generated data is under the reference model of `measure.reference_model`, "
            "scored on the response given its prompt") in line
    assert "held-out data is under each round's student, scored on the response" in line
    # a round scored under a base model says so, round by round
    measured(tiny_model_dir, tmp_path / "run" / "round_1" / "measure", round_index=1)
    (line,) = [line for line in flywheel_section(tmp_path / "run") if "Measured" in line]
    assert "not scored) in round 0, the full text in round 1" in line


def test_filter_scores_what_its_reference_was_trained_to_predict(tiny_model_dir, scorer,
                                                                 tmp_path):
    student = as_trained_student(tiny_model_dir, tmp_path / "train", "assistant")
    chats = [r.messages() for r in RECORDS]
    verdicts = PerplexityFilter(model=str(student), device="cpu").build(FilterContext())(RECORDS)
    expected = response_perplexities(scorer, chats, loss_mask="assistant")
    assert [v.scores["scored"] for v in verdicts] == ["response"] * 3
    assert [v.scores["perplexity"] for v in verdicts] == pytest.approx(expected, rel=1e-4)
    # a base model scores the output as raw text (the former default)
    base = PerplexityFilter(model=str(tiny_model_dir), device="cpu").build(FilterContext())
    verdicts = base(RECORDS)
    assert [v.scores["scored"] for v in verdicts] == ["output"] * 3
    assert [v.scores["perplexity"] for v in verdicts] == pytest.approx(
        sequence_perplexities(scorer, [r.output for r in RECORDS]), rel=1e-4)
    # asked for, `response` under a model with no training record masks the prompt and
    # generation prompt (as completion-only SFT)
    forced = PerplexityFilter(model=str(tiny_model_dir), text="response", device="cpu")
    verdicts = forced.build(FilterContext())(RECORDS)
    assert [v.scores["perplexity"] for v in verdicts] == pytest.approx(
        response_perplexities(scorer, chats, loss_mask="completion"), rel=1e-4)


def test_quickstart_student_perplexity_of_generated_data_is_sane(tmp_path):
    """The quickstart's setting: a LoRA round-0 microworld student, assistant-only loss.

    A perplexity above the vocabulary size (1,024) is worse than guessing uniformly: the
    whole chat's median is (the prompt's tokens were never trained), the response's is
    not. Measured here after 2 epochs on 256 tasks: response 54, full text 4,557; on the
    full quickstart's round 0 (8 epochs), 9.9 against 99,425.
    """
    from distill.microworld.build import build_models
    from distill.microworld.tasks import generate_tasks
    from distill.records import write_jsonl
    from distill.train.config import LoraSettings, TrainSpec
    from distill.train.sft import train_sft

    student = build_models(quiet=True)["student"]
    out = tmp_path / "train"
    out.mkdir()
    write_jsonl(out / "train.jsonl", [t.to_example() for t in generate_tasks(256, seed=1)])
    result = train_sft(TrainSpec(
        model=str(student), data_path=str(out / "train.jsonl"), output_dir=str(out),
        quiet=True, lora=LoraSettings(r=16, alpha=32),
        args={"num_train_epochs": 2, "per_device_train_batch_size": 16,
              "learning_rate": 2e-3, "gradient_checkpointing": False}))
    assert result.loss_mask == "assistant"
    generated = [t.to_example() for t in generate_tasks(64, seed=2)]
    metrics = measure_round(MeasureConfig(microworld=False), tmp_path, round_index=0, seed=0,
                            synthetic=generated, held_out=[], student=result.merged_dir,
                            reference=result.merged_dir, scores={}, manifests={},
                            microworld=False)
    response = metrics["generated_perplexity"]
    assert response["scored"] == "response"
    scorer = load_scorer(result.merged_dir)
    whole = statistics.median(sequence_perplexities(
        scorer, [record_text(e, scorer.tokenizer) for e in generated], max_length=512))
    assert response["median"] < len(scorer.tokenizer) < whole
