"""Self-Instruct against a real (tiny, random) model through the HF backend."""

import importlib.util

import pytest

from distill.generate.context import GenerationContext
from distill.generate.responses import ResponseSampling, generate_responses
from distill.generate.self_instruct import Config
from distill.records import Example

pytestmark = pytest.mark.skipif(importlib.util.find_spec("distill.backends.hf") is None,
                                reason="distill.backends.hf not available")

SEEDS = [Example(id=f"s{i}", instruction=text, input=inp, output=out)
         for i, (text, inp, out) in enumerate([
             ("Name a fruit.", "", "An apple."),
             ("Add the numbers.", "2, 3", "5"),
             ("Give a color.", "", "Blue."),
             ("Sort the list.", "3, 1, 2", "1, 2, 3"),
         ])]


def test_every_completion_is_parsed_or_rejected_with_a_reason(tiny_model_dir, tmp_path):
    from distill.backends.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), batch_size=4, seed=0, dtype="float32")
    config = Config(num_instructions=3, template="self_instruct_compact",
                    seed_examples_per_prompt=2, tasks_per_prompt=4, prompts_per_step=3,
                    max_steps=2, sampling={"max_tokens": 48},
                    response_sampling={"max_tokens": 8})
    ctx = GenerationContext(backend=backend, checkpoint_dir=tmp_path / "ckpt", chunk_size=2,
                            teacher_name=str(tiny_model_dir), seed_tasks=lambda: SEEDS)
    try:
        result = config.run(ctx)
        # a random model rarely writes a well-formed task: answer seeds to cover that step
        answered, refused = generate_responses(SEEDS[:3], ResponseSampling(max_tokens=8), ctx,
                                               key="responses-direct")
    finally:
        backend.close()
    stats = result.stats
    parse_rejected = [r for r in result.rejected if r.stage == "parse"]
    assert len(parse_rejected) == sum(stats["parse_rejected"].values())
    # each completion yields at least one block: a task or a refusal with a reason
    assert stats["parsed"] + len(parse_rejected) >= stats["prompts"] == 3 * stats["steps"]
    for step in stats["per_step"]:
        assert step["parsed"] + step["rejected"] >= step["prompts"]
    assert all(r.reason for r in result.rejected)
    prompt_ids = {r.record["lineage"]["prompt_id"] for r in parse_rejected}
    prompt_ids |= {e.lineage.model_dump()["prompt_id"] for e in result.examples}
    assert stats["parsed"] > 0 or prompt_ids == {
        f"si-{s}-{p}" for s in range(stats["steps"]) for p in range(3)}
    assert stats["instructions"] == len(result.examples) + len(
        [r for r in result.rejected if r.stage == "responses"])
    assert ctx.stats.completion_tokens > 0
    assert len(answered) + len(refused) == 3
    assert all(r.reason == "empty_response" for r in refused)
    assert all(e.lineage.model_dump()["finish_reason"] in {"stop", "length"} for e in answered)
    assert all(e.output and e.lineage.model_dump()["proposed_output"] for e in answered)
