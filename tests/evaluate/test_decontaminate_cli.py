"""`distill decontaminate`: any JSONL dataset against lm-eval tasks, as users call it."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.cli import app

TASKS = Path(__file__).resolve().parents[2] / "tests" / "assets" / "tasks"
LEAKED = ("The lighthouse keeper on Gull Island counts exactly seventeen ships every foggy "
          "morning; how many ships does he count?")
REPHRASED = ("Every misty morning, the keeper of the Gull Island lighthouse tallies seventeen "
             "vessels. What number of ships does he tally?")
RECORDS = [
    {"id": "ok-1", "instruction": "Write a limerick about a cat.", "input": "",
     "output": "There once was a cat from Peru."},
    {"id": "leak", "instruction": "Solve this.", "input": LEAKED, "output": "17"},
    {"messages": [{"role": "user", "content": "Name three prime numbers."},
                  {"role": "assistant", "content": "2, 3 and 5."}]},
    {"messages": [{"role": "user", "content": REPHRASED},
                  {"role": "assistant", "content": "Seventeen."}]},
    {"text": "Photosynthesis turns sunlight into chemical energy."},
]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def invoke(*args):
    return CliRunner().invoke(app, ["decontaminate", *map(str, args)])


def test_planted_item_is_flagged_and_listed_beside_its_match(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", RECORDS)
    out = tmp_path / "report"
    result = invoke(data, "--tasks", "distill_fixture", "--include-path", TASKS, "--out", out)
    assert result.exit_code == 3, result.output
    assert "1 flagged" in result.output and "leak" in result.output

    report = json.loads((out / "contamination.json").read_text())
    [item] = report["contaminated"]
    assert item["id"] == "leak" and item["kind"] == "ngram" and item["score"] == 1.0
    match = item["matches"][0]
    assert (match["task"], match["doc_index"], match["view"]) == ("distill_fixture_qa", 0,
                                                                  "prompt")
    markdown = (out / "contamination.md").read_text()
    [row] = [line for line in markdown.splitlines() if line.startswith("| `leak`")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1:5] == ["ngram", "1.00", "distill_fixture_qa", "0"]
    assert cells[5].startswith("Solve this. The lighthouse keeper")  # the training text
    assert cells[6].startswith("Question: The lighthouse keeper")    # beside its match
    assert "the lighthouse keeper on gull island" in cells[7]         # the shared words

    # The clean file is the input minus the flagged line, byte for byte.
    lines = data.read_text().splitlines(keepends=True)
    assert (out / "clean.jsonl").read_text() == "".join(lines[:1] + lines[2:])
    [flagged] = [json.loads(x) for x in (out / "flagged.jsonl").read_text().splitlines()]
    assert flagged["line"] == 2 and flagged["record"] == RECORDS[1]

    assert invoke(data, "--tasks", "distill_fixture", "--include-path", TASKS, "--out", out,
                  "--exit-zero").exit_code == 0
    clean = write_jsonl(tmp_path / "clean.jsonl", [RECORDS[0], RECORDS[2]])
    result = invoke(clean, "--tasks", "distill_fixture_qa", "--include-path", TASKS)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "clean.decontamination" / "contamination.md").exists()  # default --out


def test_paraphrase_and_coverage_options(tmp_path):
    pytest.importorskip("sentence_transformers")
    data = write_jsonl(tmp_path / "data.jsonl", RECORDS)
    out = tmp_path / "report"
    result = invoke(data, "--tasks", "distill_fixture_qa", "--include-path", TASKS, "--out", out,
                    "--preset", "tulu3", "--paraphrase")
    assert result.exit_code == 3, result.output
    report = json.loads((out / "contamination.json").read_text())
    assert (report["ngram"], report["method"], report["dirty_above"]) == (8, "coverage", 0.5)
    kinds = {item["id"]: (item["kind"], item["matches"][0]["doc_index"])
             for item in report["contaminated"]}
    # Records without an id are named by their line; the chat record's user turn is compared.
    assert kinds == {"leak": ("coverage", 0), "line-4": ("paraphrase", 0)}
    markdown = (out / "contamination.md").read_text()
    assert "| `line-4` | paraphrase | 0.9" in markdown and "no judge" in markdown


@pytest.mark.parametrize("content, args, message", [
    (None, [], "missing.jsonl: no such file"),
    ('{"instruction": "a"}\n\n{"instruction": "b", }\n', [], "data.jsonl:3: not valid JSON"),
    ('{"instruction": "a"}\n[1, 2]\n', [], "data.jsonl:2: expected a JSON object"),
    ('{"question": "a"}\n', [], "data.jsonl:1: no text to check"),
    ('{"question": "a"}\n', ["--fields", "prompt,answer"], "none of prompt, answer"),
    ("", [], "data.jsonl: no records"),
    ('{"instruction": "a"}\n', ["--method", "fuzzy"], "--method: Input should be"),
    ('{"instruction": "a"}\n', ["--dirty-above", "1.5"], "--dirty-above"),
])
def test_bad_input_exits_2_naming_it(tmp_path, content, args, message):
    name = "missing.jsonl" if content is None else "data.jsonl"
    if content is not None:
        (tmp_path / name).write_text(content)
    result = invoke(tmp_path / name, "--tasks", "distill_fixture", "--include-path", TASKS,
                    *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.slow  # an unknown name makes lm-eval index all its built-in tasks
def test_unknown_task_exits_2(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", RECORDS[:1])
    result = invoke(data, "--tasks", "distill_fixture_nope", "--include-path", TASKS)
    assert result.exit_code == 2, result.output
    assert "distill_fixture_nope" in result.output
