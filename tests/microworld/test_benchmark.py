"""The held-out benchmark: committed data matches its generator, lm-eval runs it anywhere."""

from __future__ import annotations

import filecmp
from pathlib import Path

from distill.microworld.benchmark import DIFFICULTY_COUNTS, benchmark_tasks, write_benchmark
from distill.microworld.families import FAMILIES

TASKS_DIR = Path(__file__).resolve().parents[2] / "eval" / "tasks"
MICROWORLD = TASKS_DIR / "microworld"


def test_committed_data_is_what_write_benchmark_writes(tmp_path) -> None:
    counts = write_benchmark(tmp_path)
    per_family = sum(DIFFICULTY_COUNTS.values())
    assert counts == {family: per_family for family in FAMILIES}
    for family in FAMILIES:
        assert filecmp.cmp(tmp_path / f"{family}.jsonl", MICROWORLD / "data" / f"{family}.jsonl",
                           shallow=False), f"regenerate: distill microworld benchmark ({family})"


def test_committed_seed_tasks_are_what_the_generators_write(tmp_path) -> None:
    from distill.microworld.seeds import write_seed_tasks

    write_seed_tasks(tmp_path / "seeds.jsonl")
    committed = TASKS_DIR.parents[1] / "recipes" / "data" / "microworld_seed_tasks.jsonl"
    assert filecmp.cmp(tmp_path / "seeds.jsonl", committed, shallow=False), \
        "regenerate: distill microworld seeds"


def test_items_are_distinct_and_stratified() -> None:
    for family, tasks in benchmark_tasks().items():
        assert len({t.key for t in tasks}) == len(tasks), family
        assert [t.difficulty for t in tasks].count(1) == DIFFICULTY_COUNTS[1]


def test_a_yaml_per_family_and_a_group() -> None:
    for family in FAMILIES:
        assert f"family: {family}" in (MICROWORLD / f"microworld_{family}.yaml").read_text()
    group = (MICROWORLD / "microworld.yaml").read_text()
    assert all(f"- microworld_{family}" in group for family in FAMILIES)


def test_lm_eval_loads_tasks_from_any_directory(tmp_path, monkeypatch) -> None:
    from lm_eval.tasks import TaskManager, get_task_dict

    monkeypatch.chdir(tmp_path)  # data paths must not depend on the working directory
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    tasks = get_task_dict(["microworld_add", "microworld_units"], manager)
    add = tasks["microworld_add"]
    docs = list(add.test_docs())
    assert len(docs) == sum(DIFFICULTY_COUNTS.values())
    doc = docs[0]
    assert add.doc_to_text(doc) == f"{doc['instruction']}\n\n{doc['input']}"
    assert add.process_results(doc, [doc["output"]]) == {"exact_match": 1.0}
    assert add.process_results(doc, [f"The answer is {doc['output']}."]) == {"exact_match": 1.0}
    assert add.process_results(doc, [doc["output"] + "1"]) == {"exact_match": 0.0}
    units = list(tasks["microworld_units"].test_docs())[0]
    assert tasks["microworld_units"].doc_to_text(units) == units["instruction"]


def test_simple_evaluate_with_chat_template_from_another_directory(tmp_path, monkeypatch) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from distill.microworld.build import BuildConfig, build_models

    teacher = build_models(tmp_path / "cache", config=BuildConfig.tiny(), quiet=True)["teacher"]
    monkeypatch.chdir(tmp_path)
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={teacher},device=cpu",
        tasks=["microworld"], apply_chat_template=True,
        task_manager=TaskManager(include_path=str(TASKS_DIR), include_defaults=False),
        limit=2, batch_size=8)
    scores = results["results"]
    assert set(scores) == {"microworld"} | {f"microworld_{f}" for f in FAMILIES}
    assert 0.0 <= scores["microworld"]["exact_match,none"] <= 1.0
