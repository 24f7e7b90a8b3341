"""Bad input is refused before any work, by `distill validate` and `distill run` alike.

Each case goes through the real CLI and must exit with code 2 and name the field, or the
file and line, in one line, without a traceback; `run` must stop before it creates the
run directory. No model is loaded: the recipe's models are hub ids that are only named.
lm-eval's own task index is built once in this module (the unknown-task test).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from distill.cli import app
from distill.recipe import load_recipe

SEED = {"id": "s1", "instruction": "Say hi.", "output": "Hi."}


def base(tmp_path: Path, **changes) -> dict:
    return {"name": "t", "output_dir": str(tmp_path / "runs"),
            "teacher": {"model": "org/teacher"}, "student": {"model": "org/student"},
            "generate": {"kind": "self_instruct", "num_instructions": 10},
            "eval": {"tasks": ["microworld"]}, **changes}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def jsonl(path: Path, *lines: str | bytes) -> Path:
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n"
                              for line in lines))
    return path


def refused(*args: str) -> str:
    """Run the CLI; assert exit 2 and no traceback; return the error, wrapping undone."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.startswith("error: "), result.output
    return " ".join(result.output.split())


def refused_by_validate_and_run(tmp_path: Path, recipe: Path, *overrides: str) -> str:
    """Both commands refuse it alike; `run` before it creates the run directory."""
    message = refused("validate", str(recipe), *overrides)
    assert refused("run", str(recipe), *overrides) == message
    assert not (tmp_path / "runs").exists()
    return message


# -- seed files --------------------------------------------------------------------------

def test_a_seed_file_with_a_malformed_line_names_the_file_and_line(tmp_path):
    seeds = jsonl(tmp_path / "seeds.jsonl", json.dumps(SEED), '{"id": "s2", "instruction":')
    message = refused_by_validate_and_run(
        tmp_path, write(tmp_path, base(tmp_path, data={"seed_tasks": str(seeds)})))
    assert f"data.seed_tasks: {seeds}:2: not valid JSON" in message


def test_an_empty_seed_file_is_refused(tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("\n")
    message = refused_by_validate_and_run(
        tmp_path, write(tmp_path, base(tmp_path, data={"seed_tasks": str(seeds)})))
    assert f"data.seed_tasks: {seeds}: no seed tasks" in message


def test_a_seed_file_that_is_not_utf8_names_the_line(tmp_path):
    seeds = jsonl(tmp_path / "seeds.jsonl", json.dumps(SEED),
                  json.dumps({**SEED, "id": "s2"}),
                  '{"id": "s3", "instruction": "Caf\xe9", "output": "x"}'.encode("latin-1"))
    message = refused_by_validate_and_run(
        tmp_path, write(tmp_path, base(tmp_path, data={"seed_tasks": str(seeds)})))
    assert f"data.seed_tasks: {seeds}:3: not UTF-8 (byte 0xe9" in message


def test_a_seed_line_without_a_required_field_is_named(tmp_path):
    seeds = jsonl(tmp_path / "seeds.jsonl", json.dumps(SEED),
                  json.dumps({"id": "s2", "instruction": "Count."}))
    message = refused("validate", str(write(tmp_path, base(
        tmp_path, data={"seed_tasks": str(seeds)}))))
    assert f"data.seed_tasks: {seeds}:2: missing field 'output'" in message


def test_real_data_is_read_at_load_as_the_run_reads_it(tmp_path):
    real = jsonl(tmp_path / "real.jsonl", json.dumps(SEED), b'{"id": "r2", "instruction": "\xff"}')
    recipe = write(tmp_path, base(tmp_path, data={"real": str(real)},
                                  rounds={"data_policy": "accumulate"}))
    assert f"{real}:2: not UTF-8 (byte 0xff" in refused_by_validate_and_run(tmp_path, recipe)
    jsonl(real, json.dumps(SEED), json.dumps({"id": "r2"}))
    message = refused("validate", str(recipe))
    assert f"data.real.path: {real}:2: not an example (instruction: Field required)" in message
    real.write_text("")
    assert f"data.real.path: path {real}: no records" in refused("validate", str(recipe))


@pytest.mark.parametrize(("generate", "train", "line", "expected"), [
    ({"kind": "evol_instruct"}, {}, b'{"instruction": "Caf\xe9"}',
     "generate.evol_instruct.instructions: {file}:2: not UTF-8 (byte 0xe9)"),
    ({"kind": "preference"}, {"method": "dpo"}, b'{"instruction": ',
     "generate.preference.prompts: {file}:2: not valid JSON"),
    ({"kind": "doc_qa"}, {}, b'{"body": "no text field"}',
     "generate.doc_qa: {file}:2: expected an object with a string 'text' field"),
])
def test_a_generation_methods_own_data_file_is_read_at_load(tmp_path, generate, train, line,
                                                             expected):
    data = jsonl(tmp_path / "data.jsonl", json.dumps({"instruction": "Name a colour.",
                                                      "text": "Some text."}), line)
    field = {"evol_instruct": "instructions", "preference": "prompts", "doc_qa": "documents"}
    recipe = write(tmp_path, base(tmp_path, generate={**generate, field[generate["kind"]]:
                                                      str(data)}, train=train))
    assert expected.format(file=data) in refused_by_validate_and_run(tmp_path, recipe)


# -- the recipe file and the run directory -----------------------------------------------

def test_a_recipe_that_is_not_utf8_is_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(yaml.safe_dump(base(tmp_path)).encode() + b"# r\xe9sum\xe9\n")
    lines = yaml.safe_dump(base(tmp_path)).count("\n")
    message = refused_by_validate_and_run(tmp_path, recipe)
    assert message == (f"error: {recipe}:{lines + 1}: not UTF-8 (byte 0xe9); save the recipe "
                       "as UTF-8")


def test_a_study_that_is_not_utf8_is_one_line(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_bytes(b"name: s\nrecipe: r.yaml\n# r\xe9sum\xe9\n")
    assert refused("sweep", str(study)) == f"error: {study}:3: not UTF-8 (byte 0xe9)"


def test_a_bad_yaml_override_value_is_one_line(tmp_path):
    message = refused("validate", str(write(tmp_path, base(tmp_path))), "teacher.engine={a:")
    assert message.startswith("error: override teacher.engine: '{a:' is not a YAML value")


def test_a_run_directory_that_cannot_be_created_is_one_line(tmp_path):
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs directory should be")
    recipe = write(tmp_path, base(tmp_path))
    message = refused("validate", str(recipe))
    assert message == (f"error: output_dir: {blocker / 't'}: cannot create the run directory "
                       f"({blocker} is not a directory)")
    assert refused("run", str(recipe)) == message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_output_dir_is_one_line(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs").chmod(0o555)
    try:
        recipe = write(tmp_path, base(tmp_path))
        message = refused("validate", str(recipe))
        assert f"output_dir: {tmp_path / 'runs' / 't'}: cannot create or write" in message
        assert refused("run", str(recipe)) == message
    finally:
        (tmp_path / "runs").chmod(0o755)


# -- lm-eval tasks -----------------------------------------------------------------------

def test_unknown_eval_and_decontamination_tasks_are_named(tmp_path):
    recipe = write(tmp_path, base(
        tmp_path, eval={"tasks": ["microworld", "microworl_add"]},
        decontamination={"tasks": ["no_such_benchmark"]}))
    message = refused("validate", str(recipe))
    assert ("eval.tasks.1: unknown lm-eval task 'microworl_add' (not one of lm-eval's tasks, "
            "groups or tags nor under ") in message
    assert "did you mean microworld_add" in message
    assert "decontamination.tasks.0: unknown lm-eval task 'no_such_benchmark'" in message
    assert "eval.tasks.0" not in message  # a local task is found
    # lm-eval's own tasks and groups are known (its index is cached from above)
    assert load_recipe(write(tmp_path, base(tmp_path, eval={"tasks": ["arc_easy"]})))


# -- engine options ----------------------------------------------------------------------

@pytest.mark.parametrize(("override", "expected"), [
    ("teacher.engine.batch_size=-3",
     "teacher.engine.batch_size: Input should be greater than or equal to 1"),
    ("teacher.engine.batch_sise=8",
     "teacher.engine.batch_sise: not an option of backend hf; its options are "),
    ("teacher.engine.dtype=float8", "teacher.engine.dtype: Input should be 'auto'"),
    ("teacher.engine.seed=3", "teacher.engine.seed: set by the recipe's `seed`, not in engine"),
    ("teacher.engine.revision=abc", "teacher.engine.revision: set by the model's `revision`"),
])
def test_engine_options_are_checked_against_the_backend(tmp_path, override, expected):
    message = refused_by_validate_and_run(tmp_path, write(tmp_path, base(tmp_path)), override)
    assert expected in message


def test_each_backend_has_its_own_options(tmp_path):
    recipe = write(tmp_path, base(tmp_path))
    served = ["teacher.backend=openai", "teacher.engine.api_key_env=null"]
    assert "teacher.engine.max_concurrency: Input should be greater than or equal to 1" in \
        refused("validate", str(recipe), *served, "teacher.engine.max_concurrency=0")
    # the OpenAI SDK's own options pass through on purpose
    loaded = load_recipe(recipe, [*served, "teacher.engine.extra_body={top_k: 5}",
                                  "teacher.engine.max_concurrency='4'"])
    assert loaded.teacher.engine == {"api_key_env": None, "extra_body": {"top_k": 5},
                                     "max_concurrency": 4}  # converted as declared
    assert "teacher.engine.gpu_memory_utilization: Input should be less than or equal to 1" in \
        refused("validate", str(recipe), "teacher.backend=vllm",
                "teacher.engine.gpu_memory_utilization=1.5")
    assert ("teacher.engine.batch_size: not an option of backend vllm nor one of vLLM's "
            "engine arguments") in refused("validate", str(recipe), "teacher.backend=vllm",
                                           "teacher.engine.batch_size=8")
    assert load_recipe(recipe, ["teacher.backend=vllm", "teacher.engine.max_num_seqs=8"])


def test_a_judges_engine_is_checked_too(tmp_path):
    recipe = write(tmp_path, base(tmp_path, filters=[{
        "kind": "judge", "model": {"model": "org/judge", "backend": "openai",
                                   "engine": {"max_retries": -1}}}]))
    message = refused("validate", str(recipe))
    assert "filters.0.judge.model.engine.max_retries: Input should be greater than or equal " \
           "to 0" in message
