"""A training launched by a run dies with it (distill.train.lifeline), on Linux."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG is Linux's")

PARENT = """
import subprocess, sys, time
from distill.train import lifeline
sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
command = lifeline.wrapped(sleeper) if sys.argv[1] == "wrapped" else sleeper
child = subprocess.Popen(command)
print(child.pid, flush=True)
time.sleep(120)
"""


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def orphan_after_parent_killed(mode: str) -> int:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE,
                              text=True)
    child = int(parent.stdout.readline())
    time.sleep(1.0)  # the child is the sleeper by now (the lifeline exec'd it)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    return child


def test_a_wrapped_command_dies_with_its_parent():
    child = orphan_after_parent_killed("wrapped")
    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(child)


def test_an_unwrapped_command_outlives_its_parent():
    # what the lifeline is for: without it the orphan runs on
    child = orphan_after_parent_killed("plain")
    try:
        time.sleep(1.0)
        assert alive(child)
    finally:
        os.kill(child, signal.SIGKILL)
