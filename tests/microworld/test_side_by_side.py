"""Training a build's model in a child process, and the thread schedule of a training."""

from __future__ import annotations

import random

import pytest

from distill.microworld.build import side_by_side_threads
from distill.microworld.corpus import student_documents, tokenizer_texts
from distill.microworld.side_by_side import ChildTraining
from distill.microworld.train import ModelSpec, train_model, train_tokenizer

SPEC = ModelSpec(hidden_size=128, layers=1, heads=2, intermediate_size=256, steps=4,
                 batch_tokens=512)


@pytest.fixture(scope="module")
def job():
    tokenizer = train_tokenizer(tokenizer_texts(random.Random(0), 200), 400)
    documents = student_documents(40, random.Random(1), None, family_exponent=0.3)
    return {"documents": documents, "tokenizer": tokenizer, "spec": SPEC, "seed": 0,
            "mask_prompts": set()}


def test_child_trains_the_same_weights_as_this_process(job, tmp_path) -> None:
    here = train_model(out_dir=tmp_path / "here", threads=1, **job)
    seen: list[tuple[int, int]] = []
    with ChildTraining(tmp_path / "job", lambda done, total, loss: seen.append((done, total)),
                       out_dir=tmp_path / "child", threads=1, **job) as child:
        there = child.result()
    assert (tmp_path / "child" / "model.safetensors").read_bytes() == \
        (tmp_path / "here" / "model.safetensors").read_bytes()
    assert there["loss_last"] == here["loss_last"] and there["threads"] == {"0": 1}
    assert seen[-1] == (SPEC.steps, SPEC.steps)


def test_child_failure_raises_with_its_error(job, tmp_path) -> None:
    broken = {**job, "documents": []}  # nothing to batch: the child's loop fails
    with (ChildTraining(tmp_path / "job", None, out_dir=tmp_path / "out", **broken) as child,
          pytest.raises(RuntimeError, match="child process failed.*\n(.*\n)*.*IndexError")):
        child.result()


def test_child_stops_when_its_parent_is_killed(job, tmp_path) -> None:
    """SIGKILL leaves no `with` block to kill the child: its next report hits a dead pipe."""
    import os
    import pickle
    import subprocess
    import sys
    import time

    long_job = {**job, "spec": ModelSpec(hidden_size=128, layers=1, heads=2,
                                         intermediate_size=256, steps=100_000)}
    (tmp_path / "job.pkl").write_bytes(pickle.dumps(long_job))
    parent = (  # starts the child, waits for its first step, then dies without cleaning up
        "import os, pickle, signal, sys, threading\n"
        "from pathlib import Path\n"
        "from distill.microworld.side_by_side import ChildTraining\n"
        "stepped = threading.Event()\n"
        f"job = pickle.loads(Path({str(tmp_path / 'job.pkl')!r}).read_bytes())\n"
        f"child = ChildTraining(Path({str(tmp_path / 'work')!r}), lambda *a: stepped.set(),\n"
        f"                      out_dir=Path({str(tmp_path / 'out')!r}), **job)\n"
        "stepped.wait(120)\n"
        "print(child.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True,
                         timeout=180).stdout
    pid = int(out.split()[0])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, 9)
        pytest.fail("the orphaned child went on training")


def test_thread_schedule_is_followed_recorded_and_undone(job, tmp_path) -> None:
    import torch

    before = torch.get_num_threads()
    seen = []

    def schedule(step: int) -> int:
        seen.append(torch.get_num_threads())
        return 1 if step < 2 else 2

    stats = train_model(out_dir=tmp_path / "out", threads=schedule, **job)
    assert stats["threads"] == {0: 1, 2: 2}
    assert seen[1:] == [1, 1, 2]  # what each step before the next ran on
    assert torch.get_num_threads() == before


def test_thread_schedule_holds_after_vllm_disabled_set_num_threads(job, tmp_path,
                                                                    monkeypatch) -> None:
    """vLLM's CPU worker, started in a process, makes `torch.set_num_threads` a no-op."""
    import torch

    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # as cpu_worker.py does
    seen = []

    def schedule(step: int) -> int:
        seen.append(torch.get_num_threads())
        return 1 if step < 2 else 2

    train_model(out_dir=tmp_path / "out", threads=schedule, **job)
    assert seen[1:] == [1, 1, 2]


def test_side_by_side_needs_two_cores() -> None:
    assert side_by_side_threads(1) is None
    assert side_by_side_threads(2) == {"teacher": 1, "student": 1}
    assert side_by_side_threads(3) == {"teacher": 2, "student": 1}
