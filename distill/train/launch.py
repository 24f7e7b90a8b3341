"""Start a training job the right way for the process we are in.

- Already inside an `accelerate launch` (a script launched by hand, or `distill run`
  started under a one-process launch): train here; several ranks train collectively.
- A plain single process with an accelerate config: run
  `accelerate launch --config_file CFG -m <the method's module> spec.json` as a
  subprocess, its output streamed into a log file, its progress read from the JSON lines
  it appends to `progress.jsonl`, and its `train_log.json` read back.
- No accelerate config: train here, in this process.

The method's function and module come from `distill.registry.TRAINERS`. By hand, the
subprocess is the same as

    accelerate launch --config_file recipes/accelerate/cpu.yaml --num_processes 1 \
        -m distill.train.sft spec.json

`--num_processes` is the config's own `num_processes`, or, for a multi-GPU config that
leaves it out (ddp.yaml, fsdp.yaml, deepspeed_zero3.yaml), the number of GPUs this process
sees: CUDA_VISIBLE_DEVICES when set, else torch's device count. So
`CUDA_VISIBLE_DEVICES=2,3 distill run ...` trains on those two GPUs with two processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from distill.registry import TRAINERS
from distill.train import lifeline
from distill.train.config import (
    LocalLauncher,
    RayLauncher,
    TrainConfig,
    TrainResult,
    TrainSpec,
    check_global_batch,
)

LOG_TAIL_LINES = 40
PROGRESS_POLL_S = 0.5  # how often the parent reads the subprocess's progress file


class TrainingError(RuntimeError):
    """The training subprocess failed; the message ends with the tail of its log."""


def inside_accelerate_launch() -> bool:
    """True in a process that `accelerate launch` (or torchrun) started."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return True
    # Set by accelerate's launchers even for a single process.
    return "ACCELERATE_MIXED_PRECISION" in os.environ


def launch_training(spec: TrainSpec, accelerate_config: str | Path | None,
                    log_path: str | Path | None = None, *, echo: bool = False,
                    progress: Callable[[int, int], None] | None = None,
                    launcher: LocalLauncher | RayLauncher | None = None) -> TrainResult:
    """Train as `spec` says and return the result (on every rank, when there are several).

    Args:
        spec: The job.
        accelerate_config: accelerate config YAML for a subprocess launch; None trains in
            this process. Ignored inside a launch, where the ranks already exist.
        log_path: Where the subprocess's output goes (appended); default
            `<output_dir>/train.log`.
        echo: Also copy the subprocess's output to this process's stderr.
        progress: Called with (step, total steps) at each step, so the console can show
            training while the subprocess's output goes to the log: in this process by a
            `TrainerCallback`, from a subprocess by reading the JSON lines it appends to
            `spec.progress_path` (default `<output_dir>/progress.jsonl`).
        launcher: The recipe's `train.launcher`; kind ray starts the launch on several
            nodes of a Ray cluster (`distill.train.ray_launch`). None or kind local: here.

    Raises:
        TrainingError: the subprocess failed; the message carries its log's last lines.
    """
    train = TRAINERS.get(spec.method)
    if launcher is not None and launcher.kind == "ray":
        from distill.train.ray_launch import launch_on_ray

        return launch_on_ray(spec, train.__module__, accelerate_config, launcher,
                             Path(log_path or Path(spec.output_dir) / "train.log"), echo,
                             progress)
    if accelerate_config is None or inside_accelerate_launch():
        from distill.train.common import progress_callback

        return train(spec, [progress_callback(report=progress)] if progress else None)
    if spec.progress_path is None:
        spec = spec.model_copy(update={
            "progress_path": str(Path(spec.output_dir) / "progress.jsonl")})
    return _launch_subprocess(spec, train.__module__, Path(accelerate_config),
                              Path(log_path or Path(spec.output_dir) / "train.log"), echo,
                              progress)


def accelerate_command(config: str | Path, module: str, spec_path: str | Path,
                       num_processes: int | None = None) -> list[str]:
    """The `accelerate launch` command line, run by this interpreter (so the same venv).

    `num_processes` None reads the count from the config (`launch_processes`).
    """
    if num_processes is None:
        num_processes = launch_processes(read_accelerate_config(Path(config)), Path(config))
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--num_processes", str(num_processes), "-m", module, str(spec_path)]


def read_accelerate_config(config: Path) -> dict[str, Any]:
    """An accelerate config file's settings.

    Raises:
        ValueError: the file cannot be read, or is not valid YAML.
    """
    try:
        return yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ValueError(f"accelerate config {config}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ValueError(f"accelerate config {config}: not valid YAML ({error})") from None


def launch_processes(settings: dict[str, Any], config: Path) -> int:
    """How many processes a launch with this accelerate config starts on this machine.

    The config's `num_processes` if it has one (a single-process config, distributed_type
    NO, means 1); otherwise one per visible GPU, so the shipped multi-GPU configs follow
    CUDA_VISIBLE_DEVICES instead of a count written for someone else's machine.

    Raises:
        ValueError: no count in the config and none to be had from the GPUs (none visible,
            a CPU config, or several machines, where the count is the total of all of them).
    """
    if settings.get("num_processes") is not None:
        return int(settings["num_processes"])
    if str(settings.get("distributed_type", "NO")).upper() == "NO":
        return 1
    if int(settings.get("num_machines") or 1) > 1 or settings.get("use_cpu"):
        why = "a multi-machine launch" if int(settings.get("num_machines") or 1) > 1 \
            else "a CPU launch"
        raise ValueError(f"accelerate config {config} has no num_processes, which {why} "
                         "needs: set num_processes in it (the total over all machines)")
    gpus = visible_gpus()
    if gpus < 1:
        raise ValueError(
            f"accelerate config {config} has no num_processes, so it starts one process per "
            f"visible GPU, and none is visible (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); make GPUs visible or set "
            "num_processes in the config")
    return gpus


def training_shape(train: TrainConfig) -> dict[str, Any]:
    """What of the launch changes the trained model, for the train stage's fingerprint.

    The accelerate config and launcher only say where training runs, except for two
    things: the mixed precision they set (TRL reads it when the recipe's args leave bf16 /
    fp16 unset) and, without `global_batch_size`, the number of processes, which
    multiplies the effective batch. With a global batch, one GPU or eight train alike.

    Raises:
        ValueError: the config gives no process count (see `launch_processes`).
    """
    config = Path(train.accelerate_config) if train.accelerate_config else None
    settings = read_accelerate_config(config) if config is not None else {}
    shape: dict[str, Any] = {"mixed_precision": settings.get("mixed_precision", "no")}
    if train.global_batch_size is None:
        if train.launcher.kind == "ray":
            shape["processes"] = {"nodes": train.launcher.nodes,
                                  "per_node": train.launcher.processes_per_node}
        else:
            shape["processes"] = launch_processes(settings, config) if config else 1
    return shape


def visible_gpus() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else torch's count."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        import torch

        return torch.cuda.device_count()
    count = 0
    for item in visible.split(","):
        item = item.strip()
        if not item or item.startswith("-"):  # CUDA ignores the ids after an invalid one
            break
        count += 1
    return count


def _launch_subprocess(spec: TrainSpec, module: str, config: Path, log_path: Path,
                       echo: bool, progress: Callable[[int, int], None] | None = None
                       ) -> TrainResult:
    if not config.is_file():
        raise FileNotFoundError(f"accelerate config {config}: no such file")
    num_processes = launch_processes(read_accelerate_config(config), config)
    if spec.global_batch_size is not None:  # refused here, before any process starts
        check_global_batch(spec, num_processes)
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_path = spec.save(out / "train_spec.json")
    result_path = out / "train_log.json"
    result_path.unlink(missing_ok=True)
    progress_file = _ProgressFile(Path(spec.progress_path), progress)

    command = accelerate_command(config, module, spec_path, num_processes)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"\n$ {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(lifeline.wrapped(command), stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, env=_child_env(config),
                                   stdin=subprocess.DEVNULL)
        writer = _LogWriter(log, echo)
        copier = threading.Thread(target=_copy_output, args=(process.stdout, writer),
                                  daemon=True)
        copier.start()
        # this thread reads the progress file, so `progress` is called where it was given
        code = None
        while code is None:
            progress_file.read()
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(timeout=PROGRESS_POLL_S)
        copier.join()
        writer.close()
        progress_file.read()
    if code != 0 or not result_path.is_file():
        why = f"exit code {code}" if code != 0 else f"no {result_path} was written"
        raise TrainingError(f"training failed ({why}): {' '.join(command)}\n"
                            f"last lines of {log_path}:\n{writer.tail()}")
    return TrainResult.load(result_path)


def _copy_output(stream, writer: _LogWriter) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        writer.write(chunk.decode("utf-8", errors="replace"))


def _child_env(config: Path) -> dict[str, str]:
    """The subprocess's environment: this package importable, CPU runs marked as such."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    settings = read_accelerate_config(config)
    # accelerate's multi-process launcher does not pass `use_cpu` on; its ranks read this.
    if settings.get("use_cpu"):
        env["ACCELERATE_USE_CPU"] = "true"
    return env


class _LogWriter:
    """Copies output into the log; progress bars (carriage returns) only every few seconds."""

    def __init__(self, log, echo: bool, progress_every_s: float = 10.0):
        self.log, self.echo, self.every = log, echo, progress_every_s
        self.pending = ""
        self.last_progress = float("-inf")
        self.lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)

    def write(self, text: str) -> None:
        if self.echo:
            sys.stderr.write(text)
            sys.stderr.flush()
        self.pending += text
        while True:
            cut = min((i for i in (self.pending.find("\n"), self.pending.find("\r")) if i >= 0),
                      default=-1)
            if cut < 0:
                break
            segment, ending = self.pending[:cut], self.pending[cut]
            self.pending = self.pending[cut + 1:]
            if ending == "\n":
                self._line(segment)
            elif segment.strip() and time.monotonic() - self.last_progress >= self.every:
                self.last_progress = time.monotonic()
                self._line(segment)

    def _line(self, line: str) -> None:
        self.log.write(line + "\n")
        self.log.flush()
        if line.strip():
            self.lines.append(line)

    def close(self) -> None:
        if self.pending:
            self._line(self.pending)
            self.pending = ""

    def tail(self) -> str:
        return "\n".join(self.lines)


class _ProgressFile:
    """Calls `progress(step, max_steps)` for each new line a training subprocess appends.

    The lines are those of `distill.train.common.progress_callback`.
    """

    def __init__(self, path: Path, progress: Callable[[int, int], None] | None):
        path.unlink(missing_ok=True)  # lines of an earlier attempt are not this run's
        self.path, self.progress = path, progress
        self.offset = 0
        self.last: tuple[int, int] | None = None

    def read(self) -> None:
        if self.progress is None or not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written waits
        self.offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
                step = (int(record["step"]), int(record["max_steps"]))
            except (ValueError, KeyError, TypeError):
                continue
            if step != self.last:
                self.last = step
                self.progress(*step)
