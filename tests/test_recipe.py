import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from distill.cli import app
from distill.recipe import RecipeError, apply_overrides, load_recipe

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = {
    "name": "t",
    "teacher": {"model": "org/teacher"},
    "student": {"model": "org/student"},
    "generate": {"kind": "self_instruct", "num_instructions": 10},
    "filters": [{"kind": "heuristics"}, {"kind": "novelty"}],
    "eval": {"tasks": ["microworld"]},
}


def write_recipe(tmp_path, data, name="r.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# recipes/collapse holds study files and recipes that need prepared data; tests/flywheel
# validates them. recipes/data holds recipes' inputs (seed tasks, topic taxonomies). The
# GPU recipes whose full size reads downloaded data or the user's corpus are validated by
# tests/test_gpu_recipes.py, with stand-in files; study files (distill sweep), by
# tests/flywheel/test_sweep.py.
PREPARED_DATA = {"evol_instruct.yaml", "ultrafeedback_dpo.yaml", "domain_qa.yaml",
                 "methods/methods_study.yaml"}
SHIPPED = sorted(p for p in (ROOT / "recipes").rglob("*.yaml")
                 if not {"accelerate", "collapse", "data"}
                 & set(p.relative_to(ROOT / "recipes").parts)
                 and str(p.relative_to(ROOT / "recipes")) not in PREPARED_DATA)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT / "recipes")))
def test_every_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.name


def test_minimal_recipe_gets_documented_defaults(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, MINIMAL))
    assert recipe.rounds.count == 1 and recipe.rounds.data_policy.kind == "replace"
    assert recipe.teacher.backend == "hf" and recipe.teacher.model == "org/teacher"
    assert recipe.student.lora is not None
    assert [f.kind for f in recipe.filters] == ["heuristics", "novelty"]
    assert recipe.teacher.checkpoint_every == 64


def test_vllm_teacher_checkpoints_in_chunks_that_keep_its_batches_full(tmp_path):
    path = write_recipe(tmp_path, MINIMAL)
    assert load_recipe(path, ["teacher.backend=vllm"]).teacher.checkpoint_every == 1024
    chosen = load_recipe(path, ["teacher.backend=vllm", "teacher.checkpoint_every=48"])
    assert chosen.teacher.checkpoint_every == 48


@pytest.mark.parametrize(("change", "expected"), [
    ({"rounds": {"count": 0}}, "rounds.count"),
    ({"rounds": {"cuont": 2}}, "rounds.cuont: unknown key"),
    ({"teacher": {"model": "org/t", "backend": "tgi"}}, "teacher.backend"),
    ({"filters": [{"kind": "heuristics"}, {"kind": "novelty", "threshold": "high"}]},
     "filters.1.novelty.threshold"),
    ({"data": {"seed_tasks": "nope.jsonl"}}, "data.seed_tasks: file or directory not found"),
    ({"teacher": {"model": "./missing-dir"}}, "teacher.model: file or directory not found"),
    ({"name": "bad name/"}, "name:"),
])
def test_bad_recipes_name_the_field(tmp_path, change, expected):
    with pytest.raises(RecipeError) as error:
        load_recipe(write_recipe(tmp_path, {**MINIMAL, **change}))
    assert expected in str(error.value)


def test_relative_paths_resolve_against_the_recipe_directory(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "seeds.jsonl").write_text(
        '{"id": "s1", "instruction": "Say hi.", "output": "Hi."}\n')
    path = write_recipe(tmp_path / "sub", {**MINIMAL, "data": {"seed_tasks": "seeds.jsonl"}})
    monkeypatch.chdir(tmp_path)
    assert load_recipe(path).data.seed_tasks == str((tmp_path / "sub" / "seeds.jsonl").resolve())


def test_overrides_set_nested_values_and_list_items():
    data = apply_overrides(json.loads(json.dumps(MINIMAL)),
                           ["rounds.count=3", "filters.1.threshold=0.5", "teacher.engine.x=[1, 2]"])
    assert data["rounds"]["count"] == 3
    assert data["filters"][1]["threshold"] == 0.5
    assert data["teacher"]["engine"]["x"] == [1, 2]
    with pytest.raises(RecipeError, match="filters.7"):
        apply_overrides(data, ["filters.7.threshold=1"])
    with pytest.raises(RecipeError, match="expected key.path=value"):
        apply_overrides(data, ["rounds.count"])


def test_override_errors_are_validated_like_the_file(tmp_path):
    with pytest.raises(RecipeError, match="rounds.count"):
        load_recipe(write_recipe(tmp_path, MINIMAL), ["rounds.count=-1"])


def test_cli_validate_exit_codes_and_messages(tmp_path):
    runner = CliRunner()
    good = write_recipe(tmp_path, MINIMAL)
    result = runner.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    bad = write_recipe(tmp_path, {**MINIMAL, "rounds": {"count": "two"}}, "bad.yaml")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "rounds.count" in result.output and "Traceback" not in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    result = runner.invoke(app, ["validate", str(broken)])
    assert result.exit_code == 2 and "not valid YAML" in result.output


def test_cli_schema_is_json_schema():
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert {"teacher", "student", "generate", "filters", "train", "eval", "rounds"} <= set(
        schema["properties"])
