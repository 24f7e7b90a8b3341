"""Training processes die with the run that started them.

`distill run` starts `accelerate launch`, which starts the trainer (one per GPU). Were the
run killed alone (`kill -9 <pid>`, the OOM killer choosing it), they would train on
unseen: the run directory's lock goes with the run, and the next `distill run` would
train into the same work directory beside them, two trainers on one GPU. So on Linux each
process of that chain asks the kernel to SIGKILL it when its parent dies
(`prctl(PR_SET_PDEATHSIG)`), before it does anything else: the launcher through this
module (`python -m distill.train.lifeline <run's pid> accelerate ...`, which then becomes
the launcher), the trainer in `distill.train.common.run_as_main`. Elsewhere it does
nothing: a killed run's trainers finish on their own.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent exits (Linux only).

    `parent`: the pid the parent must have; when it is already gone (it died before the
    request took hold, and this process was handed to init), exit now.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not allowed here (a sandbox): the process lives as it always did
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def wrapped(command: list[str]) -> list[str]:
    """`command` run so that it dies with this process (see the module docstring)."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-m", "distill.train.lifeline", str(os.getpid()), *command]


if __name__ == "__main__":
    die_with_parent(int(sys.argv[1]))
    os.execv(sys.argv[2], sys.argv[2:])  # the kernel keeps the request across exec
