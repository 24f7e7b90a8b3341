"""Every lm-eval task a shipped recipe names is known, and its code imports.

lm-eval imports a task's Python helpers (`!function utils.x` in its YAML) only when the
task is built, so a missing optional dependency (ifeval's langdetect and immutabledict,
the `lm-eval[ifeval]` extra) would first show as a crash in the base evaluation of a GPU
run. This test finds each named task in lm-eval's index, follows groups and tags down to
their tasks, and loads each task's YAML the way lm-eval does, which imports the modules
its `!function` tags name. No dataset is downloaded: the code is imported, never run.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_TASKS = ROOT / "eval" / "tasks"


def _recipe_tasks() -> dict[str, set[str]]:
    """{task name: the recipes naming it} over eval.tasks and decontamination.tasks.

    Profiles that change eval.tasks count too. Study files and accelerate configs have no
    `eval` section and are skipped.
    """
    named: dict[str, set[str]] = {}
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "eval" not in data:
            continue
        assert data["eval"].get("include_path") is None, \
            f"{path}: a recipe-local include_path is not covered by this test"
        lists = [data["eval"].get("tasks") or [],
                 (data.get("decontamination") or {}).get("tasks") or []]
        for overrides in (data.get("profiles") or {}).values():
            lists += [overrides.get("eval.tasks") or [],
                      overrides.get("decontamination.tasks") or []]
        for task in (t for tasks in lists for t in tasks):
            named.setdefault(task, set()).add(str(path.relative_to(ROOT)))
    return named


RECIPE_TASKS = _recipe_tasks()


@functools.cache
def task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(BUILTIN_TASKS))


def leaf_tasks(manager, name: str) -> list:
    """The index entries of the tasks `name` stands for (itself, or a group's or tag's)."""
    from lm_eval.tasks._index import Kind

    entry = manager.task_index[name]
    if entry.kind in (Kind.TASK, Kind.PY_TASK):
        return [entry]
    if entry.kind == Kind.GROUP:
        members = [m if isinstance(m, str) else m["task"] for m in entry.cfg.get("task", [])]
    elif entry.kind == Kind.TAG:
        members = [other for other, e in manager.task_index.items() if name in e.tags]
    else:
        raise AssertionError(f"{name}: lm-eval indexes it as {entry.kind}")
    return [leaf for member in members for leaf in leaf_tasks(manager, member)]


@pytest.fixture
def no_nltk_download(monkeypatch):
    """ifeval's helpers fetch NLTK's punkt_tab at import when it is missing: data it needs
    to score, which a GPU run downloads on its first evaluation. This test imports the code
    only, so the download is skipped (there is no network here)."""
    import nltk

    monkeypatch.setattr(nltk, "download", lambda *args, **kwargs: False)


def test_the_shipped_recipes_name_tasks():
    # the GPU recipes' benchmarks, including the one with an optional dependency
    assert {"ifeval", "arc_easy", "hellaswag", "microworld"} <= set(RECIPE_TASKS)


@pytest.mark.parametrize("name", sorted(RECIPE_TASKS))
def test_task_is_known_and_its_code_imports(name, no_nltk_download):
    from lm_eval.tasks._yaml_loader import load_yaml

    manager = task_manager()
    assert name in manager.all_tasks, \
        f"{name} (named by {sorted(RECIPE_TASKS[name])}) is not an lm-eval task"
    leaves = leaf_tasks(manager, name)
    assert leaves, f"{name}: no task under it"
    for entry in leaves:
        if entry.yaml_path is None:
            continue  # a Python-defined task: its class is imported with lm_eval.tasks
        try:
            # resolve_func=True imports each `!function` module, as building the task does
            load_yaml(entry.yaml_path, resolve_func=True)
        except ImportError as error:
            pytest.fail(f"{name}: task {entry.name} ({entry.yaml_path}) needs a module that "
                        f"is not installed: {error.__cause__ or error}; add the lm-eval extra "
                        "that provides it to pyproject.toml")
