"""The sandbox contains hostile programs, in namespace mode and in the rlimits fallback."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from distill.filters.sandbox import SandboxConfig, run_many, run_python


def _fallback_python() -> str | None:
    """An interpreter the fallback can run: as root it must be readable by nobody."""
    candidates = [None, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")]
    for python in dict.fromkeys(c for c in candidates if c is None or Path(c).exists()):
        config = SandboxConfig(isolation="rlimits", python=python, timeout_s=10)
        if run_python("print('ok')", config).stdout == "ok\n":
            return python
    return None


@pytest.fixture(scope="module", params=["namespaces", "rlimits"])
def mode(request) -> SandboxConfig:
    if request.param == "namespaces":
        config = SandboxConfig(isolation="namespaces", timeout_s=10)
        result = run_python("print('ok')", config)
        if result.status != "passed":
            pytest.skip(f"no namespaces here: {result.detail}")
        return config
    python = _fallback_python()
    if python is None and os.geteuid() == 0:
        pytest.skip("no interpreter readable by nobody for the rlimits fallback")
    return SandboxConfig(isolation="rlimits", python=python, timeout_s=10)


def leftovers(workdir: str, wait_s: float = 5.0) -> list[int]:
    """Processes still running the sandbox's program (its path is in their command line)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes()
                except OSError:
                    continue
                if workdir.encode() in cmdline:
                    found.append(int(entry.name))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_runs_and_reports(mode: SandboxConfig) -> None:
    result = run_python("import sys\nprint('out')\nprint('err', file=sys.stderr)", mode)
    assert (result.status, result.returncode, result.isolation) == ("passed", 0, mode.isolation)
    assert (result.stdout, result.stderr) == ("out\n", "err\n")
    failed = run_python("raise SystemExit(3)", mode)
    assert (failed.status, failed.returncode, failed.detail) == ("failed", 3, "exit 3")
    syntax = run_python("def broken(:\n", mode)
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr


def test_infinite_loop_times_out_and_nothing_is_left(mode: SandboxConfig) -> None:
    config = mode.model_copy(update={"timeout_s": 1.0})
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", config)
    assert result.status == "timeout" and result.detail == "wall clock 1.0 s"
    assert time.monotonic() - start < 5
    assert leftovers(result.workdir) == []


def test_cpu_limit_kills(mode: SandboxConfig) -> None:
    config = mode.model_copy(update={"timeout_s": 20, "cpu_s": 1})
    result = run_python("while True:\n    pass\n", config)
    assert result.status == "killed" and result.detail in ("SIGXCPU", "SIGKILL")
    assert result.duration_s < 15


def test_escaped_session_dies_with_the_sandbox() -> None:
    config = SandboxConfig(isolation="namespaces", timeout_s=1.5)
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()  # leaves the process group that the parent kills\n"
            "    time.sleep(60)\n"
            "time.sleep(60)\n")
    result = run_python(code, config)
    if result.status == "error":
        pytest.skip(f"no namespaces here: {result.detail}")
    assert result.status == "timeout"
    assert leftovers(result.workdir) == []


FORK_BOMB = """\
import os, time
children = 0
while True:
    try:
        pid = os.fork()
    except (OSError, PermissionError) as error:
        print("refused after", children, type(error).__name__, flush=True)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children += 1
    if children > 500:
        print("not contained", flush=True)
        break
time.sleep(60)
"""


def test_fork_bomb_is_contained(mode: SandboxConfig) -> None:
    config = mode.model_copy(update={"timeout_s": 2.0, "nproc": 8})
    result = run_python(FORK_BOMB, config)
    assert result.status == "timeout", result
    assert result.stdout.startswith("refused after"), result.stdout
    assert int(result.stdout.split()[2]) < 8
    assert leftovers(result.workdir) == []
    assert os.fork is not None and run_python("print(1)", mode).status == "passed"


def test_huge_allocation_fails(mode: SandboxConfig) -> None:
    config = mode.model_copy(update={"memory_mb": 256})
    result = run_python("block = bytearray(4 * 1024 ** 3)\nprint('allocated')\n", config)
    assert result.status in ("failed", "killed") and "allocated" not in result.stdout
    assert result.status == "killed" or "MemoryError" in result.stderr


WRITE_OUTSIDE = """\
import os
from pathlib import Path
for path in {paths!r}:
    try:
        Path(path).write_text("pwned")
        print("wrote", path)
    except OSError as error:
        print("refused", path, type(error).__name__)
Path("inside.txt").write_text("mine")
print("inside", Path("inside.txt").read_text())
"""


def test_writes_outside_its_directory_fail(mode: SandboxConfig, tmp_path: Path) -> None:
    if mode.isolation == "rlimits" and os.geteuid() != 0:
        pytest.skip("the rlimits fallback runs as this user and can write this user's files")
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("original")
    created = tmp_path / "created.txt"
    result = run_python(WRITE_OUTSIDE.format(paths=[str(sentinel), str(created)]), mode)
    assert result.status == "passed", result
    assert "wrote" not in result.stdout and "inside mine" in result.stdout
    assert sentinel.read_text() == "original" and not created.exists()
    assert not Path(result.workdir).exists()


SNOOP = """\
import os
from pathlib import Path
print("env", sorted(os.environ.items()))
for environ in [Path("/proc/{pid}/environ")] + list(Path("/proc").glob("*/environ")):
    try:
        print(environ, environ.read_bytes())
    except OSError as error:
        print(environ, "refused", type(error).__name__)
try:
    print("file", Path({secret_file!r}).read_text())
except OSError as error:
    print("file refused", type(error).__name__)
"""


def test_secrets_stay_out(mode: SandboxConfig, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    if mode.isolation == "rlimits" and os.geteuid() != 0:
        pytest.skip("the rlimits fallback can read this user's /proc/PID/environ and files")
    monkeypatch.setenv("DISTILL_TEST_SECRET", "s3cr3t-env-value")
    secret_file = tmp_path / "api_key.txt"
    secret_file.write_text("s3cr3t-file-value")
    monkeypatch.chdir(tmp_path)  # the working directory is hidden in namespace mode
    code = SNOOP.format(pid=os.getpid(), secret_file=str(secret_file))
    result = run_python(code, mode, tail_chars=10**7)
    assert result.status == "passed", result
    assert "env [" in result.stdout and "file refused" in result.stdout
    assert "s3cr3t" not in result.stdout + result.stderr


CONNECT = """\
import socket
try:
    with socket.create_connection(("127.0.0.1", {port}), timeout=2) as conn:
        conn.sendall(b"leak")
    print("connected")
except OSError as error:
    print("refused", type(error).__name__, error)
"""


def test_no_network(mode: SandboxConfig) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.5)
        result = run_python(CONNECT.format(port=server.getsockname()[1]), mode)
        assert result.status == "passed", result
        assert result.stdout.startswith("refused"), result.stdout
        with pytest.raises(TimeoutError):
            server.accept()


def test_run_many_keeps_order(mode: SandboxConfig) -> None:
    codes = [f"print({i})" if i != 2 else "raise ValueError" for i in range(5)]
    results = run_many(codes, mode, workers=2)
    assert [r.status for r in results] == ["passed", "passed", "failed", "passed", "passed"]
    assert [r.stdout for r in results if r.status == "passed"] == ["0\n", "1\n", "3\n", "4\n"]
