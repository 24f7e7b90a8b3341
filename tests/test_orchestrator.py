"""`distill run` is one process: started as one of several launcher ranks, it refuses."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from distill.recipe import load_recipe
from distill.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def launched(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m distill ...` as rank 0 of two (what accelerate launch and torchrun set)."""
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "distill", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_launched_rank_exits_2_with_one_line_and_writes_nothing(command, tmp_path):
    target = QUICKSTART if command == "run" else ROOT / "recipes" / "collapse"
    result = launched(command, str(target), *([f"output_dir={tmp_path}"] * (command == "run")),
                      cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "WORLD_SIZE=2" in line and "distill run recipe.yaml" in line
    assert "train.accelerate_config" in line and "recipes/accelerate/ddp.yaml" in line
    assert "executor: ray" in line
    assert list(tmp_path.iterdir()) == []  # no run directory, no log


def test_the_runner_refuses_too(monkeypatch, tmp_path):
    recipe = load_recipe(QUICKSTART, [f"output_dir={tmp_path}"])
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(RuntimeError, match="WORLD_SIZE=4"):
        Runner(recipe)
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process of a launcher is just a process
    assert Runner(recipe).recipe is recipe
    assert list(tmp_path.iterdir()) == []
