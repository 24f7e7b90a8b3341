"""Evol-Instruct: prompts, the four elimination rules, the pool, resumption, and a CLI run."""

import json
import re

import pytest
from pydantic import ValidationError
from scripted_teacher import AlternatingReplicas, ScriptedTeacher

from distill.generate.evol_instruct import (
    IN_DEPTH,
    OPERATIONS,
    Config,
    difficulty_table,
    load_instructions,
    parse_difficulty,
    parse_equality,
)
from distill.prompts import render
from distill.records import Example

# One initial instruction per behaviour; the scripted teacher reacts to the keyword.
KINDS = ["good", "copy", "sorry", "stop", "equal", "judge", "empty", "cut", "silent", "long"]
SEEDS = [Example(id=f"seed-{kind}", instruction=f"Explain the {kind} topic clearly.",
                 output=f"About {kind}.") for kind in KINDS]

OPERATION_SENTENCE = {
    "add_constraints": "Please add one more constraints/requirements into #The Given Prompt#.",
    "deepening": "the depth and breadth of the inquiry can be increased.",
    "concretizing": "Please replace general concepts with more specific concepts.",
    "increase_reasoning": "explicitly request multiple-step reasoning.",
    "complicate_input": "format data as input data in #Rewritten Prompt#.",
}


def given(content: str) -> str:
    """The given prompt inside an evolution prompt."""
    match = re.search(r"#(?:The )?Given Prompt#:\n(.*)\n#(?:Rewritten|Created) Prompt#:",
                      content, re.S)
    assert match, content
    return match.group(1)


def kind_of(text: str) -> str:
    return next(kind for kind in KINDS if f" {kind} " in f" {text} ")


def script(request):
    """Evolutions keep the keyword and add words; judgements and answers follow the keyword."""
    content = request.messages[-1]["content"]
    if "Prompt#:" in content and ("Prompt Rewriter" in content or "Prompt Creator" in content):
        parent = given(content)
        kind = kind_of(parent)
        if kind == "copy":
            return f"#Rewritten Prompt#: {parent} in depth", "stop"
        if kind == "empty":
            return "   ", "stop"
        if kind == "cut":
            return f"{parent} with a very long", "length"
        return f"{parent} Add one more step.", "stop"
    if content.startswith("Here are two Instructions"):
        second = content.split("The Second Prompt: ", 1)[1]
        kind = kind_of(second)
        return {"equal": "Equal", "judge": "I cannot tell."}.get(kind, "Not Equal."), "stop"
    if "## Score:" in content:
        question = content.split("## Question:\n", 1)[1]
        if "judge" in question:
            return "hard to say", "stop"
        return f"Score: {min(10, question.count('step') + 2)}", "stop"
    kind = kind_of(content)
    if kind == "sorry":
        return "Sorry, I cannot help with that topic.", "stop"
    if kind == "stop":
        return "It is, and the ... of it!", "stop"
    if kind == "silent":
        return "", "stop"
    if kind == "long":
        return "Sorry for the long answer: " + "detail " * 90, "stop"
    return f"Here is a detailed answer with 3 facts about {kind}.", "stop"


def run(make_ctx, cfg=None, name="run", teacher=None, seeds=SEEDS, **ctx_fields):
    teacher = teacher or ScriptedTeacher(script)
    ctx = make_ctx(teacher, name, teacher_name="scripted", seed_tasks=lambda: seeds,
                   **ctx_fields)
    return (cfg or Config()).run(ctx), teacher


def dump(result):
    return ([e.to_json() for e in result.examples], [r.model_dump() for r in result.rejected],
            result.stats)


def chain_of(record_id: str) -> int:
    return int(record_id.split("-c")[1].split("-")[0])


def evolve_requests(teacher, t):
    return [r for r in teacher.requests if r.id.endswith(f"-e{t}") and
            ("Prompt Rewriter" in r.messages[-1]["content"]
             or "Prompt Creator" in r.messages[-1]["content"])]


# -- prompts -------------------------------------------------------------------------------

@pytest.mark.parametrize("operation", IN_DEPTH)
def test_in_depth_prompt_renders_each_operation(operation):
    text = render("evol_depth", operation=operation, instruction="Sort the list.\n\n3, 1, 2",
                  input_format="JSON data")
    assert text.startswith("I want you act as a Prompt Rewriter.\n")
    assert OPERATION_SENTENCE[operation] in text
    others = [s for op, s in OPERATION_SENTENCE.items() if op != operation]
    assert not any(s in text for s in others)
    assert text.endswith("#The Given Prompt#:\nSort the list.\n\n3, 1, 2\n#Rewritten Prompt#:\n")
    assert ("can only add 10 to 20 words" in text) == (operation != "complicate_input")
    assert ("[JSON data]" in text) == (operation == "complicate_input")
    compact = render("evol_depth_compact", operation=operation, instruction="Sort it.",
                     input_format="XML data")
    assert compact.endswith("#The Given Prompt#:\nSort it.\n#Rewritten Prompt#:\n")
    assert len(compact.split()) < 40


def test_in_breadth_equality_and_difficulty_prompts():
    breadth = render("evol_breadth", instruction="Name a bird.")
    assert "same domain as the #Given Prompt# but be even more rare" in breadth
    assert breadth.endswith("#Given Prompt#:\nName a bird.\n#Created Prompt#:\n")
    equal = render("evol_equal", first="A", second="B")
    assert "The First Prompt: A\nThe Second Prompt: B\n" in equal
    assert "Just answer: Equal or Not Equal" in equal
    assert "scale of 1 to 10" in render("evol_difficulty", instruction="Q")


def test_requests_use_the_drawn_operation_and_chat_form(make_ctx):
    for operation in OPERATIONS:
        cfg = Config(evolution_rounds=1, operation_weights={operation: 1.0},
                     equality_check="off", include_initial=False)
        result, teacher = run(make_ctx, cfg, name=operation, seeds=SEEDS[:2])
        requests = evolve_requests(teacher, 1)
        assert len(requests) == 2
        for request in requests:
            system, user = request.messages
            assert system == {"role": "system", "content": "You are a helpful assistant."}
            assert given(user["content"]) == SEEDS[chain_of(request.id)].prompt_text
            if operation == "in_breadth":
                assert "Prompt Creator" in user["content"]
            else:
                assert OPERATION_SENTENCE[operation] in user["content"]
            assert request.sampling.temperature == 1.0 and request.sampling.top_p == 0.95
        assert {e.lineage.operation for e in result.examples} == {operation}


def test_operations_are_drawn_by_seeded_weights(make_ctx):
    seeds = [Example(id=f"s{i}", instruction=f"Explain the good topic number {i}.")
             for i in range(60)]
    cfg = Config(evolution_rounds=1, equality_check="off", include_initial=False)
    first, _ = run(make_ctx, cfg, "a", seeds=seeds)
    again, _ = run(make_ctx, cfg, "b", seeds=seeds)
    other, _ = run(make_ctx, cfg, "c", seeds=seeds, seed=1)
    drawn = first.stats["rounds"][1]["by_operation"]
    assert all(drawn[op]["drawn"] > 0 for op in OPERATIONS)  # uniform by default
    assert sum(c["drawn"] for c in drawn.values()) == 60
    assert dump(first) == dump(again)
    assert [e.lineage.operation for e in first.examples] != \
        [e.lineage.operation for e in other.examples]
    formats = {e.lineage.input_format for e in first.examples
               if e.lineage.operation == "complicate_input"}
    assert formats and formats <= set(cfg.input_formats)
    weighted = Config(evolution_rounds=1, equality_check="off", include_initial=False,
                      operation_weights={"deepening": 3.0, "in_breadth": 1.0})
    result, _ = run(make_ctx, weighted, "d", seeds=seeds)
    counts = result.stats["rounds"][1]["by_operation"]
    assert counts["deepening"]["drawn"] > counts["in_breadth"]["drawn"] > 0
    assert sum(counts[op]["drawn"] for op in ("deepening", "in_breadth")) == 60


# -- elimination ---------------------------------------------------------------------------

def test_each_elimination_rule_and_malformed_output_is_a_counted_reject(make_ctx):
    result, _ = run(make_ctx, Config(evolution_rounds=1, include_initial=False))
    reasons = {chain_of(r.id): r.reason for r in result.rejected}
    assert {KINDS[chain]: reason for chain, reason in reasons.items()} == {
        "copy": "copies_template",             # rule 4
        "sorry": "sorry_short_response",       # rule 2
        "stop": "stopwords_only_response",     # rule 3
        "equal": "no_information_gain",        # rule 1, the teacher said "Equal"
        "judge": "malformed_judgement",        # unreadable equality judgement
        "empty": "empty_evolution",            # blank rewrite
        "cut": "truncated_evolution",          # rewrite hit max_tokens
        "silent": "empty_response",            # blank answer
    }
    # a "sorry" answer of 80 words or more is no reason to drop the evolution
    assert sorted(KINDS[chain_of(e.id)] for e in result.examples) == ["good", "long"]
    stats = result.stats
    assert stats["failures"] == {reason: 1 for reason in reasons.values()}
    assert stats["rounds"][1]["attempted"] == 10 and stats["rounds"][1]["evolved"] == 2
    for rejected in result.rejected:
        assert "raw" in rejected.record and rejected.record["instruction"] is not None
    copy = next(r for r in result.rejected if r.reason == "copies_template")
    assert copy.record["raw"].startswith("#Rewritten Prompt#:")


def test_elimination_settings(make_ctx):
    off = Config(evolution_rounds=1, include_initial=False, equality_check="off",
                 sorry_max_words=0, copy_markers=[])
    result, teacher = run(make_ctx, off, "off")
    reasons = sorted(r.reason for r in result.rejected)
    assert reasons == ["empty_evolution", "empty_response", "stopwords_only_response",
                       "truncated_evolution"]
    assert not [r for r in teacher.requests if "Here are two" in r.messages[-1]["content"]]
    exact = Config(evolution_rounds=1, include_initial=False, equality_check="exact")
    echo = ScriptedTeacher(lambda r: (given(r.messages[-1]["content"]), "stop")
                           if "Prompt#:" in r.messages[-1]["content"] else ("An answer.", "stop"))
    result, _ = run(make_ctx, exact, "exact", teacher=echo, seeds=SEEDS[:3])
    assert [r.reason for r in result.rejected] == ["no_information_gain"] * 3


def test_parsers():
    assert parse_equality("Not Equal") is False and parse_equality("not  equal.") is False
    assert parse_equality("Equal") is True and parse_equality("They are unequal") is False
    assert parse_equality("") is None and parse_equality("Yes") is None
    assert parse_difficulty("Score: 8/10") == 8 and parse_difficulty("10") == 10
    assert parse_difficulty("7.5") == 7.5 and parse_difficulty("0") is None
    assert parse_difficulty("eleven") is None and parse_difficulty("11") is None


def test_a_teacher_that_writes_garbage_only_never_crashes(make_ctx):
    outputs = iter([("", "stop"), ("...", "length"), ("\x00", "stop"), ("", "length")] * 100)
    result, _ = run(make_ctx, Config(evolution_rounds=2, difficulty_judge=True), "junk",
                    teacher=ScriptedTeacher(lambda r: next(outputs)))
    assert result.stats["evolved"] == 0
    assert result.stats["rounds"][2]["attempted"] == len(SEEDS)  # the pool never shrinks
    counted = sum(result.stats["failures"].values())
    evolve_rejects = [r for r in result.rejected if r.stage in ("evolve", "responses")
                      and "-e0" not in r.id]
    assert counted == len(evolve_rejects) == 2 * len(SEEDS)


# -- the pool, lineage, difficulty ----------------------------------------------------------

def test_failed_evolutions_leave_the_parent_in_the_pool(make_ctx):
    result, teacher = run(make_ctx, Config(evolution_rounds=3, difficulty_judge=True))
    round_one = {chain_of(e.id): e for e in result.examples if e.id.endswith("-e1")}
    for request in evolve_requests(teacher, 2):
        chain = chain_of(request.id)
        parent_text = given(request.messages[-1]["content"])
        if chain in round_one:  # evolved: round 2 rewrites the round-1 instruction
            assert parent_text == round_one[chain].instruction
        else:  # failed: round 2 rewrites the initial instruction again
            assert parent_text == SEEDS[chain].prompt_text
    good = [e for e in result.examples if KINDS[chain_of(e.id)] == "good"]
    assert [e.id.rsplit("-", 1)[1] for e in good] == ["e0", "e1", "e2", "e3"]
    assert [e.lineage.evolution_depth for e in good] == [0, 1, 2, 3]
    assert [len(e.lineage.operations) for e in good] == [0, 1, 2, 3]
    assert good[3].lineage.operations[:2] == good[2].lineage.operations
    assert [e.lineage.parent_id for e in good] == [None, good[0].id, good[1].id, good[2].id]
    assert {e.lineage.root_id for e in good} == {"seed-good"}
    assert all(e.input == "" for e in good[1:])
    # the copying chain fails every round, so it never gets deeper
    copies = [r for r in result.rejected if KINDS[chain_of(r.id)] == "copy"]
    assert [r.record["lineage"]["evolution_depth"] for r in copies] == [1, 1, 1]


def test_stats_show_difficulty_growing_per_round(make_ctx):
    result, _ = run(make_ctx, Config(evolution_rounds=3, difficulty_judge=True))
    rounds = result.stats["rounds"]
    assert [row["round"] for row in rounds] == [0, 1, 2, 3]
    words = [row["mean_words"] for row in rounds]
    assert words == sorted(words) and words[3] > words[0]
    difficulty = [row["mean_difficulty"] for row in rounds]
    assert difficulty == sorted(difficulty) and difficulty[3] > difficulty[0]
    # the "judge" chain's unreadable difficulty is a reject, its instruction stays
    malformed = [r for r in result.rejected if r.reason == "malformed_difficulty"]
    assert [chain_of(r.id) for r in malformed] == [KINDS.index("judge")]
    assert any(e.id == malformed[0].id and e.lineage.difficulty is None
               for e in result.examples)
    assert rounds[0]["failures"] == {"empty_response": 1}  # "silent" gets no answer
    assert result.stats["examples"] == len(result.examples) == 9 + 2 * 3
    table = "\n".join(difficulty_table(result.stats))
    assert "| 3 | 10 | 2 |" in table and "copies_template 1" in table


def test_keep_initial_responses_and_an_instructions_file(make_ctx, tmp_path):
    path = tmp_path / "alpaca.jsonl"
    rows = [{"instruction": "Explain the good topic.", "input": "", "output": "Kept."},
            {"instruction": "Explain the good topic with", "input": "an input", "output": ""},
            {"instruction": "Explain the good topic again.", "output": "Also kept."}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Config(instructions=str(path), initial_responses="keep", evolution_rounds=1,
                 max_initial=2)
    result, teacher = run(make_ctx, cfg)
    initial = [e for e in result.examples if e.id.endswith("-e0")]
    assert len(initial) == 2  # a seeded sample of 2 of the 3
    for example in initial:
        row = rows[int(example.lineage.root_id.split("-")[1]) - 1]
        assert example.instruction == row["instruction"]
        assert example.output == (row["output"] or
                                  "Here is a detailed answer with 3 facts about good.")
    assert cfg.dependencies().files == {"instructions": str(path)}
    assert cfg.dependencies().inputs == ()  # the file replaces the seed tasks


def test_bad_instruction_files_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "ok"}\n{"instruction": ""}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: missing or empty instruction"):
        load_instructions(path)
    path.write_text('{"instruction": "ok", "id": "a"}\n{"instruction": "b", "id": "a"}\n')
    with pytest.raises(ValueError, match=r":2: duplicate id"):
        load_instructions(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r":1: not valid JSON"):
        load_instructions(path)
    array = tmp_path / "alpaca_data.json"
    array.write_text(json.dumps([{"instruction": "A", "input": "", "output": "a"},
                                 {"instruction": "B", "input": "x", "output": "b"}]))
    assert [(e.id, e.input) for e in load_instructions(array)] == [("item-0", ""),
                                                                    ("item-1", "x")]
    array.write_text(json.dumps([{"instruction": "A"}, {"input": "x"}]))
    with pytest.raises(ValueError, match=r"alpaca_data.json: item 1: missing or empty"):
        load_instructions(array)


def test_config_validation(tmp_path):
    from distill.recipe import RecipeError, load_recipe

    with pytest.raises(ValidationError, match="positive weight"):
        Config(operation_weights={"deepening": 0.0})
    with pytest.raises(ValidationError, match="operation_weights"):
        Config(operation_weights={"widening": 1.0})
    with pytest.raises(ValidationError, match="unknown prompt template"):
        Config(depth_template="nope")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: x\nteacher: {model: microworld:teacher}\n"
                      "student: {model: microworld:student}\neval: {tasks: [microworld]}\n"
                      "generate: {kind: evol_instruct, instructions: missing.jsonl}\n")
    with pytest.raises(RecipeError, match=r"generate\.evol_instruct\.instructions: file or "
                                          r"directory not found"):
        load_recipe(recipe)


def test_the_instructions_file_content_is_part_of_the_generate_fingerprint(tmp_path):
    from distill.component import fingerprint_inputs

    path = tmp_path / "instructions.jsonl"
    path.write_text('{"instruction": "Explain the good topic."}\n')
    cfg = Config(instructions=str(path))
    needs = cfg.dependencies()
    assert needs.files == {"instructions": str(path)} and needs.inputs == ()
    assert Config().dependencies().inputs == ("seed_tasks",)  # no file: the seed pool

    def fingerprint():
        return fingerprint_inputs(cfg, model_identity=lambda spec: "", run_inputs={})

    before = fingerprint()
    path.write_text('{"instruction": "Explain the other topic."}\n')
    assert fingerprint()["files"]["instructions"] != before["files"]["instructions"]


def test_the_declared_templates_follow_the_settings():
    full = Config(difficulty_judge=True, response_template="alpaca_prompt")
    assert set(full.dependencies().templates) == {
        "evol_depth", "evol_breadth", "evol_equal", "evol_difficulty", "alpaca_prompt"}
    lean = Config(operation_weights={"in_breadth": 1.0}, equality_check="exact",
                  breadth_template="evol_breadth_compact")
    assert lean.dependencies().templates == ("evol_breadth_compact",)


# -- resumption and replicas -----------------------------------------------------------------

def test_killed_run_resumes_to_the_uninterrupted_result(make_ctx):
    cfg = Config(evolution_rounds=3, difficulty_judge=True)
    full, full_teacher = run(make_ctx, cfg, "full")
    for kill_after in (3, 11, 20):
        killed = ScriptedTeacher(script, fail_after=kill_after)
        with pytest.raises(KeyboardInterrupt):
            run(make_ctx, cfg, f"killed{kill_after}", teacher=killed)
        resumed, teacher = run(make_ctx, cfg, f"killed{kill_after}")
        assert dump(resumed) == dump(full)
        assert len(teacher.requests) < len(full_teacher.requests)  # only the missing part


def test_chunks_from_two_replicas_out_of_order_give_the_one_engine_result(make_ctx):
    cfg = Config(evolution_rounds=2)
    single, _ = run(make_ctx, cfg, "single")
    teachers = ScriptedTeacher(script), ScriptedTeacher(script)
    replicated, _ = run(make_ctx, cfg, "replicas", teacher=None,
                        executor=AlternatingReplicas(*teachers))
    assert dump(replicated) == dump(single)
    assert teachers[0].requests and teachers[1].requests  # both replicas did work


# -- the whole loop through the CLI ----------------------------------------------------------

@pytest.mark.slow
def test_small_recipe_runs_end_to_end_through_the_cli(tmp_path):
    """`distill run recipes/small/evol_instruct.yaml`, shrunk, on the microworld models."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import datasets

    from distill.microworld.build import build_models
    from distill.records import read_json

    build_models(quiet=True)  # cached after the first build on a machine
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "distill", "run",
               str(root / "recipes" / "small" / "evol_instruct.yaml"), f"output_dir={tmp_path}",
               "generate.max_initial=6", "generate.evolution_rounds=2",
               "generate.difficulty_judge=true", "eval.limit=2",
               "train.args.num_train_epochs=1", "--quiet"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = tmp_path / "evol_instruct_small" / "round_0"
    generate = read_json(run_dir / "generate" / "manifest.json")
    stats = generate["stats"]
    assert stats["method"] == "evol_instruct" and [r["round"] for r in stats["rounds"]] == \
        [0, 1, 2]
    assert stats["rounds"][1]["attempted"] == stats["rounds"][2]["attempted"] == 6
    assert generate["counts"]["rejected"] == sum(stats["rejected"].values())
    for path in (run_dir / "generate" / "candidates.jsonl",
                 run_dir / "generate" / "rejected.jsonl",
                 run_dir / "filter" / "kept.jsonl", run_dir / "train" / "train.jsonl"):
        if path.stat().st_size:
            rows = datasets.load_dataset("json", data_files=str(path), split="train")
            assert len(rows) == sum(1 for line in path.open() if line.strip())
    candidates = datasets.load_dataset("json", data_files=str(run_dir / "generate" /
                                                               "candidates.jsonl"),
                                       split="train")
    assert len(candidates) == generate["counts"]["candidates"] >= 6
    assert {"messages", "lineage"} <= set(candidates.column_names)
    train = read_json(run_dir / "train" / "manifest.json")["train"]
    assert train["num_examples"] > 0 and train["final_loss"] is not None
    report = (tmp_path / "evol_instruct_small" / "report.md").read_text()
    assert "### Evol-Instruct rounds" in report and "| 2 | 6 |" in report
