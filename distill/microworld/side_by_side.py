"""Train one of the build's models in a child process while this process trains another.

The build is compute-bound, and its models are small: one thread per model gets more out
of two cores than two threads on each model in turn (a teacher step is 1.71x faster on
two threads than on one, not 2x: scripts/bench_build_step.py, docs/performance.md). The
child is a plain `python -m distill.microworld.side_by_side JOB` rather than a spawn,
which would import the caller's `__main__` again: a user's script without a main guard
would start a second build. It reads its job (the arguments of `train.train_model`) from
a pickle the parent wrote, prints each step on stdout and its statistics as the last
line; what it writes on stderr goes to a file beside the job, quoted when it fails.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

Progress = Callable[[int, int, float], None]


class ChildTraining:
    """`train_model(**job)` in a child process; use as a context manager, then `result()`.

    Leaving the `with` block early (an error, Ctrl-C in the parent) kills the child.
    """

    def __init__(self, job_dir: Path, progress: Progress | None, **job: Any) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        job_file = job_dir / "job.pkl"
        job_file.write_bytes(pickle.dumps(job))
        self._stderr_path = job_dir / "stderr.txt"
        self._progress = progress
        self._stats: dict[str, Any] | None = None
        # The child's thread pools must not start wider than its share of the cores.
        threads = str(job.get("threads") or 1)
        env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        with self._stderr_path.open("w") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(job_file)], stdout=subprocess.PIPE,
                stderr=stderr, text=True, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            kind, _, rest = line.partition(" ")
            if kind == "step" and self._progress is not None:
                done, total, loss = rest.split()
                self._progress(int(done), int(total), float(loss))
            elif kind == "stats":
                self._stats = json.loads(rest)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._process.pid

    def result(self) -> dict[str, Any]:
        """Wait for the child; its training statistics, or RuntimeError with its stderr."""
        code = self._process.wait()
        self._reader.join()
        if code != 0 or self._stats is None:
            tail = self._stderr_path.read_text().strip().splitlines()[-15:]
            raise RuntimeError(f"training in a child process failed (exit {code}); its "
                               f"stderr ends:\n" + "\n".join(tail))
        return self._stats

    def __enter__(self) -> ChildTraining:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()


def main(job_file: str) -> int:
    """The child: train the job, report each step, then the statistics."""
    from distill.microworld.train import train_model

    job = pickle.loads(Path(job_file).read_bytes())

    def report(done: int, total: int, loss: float) -> None:
        # If the parent was killed outright, this write fails (broken pipe) and ends us.
        print(f"step {done} {total} {loss}", flush=True)

    stats = train_model(**job, progress=report)
    print("stats " + json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
