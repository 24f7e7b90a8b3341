"""Generation on a Ray cluster: replicas of the teacher's engine, fed whole chunks.

    executor: ray                  # RAY_ADDRESS, else a Ray on this node: one engine per GPU
    executor: {kind: ray, address: "ray://head:10001", replicas: 8, gpus_per_replica: 2}

Each replica is a Ray actor that builds the teacher's backend once per generation stage
(`load_backend(name, model=..., chat_template=..., seed=..., **engine)`, the engine the
local executor would build) and generates whole checkpoint chunks; the next missing chunk
goes to whichever replica is idle. The orchestrator writes each finished chunk's shard,
so a replica lost mid-chunk (node lost, OOM, killed) costs that chunk only: Ray restarts
the actor and the executor sends the chunk again. A replica lost more than `max_restarts`
times fails the stage, with every finished chunk already on disk: a rerun resumes.

Every node needs distill and the backend's libraries installed, and the teacher at the
same path (or hub id). A replica holds `gpus_per_replica` GPUs (Ray sets its
CUDA_VISIBLE_DEVICES); with tensor_parallel_size > 1, vLLM starts its tensor-parallel
workers itself on those GPUs (multiprocessing: the actor is in no placement group). A Ray
that the executor started itself (no address, no RAY_ADDRESS, no `ray start` on this
machine) is shut down at the end of the stage.

Ray gives an actor of `cpus_per_replica` CPUs that many OpenMP threads (OMP_NUM_THREADS),
so a CPU engine in a replica may use fewer threads than the local executor. That is left
as is: torch's thread count did not change a byte of the tiny float32 test models'
generations on CPU (1 against 2 threads; tests/test_executors.py compares the replicas'
shard files with the local executor's byte for byte). On GPUs the model's arithmetic does
not run on CPU threads.
"""

from __future__ import annotations

import importlib.util
import logging
from collections import deque
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from distill.backends.base import Generation, GenerationRequest
from distill.executors.base import Chunk, EngineSpec, ExecutorSettings
from distill.registry import EXECUTORS

log = logging.getLogger(__name__)

INSTALL_HINT = 'executor ray needs Ray, which is not installed: pip install "distill[ray]"'


def ray_installed() -> bool:
    """Whether `import ray` would find Ray (without importing it)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


@EXECUTORS.register
class RayConfig(ExecutorSettings):
    """Replicas of the teacher's engine on a Ray cluster (`executor: ray`)."""

    kind: Literal["ray"] = "ray"
    address: str | None = Field(
        None, description="The Ray cluster (`host:6379`, or `ray://host:10001` through Ray "
        "Client); null: RAY_ADDRESS, else the cluster last started on this machine with "
        "`ray start`, else a Ray started on this node for the stage.")
    replicas: int | None = Field(
        None, ge=1, description="Engines to start; default: the cluster's GPUs // "
        "gpus_per_replica. Required on a cluster without GPUs.")
    gpus_per_replica: float | None = Field(
        None, ge=0, description="GPUs per engine; default: the teacher engine's "
        "tensor_parallel_size, else 1 (0 on a cluster without GPUs).")
    cpus_per_replica: float = Field(1, gt=0, description="CPUs per engine (its OpenMP "
                                    "threads, on CPU).")
    max_restarts: int = Field(3, ge=0, description="Times each replica is restarted after "
                              "it is lost (its chunk is sent again); once more fails the "
                              "stage, with every finished chunk saved for a rerun.")

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset(
        {"address", "replicas", "gpus_per_replica", "cpus_per_replica", "max_restarts"})

    @model_validator(mode="after")
    def _ray_installed(self) -> RayConfig:
        if not ray_installed():
            raise ValueError(INSTALL_HINT)
        return self

    def create(self, engine: EngineSpec) -> RayExecutor:
        """An executor that starts its replicas when the first chunk needs them."""
        return RayExecutor(self, engine)


def plan_replicas(settings: RayConfig, engine: dict[str, Any],
                  nodes: list[dict[str, float]]) -> tuple[int, float]:
    """(replicas, GPUs per replica) for a cluster whose alive nodes have `nodes` resources.

    Raises:
        RuntimeError: the replicas cannot all be placed (an actor that does not fit would
            wait for resources forever).
    """
    cluster_gpus = sum(node.get("GPU", 0) for node in nodes)
    gpus = settings.gpus_per_replica
    if gpus is None:
        gpus = float(engine.get("tensor_parallel_size") or 1) if cluster_gpus else 0.0
    cpus = settings.cpus_per_replica
    # a replica lives on one node: count what fits node by node, not in the cluster's sum
    fits = sum(int(min(node.get("GPU", 0) // gpus if gpus else float("inf"),
                       node.get("CPU", 0) // cpus)) for node in nodes)
    replicas = settings.replicas
    if replicas is None:
        if not cluster_gpus or not gpus:
            raise RuntimeError("executor.replicas: the Ray cluster has no GPUs (or "
                               "gpus_per_replica is 0): say how many replicas to start")
        replicas = fits
    if replicas > fits or not fits:
        raise RuntimeError(
            f"executor: {replicas} replica(s) of {gpus:g} GPU(s) and {cpus:g} CPU(s) do not "
            f"fit the Ray cluster's nodes ({fits} fit, one node each); set "
            f"executor.replicas, gpus_per_replica or cpus_per_replica")
    return replicas, gpus


class EngineReplica:
    """One teacher engine in a Ray actor: built once, then whole chunks."""

    def __init__(self, engine: EngineSpec) -> None:
        self.backend = engine.load()

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """One chunk's generations, in request order."""
        return self.backend.generate(requests)

    def ready(self) -> bool:
        """Answers once the engine is (re)built."""
        return True

    def dtype(self) -> str | None:
        """The dtype the engine runs in (None: a served model)."""
        return getattr(self.backend, "dtype", None)


# Ways to lose a replica mid-chunk (its process, its node, its memory); the chunk is sent
# again. An error raised by the backend itself (a bad request) ends the stage instead.
def _lost_errors() -> tuple[type[BaseException], ...]:
    from ray import exceptions

    return (exceptions.RayActorError, exceptions.WorkerCrashedError,
            exceptions.NodeDiedError, exceptions.OutOfMemoryError, exceptions.ObjectLostError)


class RayExecutor:
    """Sends chunks to idle replicas and yields each chunk's generations as it finishes.

    A replica is idle, busy with one chunk, or restarting after it was lost. A call sent
    to a restarting actor fails at once (ActorUnavailableError) rather than waiting, so a
    lost replica gets no chunk until a `ready()` probe answers.
    """

    backend = None  # the engines live in the replicas

    def __init__(self, settings: RayConfig, engine: EngineSpec) -> None:
        self.settings = settings
        self.engine = engine
        self.retried_chunks = 0
        self._replicas: list[Any] = []  # actor handles, started by the first chunk
        self._losses: list[int] = []  # per replica: times lost
        self._probes: dict[Any, int] = {}  # ready() ref -> restarting replica
        self._started = 0
        self._gpus = 0.0
        self._owns_ray = False
        self._told_idle = False

    def _start(self) -> None:
        if self._replicas:
            return
        try:
            import ray
        except ImportError:
            raise RuntimeError(INSTALL_HINT) from None
        if not ray.is_initialized():  # else: the caller's Ray session, used as it is
            ray.init(address=self.settings.address, log_to_driver=False,
                     logging_level=logging.WARNING)
            self._owns_ray = True
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        replicas, self._gpus = plan_replicas(self.settings, self.engine.engine, nodes)
        actor = ray.remote(EngineReplica).options(
            num_cpus=self.settings.cpus_per_replica, num_gpus=self._gpus,
            max_restarts=self.settings.max_restarts, max_task_retries=0)
        self._replicas = [actor.remote(self.engine) for _ in range(replicas)]
        self._losses = [0] * replicas
        self._started = replicas
        log.info("ray executor: %d replica(s) of %s, %g GPU(s) and %g CPU(s) each",
                 replicas, self.engine.model, self._gpus, self.settings.cpus_per_replica)

    def run(self, chunks: list[Chunk]) -> Iterator[tuple[int, list[Generation]]]:
        """Generate every chunk on the replicas; yield each chunk once, as it finishes."""
        if not chunks:
            return
        self._start()
        if len(chunks) < len(self._replicas) and not self._told_idle:
            self._told_idle = True  # once per stage
            log.warning("ray executor: %d chunk(s) for %d replicas, so %d replica(s) wait; "
                        "a teacher.checkpoint_every of at most %d keeps them all busy",
                        len(chunks), len(self._replicas), len(self._replicas) - len(chunks),
                        max(1, sum(len(chunk) for _, chunk in chunks) // len(self._replicas)))
        import ray

        lost = _lost_errors()
        pending: deque[Chunk] = deque(chunks)
        restarting = set(self._probes.values())
        idle: deque[int] = deque(r for r in range(len(self._replicas)) if r not in restarting)
        running: dict[Any, tuple[int, Chunk]] = {}  # result ref -> (replica, chunk)

        def dispatch() -> None:
            while pending and idle:
                replica, chunk = idle.popleft(), pending.popleft()
                running[self._replicas[replica].generate.remote(chunk[1])] = (replica, chunk)

        while pending or running:
            dispatch()
            (ref,), _ = ray.wait([*running, *self._probes], num_returns=1)
            if ref in self._probes:
                replica = self._probes.pop(ref)
                if self._restarted(ref, replica):
                    idle.append(replica)
                continue
            replica, chunk = running.pop(ref)
            try:
                generations = ray.get(ref)
            except lost as error:
                _raise_if_engine_failed(error)
                self._lost(replica, chunk[0], error)
                pending.appendleft(chunk)  # first in line for the next idle replica
                self._probes[self._replicas[replica].ready.remote()] = replica
                continue
            idle.append(replica)
            dispatch()  # the replica works on its next chunk while this one is written
            yield chunk[0], generations

    def _restarted(self, probe: Any, replica: int) -> bool:
        """Whether a lost replica answers again; probes again while Ray restarts it."""
        import ray
        from ray.exceptions import ActorDiedError, ActorUnavailableError

        try:
            return ray.get(probe)
        except ActorUnavailableError:  # still restarting: Ray answers that in ~2 s
            self._probes[self._replicas[replica].ready.remote()] = replica
            return False
        except ActorDiedError as error:  # Ray's restarts are spent (or its engine failed)
            _raise_if_engine_failed(error)
            raise RuntimeError(
                f"ray executor: replica {replica} is dead after {self._losses[replica]} "
                f"loss(es) (executor.max_restarts {self.settings.max_restarts}); every "
                f"finished chunk is saved, rerun to resume. {_first_line(error)}") from error

    def _lost(self, replica: int, chunk: int, error: BaseException) -> None:
        self._losses[replica] += 1
        if self._losses[replica] > self.settings.max_restarts:
            raise RuntimeError(
                f"ray executor: replica {replica} was lost {self._losses[replica]} times "
                f"(executor.max_restarts {self.settings.max_restarts}); every finished chunk "
                f"is saved, rerun to resume. Last: {_first_line(error)}") from error
        self.retried_chunks += 1
        log.warning("ray executor: replica %d lost during chunk %d (%s); the chunk is sent "
                    "again", replica, chunk, _first_line(error))

    def summary(self) -> dict[str, Any]:
        """Replicas started and chunks sent again after a replica was lost."""
        return {"kind": "ray", "replicas": self._started, "gpus_per_replica": self._gpus,
                "retried_chunks": self.retried_chunks, "dtype": self._dtype()}

    def _dtype(self) -> str | None:
        """The engines' dtype (they all build the same engine), from a replica that answers."""
        import ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError

        for replica in self._replicas:
            try:
                return ray.get(replica.dtype.remote(), timeout=60)
            except (*_lost_errors(), ActorUnavailableError, GetTimeoutError):
                continue  # lost or restarting: ask the next one
        return None

    def close(self) -> None:
        """Stop the replicas (freeing their devices), and the Ray this executor started."""
        if not self._replicas and not self._owns_ray:
            return
        import ray

        # runs in the runner's `finally`: a failure here (the cluster already gone) must
        # not replace the error that ended the stage
        for replica in self._replicas:
            try:
                ray.kill(replica, no_restart=True)
            except Exception as error:  # noqa: BLE001
                log.warning("ray executor: could not stop a replica: %s", _first_line(error))
        self._replicas, self._probes = [], {}
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


def _raise_if_engine_failed(error: BaseException) -> None:
    """An engine that could not be built (bad model, refused dtype) is no lost replica.

    Restarting would fail the same way; the error's last line is the builder's own
    message, which Ray's first line does not show.
    """
    from ray.exceptions import ActorDiedError

    if isinstance(error, ActorDiedError) and error.actor_init_failed:
        lines = [line for line in str(error).strip().splitlines() if line.strip()]
        cause = lines[-1].strip() if lines else type(error).__name__
        raise RuntimeError(f"ray executor: the teacher's engine could not be built on a "
                           f"replica: {cause}") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
