import json

import pytest

from distill.data import load_seed_tasks, seed_tasks_path


def test_shipped_seed_pool_is_diverse_and_well_formed():
    tasks = load_seed_tasks()
    assert 60 <= len(tasks) <= 80
    assert len({t.id for t in tasks}) == len(tasks)
    assert len({t.instruction for t in tasks}) == len(tasks)
    assert all(t.instruction.strip() and t.output.strip() for t in tasks)
    with_input = sum(bool(t.input) for t in tasks) / len(tasks)
    classification = sum(t.is_classification for t in tasks) / len(tasks)
    assert 0.35 <= with_input <= 0.45
    assert 0.12 <= classification <= 0.18
    assert all(len(t.output.split()) <= 100 for t in tasks)
    assert all(t.input.lower() != "<noinput>" for t in tasks)
    assert load_seed_tasks(seed_tasks_path()) == tasks


def write(tmp_path, lines):
    path = tmp_path / "seeds.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"id": "a", "instruction": "Do it.", "input": "", "output": "Done."})


@pytest.mark.parametrize("line, message", [
    ('{"id": "b", "instruction": "x", ', "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"id": "b", "output": "y"}', "missing field 'instruction'"),
    ('{"id": "b", "instruction": "x"}', "missing field 'output'"),
    ('{"instruction": "x", "output": "y"}', "missing field 'id'"),
    ('{"id": "b", "instruction": 3, "output": "y"}', "'instruction' must be a string"),
    ('{"id": "b", "instruction": "  ", "output": "y"}', "'instruction' is empty"),
    ('{"id": "b", "instruction": "x", "output": "y", "is_classification": "no"}',
     "'is_classification' must be true or false"),
    ('{"id": "a", "instruction": "x", "output": "y"}', "duplicate id 'a' (first on line 1)"),
])
def test_errors_name_the_file_and_line(tmp_path, line, message):
    path = write(tmp_path, [GOOD, "", line])
    with pytest.raises(ValueError) as error:
        load_seed_tasks(path)
    assert f"{path}:3: " in str(error.value) and message in str(error.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_seed_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no seed tasks"):
        load_seed_tasks(write(tmp_path, [""]))


def test_optional_fields_and_self_instruct_format(tmp_path):
    self_instruct = json.dumps({
        "id": "seed_task_0", "name": "breakfast_suggestion",
        "instruction": "Is there anything I can eat for a breakfast?",
        "instances": [{"input": "", "output": "Yes, oatmeal."}], "is_classification": False})
    path = write(tmp_path, [json.dumps({"id": 7, "instruction": "Do it.", "output": "Done."}),
                            self_instruct])
    plain, converted = load_seed_tasks(path)
    assert plain.id == "7" and plain.input == "" and plain.is_classification is False
    assert converted.output == "Yes, oatmeal." and converted.name == "breakfast_suggestion"
