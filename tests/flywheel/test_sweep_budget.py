"""`distill sweep` and a budget cap: the stopped cell exits 4, named, and a rerun resumes it.

One cell of a tiny recipe (the fake hub's teacher and student, the hf backend, lm-eval
on two fixture items) through the CLI: capped, it stops after one chunk; rerun with a
higher cap, it keeps that chunk and finishes.
"""

from pathlib import Path

import yaml
from fakehub import STUDENT, TEACHER
from typer.testing import CliRunner

from distill.cli import app
from distill.records import read_json

ROOT = Path(__file__).resolve().parents[2]


def tiny_recipe(out: Path) -> dict:
    return {
        "name": "tiny", "seed": 0, "output_dir": str(out),
        "teacher": {"model": TEACHER, "backend": "hf", "engine": {"batch_size": 2},
                    "checkpoint_every": 2},
        "student": {"model": STUDENT, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}},
        "generate": {"kind": "textbook", "topics": ["Fractions", "Gravity"],
                     "audiences": ["young children"], "styles": ["textbook"],
                     "levels": ["introductory", "advanced"], "sections": "all",
                     "exercises": 0, "min_section_words": 1,
                     "sampling": {"temperature": 1.0, "max_tokens": 8}},
        "decontamination": {"enabled": False},
        "eval": {"tasks": ["distill_fixture_mc"],
                 "include_path": str(ROOT / "tests" / "assets" / "tasks"), "limit": 2,
                 "batch_size": 2},
        "measure": {"enabled": False},
    }


def study(tmp_path: Path, cap: int) -> Path:
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(tiny_recipe(tmp_path / "unused")))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "capped", "recipe": str(base), "output_dir": str(tmp_path / "runs"),
        "rounds": 1, "set": {"budget.max_requests": cap}, "arms": {"only": {}}}))
    return path


def test_a_budget_stop_in_a_cell_exits_4_naming_it_and_a_higher_cap_resumes(fake_hub,
                                                                           tmp_path):
    cell = tmp_path / "runs" / "capped" / "only-s0"
    stopped = CliRunner().invoke(app, ["sweep", str(study(tmp_path, 3)), "--quiet"])
    assert stopped.exit_code == 4, stopped.output
    assert "budget.max_requests (3) reached at cell only-s0 round_0/generate" in \
        " ".join(stopped.output.split())
    assert read_json(cell / "budget.json")["spent"]["requests"] == 2  # one chunk of 2
    work = cell / "round_0" / ".generate.work" / "checkpoints"
    (first,) = work.glob("*/chunk*.jsonl")
    written = (first.read_bytes(), first.stat().st_mtime_ns)

    finished = CliRunner().invoke(app, ["sweep", str(study(tmp_path, 1000)), "--quiet"])
    assert finished.exit_code == 0, finished.output
    assert not (cell / "budget.json").exists()
    generated = cell / "round_0" / "generate"
    assert read_json(generated / "manifest.json")["resumed_requests"] == 2
    kept = generated / "checkpoints" / first.relative_to(work)
    assert (kept.read_bytes(), kept.stat().st_mtime_ns) == written  # kept, not redone
