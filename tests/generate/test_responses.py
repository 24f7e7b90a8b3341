from scripted_teacher import ScriptedTeacher

from distill.backends.base import Sampling
from distill.generate.responses import ResponseSampling, generate_responses
from distill.prompts import template_hash
from distill.records import Example


def examples():
    return [Example(id="a", instruction="Name a color.", output="Blue"),
            Example(id="b", instruction="Add the numbers.", input="2, 3"),
            Example(id="c", instruction="Say nothing.")]


def script(request):
    content = request.messages[-1]["content"]
    return ("" if "nothing" in content else f"reply: {content}"), "stop"


def test_answers_replace_outputs_and_empty_answers_are_refused(make_ctx):
    teacher = ScriptedTeacher(script)
    ctx = make_ctx(teacher, round=2)
    answered, refused = generate_responses(examples(), ResponseSampling(), ctx,
                                           system_prompt="Be brief.")
    assert [e.id for e in answered] == ["a", "b"]
    assert answered[0].output == "reply: Name a color."
    assert answered[1].output == "reply: Add the numbers.\n\n2, 3"
    assert answered[0].lineage.model_dump()["proposed_output"] == "Blue"
    assert "proposed_output" not in answered[1].lineage.model_dump()
    assert answered[0].lineage.model_dump()["system_prompt"] == "Be brief."
    assert answered[0].lineage.model_dump()["finish_reason"] == "stop"
    assert [(r.id, r.stage, r.reason) for r in refused] == [("c", "responses", "empty_response")]
    assert refused[0].record["raw"] == ""
    assert teacher.requests[1].messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add the numbers.\n\n2, 3"}]
    seeds = [r.sampling.seed for r in teacher.requests]
    assert len(set(seeds)) == 3  # one seed per request


def test_response_template_and_backend_sampling(make_ctx):
    teacher = ScriptedTeacher(script)
    answered, _ = generate_responses(examples()[:2], Sampling(temperature=0.0, n=4, seed=1),
                                     make_ctx(teacher), template="alpaca_prompt")
    assert teacher.requests[1].messages[0]["content"].endswith(
        "### Instruction:\nAdd the numbers.\n\n### Input:\n2, 3\n\n### Response:")
    assert all(r.sampling.n == 1 and r.sampling.seed != 1 for r in teacher.requests)
    lineage = answered[1].lineage.model_dump()
    assert lineage["response_template_hash"] == template_hash("alpaca_prompt")
    assert answered[1].instruction == "Add the numbers." and answered[1].input == "2, 3"
