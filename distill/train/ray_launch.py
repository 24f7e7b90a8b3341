r"""Training on several nodes: the same `accelerate launch` on every node of a Ray cluster.

With `train.launcher: {kind: ray, nodes: 2}` (and a multi-process `train.accelerate_config`)
the training stage connects to a running Ray cluster, reserves `nodes` nodes (a placement
group of STRICT_SPREAD bundles, one per node, each holding that node's GPUs, or 1 CPU on a
CPU cluster) and runs one Ray task per node that starts machine rank i of a multi-node
launch:

    accelerate launch --config_file CFG --num_machines 2 --machine_rank i \
        --main_process_ip <node 0's IP> --main_process_port <a free port on node 0> \
        --num_processes <2 x processes per node> -m distill.train.sft train_spec.json

Ray only places and starts the launchers; the ranks meet through accelerate's (torchrun's)
own rendezvous, exactly as when started by hand on each machine. What every node needs:

- the same Python environment as the driver (distill and its training dependencies): the
  task runs accelerate with the Python of the Ray worker on its node;
- the run directory on storage every node sees (a shared filesystem): the spec, the data,
  the accelerate config (copied beside the spec) and the outputs live there. A node that
  does not see the spec fails at once, naming the path.

Node 0's output becomes the training log, followed as it is written; each node's output is
also kept in `<output_dir>/nodes/node<i>.log`, and `<output_dir>/nodes.json` records which
node ran which machine rank and how it ended. When one node fails, the others' launchers
are stopped and the error carries every node's last lines. Progress is read from
`progress.jsonl`, as for a launch on this node.

A cluster by hand, then a run:

    ray start --head --port 6379                  # on the first node
    ray start --address <first node's IP>:6379    # on every other node
    RAY_ADDRESS=<first node's IP>:6379 distill run recipes/x.yaml \
        train.accelerate_config=recipes/accelerate/ddp.yaml train.launcher.kind=ray \
        train.launcher.nodes=2

Ray is optional (`pip install "distill[ray]"`) and imported only here, inside functions.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.train.config import RayLauncher, TrainResult, TrainSpec, check_global_batch
from distill.train.launch import (
    LOG_TAIL_LINES,
    PROGRESS_POLL_S,
    TrainingError,
    _child_env,
    _copy_output,
    _LogWriter,
    _ProgressFile,
    read_accelerate_config,
)

log = logging.getLogger("distill.train")

INSTALL_HINT = 'pip install "distill[ray]"'
PLACEMENT_TIMEOUT_S = 300.0  # how long to wait for the nodes (an autoscaler may add them)
STOP_GRACE_S = 30.0  # how long a stopped launcher gets to exit before it is killed
STOPPED = "stopped after another node failed"
# The driver's variables that reach every node's launcher (hub cache and token, NCCL and
# torch tuning, ...). The rest of a node's environment is its own Ray worker's: paths and
# CUDA_VISIBLE_DEVICES differ between machines.
FORWARDED_ENV = ("HF_", "TRANSFORMERS_", "TOKENIZERS_", "NCCL_", "GLOO_", "TORCH_",
                 "PYTORCH_", "WANDB_", "ACCELERATE_")
# accelerate's distributed types whose launcher starts torchrun ranks on each machine.
# "NO" would start one independent process per node: each would train its own copy.
MULTI_PROCESS_TYPES = ("MULTI_GPU", "FSDP", "DEEPSPEED", "MEGATRON_LM", "MULTI_NPU",
                       "MULTI_MLU", "MULTI_SDAA", "MULTI_MUSA", "MULTI_XPU", "MULTI_HPU",
                       "MULTI_NEURON")


def check_ray_launch(accelerate_config: str | Path | None) -> dict[str, Any]:
    """Whether a Ray launch can work with this accelerate config, before anything runs.

    Returns:
        The accelerate config's settings.

    Raises:
        ValueError: Ray is not installed, or the config is missing or single-process.
    """
    if importlib.util.find_spec("ray") is None:
        raise ValueError(f"kind ray needs Ray: {INSTALL_HINT}")
    if accelerate_config is None:
        raise ValueError("kind ray needs train.accelerate_config: a multi-process accelerate "
                         "config such as recipes/accelerate/ddp.yaml")
    path = Path(accelerate_config)
    settings = read_accelerate_config(path)
    kind = str(settings.get("distributed_type", "NO"))
    if kind not in MULTI_PROCESS_TYPES:
        raise ValueError(f"accelerate config {path} has distributed_type {kind}, which does "
                         "not train across machines (each node would train its own copy); "
                         "use MULTI_GPU, FSDP or DEEPSPEED, e.g. recipes/accelerate/ddp.yaml")
    return settings


def launch_on_ray(spec: TrainSpec, module: str, accelerate_config: str | Path | None,
                  launcher: RayLauncher, log_path: Path, echo: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> TrainResult:
    """Train `spec` with `python -m module` on `launcher.nodes` nodes of a Ray cluster.

    Args:
        spec: The job; its output directory must be on storage every node sees.
        module: The training method's module (`distill.train.sft`, ...).
        accelerate_config: A multi-process accelerate config (MULTI_GPU, FSDP, DEEPSPEED).
        launcher: The recipe's `train.launcher`.
        log_path: Receives node 0's output (appended).
        echo: Also copy node 0's output to this process's stderr.
        progress: Called with (step, total steps), read from `spec.progress_path`.

    Raises:
        TrainingError: no cluster, not enough nodes, or a node failed (the message carries
            every node's last lines).
    """
    settings = check_ray_launch(accelerate_config)
    ray = _import_ray()
    if spec.progress_path is None:
        spec = spec.model_copy(update={
            "progress_path": str(Path(spec.output_dir) / "progress.jsonl")})
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the nodes read the config from the shared run directory, not from this checkout
    config = Path(shutil.copyfile(accelerate_config, out / "accelerate_config.yaml"))
    spec_path = spec.save(out / "train_spec.json")
    result_path = out / "train_log.json"
    result_path.unlink(missing_ok=True)
    progress_file = _ProgressFile(Path(spec.progress_path), progress)

    connected_here = _connect(ray, launcher.address)
    try:
        bundle, per_node = _node_share(ray, launcher, settings)
        if spec.global_batch_size is not None:  # refused here, before any node starts
            check_global_batch(spec, launcher.nodes * per_node)
        group, nodes = _reserve(ray, launcher.nodes, bundle)
        try:
            jobs = _jobs(ray, group, bundle, nodes, per_node, settings, module, config,
                         spec_path)
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with log_path.open("a", encoding="utf-8") as handle:
                handle.write(f"\n# training on {len(jobs)} Ray nodes; node 0's output "
                             f"follows, every node's is in {out / 'nodes'}\n")
                writer = _LogWriter(handle, echo)
                try:
                    reports = _run(ray, group, bundle, jobs, writer, progress_file)
                finally:
                    writer.close()
        finally:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(group)
    finally:
        if connected_here:
            ray.shutdown()
    (out / "nodes.json").write_text(json.dumps(
        [report.record(out) for report in reports], indent=2) + "\n", encoding="utf-8")
    if not all(report.ok for report in reports) or not result_path.is_file():
        raise _failure(reports, result_path)
    return TrainResult.load(result_path)


# -- one node's share, run in a Ray task on that node --------------------------------------

@dataclass(frozen=True)
class NodeJob:
    """What one node runs: machine rank `machine_rank` of a multi-node accelerate launch."""

    machine_rank: int
    num_machines: int
    node_id: str
    ip: str
    main_ip: str
    main_port: int
    num_processes: int
    deepspeed: bool
    config: str
    module: str
    spec_path: str
    log_path: str


@dataclass
class NodeReport:
    """How one node's launch ended."""

    machine_rank: int
    node_id: str
    ip: str
    exit_code: int | None = None
    error: str | None = None  # why it did not run, or did not finish
    log: str | None = None
    tail: str = ""
    command: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether its launch ran to a zero exit code."""
        return self.error is None and self.exit_code == 0

    def outcome(self) -> str:
        """Its end in a few words."""
        return self.error or f"exit code {self.exit_code}"

    def record(self, base: Path) -> dict[str, Any]:
        """A line of `nodes.json`: the log path relative to the output directory."""
        data = asdict(self)
        del data["tail"]
        if self.log is not None:
            data["log"] = os.path.relpath(self.log, base)
        return data


def node_command(job: NodeJob) -> list[str]:
    """The node's `accelerate launch` line, run by this node's interpreter."""
    command = [sys.executable, "-m", "accelerate.commands.launch",
               "--config_file", job.config,
               "--num_machines", str(job.num_machines), "--machine_rank", str(job.machine_rank),
               "--main_process_ip", job.main_ip, "--main_process_port", str(job.main_port),
               "--num_processes", str(job.num_processes)]
    if job.deepspeed:  # one launcher per node is what accelerate calls "standard"
        command += ["--deepspeed_multinode_launcher", "standard"]
    return [*command, "-m", job.module, job.spec_path]


def run_node(job: NodeJob) -> NodeReport:
    """Run one node's launch to its end (the body of the Ray task on that node).

    A cancelled task (another node failed) stops its launcher's whole process group.
    """
    command = node_command(job)
    report = NodeReport(job.machine_rank, job.node_id, job.ip, command=command)
    if not Path(job.spec_path).is_file():
        report.error = (f"{job.spec_path}: no such file on node {job.ip}; the run directory "
                        "must be on storage every node sees (a shared filesystem)")
        return report
    log_path = Path(job.log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        # its own session, so that stopping it reaches torchrun's ranks too
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=_child_env(Path(job.config)), stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        writer = _LogWriter(handle, echo=False)
        copier = threading.Thread(target=_copy_output, args=(process.stdout, writer),
                                  daemon=True)
        copier.start()
        try:
            while (code := process.poll()) is None:
                time.sleep(PROGRESS_POLL_S)  # a cancel interrupts here
        finally:
            _stop(process)
            copier.join(timeout=STOP_GRACE_S)
            writer.close()
    report.exit_code, report.log, report.tail = code, str(log_path), writer.tail()
    return report


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def free_port() -> int:
    """A TCP port free on this node now (the rendezvous port, asked of node 0)."""
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


# -- the driver's side ---------------------------------------------------------------------

def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError(f"train.launcher kind ray needs Ray: {INSTALL_HINT}") from None
    return ray


def _connect(ray, address: str | None) -> bool:
    """Connect to the cluster unless connected; True when this call connected."""
    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise TrainingError(
            "train.launcher: a multi-node launch needs a running Ray cluster: set "
            "train.launcher.address or RAY_ADDRESS (start one with `ray start --head` on the "
            "first node and `ray start --address <its IP>:6379` on the others)")
    if ray.is_initialized():  # e.g. a generation executor on the same cluster
        return False
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except Exception as error:  # Ray raises several kinds; one line names the address
        raise TrainingError(f"train.launcher: cannot connect to the Ray cluster at "
                            f"{address}: {error}") from None
    return True


def _node_share(ray, launcher: RayLauncher,
                settings: dict[str, Any]) -> tuple[dict[str, float], int]:
    """Each node's bundle of resources and its number of training processes."""
    gpus = [node["Resources"].get("GPU", 0) for node in ray.nodes()
            if node["Alive"] and node["Resources"].get("GPU", 0) > 0]
    if settings.get("use_cpu"):
        return {"CPU": 1}, launcher.processes_per_node or 1
    if not gpus:
        raise TrainingError("train.launcher: the accelerate config trains on GPUs (use_cpu "
                            "is not set) but the Ray cluster has no GPU node")
    per_node = launcher.processes_per_node or int(min(gpus))
    return {"GPU": per_node}, per_node


def _reserve(ray, count: int, bundle: dict[str, float]) -> tuple[Any, list[tuple[str, str]]]:
    """A placement group of `count` bundles on distinct nodes, and each bundle's (id, IP)."""
    from ray.util.placement_group import placement_group, remove_placement_group

    alive = [node for node in ray.nodes() if node["Alive"]]
    fitting = [node for node in alive
               if all(node["Resources"].get(k, 0) >= v for k, v in bundle.items())]
    if len(fitting) < count:
        log.warning("the Ray cluster has %d node(s) with %s; waiting up to %.0f s for %d",
                    len(fitting), bundle, PLACEMENT_TIMEOUT_S, count)
    group = placement_group([dict(bundle) for _ in range(count)], strategy="STRICT_SPREAD")
    try:
        ray.get(group.ready(), timeout=PLACEMENT_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        remove_placement_group(group)
        have = "; ".join(f"{node['NodeManagerAddress']}: {node['Resources']}" for node in alive)
        raise TrainingError(f"train.launcher: {count} nodes with {bundle} each were not free "
                            f"within {PLACEMENT_TIMEOUT_S:.0f} s; the cluster: {have}") from None
    from ray.util import placement_group_table

    ips = {node["NodeID"]: node["NodeManagerAddress"] for node in alive}
    placed = placement_group_table(group)["bundles_to_node_id"]
    return group, [(placed[i], ips.get(placed[i], "?")) for i in range(count)]


def _task_options(ray, group, bundle: dict[str, float], index: int) -> dict[str, Any]:
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    forwarded = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    return {"num_cpus": bundle.get("CPU", 0), "num_gpus": bundle.get("GPU", 0),
            "max_retries": 0,  # a rerun node would wait for a rendezvous long gone
            "runtime_env": {"env_vars": forwarded},
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                group, placement_group_bundle_index=index)}


def _jobs(ray, group, bundle: dict[str, float], nodes: list[tuple[str, str]], per_node: int,
          settings: dict[str, Any], module: str, config: Path,
          spec_path: Path) -> list[NodeJob]:
    main_port = ray.get(ray.remote(free_port).options(
        **_task_options(ray, group, bundle, 0)).remote())
    logs = spec_path.parent / "nodes"
    return [NodeJob(machine_rank=rank, num_machines=len(nodes), node_id=node_id, ip=ip,
                    main_ip=nodes[0][1], main_port=main_port,
                    num_processes=len(nodes) * per_node,
                    deepspeed=settings.get("distributed_type") == "DEEPSPEED",
                    config=str(config), module=module, spec_path=str(spec_path),
                    log_path=str(logs / f"node{rank}.log"))
            for rank, (node_id, ip) in enumerate(nodes)]


def _run(ray, group, bundle: dict[str, float], jobs: list[NodeJob], writer: _LogWriter,
         progress_file: _ProgressFile) -> list[NodeReport]:
    """Start every node's task; follow node 0's log and the progress; stop all if one fails."""
    task = ray.remote(run_node)
    pending = {task.options(name=f"distill-train-node{job.machine_rank}",
                            **_task_options(ray, group, bundle, job.machine_rank)
                            ).remote(job): job for job in jobs}
    follower = _Follower(Path(jobs[0].log_path), writer)
    reports: dict[int, NodeReport] = {}
    stop_by: float | None = None  # set when one node failed: the others must end by then
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=PROGRESS_POLL_S)
            progress_file.read()
            follower.read()
            for ref in done:
                job = pending.pop(ref)
                reports[job.machine_rank] = _report(ray, ref, job)
                if not reports[job.machine_rank].ok and stop_by is None:
                    stop_by = time.monotonic() + 2 * STOP_GRACE_S
                    for other in pending:  # the task stops its launcher's process group
                        ray.cancel(other)
            if stop_by is not None and time.monotonic() > stop_by:
                for ref, job in pending.items():
                    ray.cancel(ref, force=True)
                    reports[job.machine_rank] = _lost(job, "did not stop when asked")
                pending.clear()
    finally:
        if pending:  # this process was interrupted: the launchers must not live on
            for ref in pending:
                ray.cancel(ref)
            ray.wait(list(pending), num_returns=len(pending), timeout=STOP_GRACE_S + 5)
    progress_file.read()
    follower.read(final=True)
    return [reports[job.machine_rank] for job in jobs]


def _report(ray, ref, job: NodeJob) -> NodeReport:
    try:
        return ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return _lost(job, STOPPED)
    except ray.exceptions.RayError as error:  # the worker or its node died
        first = next((line for line in str(error).splitlines() if line.strip()), "")
        return _lost(job, f"its Ray task failed: {type(error).__name__}: {first}")


def _lost(job: NodeJob, why: str) -> NodeReport:
    """A report for a node whose task returned none: its log file says what it got to."""
    path = Path(job.log_path)
    tail = ""
    if path.is_file():
        lines = [line for line in path.read_text(encoding="utf-8", errors="replace")
                 .splitlines() if line.strip()]
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return NodeReport(job.machine_rank, job.node_id, job.ip, error=why,
                      log=str(path) if path.is_file() else None, tail=tail)


def _failure(reports: list[NodeReport], result_path: Path) -> TrainingError:
    # the nodes that failed by themselves first: the others were stopped because of them
    failed = sorted((r for r in reports if not r.ok), key=lambda r: r.error == STOPPED)
    summary = "; ".join(f"machine rank {r.machine_rank} ({r.ip}): {r.outcome()}"
                        for r in failed) or f"every node exited 0 but no {result_path} was written"
    parts = [f"training on {len(reports)} Ray nodes failed: {summary}"]
    for report in reports:
        where = report.log or "its output"
        parts.append(f"-- machine rank {report.machine_rank} on {report.ip} (Ray node "
                     f"{report.node_id[:12]}; {report.outcome()}), last lines of {where}:\n"
                     f"{report.tail or '(none)'}")
    return TrainingError("\n".join(parts))


class _Follower:
    """Copies the complete lines appended to a file (node 0's log) into a log writer."""

    def __init__(self, path: Path, writer: _LogWriter):
        self.path, self.writer, self.offset = path, writer, 0

    def read(self, final: bool = False) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        if not final:  # a line still being written waits
            data = data[:data.rfind(b"\n") + 1]
        self.offset += len(data)
        self.writer.write(data.decode("utf-8", errors="replace"))
