"""The textbook method: specs, prompts, parsing, curriculum order, resumable generation."""

import json
import re

import pytest
from pydantic import ValidationError
from scripted_teacher import ScriptedTeacher

from distill.generate.exercises import parse_exercise, parse_section, split_labelled
from distill.generate.textbook import (
    Config,
    cross_product,
    render_prompt,
    sample_specs,
    topic_leaves,
)

TOPICS = [
    {"name": "Python", "domain": "code", "subtopics": ["Recursion", "Dictionaries"]},
    {"Arithmetic": [{"name": "Fractions", "domain": "math"}, "Estimation"]},
]


def config(**fields):
    fields.setdefault("topics", TOPICS)
    fields.setdefault("audiences", ["young children", "researchers"])
    fields.setdefault("levels", ["introductory", "advanced"])
    fields.setdefault("styles", ["textbook", "story"])
    return Config(**fields)


# -- topics and specs --------------------------------------------------------------------


def test_topic_taxonomy_leaves_paths_and_inherited_domains():
    leaves = topic_leaves(config().topics, "general")
    assert [(leaf.path, leaf.domain) for leaf in leaves] == [
        (("Python", "Recursion"), "code"), (("Python", "Dictionaries"), "code"),
        (("Arithmetic", "Fractions"), "math"), (("Arithmetic", "Estimation"), "general")]


@pytest.mark.parametrize("suffix", ["yaml", "json", "txt"])
def test_topic_files_resolve_against_the_recipe_dir(tmp_path, suffix):
    tree = [{"name": "Python", "domain": "code", "subtopics": ["Loops", "Sets"]}, "Poetry"]
    text = {"yaml": "topics:\n  - name: Python\n    domain: code\n    subtopics: [Loops, Sets]"
                    "\n  - Poetry\n",
            "json": json.dumps(tree),
            "txt": "# a comment\nPython\n  Loops\n  - Sets\nPoetry\n"}[suffix]
    (tmp_path / f"t.{suffix}").write_text(text)
    loaded = Config.model_validate({"topics": f"t.{suffix}"}, context={"base_dir": tmp_path})
    paths = [leaf.path for leaf in topic_leaves(loaded.topics, "general")]
    assert paths == [("Python", "Loops"), ("Python", "Sets"), ("Poetry",)]
    # the file's content, not its path, is in the config (and so in the fingerprint)
    assert "Loops" in json.dumps(loaded.model_dump(mode="json"))


@pytest.mark.parametrize(("topics", "message"), [
    ("missing.yaml", "topic file not found"),
    (["A", "A"], "topics repeated"),
    ([], "no topics"),
    ([{"name": "A", "colour": "red"}], "Extra inputs"),
])
def test_bad_topics_are_named(tmp_path, topics, message):
    with pytest.raises(ValidationError, match=message):
        Config.model_validate({"topics": topics}, context={"base_dir": tmp_path})


def test_txt_indentation_that_matches_no_parent_is_an_error(tmp_path):
    (tmp_path / "t.txt").write_text("  Indented first\n")
    Config.model_validate({"topics": "t.txt"}, context={"base_dir": tmp_path})  # a root
    (tmp_path / "t.txt").write_text("A\n    B\n  C\n")
    loaded = Config.model_validate({"topics": "t.txt"}, context={"base_dir": tmp_path})
    assert [leaf.path for leaf in topic_leaves(loaded.topics, "general")] == [
        ("A", "B"), ("A", "C")]


def test_all_is_the_cross_product_and_n_samples_are_seeded():
    cfg = config(sections="all", exercises=5)
    sections = sample_specs(cfg, "section", seed=1)
    assert len(sections) == 4 * 2 * 2 * 2 == len({s.id for s in sections})
    assert {(s.leaf.order, s.audience, s.level, s.style) for s in sections} == {
        (t, a, lv, st) for t in range(4) for a in cfg.audiences for lv in cfg.levels
        for st in cfg.styles}
    exercises = sample_specs(cfg, "exercise", seed=1)
    assert len(exercises) == 5 and all(s.style is None for s in exercises)
    assert [s.id for s in exercises] == [s.id for s in sample_specs(cfg, "exercise", seed=1)]
    assert [s.id for s in exercises] != [s.id for s in sample_specs(cfg, "exercise", seed=2)]


def test_more_samples_than_the_cross_product_use_every_spec_before_repeating():
    cfg = config(exercises=20)  # cross product: 4 topics x 2 x 2 = 16
    specs = sample_specs(cfg, "exercise", seed=0)
    full = {s.id for s in cross_product(cfg, "exercise")}
    assert {s.id for s in specs[:16]} == full
    assert len({s.id for s in specs}) == 20 and all(s.id.endswith("-x1") for s in specs[16:])
    assert sample_specs(config(exercises=0), "exercise", seed=0) == []


# -- prompts -----------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["textbook", "blog", "wikihow", "story"])
def test_section_prompts_render_the_spec(style):
    cfg = config(styles=[style])
    spec = next(s for s in cross_product(cfg, "section") if s.leaf.domain == "code")
    prompt = render_prompt(cfg, spec, "merge_amber_orbit", ["tidy_kernel", "lunar_ember"])
    assert '"Recursion"' in prompt and "Python" in prompt and spec.audience in prompt
    assert spec.level in prompt and "`tidy_kernel`, `lunar_ember`" in prompt
    assert "{{" not in prompt and "{%" not in prompt


def test_exercise_prompts_ask_for_each_domains_format():
    cfg = config()
    by_domain = {s.leaf.domain: s for s in cross_product(cfg, "exercise")}
    code = render_prompt(cfg, by_domain["code"], "rank_quiet_falcon", [])
    assert "`rank_quiet_falcon`" in code and "Tests:" in code and "assert" in code
    math = render_prompt(cfg, by_domain["math"], "", [])
    assert "Final answer:" in math and "Tests:" not in math
    general = render_prompt(cfg, by_domain["general"], "", [])
    assert "Solution:" in general and "Final answer" not in general


# -- parsing -----------------------------------------------------------------------------

CODE = """Exercise:
Write `add_two(x)` that returns x + 2.

Solution:
The function adds two.
```python
def add_two(x):
    return x + 2
```

Tests:
```python
assert add_two(1) == 3
assert add_two(-2) == 0
```
"""


def test_a_well_formed_code_exercise():
    parsed = parse_exercise(CODE, "code", entry_point="add_two")
    assert parsed.ok and parsed.entry_point == "add_two"
    assert parsed.exercise == "Write `add_two(x)` that returns x + 2."
    assert parsed.solution == "def add_two(x):\n    return x + 2\n"
    assert parsed.tests == "assert add_two(1) == 3\nassert add_two(-2) == 0\n"
    assert parsed.explanation == "The function adds two."
    namespace: dict = {}
    exec(parsed.solution + parsed.tests, namespace)  # the pair runs as the checker will


def test_decorated_labels_asserts_in_the_solution_and_another_function_name():
    text = ("## Problem 1\nCount vowels in a string.\n\n**Solution:**\n```py\n"
            "def vowels(s):\n    return sum(c in 'aeiou' for c in s)\n\n"
            "assert vowels('abe') == 2\nassert vowels('') == 0\n```\n")
    parsed = parse_exercise(text, "code", entry_point="count_golden_orbit")
    assert parsed.ok and parsed.entry_point == "vowels"  # the function the tests call
    assert "assert" not in parsed.solution
    assert parsed.tests.count("assert") == 2


def test_chatty_markdown_as_instruct_models_write_it():
    text = ("Sure! Here is an exercise.\n\n### Exercise 1: Running totals\n"
            "Write a function `sum_lunar_pebble(xs)` that returns the running totals.\n\n"
            "**Solution:**\n\nWe keep a total as we go.\n\n```python\n"
            "def sum_lunar_pebble(xs):\n    out, total = [], 0\n    for x in xs:\n"
            "        total += x\n        out.append(total)\n    return out\n```\n\n"
            "**Tests:**\nHere are some tests:\n```python\n"
            "assert sum_lunar_pebble([1, 2, 3]) == [1, 3, 6]\n"
            "assert sum_lunar_pebble([]) == []\n```\nThese cover the empty list too.\n")
    parsed = parse_exercise(text, "code", entry_point="sum_lunar_pebble")
    assert parsed.ok, parsed.reason
    # a heading's title stays, as the first line of the exercise
    assert parsed.exercise.startswith("Running totals\nWrite a function `sum_lunar_pebble(xs)`")
    assert parsed.tests.count("assert") == 2 and "These cover" not in parsed.tests
    exec(parsed.solution + parsed.tests, {})
    math = parse_exercise("**Problem:** What is 3/4 of 1?\n\n**Solution:**\nMultiply: "
                          "3/4 x 1 = 3/4.\n\n**Final Answer:** $\\frac{3}{4}$", "math")
    assert math.ok and math.answer == "\\frac{3}{4}"


def test_math_answers_from_a_label_a_box_or_gsm8k_marks():
    labelled = parse_exercise("Problem: 2+3?\nSolution:\n2+3 is 5.\nFinal answer: **5.**",
                              "math")
    assert labelled.ok and labelled.answer == "5"
    assert labelled.solution == "2+3 is 5.\n\nFinal answer: 5"
    boxed = parse_exercise("Exercise: half of 9?\nSolution: 9/2 = \\boxed{\\frac{9}{2}}",
                           "math")
    assert boxed.answer == "\\frac{9}{2}"
    assert parse_exercise("Question: 6*7?\nSolution: 6*7\n#### 42", "math").answer == "42"
    assert parse_exercise("Exercise: x?\nSolution: think.", "math").reason == \
        "no_final_answer"
    general = parse_exercise("Exercise: Name a prime.\nSolution: 7 is prime.", "general")
    assert general.ok and general.answer == ""


@pytest.mark.parametrize(("text", "domain", "finish", "reason"), [
    ("", "code", "stop", "empty"),
    ("   \n", "math", "stop", "empty"),
    ("Solution:\nx", "general", "stop", "no_exercise"),
    ("42", "math", "stop", "unlabelled"),
    ("Exercise: do it", "general", "stop", "no_solution"),
    ("Exercise: do it", "general", "length", "truncated"),
    ("Exercise: f\nSolution: use a loop\nTests: none", "code", "stop", "no_code"),
    ("Exercise: f\nSolution:\n```python\ndef f(:\n```\nTests:\nassert f()", "code", "stop",
     "solution_syntax_error"),
    ("Exercise: f\nSolution:\n```python\nx = 1\n```\nTests:\nassert x", "code", "stop",
     "no_function"),
    ("Exercise: f\nSolution:\n```python\ndef f():\n    return 1\n```", "code", "stop",
     "no_tests"),
    ("Exercise: f\nSolution:\n```python\ndef f():\n    return 1\n```\nTests:\n```python\n"
     "assert f(\n```", "code", "stop", "tests_syntax_error"),
    ("Exercise: f\nSolution:\n```python\ndef f():\n    return 1\n```\nTests:\n```python\n"
     "print(f())\n```", "code", "stop", "no_asserts"),
    ("Exercise: f\nSolution:\n```python\ndef f():\n    return 1\n```\nTests:\n```python\n"
     "assert g() == 1\n```", "code", "stop", "no_entry_point"),
    ("Exercise: f\nSolution:\n```python\ndef f():\n    return", "code", "length", "truncated"),
])
def test_malformed_exercises_are_refused_with_a_reason(text, domain, finish, reason):
    parsed = parse_exercise(text, domain, finish, entry_point="f")
    assert not parsed.ok and parsed.reason == reason


def test_prose_and_fenced_code_are_not_labels():
    preamble, blocks = split_labelled(
        "Answer the question below.\nExercise: Sum a list.\nSolution:\n```python\n"
        "# Tests:\ndef s(xs):\n    return sum(xs)\n```\nTesting is good.\n")
    assert preamble == "Answer the question below."
    assert set(blocks) == {"exercise", "solution"} and "Testing is good." in blocks["solution"]
    assert "# Tests:" in blocks["solution"]


def test_sections_need_words():
    assert parse_section("", 3).reason == "empty"
    assert parse_section("two words", 3).reason == "too_short"
    assert parse_section("\r\nthree whole words\r\n", 3).solution == "three whole words"


# -- the method with a scripted teacher --------------------------------------------------


def script(request):
    """Good sections (short ones for Estimation), good exercises, and broken ones."""
    prompt = request.messages[-1]["content"]
    if prompt.startswith("Write one"):
        name = re.search(r"function named `(\w+)`", prompt)
        if name:
            if "advanced" in prompt:
                return "Exercise: oops\nSolution:\n```python\ndef broken(:\n```", "stop"
            fn = name.group(1)
            return (f"Exercise:\nReturn twice x with `{fn}`.\n\nSolution:\n```python\n"
                    f"def {fn}(x):\n    return 2 * x\n```\n\nTests:\n```python\n"
                    f"assert {fn}(2) == 4\n```\n"), "stop"
        if '"Fractions"' in prompt:
            return "Exercise: 1/2 + 1/2?\nSolution: It is 1.\nFinal answer: 1", "stop"
        return "", "stop"  # general exercises: an empty completion
    if '"Estimation"' in prompt:
        return "Too short.", "stop"
    return "A long enough section " + " ".join(["word"] * 10), "stop"


def run_method(make_ctx, teacher, name="run", **fields):
    fields.setdefault("min_section_words", 5)
    return config(**fields).run(make_ctx(teacher, name, round=1, teacher_name="scripted"))


def test_generation_parses_rejects_and_orders_by_curriculum(make_ctx):
    teacher = ScriptedTeacher(script)
    result = run_method(make_ctx, teacher)
    examples, rejected = result.examples, result.rejected
    assert len(teacher.requests) == 32 + 16  # every section and exercise spec, once
    assert [e.model_extra["curriculum_index"] for e in examples] == list(range(len(examples)))
    keys = [(e.lineage.model_extra["level_rank"], e.lineage.model_extra["audience_rank"])
            for e in examples]
    assert keys == sorted(keys) and keys[0] == (0, 0) and keys[-1] == (1, 1)
    reasons = {r.reason for r in rejected}
    assert reasons == {"too_short", "empty", "solution_syntax_error"}
    assert result.stats["parse_rejected"] == {
        "empty": 4, "solution_syntax_error": 4, "too_short": 8}
    assert result.stats["parsed"] == {"section": 24, "exercise": 8}
    assert len(examples) + len(rejected) == 48
    assert all(r.stage == "parse" and "raw" in r.record for r in rejected)


def test_exercise_records_carry_tests_entry_point_and_answers(make_ctx):
    result = run_method(make_ctx, ScriptedTeacher(script))
    code = [e for e in result.examples if e.model_extra["code_tests"] is not None]
    assert len(code) == 4
    for record in code:
        lineage = record.lineage.model_extra
        entry = record.model_extra["entry_point"]
        assert entry == lineage["function_name"] and entry in record.instruction
        assert record.output.startswith(f"def {entry}(x):")
        assert record.model_extra["code_tests"] == f"assert {entry}(2) == 4\n"
        exec(record.output + record.model_extra["code_tests"], {})
    assert len({e.model_extra["entry_point"] for e in code}) == 4  # random names differ
    math = [e for e in result.examples if e.model_extra["answer"] is not None]
    assert len(math) == 4 and all(e.model_extra["answer"] == "1" for e in math)
    section = next(e for e in result.examples if e.lineage.model_extra["product"] == "section")
    assert section.instruction.startswith("Write a")
    assert section.model_extra["code_tests"] is None and section.lineage.method == "textbook"
    # one table: every record has the same keys
    assert len({tuple(sorted(e.to_json())) for e in result.examples}) == 1


def test_code_exercises_pass_the_code_checker_and_a_broken_solution_fails(make_ctx, tmp_path):
    from distill.filters.base import FilterContext
    from distill.filters.verify import Config as VerifyConfig

    result = run_method(make_ctx, ScriptedTeacher(script))
    code = [e for e in result.examples if e.model_extra["code_tests"] is not None]
    broken = code[0].model_copy(update={"id": "broken",
                                        "output": code[0].output.replace("2 * x", "3 * x")})
    section = next(e for e in result.examples if e.model_extra["code_tests"] is None)
    checker = VerifyConfig(checker="code", keep_unverifiable=True).build(
        FilterContext(seed=0, work_dir=tmp_path))
    verdicts = checker([*code, broken, section])
    assert [v.keep for v in verdicts] == [True] * len(code) + [False, True]
    assert verdicts[len(code)].reason == "tests_failed"


def test_generation_is_deterministic_and_resumes_from_its_checkpoints(make_ctx):
    first = run_method(make_ctx, ScriptedTeacher(script), name="a")
    again = run_method(make_ctx, ScriptedTeacher(script), name="b")
    assert [e.to_json() for e in first.examples] == [e.to_json() for e in again.examples]
    killed = ScriptedTeacher(script, fail_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_method(make_ctx, killed, name="c")
    resumed_teacher = ScriptedTeacher(script)
    resumed = run_method(make_ctx, resumed_teacher, name="c")
    assert len(resumed_teacher.requests) == 48 - 2 * 3  # two chunks of 3 were on disk
    assert [e.to_json() for e in resumed.examples] == [e.to_json() for e in first.examples]
    assert [r.id for r in resumed.rejected] == [r.id for r in first.rejected]


# -- end to end, through the CLI ---------------------------------------------------------


@pytest.mark.slow
def test_small_recipe_runs_end_to_end_and_its_data_loads_with_datasets(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import datasets

    from distill.microworld.build import build_models
    from distill.records import read_json, read_jsonl

    build_models(quiet=True)
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-m", "distill", "run", "recipes/small/phi_textbooks.yaml",
         f"output_dir={tmp_path}", "--quiet"],
        cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "phi_textbooks_small" / "round_0"
    generate = read_json(run / "generate" / "manifest.json")
    stats = generate["stats"]
    assert stats["method"] == "textbook" and stats["requested"] == {"section": 24,
                                                                    "exercise": 8}
    rejected = read_jsonl(run / "generate" / "rejected.jsonl")
    # every refused completion is on disk, with its reason counted in the stats
    assert len(rejected) == sum(stats["parse_rejected"].values()) == \
        32 - generate["counts"]["candidates"]
    candidates = datasets.load_dataset("json", data_files=str(run / "generate" /
                                                              "candidates.jsonl"),
                                       split="train")
    assert candidates.num_rows == generate["counts"]["candidates"] > 0
    assert candidates["curriculum_index"] == list(range(candidates.num_rows))
    assert {"code_tests", "entry_point", "answer"} <= set(candidates.column_names)
    trained = datasets.load_dataset("json", data_files=str(run / "train" / "train.jsonl"),
                                    split="train")
    # sequential sampling: the training file keeps the curriculum order
    assert trained["curriculum_index"] == sorted(trained["curriculum_index"])
    assert read_json(run / "evaluate" / "manifest.json")["scores"]
