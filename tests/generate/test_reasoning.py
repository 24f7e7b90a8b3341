"""Reasoning traces: the trace format, rejection sampling with verified answers, presets.

A scripted teacher answers each problem's N samples from a per-sample script (right,
wrong, cut off, without a trace ...), so every count below is known in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from scripted_teacher import ScriptedTeacher

from distill.generate.reasoning import PRESETS, SYSTEM_PROMPT, Config, Problems, load_problems
from distill.records import Example, has_open_trace, join_trace, split_trace

# -- the trace format -------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "<think>3 + 4 = 7; 7 * 2 = 14</think>14",  # the microworld teacher's form
    "<think>\nFirst, 12 + 30 = 42.\nSo the answer is 42.\n</think>\n\nThe answer is \\boxed{42}.",
    "<think>a</think>",  # a trace without an answer
    "The answer is 42.",  # no trace at all
])
def test_split_then_join_gives_back_what_the_teacher_wrote(text: str) -> None:
    reasoning, answer = split_trace(text)
    assert join_trace(reasoning, answer) == text
    assert "<think>" not in reasoning and "</think>" not in answer


def test_split_reads_the_trace_apart_from_the_answer() -> None:
    assert split_trace("<think>\n5 - 2 = 3\n</think>\n\n3") == ("\n5 - 2 = 3\n", "\n\n3")
    # DeepSeek-R1's template opens <think> in the prompt: the completion only closes it
    assert split_trace("Let me add. 1 + 1 = 2.\n</think>\n2") == ("Let me add. 1 + 1 = 2.\n",
                                                                "\n2")
    assert split_trace("no trace here") == ("", "no trace here")
    assert split_trace("<think>cut off while thinking") == ("", "<think>cut off while thinking")
    assert has_open_trace("<think>cut off while thinking")
    assert not has_open_trace("<think>done</think>7") and not has_open_trace("7")


def test_a_record_trains_on_trace_and_answer_and_without_a_trace_on_the_answer() -> None:
    record = Example(id="r", instruction="Evaluate.", input="(3 + 4) * 2",
                     reasoning="3 + 4 = 7; 7 * 2 = 14", output="14")
    assert record.messages()[-1] == {"role": "assistant",
                                     "content": "<think>3 + 4 = 7; 7 * 2 = 14</think>14"}
    data = record.to_json()
    assert data["reasoning"] == "3 + 4 = 7; 7 * 2 = 14"
    assert Example.from_json(data) == record
    plain = record.model_copy(update={"reasoning": ""})  # train.with_reasoning: false
    assert plain.messages()[-1]["content"] == "14"
    assert "reasoning" not in plain.to_json()  # records without traces keep their old form


# -- rejection sampling -----------------------------------------------------------------------

PROBLEMS = [
    {"id": "easy", "problem": "What is 2 + 3?", "answer": "5"},
    {"id": "mixed", "problem": "What is 12 * 12?", "answer": "144"},
    {"id": "hard", "problem": "What is 17 * 23?", "answer": "391"},
    {"id": "unsolved", "problem": "What is 99 * 99?", "answer": "9801"},
]

RIGHT = "<think>Work it out step by step.</think>The answer is \\boxed{{{}}}."
# Per problem, the four samples the scripted teacher writes (text, finish reason).
SCRIPT: dict[str, list[tuple[str, str]]] = {
    "easy": [(RIGHT.format(5), "stop")] * 4,  # pass rate 1: 4 correct
    "mixed": [(RIGHT.format(144), "stop"),
              ("The answer is 144.", "stop"),  # right, but no trace
              (RIGHT.format(140), "stop"),  # wrong
              (RIGHT.format(144), "stop")],  # pass rate 3/4
    "hard": [("<think>" + "long " * 50, "length"),  # cut while thinking
             (RIGHT.format(391), "stop"),
             ("<think>17 * 23 is</think>", "stop"),  # no answer after the trace
             ("<think>I never close this", "stop")],  # pass rate 1/4
    "unsolved": [(RIGHT.format(9800), "stop")] * 4,  # pass rate 0
}


def script(request):
    return SCRIPT[request.id]


@pytest.fixture
def problems_file(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PROBLEMS))
    return path


def settings(problems_file: Path, **fields) -> Config:
    return Config.model_validate({"problems": {"path": str(problems_file)}, "samples": 4,
                                  **fields})


def by_problem(records: list[Example]) -> dict[str, list[Example]]:
    out: dict[str, list[Example]] = {}
    for record in records:
        out.setdefault(record.lineage.problem_id, []).append(record)
    return out


def test_rejection_sampling_keeps_only_verified_traces_and_records_pass_rates(
        problems_file, make_ctx) -> None:
    teacher = ScriptedTeacher(script)
    result = settings(problems_file, keep=2).run(make_ctx(teacher))

    kept = by_problem(result.examples)
    assert {k: [r.id for r in v] for k, v in kept.items()} == {
        "easy": ["easy-s0", "easy-s1"], "mixed": ["mixed-s0", "mixed-s3"], "hard": ["hard-s1"]}
    for record in result.examples:  # every kept trace has a right, checked answer
        assert record.reasoning == "Work it out step by step."
        assert record.output.startswith("The answer is \\boxed{")
        assert record.lineage.model_extra["check"]["correct"] is True
        assert record.messages()[-1]["content"] == SCRIPT[record.lineage.problem_id][
            record.lineage.sample_index][0]
    rates = {k: (v[0].lineage.correct, v[0].lineage.samples, v[0].lineage.pass_rate)
             for k, v in kept.items()}
    assert rates == {"easy": (4, 4, 1.0), "mixed": (3, 4, 0.75), "hard": (1, 4, 0.25)}

    reasons = {r.id: r.reason for r in result.rejected}
    assert reasons == {
        "easy-s2": "beyond_keep", "easy-s3": "beyond_keep",
        "mixed-s1": "no_trace", "mixed-s2": "wrong_answer",
        "hard-s0": "trace_too_long", "hard-s2": "no_answer", "hard-s3": "no_answer",
        "unsolved-s0": "wrong_answer", "unsolved-s1": "wrong_answer",
        "unsolved-s2": "wrong_answer", "unsolved-s3": "wrong_answer"}
    unsolved = result.rejected[-1].record
    assert unsolved["lineage"]["pass_rate"] == 0.0 and unsolved["answer"] == "9801"
    assert unsolved["raw"] == RIGHT.format(9800)

    stats = result.stats
    assert stats["samples"] == 16 and stats["correct_samples"] == 4 + 3 + 1
    assert stats["pass_rates"] == {"0.0": 1, "0.25": 1, "0.75": 1, "1.0": 1}
    assert stats["traces"] == 5 and stats["problems_kept"] == 3
    assert Config.reject_counts(stats) == {"beyond_keep": 2, "no_answer": 2, "no_trace": 1,
                                           "trace_too_long": 1, "wrong_answer": 5}
    section = "\n".join(Config.report_section(stats))
    assert "8 of 16 answers verified correct" in section and "| 0.75 | 1 |" in section

    # one request per problem, n = N, the system prompt first, a seed of its own
    assert [r.sampling.n for r in teacher.requests] == [4] * 4
    assert teacher.requests[0].messages == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "What is 2 + 3?"}]
    assert len({r.sampling.seed for r in teacher.requests}) == 4


def test_a_resumed_run_asks_nothing_again_and_gives_the_same_records(problems_file,
                                                                     make_ctx) -> None:
    config = settings(problems_file, keep=2)
    first = config.run(make_ctx(ScriptedTeacher(script)))
    again = ScriptedTeacher(script)
    second = config.run(make_ctx(again))  # the same checkpoint directory
    assert again.requests == []
    assert [r.to_json() for r in second.examples] == [r.to_json() for r in first.examples]
    assert [r.model_dump() for r in second.rejected] == [r.model_dump() for r in first.rejected]


def test_difficulty_band_drops_too_easy_and_too_hard_problems(problems_file, make_ctx) -> None:
    result = settings(problems_file, keep=4, min_pass_rate=0.5,
                      max_pass_rate=0.8).run(make_ctx(ScriptedTeacher(script)))
    assert sorted({r.lineage.problem_id for r in result.examples}) == ["mixed"]
    reasons = result.stats["rejected"]
    assert reasons["too_easy"] == 4  # all of "easy"'s correct traces
    assert reasons["too_hard"] == 1  # "hard"'s one correct trace
    assert "beyond_keep" not in reasons


def test_length_limits_and_max_problems_keep_the_hardest(problems_file, make_ctx) -> None:
    result = settings(problems_file, max_trace_chars=10).run(make_ctx(ScriptedTeacher(script)))
    assert result.examples == []
    # the one cut while thinking, and the 7 right traces (of 8 right answers, one without)
    assert result.stats["rejected"]["trace_too_long"] == 1 + 7

    capped = settings(problems_file, max_problems=2).run(make_ctx(ScriptedTeacher(script),
                                                                  name="capped"))
    assert [r.lineage.problem_id for r in capped.examples] == ["mixed", "hard"]
    assert [r.id for r in capped.rejected if r.reason == "beyond_max_problems"] == ["easy-s0"]


def test_presets_set_n_k_band_and_count_and_explicit_settings_win(problems_file) -> None:
    limo = settings(problems_file, preset="limo", samples=32)
    assert (limo.samples, limo.keep, limo.max_problems) == (32, 1, 817)
    assert (limo.min_pass_rate, limo.max_pass_rate) == (1 / 32, 3 / 32)
    s1 = Config.model_validate({"problems": {"path": str(problems_file)}, "preset": "s1"})
    assert (s1.samples, s1.keep, s1.max_pass_rate, s1.max_problems) == (4, 1, 0.5, 1000)
    mine = Config.model_validate({"problems": {"path": str(problems_file)},
                                  "preset": "openthoughts", "keep": 4})
    assert (mine.samples, mine.keep) == (16, 4)
    assert set(PRESETS) == {"s1", "limo", "openthoughts"}
    # the preset is resolved into the settings: a dumped config reads back the same
    assert Config.model_validate(mine.model_dump()) == mine
    with pytest.raises(ValidationError, match="keep"):
        Config.model_validate({"problems": {"path": str(problems_file)}, "preset": "s1",
                               "samples": 1, "keep": 2})


@pytest.mark.parametrize(("lines", "message"), [
    (['{"problem": "What is 1 + 1?"}'], r"problems.jsonl:1: no reference answer"),
    (['{"problem": "A?", "answer": "1"}', "not json"], r"problems.jsonl:2: not valid JSON"),
    (['{"answer": "1"}'], r"problems.jsonl:1: no problem \(field 'problem'\)"),
    (['{"id": "a", "problem": "A?", "answer": "1"}', '{"id": "a", "problem": "B?", "answer": 2}'],
     r"problem id 'a' repeats \(line 1 and line 2\)"),
    (['{"problem": "A?", "answer": "1", "checker": "maths"}'], r"unknown checker 'maths'"),
    ([], r"no problems"),
])
def test_a_bad_problems_file_is_a_clear_error(tmp_path: Path, lines: list[str],
                                              message: str) -> None:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    with pytest.raises(ValidationError, match=message):
        Config.model_validate({"problems": {"path": str(path)}})


def test_a_source_is_exactly_one_of_path_dataset_generator(problems_file) -> None:
    with pytest.raises(ValidationError, match="exactly one of path, dataset or generator"):
        Problems.model_validate({"path": str(problems_file), "generator": "microworld",
                                 "count": 2})
    with pytest.raises(ValidationError, match="generator needs `count`"):
        Problems.model_validate({"generator": "microworld"})
    with pytest.raises(ValidationError, match="unknown problem generator 'nope'"):
        Problems.model_validate({"generator": "nope", "count": 2})


def test_problems_from_a_local_dataset_with_its_columns_and_a_seeded_count(tmp_path) -> None:
    directory = tmp_path / "gsm"
    directory.mkdir()
    rows = [{"question": f"What is {i} + {i}?", "solution": f"#### {2 * i}"} for i in range(10)]
    (directory / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = Problems.model_validate({"dataset": "gsm", "problem_field": "question",
                                      "answer_field": "solution", "count": 4},
                                     context={"base_dir": str(tmp_path)})
    assert source.local_dataset() == str(directory)
    problems = load_problems(source, seed=1)
    assert len(problems) == 4 and problems == load_problems(source, seed=1)
    assert problems != load_problems(source, seed=2)  # another round, another sample
    assert all(p.answer == f"#### {2 * int(p.problem.split()[2])}" for p in problems)
    missing = source.model_copy(update={"answer_field": "answer"})
    with pytest.raises(ValueError, match=r"has no column \['answer'\]"):
        load_problems(missing, seed=1)


def test_code_problems_are_checked_by_running_the_answer_against_the_tests(tmp_path,
                                                                          make_ctx) -> None:
    path = tmp_path / "code.jsonl"
    path.write_text(json.dumps({"id": "double", "problem": "Write double(x).",
                                "answer": "assert double(3) == 6", "entry_point": "double",
                                "checker": "code"}) + "\n")
    good = "<think>Multiply by two.</think>```python\ndef double(x):\n    return 2 * x\n```"
    bad = "<think>Add one.</think>```python\ndef double(x):\n    return x + 1\n```"
    result = Config.model_validate({"problems": {"path": str(path)}, "samples": 2,
                                    "keep": 2}).run(
        make_ctx(ScriptedTeacher(lambda request: [(good, "stop"), (bad, "stop")])))
    assert [r.id for r in result.examples] == ["double-s0"]
    assert result.examples[0].model_extra["code_tests"] == "assert double(3) == 6"
    assert [(r.id, r.reason) for r in result.rejected] == [("double-s1", "wrong_answer")]
    assert result.rejected[0].record["lineage"]["check"]["sandbox"] == "failed"


def test_microworld_problems_are_checked_by_its_verifiers(make_ctx) -> None:
    from distill.microworld.answers import format_number
    from distill.microworld.families.steps import trace_text
    from distill.microworld.tasks import worked_solution

    def worked(request):  # sample 0 works it out right, sample 1 gets the last step wrong
        task = request.messages[-1]["content"].split("\n\n")
        steps = worked_solution(*task)
        right, wrong = (format_number(steps[-1].result + d) for d in (0, 1))
        return [(f"<think>{trace_text(steps)}</think>{right}", "stop"),
                (f"<think>{trace_text(steps)}</think>{wrong}", "stop")]

    config = Config.model_validate({"problems": {"generator": "microworld", "count": 6},
                                    "checker": "microworld", "samples": 2})
    result = config.run(make_ctx(ScriptedTeacher(worked)))
    assert len(result.examples) == 6 and result.stats["correct_samples"] == 6
    assert {r.reason for r in result.rejected} == {"wrong_answer"}
    families = {r.model_extra["family"] for r in result.examples}
    assert families <= {"multistep", "word_problem", "list_ops", "units", "dates"}
    assert all(r.lineage.pass_rate == 0.5 for r in result.examples)


def test_a_checker_of_steps_refuses_a_right_answer_after_a_wrong_step(make_ctx) -> None:
    from distill.generate.reasoning import Problem
    from distill.registry import PROBLEM_SOURCES

    def script(request):  # right; right answer after a wrong step; no steps at all
        return [("<think>3 + 4 = 7; 7 * 2 = 14</think>14", "stop"),
                ("<think>3 + 4 = 8; 7 * 2 = 14</think>14", "stop"),
                ("<think>I just know it</think>14", "stop")]

    def fixed(count: int, seed: int) -> list[Problem]:
        return [Problem(id="p", problem="Evaluate the arithmetic expression.",
                        input="(3 + 4) * 2", answer="14", checker=None)]

    PROBLEM_SOURCES.register("test_fixed")(fixed)
    try:
        answers = Config.model_validate({"problems": {"generator": "test_fixed", "count": 1},
                                         "checker": "microworld", "samples": 3, "keep": 3})
        steps = answers.model_copy(update={"checker": "microworld_steps"})
        by_answer = answers.run(make_ctx(ScriptedTeacher(script), name="answers"))
        by_steps = steps.run(make_ctx(ScriptedTeacher(script), name="steps"))
    finally:
        PROBLEM_SOURCES.unregister("test_fixed")
    assert [r.id for r in by_answer.examples] == ["p-s0", "p-s1", "p-s2"]
    assert [r.id for r in by_steps.examples] == ["p-s0"]
    assert [(r.id, r.reason) for r in by_steps.rejected] == [("p-s1", "wrong_steps"),
                                                            ("p-s2", "wrong_steps")]
    assert by_steps.examples[0].lineage.pass_rate == 1 / 3
    assert by_steps.examples[0].lineage.model_extra["check"]["correct_steps"] == 2


def test_the_microworld_thinker_through_the_hf_backend_gives_verified_traces(tmp_path) -> None:
    """The whole method on a real teacher that thinks (microworld:thinker, cached build).

    Measured on the thinker of build 37df83ec41e0992d: 29 of the 96 samples verified right;
    pass rates 0 x 15, 0.25 x 1, 0.75 x 4, 1 x 4; 17 traces kept from 9 problems, 14 of
    them with every step right (the checker reads only the answer).
    """
    from distill.backends.hf import HFBackend
    from distill.generate.context import GenerationContext
    from distill.microworld.build import build_models
    from distill.microworld.families.steps import check_trace
    from distill.microworld.tasks import check

    teacher = build_models(quiet=True, models=("thinker",))["thinker"]
    backend = HFBackend(str(teacher), batch_size=64, seed=0, dtype="float32")
    config = Config.model_validate({
        "problems": {"generator": "microworld", "count": 24}, "checker": "microworld",
        "samples": 4, "keep": 2, "sampling": {"temperature": 1.0, "max_tokens": 96}})
    try:
        result = config.run(GenerationContext(backend=backend, checkpoint_dir=tmp_path,
                                              chunk_size=16, teacher_name=str(teacher)))
    finally:
        backend.close()
    stats = result.stats
    print({k: v for k, v in stats.items() if k != "pass_rates"}, stats["pass_rates"])
    assert stats["samples"] == 96 and len(result.examples) + len(result.rejected) == 96
    assert len(result.examples) >= 8
    for record in result.examples:  # the answer verified, the trace a real one
        assert check(record).correct and record.reasoning
        assert record.lineage.correct >= 1 and record.lineage.samples == 4
    # pass rates spread: the teacher never solves some problems, others sometimes or always
    assert len(stats["pass_rates"]) >= 3 and stats["pass_rates"].get("0.0", 0) >= 5
    checked = sum(check_trace(r.reasoning).all_correct for r in result.examples)
    print(f"kept traces whose every step checks: {checked} of {len(result.examples)}")
    assert checked >= len(result.examples) / 2  # a verified answer mostly has right steps
