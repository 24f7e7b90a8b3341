import pytest
from pydantic import ValidationError
from scripted_teacher import (
    AlternatingReplicas,
    ScriptedTeacher,
    first_number,
    task_block,
    well_formed,
)

from distill.data import load_seed_tasks
from distill.generate.self_instruct import Config
from distill.prompts import render, template_hash

SEEDS = load_seed_tasks()


def prompt_index(request) -> int:
    return int(request.id.split("-")[2])  # "si-{step}-{prompt}"


def mixed_script(request):
    """Six kinds of completion, by prompt index; chat requests get an answer."""
    if request.prompt is None:
        if request.id == "r0-s0-p0-t1":
            return "  \n", "stop"  # an empty answer
        if request.id == "r0-s0-p0-t2":
            return "A long answer that was cut", "length"
        return f"Answer to: {request.messages[-1]['content']}", "stop"
    kind = prompt_index(request) % 6
    start = first_number(request.prompt)
    seed = request.sampling.seed
    if kind == 0:
        return well_formed(request, 4), "stop"
    if kind == 1:  # three tasks, then max_tokens hits inside the fourth
        return well_formed(request, 3) + f"###\n{start + 3}. Instruction: Expl", "length"
    if kind == 2:
        return " lorem ipsum dolor sit amet", "stop"
    if kind == 3:
        return "", "stop"
    if kind == 4:  # numbering skips start+2
        blocks = [task_block(n, f"Skip task {seed}-{n}", "", "ok")
                  for n in (start, start + 1, start + 3)]
        return "###\n".join(blocks).split("Instruction:", 1)[1], "stop"
    blocks = [task_block(n, f"Windows task {seed}-{n}", "some input", "fine", newline="\r\n")
              for n in (start, start + 1)]
    return "###\r\n".join(blocks).split("Instruction:", 1)[1], "stop"


def config(**fields) -> Config:
    fields.setdefault("num_instructions", 30)
    fields.setdefault("prompts_per_step", 6)
    fields.setdefault("tasks_per_prompt", 10)
    return Config(**fields)


def run(make_ctx, cfg, name="run", script=mixed_script, **ctx_fields):
    teacher = ScriptedTeacher(script)
    ctx = make_ctx(teacher, name, teacher_name="scripted", seed_tasks=lambda: SEEDS,
                   **ctx_fields)
    return cfg.run(ctx), teacher, ctx


def dump(result):
    return ([e.to_json() for e in result.examples], [r.model_dump() for r in result.rejected],
            result.stats)


def test_counts_and_reject_reasons_add_up(make_ctx):
    result, teacher, _ = run(make_ctx, config())
    stats = result.stats
    # per step of 6 prompts: 4 + 3 + 0 + 0 + 2 + 2 well-formed tasks = 11
    assert [s["parsed"] for s in stats["per_step"]] == [11, 11, 11]
    assert stats["steps"] == 3 and stats["stopped_by"] == "num_instructions"
    assert stats["parsed"] == 33 and stats["instructions"] == 30 and stats["surplus"] == 3
    assert stats["parse_rejected"] == {"bad_numbering": 3, "empty": 3, "missing_input": 3,
                                       "truncated": 3}
    assert stats["truncated_completions"] == 3
    parse_rejects = [r for r in result.rejected if r.stage == "parse"]
    assert len(parse_rejects) == sum(stats["parse_rejected"].values())
    assert all(r.record["raw"] is not None for r in parse_rejects)
    truncated = next(r for r in parse_rejects if r.reason == "truncated")
    assert "Expl" in truncated.record["raw"]
    # response step: 30 questions, one empty answer refused, one truncated answer kept
    assert stats["response_rejected"] == {"empty_response": 1}
    assert stats["examples"] == 29 == len(result.examples)
    assert stats["responses_truncated"] == 1
    chat = [r for r in teacher.requests if r.messages is not None]
    assert len(chat) == 30


def test_records_carry_lineage_and_stable_unique_ids(make_ctx):
    result, teacher, _ = run(make_ctx, config())
    ids = [e.id for e in result.examples] + [r.id for r in result.rejected]
    assert len(ids) == len(set(ids))
    example = result.examples[0]
    assert example.id == "r0-s0-p0-t0"
    lineage = example.lineage.model_dump()
    assert lineage["round"] == 0 and lineage["method"] == "self_instruct"
    assert lineage["teacher"] == "scripted"
    assert lineage["template"] == "self_instruct_alpaca"
    assert lineage["template_hash"] == template_hash("self_instruct_alpaca")
    assert lineage["step"] == 0 and lineage["prompt_id"] == "si-0-0"
    assert lineage["in_context_ids"] and all(i.startswith("seed-") for i in
                                             lineage["in_context_ids"])
    assert lineage["instruction_finish_reason"] == "stop"
    assert lineage["finish_reason"] == "stop"
    assert lineage["instruction_sampling"]["temperature"] == 1.0
    assert lineage["instruction_sampling"]["max_tokens"] == 3072
    assert lineage["instruction_sampling"]["stop"] == ["11. Instruction:"]
    assert lineage["sampling"]["temperature"] == 0.7  # the response's sampling
    assert lineage["sampling"]["seed"] != lineage["instruction_sampling"]["seed"]
    assert lineage["proposed_output"].startswith("Item ")
    assert example.output == f"Answer to: {example.prompt_text}"
    assert example.to_json()["messages"][1]["content"] == example.output
    cut = next(e for e in result.examples if e.id == "r0-s0-p0-t2")
    assert cut.lineage.model_dump()["finish_reason"] == "length"
    # the response step sends exactly the user turn
    chat = next(r for r in teacher.requests if r.id == example.id)
    assert chat.messages == [{"role": "user", "content": example.prompt_text}]
    # Windows newlines never reach a record
    assert not any("\r" in e.instruction + e.input + e.output for e in result.examples)


def test_two_runs_give_identical_results(make_ctx):
    first, _, _ = run(make_ctx, config(), "a")
    second, _, _ = run(make_ctx, config(), "b")
    assert dump(first) == dump(second)


def test_resume_after_lost_chunks_equals_uninterrupted_run(make_ctx, tmp_path):
    full, _, _ = run(make_ctx, config(), "full")
    partial, _, ctx = run(make_ctx, config(), "partial")
    # Simulate a kill: the last step's tail and most of the responses never reached disk.
    step2 = sorted((ctx.checkpoint_dir / "instructions-step0002").glob("chunk*.jsonl"))
    responses = sorted((ctx.checkpoint_dir / "responses").glob("chunk*.jsonl"))
    assert len(step2) == 2 and len(responses) == 10
    step2[-1].unlink()
    for path in responses[3:]:
        path.unlink()
    resumed, teacher, _ = run(make_ctx, config(), "partial")
    assert dump(resumed) == dump(full)
    # only the lost requests were generated again
    assert [r.id for r in teacher.requests if r.prompt is not None] == [
        "si-2-3", "si-2-4", "si-2-5"]
    assert len([r for r in teacher.requests if r.messages is not None]) == 30 - 9


@pytest.mark.parametrize("kill_after", [1, 4, 8])
def test_killed_run_resumes_to_the_uninterrupted_result(make_ctx, kill_after):
    full, full_teacher, _ = run(make_ctx, config(), "full")
    killed = ScriptedTeacher(mixed_script, fail_after=kill_after)
    with pytest.raises(KeyboardInterrupt):
        config().run(make_ctx(killed, "killed", teacher_name="scripted",
                              seed_tasks=lambda: SEEDS))
    resumed, teacher, _ = run(make_ctx, config(), "killed")
    assert dump(resumed) == dump(full)
    # no request was generated twice, none was skipped
    done_before = [r.id for r in killed.requests]
    assert len(done_before) > 0
    assert sorted(done_before + [r.id for r in teacher.requests]) == sorted(
        r.id for r in full_teacher.requests)


def test_machine_tasks_join_the_in_context_examples(make_ctx):
    cfg = config(seed_examples_per_prompt=6, machine_examples_per_prompt=2, num_instructions=60)
    result, teacher, _ = run(make_ctx, cfg, script=lambda r: (well_formed(r, 3), "stop")
                             if r.prompt is not None else ("ok", "stop"))
    prompts = [r for r in teacher.requests if r.prompt is not None]
    step0 = [r for r in prompts if r.id.startswith("si-0-")]
    later = [r for r in prompts if not r.id.startswith("si-0-")]
    # step 0 has no machine pool yet: 8 seeds; later steps show 6 seeds + 2 machine tasks
    assert all(first_number(r.prompt) == 9 for r in prompts)
    assert all("Describe item" not in r.prompt for r in step0)
    assert later and all(r.prompt.count("Describe item") == 2 for r in later)
    by_step = {}
    for example in result.examples:
        lineage = example.lineage.model_dump()
        machine = [i for i in lineage["in_context_ids"] if i.startswith("r0-")]
        by_step.setdefault(lineage["step"], []).append(len(machine))
        assert len(lineage["in_context_ids"]) == 8
        # machine examples come from earlier steps only
        assert all(int(i.split("-")[1][1:]) < lineage["step"] for i in machine)
    assert set(by_step[0]) == {0} and all(set(v) == {2} for s, v in by_step.items() if s)


def test_alpaca_defaults_show_three_seeds_only(make_ctx):
    result, teacher, _ = run(make_ctx, config(num_instructions=40),
                             script=lambda r: (well_formed(r, 3), "stop")
                             if r.prompt is not None else ("ok", "stop"))
    prompts = [r for r in teacher.requests if r.prompt is not None]
    assert all(first_number(r.prompt) == 4 for r in prompts)
    assert all("Describe item" not in r.prompt for r in prompts)
    assert all(len(e.lineage.model_dump()["in_context_ids"]) == 3 for e in result.examples)
    # different prompts sample different seed sets
    assert len({tuple(e.lineage.model_dump()["in_context_ids"]) for e in result.examples}) > 5


def test_keep_generated_keeps_the_generators_outputs(make_ctx):
    result, teacher, _ = run(make_ctx, config(responses="keep_generated"))
    assert not [r for r in teacher.requests if r.messages is not None]
    assert len(result.examples) == 30 and result.stats["response_rejected"] == {}
    assert all(e.output.startswith(("Item", "ok", "fine")) for e in result.examples)
    assert all("proposed_output" not in e.lineage.model_dump() for e in result.examples)


def test_a_teacher_that_writes_nothing_usable_stops_at_max_steps(make_ctx):
    garbage = [("", "stop"), ("!!!", "stop"), ("\n\n###\n###", "length"),
               (" Instruction without fields", "length")]
    result, teacher, _ = run(
        make_ctx, config(max_steps=3, prompts_per_step=4),
        script=lambda r: garbage[prompt_index(r)] if r.prompt is not None else ("x", "stop"))
    assert result.examples == [] and result.stats["stopped_by"] == "max_steps"
    assert result.stats["steps"] == 3 and result.stats["parsed"] == 0
    assert sum(result.stats["parse_rejected"].values()) == len(result.rejected) == 12
    default = Config(num_instructions=1000)  # 8 prompts x 17 new tasks per step
    assert default.resolved_max_steps() == 4 * 8


def test_chunks_from_two_replicas_out_of_order_give_the_one_engine_result(make_ctx):
    single, _, _ = run(make_ctx, config())
    teachers = ScriptedTeacher(mixed_script), ScriptedTeacher(mixed_script)
    ctx = make_ctx(None, "replicas", chunk_size=2, executor=AlternatingReplicas(*teachers),
                   teacher_name="scripted", seed_tasks=lambda: SEEDS)
    assert dump(config().run(ctx)) == dump(single)
    assert teachers[0].requests and teachers[1].requests  # both replicas did work


def test_compact_template_and_prompt_format(make_ctx):
    result, teacher, _ = run(make_ctx, config(template="self_instruct_compact"))
    prompt = next(r for r in teacher.requests if r.prompt is not None).prompt
    assert prompt.startswith("Come up with 10 diverse tasks.\n###\n1. Instruction: ")
    assert prompt.endswith("###\n4. Instruction:")
    assert result.examples[0].lineage.model_dump()["template_hash"] == \
        template_hash("self_instruct_compact")


def test_alpaca_template_renders_the_numbered_block_format():
    tasks = [{"instruction": "Name a color.", "input": "", "output": "Blue"},
             {"instruction": "Add them.", "input": "2, 3", "output": "5"}]
    alpaca = render("self_instruct_alpaca", num_tasks=20, tasks=tasks)
    compact = render("self_instruct_compact", num_tasks=20, tasks=tasks)
    assert "20 varied task instructions" in alpaca and "<noinput>" in alpaca
    assert alpaca.endswith("List of 20 tasks:\n###\n1. Instruction: Name a color.\n1. Input:\n"
                           "<noinput>\n1. Output:\nBlue\n###\n2. Instruction: Add them.\n"
                           "2. Input:\n2, 3\n2. Output:\n5\n###\n3. Instruction:")
    # the list itself is byte-identical to the compact template's
    assert alpaca.split("tasks:\n", 1)[1] == compact.split("tasks.\n", 1)[1]


def test_in_context_instructions_are_one_line(make_ctx):
    seeds = [SEEDS[0].model_copy(update={"id": "multi", "instruction": "Say\n  hello:  "})]
    teacher = ScriptedTeacher()
    ctx = make_ctx(teacher, teacher_name="scripted", seed_tasks=lambda: seeds)
    config(seed_examples_per_prompt=1, num_instructions=2).run(ctx)
    assert "1. Instruction: Say hello\n" in teacher.requests[0].prompt


def test_config_validation():
    with pytest.raises(ValidationError, match="extra"):
        Config(num_instructions=5, temprature=1.0)
    with pytest.raises(ValidationError, match="tasks_per_prompt"):
        Config(num_instructions=5, tasks_per_prompt=8, seed_examples_per_prompt=6,
               machine_examples_per_prompt=2)
    with pytest.raises(ValidationError, match="unknown prompt template"):
        Config(num_instructions=5, template="nope")
    with pytest.raises(ValidationError, match="num_instructions"):
        Config()
    with pytest.raises(ValidationError):
        Config(num_instructions=5, responses="both")
    cfg = Config(num_instructions=5, sampling={"temperature": 0.7, "top_p": 0.5,
                                               "presence_penalty": 2})
    assert cfg.sampling.max_tokens == 3072  # unspecified fields keep Alpaca's defaults
    assert cfg.response_sampling.max_tokens == 512
    sampling = cfg.sampling.to_sampling(seed=3, default_stop=cfg.default_stop())
    assert sampling.stop == ("21. Instruction:",) and sampling.seed == 3
    assert Config.model_validate(cfg.model_dump()) == cfg


def test_complete_tasks_of_a_cut_off_completion_pass_the_truncation_heuristic(make_ctx):
    from distill.filters.base import FilterContext
    from distill.filters.heuristics import Config as HeuristicsConfig
    from distill.filters.heuristics import HeuristicFilter

    result, _, _ = run(make_ctx, config())
    # prompt 1 of each step: three whole tasks, then max_tokens cut the fourth
    cut = [e for e in result.examples if e.lineage.prompt_id.endswith("-1")]
    assert cut and all(e.lineage.completion_finish_reason == "length" for e in cut)
    assert all(e.lineage.instruction_finish_reason == "stop" for e in cut)
    verdicts = HeuristicFilter(HeuristicsConfig(), FilterContext())(cut)
    assert not any(v.reason == "truncated_instruction" for v in verdicts)
