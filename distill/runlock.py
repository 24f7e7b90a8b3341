"""One process at a time in a run directory: `runs/<name>/.lock`.

`distill run` (and `distill sweep`, for each of its runs) takes the lock before it writes
anything in the run directory, and holds it until it exits:

    with run_lock(run_dir, "distill run recipes/x.yaml") as taken_over:
        ...  # taken_over: the holder a dead process left in the file, or None

A second process on the same directory stops at once with `RunLocked`, whose message
names the holder (pid, host, start time, command): two orchestrators in one directory
move each other's stages to `.stale/` and commit half-written ones.

The lock is `fcntl.flock` on the file, which the kernel releases when its holder exits,
however it exits: a lock left by a killed process is simply taken, and the holder it
left in the file is returned so the caller can say so. The file is never deleted (a
process that opened it just before a delete would lock a file nobody else sees); it is
emptied on release. On NFS, Linux maps `flock` to the server's byte-range locks.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_FILE = ".lock"


class RunLocked(RuntimeError):
    """Another live process holds the run directory; the message names it."""


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a run directory."""

    pid: int
    host: str
    started: str  # local time, ISO 8601, seconds
    command: str

    def describe(self) -> str:
        """"pid 123 on host h since 2026-12-06T05:40:00 (distill run ...)"."""
        return f"pid {self.pid} on host {self.host} since {self.started} ({self.command})"


@contextmanager
def run_lock(run_dir: str | Path, command: str) -> Iterator[Holder | None]:
    """Hold `run_dir`'s lock for the body of the `with`; creates the directory.

    Yields:
        The holder a process that died while holding the lock left in the file (its
        lock is taken over), or None.

    Raises:
        RunLocked: a live process holds the lock.
        OSError: the directory or its lock file cannot be created or written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            who = holder.describe() if holder else "another process (it has not said which yet)"
            raise RunLocked(f"{run_dir} is in use by {who}; wait for it or stop it") from None
        previous = _read(fd)  # a holder that is gone: it would have emptied the file
        _write(fd, Holder(pid=os.getpid(), host=socket.gethostname(),
                          started=time.strftime("%Y-%m-%dT%H:%M:%S"), command=command))
        try:
            yield previous
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def taken_over(run_dir: str | Path, holder: Holder) -> str:
    """The warning for a lock taken over from a process that died holding it."""
    return (f"{run_dir}: took over the lock of {holder.describe()}, which is no longer "
            "running (it stopped without finishing; this run resumes its work)")


def unwritable(run_dir: str | Path) -> str | None:
    """Why `run_dir` could not be created or written, found without creating it, or None.

    `distill validate` asks this; `distill run` finds out by taking the lock, which
    creates the directory and a file in it.
    """
    path = Path(run_dir).absolute()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{path}: cannot create the run directory ({existing} is not a directory)"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{path}: cannot create or write the run directory ({existing} is not writable)"
    return None


def read_holder(run_dir: str | Path) -> Holder | None:
    """Who the lock file says holds `run_dir` (also a dead holder's leftover), if anyone."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        return _read(fd)
    finally:
        os.close(fd)


def _read(fd: int) -> Holder | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    try:
        fields = json.loads(data)
        return Holder(pid=int(fields["pid"]), host=str(fields["host"]),
                      started=str(fields["started"]), command=str(fields["command"]))
    except (ValueError, KeyError, TypeError):  # empty (free, or being written) or foreign
        return None


def _write(fd: int, holder: Holder) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(asdict(holder)) + "\n").encode())
    os.fsync(fd)
