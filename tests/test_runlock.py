"""One process at a time in a run directory (distill.runlock), through the real CLI.

The holder is a second, real process that takes the lock with `run_lock`; a dead holder
is one killed with SIGKILL while it held the lock, so the kernel released its `flock`
and its details stayed in the file.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from distill.cli import app
from distill.runlock import RunLocked, read_holder, run_lock

HOLD = """
import sys
from distill.runlock import run_lock

with run_lock(sys.argv[1], "distill run held.yaml"):
    print("held", flush=True)
    sys.stdin.readline()
"""
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def recipe(tmp_path: Path) -> Path:
    """A recipe that validates without models; its run stops when it looks for them."""
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({
        "name": "t", "output_dir": str(tmp_path / "runs"),
        "teacher": {"model": "org/teacher"}, "student": {"model": "org/student"},
        "generate": {"kind": "self_instruct", "num_instructions": 10},
        "eval": {"tasks": ["microworld"]}}))
    return path


def hold(run_dir: Path) -> subprocess.Popen:
    """A process that holds `run_dir`'s lock until its stdin gets a line (or it is killed)."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen]:
    process = hold(tmp_path / "runs" / "t")
    yield process
    process.stdin.write("\n")
    process.stdin.close()
    process.wait(timeout=30)


def test_a_second_run_stops_at_once_naming_the_holder(tmp_path, holder):
    result = CliRunner().invoke(app, ["run", str(recipe(tmp_path))])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # rich wraps long lines
    assert (f"{tmp_path / 'runs' / 't'} is in use by pid {holder.pid} on host "
            f"{socket.gethostname()} since ") in message
    assert "(distill run held.yaml); wait for it or stop it" in message
    assert "Traceback" not in result.output
    # nothing was written in the holder's directory: no log, no resolved recipe
    assert sorted(p.name for p in (tmp_path / "runs" / "t").iterdir()) == [".lock"]
    assert read_holder(tmp_path / "runs" / "t").pid == holder.pid


def test_a_sweep_stops_at_a_cell_another_process_runs(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "s", "recipe": str(recipe(tmp_path)),
                                     "output_dir": str(tmp_path / "runs"),
                                     "arms": {"a": {}}}))
    process = hold(tmp_path / "runs" / "s" / "a-s0")
    try:
        result = CliRunner().invoke(app, ["sweep", str(study)])
    finally:
        process.stdin.write("\n")
        process.stdin.close()
        process.wait(timeout=30)
    assert result.exit_code == 2, result.output
    assert f"is in use by pid {process.pid}" in " ".join(result.output.split())


def test_a_dead_holders_lock_is_taken_over_and_released_at_exit(tmp_path):
    run_dir = tmp_path / "runs" / "t"
    dead = hold(run_dir)
    dead.send_signal(signal.SIGKILL)
    dead.wait(timeout=30)
    assert read_holder(run_dir).pid == dead.pid  # what it left in the file

    # a real `distill run`: it takes the lock, says whose it took, and stops at the first
    # model it looks for (none is cached here), exit 2, releasing the lock as it exits
    result = subprocess.run([sys.executable, "-m", "distill", "run", str(recipe(tmp_path))],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, **OFFLINE})
    assert result.returncode == 2, result.stderr
    log = (run_dir / "distill.log").read_text(encoding="utf-8")
    assert f"took over the lock of pid {dead.pid} on host {socket.gethostname()}" in log
    assert "which is no longer running" in " ".join(result.stderr.split())
    assert read_holder(run_dir) is None  # emptied on release
    with run_lock(run_dir, "next") as previous:
        assert previous is None


def test_the_lock_is_one_holder_at_a_time_in_process_too(tmp_path):
    with run_lock(tmp_path, "first") as previous:
        assert previous is None
        assert read_holder(tmp_path).command == "first"
        assert read_holder(tmp_path).pid == os.getpid()
        # a second open file description of the same file is refused while the first holds
        with (pytest.raises(RunLocked, match=f"pid {os.getpid()} .*\\(first\\)"),
              run_lock(tmp_path, "second")):
            pass
    with run_lock(tmp_path, "third") as previous:
        assert previous is None  # released cleanly: nothing to take over
