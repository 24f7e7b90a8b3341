"""A real run's cards and `distill export`: the exported round loads with `datasets`.

One tiny run (hub ids in a local hub cache, offline: a Llama-3.1-licensed teacher and an
Apache-2.0 student, each licence only in its cached README.md; the hf backend, TRL under
accelerate, lm-eval). Then:

- `datasets.load_dataset(DIR)` reads the exported round: the rows the student trained on;
- the card's front matter parses (`DatasetCard.load`) and names the teacher's licence, its
  commit and the data's licence; the model card names the base model and its licence;
- export refuses an unfinished round and a non-empty directory (exit 2, one line);
- stating licences in the recipe and running again changes no stage's fingerprint.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/test_cards.py -q -p no:cacheprovider -m slow
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from fakehub import STUDENT, TEACHER, FakeHub, activate, publish
from typer.testing import CliRunner

from distill.cli import app
from distill.recipe import load_recipe
from distill.records import read_json, read_jsonl
from distill.runner import Runner, RunOptions

ROOT = Path(__file__).resolve().parents[1]


def licensed_hub(fake_hub_cache, root: Path) -> FakeHub:
    """The fake hub's teacher and student, each with a card naming its licence."""
    hub = FakeHub(cache=root / "hub")
    for repo, license_id in ((TEACHER, "llama3.1"), (STUDENT, "apache-2.0")):
        source = root / "src" / repo
        shutil.copytree(fake_hub_cache.snapshot(repo), source)  # the files, not the links
        (source / "README.md").write_text(f"---\nlicense: {license_id}\n---\n# {repo}\n")
        publish(hub, repo, source)
    return hub


def recipe(out: Path) -> dict:
    return {
        "name": "cards", "seed": 0, "output_dir": str(out),
        "teacher": {"model": TEACHER, "backend": "hf", "engine": {"batch_size": 4},
                    "checkpoint_every": 8},
        "student": {"model": STUDENT, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "generate": {"kind": "textbook", "topics": ["Fractions", "Gravity"],
                     "audiences": ["young children"], "styles": ["textbook"],
                     "levels": ["introductory", "advanced"], "sections": "all",
                     "exercises": 0, "min_section_words": 1,
                     "sampling": {"temperature": 1.0, "max_tokens": 16}},
        "decontamination": {"enabled": False},
        "train": {"accelerate_config": str(ROOT / "recipes" / "accelerate" / "cpu.yaml"),
                  "args": {"max_steps": 2, "per_device_train_batch_size": 4,
                           "gradient_checkpointing": False, "max_length": 256,
                           "logging_steps": 1}},
        "eval": {"tasks": ["distill_fixture_mc"],
                 "include_path": str(ROOT / "tests" / "assets" / "tasks"), "limit": 2,
                 "batch_size": 2},
        "measure": {"enabled": False},
        "rounds": {"count": 1},
    }


def front_matter(path: Path) -> dict:
    from huggingface_hub import RepoCard

    return RepoCard.load(path).data.to_dict()


def fingerprints(run_dir: Path) -> dict[str, str]:
    return {str(p.relative_to(run_dir)): read_json(p)["fingerprint"]
            for p in sorted(run_dir.glob("*/*/manifest.json"))}


@pytest.mark.slow
def test_an_exported_round_loads_and_its_card_names_the_teachers_licence(
        fake_hub_cache, tmp_path, monkeypatch):
    hub = licensed_hub(fake_hub_cache, tmp_path)
    activate(monkeypatch, hub.cache)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(tmp_path / "runs")))
    run_dir = Runner(load_recipe(path), RunOptions(quiet=True)).run()

    # the cards, written beside the round
    cards = run_dir / "round_0" / "cards"
    data_card = front_matter(cards / "dataset_card.md")
    teacher = data_card["generated_by"][0]
    assert (teacher["role"], teacher["model"], teacher["license"]) == (
        "teacher", TEACHER, "llama3.1")
    assert teacher["commit"] == hub.commit(TEACHER)
    assert teacher["source"] == f"hub card {TEACHER}@{hub.commit(TEACHER)[:12]}"
    assert "named 'Llama...'" in teacher["restriction"]
    assert data_card["license"] == "llama3.1"  # the one licence its writers share
    model_card = front_matter(cards / "model_card.md")
    assert (model_card["base_model"], model_card["license"]) == (STUDENT, "apache-2.0")
    assert model_card["base_model_relation"] == "adapter"
    model_text = (cards / "model_card.md").read_text()
    assert "[this round's training data](dataset_card.md)" in model_text
    assert "| before | after |" in model_text and "named 'Llama...'" in model_text

    # export: the rows the student trained on, in the layout datasets reads
    import datasets

    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--round", "0", "--to", str(out)])
    assert result.exit_code == 0, result.output
    loaded = datasets.load_dataset(str(out))
    trained = read_jsonl(run_dir / "round_0" / "train" / "train.jsonl")
    assert list(loaded) == ["train"] and loaded["train"].num_rows == len(trained) > 0
    row = loaded["train"][0]
    assert row["id"] == trained[0]["id"] and row["output"] == trained[0]["output"]
    assert json.loads(row["lineage"]) == trained[0]["lineage"]
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(out / "README.md").data
    assert card.license == "llama3.1"
    assert card.generated_by[0]["license"] == "llama3.1"
    assert card.configs[0]["data_files"][0]["split"] == "train"
    assert card.size_categories == ["n<1K"]

    # refusals: one line, exit 2
    again = CliRunner().invoke(app, ["export", str(run_dir), "--round", "0", "--to", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output
    unfinished = CliRunner().invoke(app, ["export", str(run_dir), "--round", "1",
                                          "--to", str(tmp_path / "other")])
    assert unfinished.exit_code == 2 and "round_1 is not finished" in unfinished.output
    replaced = CliRunner().invoke(app, ["export", str(run_dir), "--round", "0", "--to",
                                        str(out), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output

    # licences stated in the recipe: new cards, the same fingerprints (nothing reruns)
    before = fingerprints(run_dir)
    stated = recipe(tmp_path / "runs")
    stated["teacher"]["license"] = "other"
    stated["teacher"]["terms"] = {"text": "https://example.com/terms",
                                  "restricts_training": True}
    stated["card"] = {"license": "cc-by-nc-4.0", "language": ["en"]}
    path.write_text(yaml.safe_dump(stated))
    Runner(load_recipe(path), RunOptions(quiet=True)).run()
    assert fingerprints(run_dir) == before
    data_card = front_matter(cards / "dataset_card.md")
    assert (data_card["license"], data_card["language"]) == ("cc-by-nc-4.0", ["en"])
    assert data_card["generated_by"][0]["terms"] == "https://example.com/terms"
