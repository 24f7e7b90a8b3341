"""Run untrusted Python (a teacher's code and tests) in a separate, limited process.

    from distill.filters.sandbox import SandboxConfig, run_python, run_many
    result = run_python("assert 1 + 1 == 2", SandboxConfig(timeout_s=5))
    result.status  # "passed" | "failed" | "timeout" | "killed" | "error"

Each run gets a throw-away directory, a minimal environment (no variables of this
process), `python -I -S -B` (no site-packages, no user site, no PYTHON* variables), stdin
from /dev/null, and the rlimits of `SandboxConfig`. Where Linux namespaces are available
(unprivileged user namespaces, or root) it also gets no network, a read-only view of the
filesystem with the home and working directories hidden, its own pid namespace (so every
process it starts dies with it) and a size-capped tmpfs as its directory; as root it runs
as `nobody`. Otherwise (`isolation="rlimits"`) sockets, ctypes and spawning programs are
refused by a Python audit hook, which a determined program can get around: see
the README (Verification) for what each mode guarantees. The child side is
`sandbox_boot.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from distill.settings import Strict

BOOT = Path(__file__).with_name("sandbox_boot.py")
PROGRAM = "main.py"
NOBODY = 65534


class SandboxConfig(Strict):
    """Limits and isolation of one sandboxed run."""

    timeout_s: float = Field(10.0, gt=0, description="Wall-clock limit; the whole process "
                             "group (and pid namespace) is killed when it passes.")
    cpu_s: int = Field(10, ge=1, description="CPU seconds (RLIMIT_CPU).")
    memory_mb: int = Field(512, ge=64, description="Address space (RLIMIT_AS).")
    nproc: int = Field(16, ge=2, description="Processes and threads (RLIMIT_NPROC).")
    fsize_mb: int = Field(16, ge=1, description="Largest file written, stdout included "
                          "(RLIMIT_FSIZE).")
    disk_mb: int = Field(64, ge=1, description="Size of the working directory's tmpfs "
                         "(namespace mode).")
    nofile: int = Field(64, ge=16, description="Open file descriptors (RLIMIT_NOFILE).")
    isolation: Literal["auto", "namespaces", "rlimits"] = Field(
        "auto", description="auto: namespaces where the kernel allows them, else rlimits "
        "with an audit hook; namespaces: fail rather than fall back; rlimits: never use "
        "namespaces.")
    python: str | None = Field(None, description="Interpreter for the programs (default: "
                               "this process's base interpreter); it runs with -I -S, so "
                               "only its standard library is importable.")


@dataclass
class SandboxResult:
    """How one run ended."""

    status: str  # passed | failed | timeout | killed | error
    returncode: int | None  # exit status, or minus the signal number
    stdout: str  # tails, at most `tail_chars` each
    stderr: str
    duration_s: float
    isolation: str  # "namespaces" or "rlimits" ("" if it never started)
    detail: str = ""  # why, in a few words: "exit 1", "SIGXCPU", "wall clock 2.0 s"
    workdir: str = ""  # the removed directory (its path names the run's processes)


def _tail(path: Path, chars: int) -> str:
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        handle.seek(max(0, handle.tell() - 4 * chars))
        return handle.read().decode("utf-8", "replace")[-chars:]


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _interpreter() -> str:
    # The base interpreter, not a venv's symlink to it: its prefix is what must stay visible.
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def run_python(code: str, config: SandboxConfig | None = None, *,
               tail_chars: int = 2000) -> SandboxResult:
    """Run `code` as a program in a fresh sandbox and wait for it.

    Args:
        code: Python source, run as `__main__`.
        config: Limits, isolation mode and interpreter (defaults when None).
        tail_chars: How much of the end of stdout and stderr to keep.

    Returns:
        The outcome; `status` is "error" only when the sandbox itself could not start.
    """
    config = config or SandboxConfig()
    as_root = os.geteuid() == 0
    run_uid, run_gid = (NOBODY, NOBODY) if as_root else (os.getuid(), os.getgid())
    root = Path(tempfile.mkdtemp(prefix="distill-sandbox-"))
    work = root / "work"
    work.mkdir()
    (work / PROGRAM).write_text(code, encoding="utf-8")
    if as_root:  # nobody must reach its directory in either mode
        root.chmod(0o711)
        for path in (work, work / PROGRAM):
            os.chown(path, run_uid, run_gid)
    python = os.path.realpath(config.python) if config.python else _interpreter()
    boot = {
        "workdir": str(work), "program": str(work / PROGRAM), "python": python,
        "run_uid": run_uid, "run_gid": run_gid, "isolation": config.isolation,
        "cpu_s": config.cpu_s, "memory_mb": config.memory_mb, "nproc": config.nproc,
        "fsize_mb": config.fsize_mb, "disk_mb": config.disk_mb, "nofile": config.nofile,
        "hide_paths": sorted({os.path.realpath(Path.home()), os.path.realpath(os.getcwd())}),
        "keep_paths": sorted({os.path.realpath(sys.base_prefix), os.path.dirname(python),
                             os.path.dirname(os.path.dirname(python))}),
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(work),
                "TMPDIR": str(work), "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"},
    }
    status_read, status_write = os.pipe()
    boot["status_fd"] = status_write
    start = time.monotonic()
    timed_out = False
    try:
        with (root / "stdout").open("wb") as out, (root / "stderr").open("wb") as err:
            proc = subprocess.Popen(
                [python, "-I", "-S", "-B", str(BOOT), json.dumps(boot)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, env={}, cwd=root,
                pass_fds=(status_write,), start_new_session=True)
            os.close(status_write)
            status_write = -1
            try:
                proc.wait(timeout=config.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                # The group: boot and whatever stayed in it; the pid namespace dies with boot.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        duration = time.monotonic() - start
        os.set_blocking(status_read, False)
        messages = {}
        try:
            for line in os.read(status_read, 65536).decode().splitlines():
                messages.update(json.loads(line))
        except BlockingIOError:
            pass
        stdout, stderr = _tail(root / "stdout", tail_chars), _tail(root / "stderr", tail_chars)
    finally:
        if status_write >= 0:
            os.close(status_write)
        os.close(status_read)
        shutil.rmtree(root, ignore_errors=True)

    isolation = messages.get("isolation", "")
    if "wait_status" in messages:
        returncode = os.waitstatus_to_exitcode(messages["wait_status"])
    else:  # rlimits mode: boot became the program
        returncode = proc.returncode
    result = SandboxResult(status="", returncode=returncode, stdout=stdout, stderr=stderr,
                           duration_s=round(duration, 3), isolation=isolation,
                           workdir=str(work))
    if timed_out:
        result.status, result.detail = "timeout", f"wall clock {config.timeout_s} s"
    elif "error" in messages:
        result.status, result.detail = "error", messages["error"]
    elif returncode == 0:
        result.status, result.detail = "passed", "exit 0"
    elif returncode is not None and returncode < 0:
        result.status, result.detail = "killed", _signal_name(-returncode)
    else:
        result.status, result.detail = "failed", f"exit {returncode}"
    return result


def run_many(codes: list[str], config: SandboxConfig | None = None, *, workers: int = 2,
             tail_chars: int = 2000) -> list[SandboxResult]:
    """Run programs in parallel, at most `workers` at a time; results in input order."""
    if not codes:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(codes)))) as pool:
        return list(pool.map(lambda code: run_python(code, config, tail_chars=tail_chars),
                             codes))
