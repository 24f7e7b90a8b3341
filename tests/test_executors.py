"""Generation executors: the local default and replicas on a Ray cluster.

The Ray tests run a real two-node cluster on this machine (`ray.cluster_utils.Cluster`,
one CPU per node) and the HF backend on the tiny test model; they are slow (each replica
imports torch and loads the model: ~30 s on two busy cores) and marked so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from distill.executors.base import EngineSpec
from distill.executors.ray import INSTALL_HINT, RayConfig, RayExecutor, plan_replicas
from distill.recipe import RecipeError, load_recipe, recipe_model
from distill.runner import Runner, RunOptions
from distill.store import Stage

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"
RECORDS = 16
CHUNK = 4


# -- the recipe's `executor:` section --------------------------------------------------------

def test_the_executor_section_defaults_to_local_and_takes_a_bare_name():
    assert load_recipe(QUICKSTART).executor.kind == "local"
    assert load_recipe(QUICKSTART, ["executor=ray"]).executor == RayConfig()
    ray = load_recipe(QUICKSTART, ["executor.kind=ray", "executor.replicas=2",
                                   "executor.address=ray://head:10001"]).executor
    assert (ray.kind, ray.replicas, ray.address, ray.max_restarts) == \
        ("ray", 2, "ray://head:10001", 3)


@pytest.mark.parametrize(("overrides", "message"), [
    (["executor=slurm"], "executor: unknown kind 'slurm'"),
    (["executor.kind=ray", "executor.replica=2"], "executor.ray.replica: unknown key"),
    (["executor.kind=ray", "executor.replicas=0"], "executor.ray.replicas:"),
    (["executor.kind=local", "executor.replicas=2"], "executor.local.replicas: unknown key"),
])
def test_a_bad_executor_section_names_the_field(overrides, message):
    with pytest.raises(RecipeError, match=message.replace(".", r"\.")):
        load_recipe(QUICKSTART, overrides)


def test_without_ray_installed_executor_ray_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is absent
    with pytest.raises(RecipeError) as error:
        load_recipe(QUICKSTART, ["executor=ray"])
    problems = str(error.value).splitlines()[1:]
    assert problems == [f"executor.ray: {INSTALL_HINT}"]
    assert 'pip install "distill[ray]"' in INSTALL_HINT
    # built without validation (a program's own settings), the executor says the same
    executor = RayExecutor(RayConfig.model_construct(), EngineSpec("hf", "model"))
    with pytest.raises(RuntimeError, match=r'pip install "distill\[ray\]"'):
        list(executor.run([(0, [])]))
    assert load_recipe(QUICKSTART).executor.kind == "local"  # nothing else needs Ray


def test_importing_distill_and_loading_a_ray_recipe_does_not_import_ray():
    code = ("import sys, distill, distill.recipe\n"
            "from distill.registry import EXECUTORS\n"
            "EXECUTORS.names()\n"
            f"distill.recipe.load_recipe({str(QUICKSTART)!r}, ['executor=ray'])\n"
            "print('ray' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "False"


def test_replicas_are_planned_from_the_cluster_and_refused_when_they_cannot_fit():
    node = {"CPU": 32.0, "GPU": 4.0}
    assert plan_replicas(RayConfig(), {}, [node, node]) == (8, 1.0)
    # tensor parallelism: one engine per two GPUs
    assert plan_replicas(RayConfig(), {"tensor_parallel_size": 2}, [node, node]) == (4, 2.0)
    assert plan_replicas(RayConfig(replicas=3, gpus_per_replica=0.5), {}, [node]) == (3, 0.5)
    cpu_node = {"CPU": 2.0}
    with pytest.raises(RuntimeError, match="executor.replicas: the Ray cluster has no GPUs"):
        plan_replicas(RayConfig(), {}, [cpu_node])
    assert plan_replicas(RayConfig(replicas=2), {}, [cpu_node]) == (2, 0.0)
    with pytest.raises(RuntimeError, match=r"3 replica\(s\) of 0 GPU\(s\) and 1 CPU\(s\) do "
                       r"not fit the Ray cluster's nodes \(2 fit"):
        plan_replicas(RayConfig(replicas=3), {}, [cpu_node])
    with pytest.raises(RuntimeError, match=r"of 8 GPU\(s\) and 1 CPU\(s\) do not fit .*\(0 fit"):
        plan_replicas(RayConfig(gpus_per_replica=8), {}, [node, node])
    # a replica lives on one node: two nodes of 3 GPUs hold two 2-GPU engines, not three
    three = {"CPU": 8.0, "GPU": 3.0}
    assert plan_replicas(RayConfig(), {"tensor_parallel_size": 2}, [three, three]) == (2, 2.0)
    with pytest.raises(RuntimeError, match=r"\(2 fit, one node each\)"):
        plan_replicas(RayConfig(replicas=3, gpus_per_replica=2), {}, [three, three])
    # CPUs count per node too: 5 + 3 CPUs hold one replica of 4
    with pytest.raises(RuntimeError, match=r"\(1 fit"):
        plan_replicas(RayConfig(replicas=2, cpus_per_replica=4), {}, [{"CPU": 5.0}, {"CPU": 3.0}])


# -- the context's side of the contract -------------------------------------------------------

class SwappingExecutor:
    """Answers each chunk with the next chunk's generations: an executor with a bug."""

    backend = None

    def run(self, chunks):
        from distill.backends.base import Generation

        for (index, _), (_, other) in zip(chunks, chunks[1:], strict=False):
            yield index, [Generation(r.id, 0, "text", "stop") for r in other]

    def summary(self):
        return {"kind": "swapping"}

    def close(self):
        pass


def test_the_context_refuses_a_chunk_of_other_requests_and_writes_nothing(tmp_path):
    from distill.backends.base import GenerationRequest, Sampling
    from distill.generate.context import GenerationContext

    requests = [GenerationRequest(f"r{i}", Sampling(), prompt="p") for i in range(4)]
    context = GenerationContext(None, tmp_path, chunk_size=2, executor=SwappingExecutor())
    with pytest.raises(RuntimeError, match="chunk 0 holds an answer to 'r2', not one of its "
                       "requests: the executor returned a wrong chunk"):
        context.generate("key", requests)
    assert not list(tmp_path.rglob("*.jsonl"))
    with pytest.raises(ValueError, match="needs a backend or an executor"):
        GenerationContext(None, tmp_path).generate("key", requests)


# -- a generation stage under each executor ---------------------------------------------------

def make_recipe(out: Path, model: Path, executor: object = "local", max_tokens: int = 64):
    """Continuations of RECORDS real texts by the tiny model, in chunks of CHUNK requests."""
    out.mkdir(parents=True, exist_ok=True)
    real = out / "real.jsonl"
    words = "the quick brown fox jumps over the lazy dog and writes a poem about the sea"
    real.write_text("".join(json.dumps({"id": f"doc{i}", "instruction": "",
                                        "text": f"{i}: {words} {i * 7}."}) + "\n"
                            for i in range(RECORDS)))
    return recipe_model().model_validate({
        "name": "exec", "output_dir": str(out), "seed": 3,
        # one request at a time: chunks take long enough to be killed in the middle
        "teacher": {"model": str(model), "backend": "hf", "checkpoint_every": CHUNK,
                    "engine": {"batch_size": 1, "dtype": "float32"}},
        "student": {"model": str(model)},
        "data": {"real": {"kind": "path", "path": str(real), "held_out": 0}},
        "generate": {"kind": "continuation", "prompt_tokens": 6,
                     "sampling": {"temperature": 1.0, "max_tokens": max_tokens}},
        "eval": {"tasks": ["microworld"]},
        "executor": executor,
    })


def generate(recipe, options: RunOptions | None = None) -> Stage:
    """Round 0's generation stage, as `distill run` runs it."""
    from distill.flywheel.real import draw_real
    from distill.models import ModelRef

    real = draw_real(recipe.data.real, recipe.seed, 0)
    return Runner(recipe, options).generate("round_0", 0, ModelRef.resolve(recipe.teacher), real)


def written(stage: Stage) -> dict[str, bytes]:
    """Every JSONL the stage wrote (candidates, rejected, checkpoint shards), as bytes."""
    return {path.relative_to(stage.path).as_posix(): path.read_bytes()
            for path in sorted(stage.path.rglob("*.jsonl"))}


@pytest.fixture(scope="module")
def local_stage(tmp_path_factory, tiny_model_dir) -> Stage:
    stage = generate(make_recipe(tmp_path_factory.mktemp("local"), tiny_model_dir))
    # the dtype the teacher ran in is on record (the tiny model is float32)
    assert stage.manifest()["executor"] == {"kind": "local", "dtype": "float32"}
    shards = [name for name in written(stage) if name.startswith("checkpoints/")]
    assert len(shards) == RECORDS // CHUNK
    return stage


def test_the_executor_stays_out_of_the_generation_fingerprint(tmp_path, tiny_model_dir):
    local = generate(make_recipe(tmp_path, tiny_model_dir, max_tokens=4))
    before = local.manifest()
    # an address nothing answers at: running anything under it would fail
    elsewhere = {"kind": "ray", "address": "ray://127.0.0.1:9", "replicas": 7,
                 "gpus_per_replica": 2, "cpus_per_replica": 3, "max_restarts": 0}
    stage = generate(make_recipe(tmp_path, tiny_model_dir, elsewhere, max_tokens=4))
    assert stage.fingerprint == local.fingerprint
    assert stage.manifest() == before  # skipped as done: nothing regenerated
    # while what the teacher writes does enter it
    assert generate(make_recipe(tmp_path, tiny_model_dir, max_tokens=5)
                    ).fingerprint != local.fingerprint


# -- Ray: a two-node cluster on this machine --------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    yield cluster.address
    cluster.shutdown()


def ray_executor(address: str) -> dict:
    return {"kind": "ray", "address": address, "replicas": 2}


@pytest.mark.slow
def test_two_ray_replicas_write_the_local_executors_bytes(local_stage, cluster, tmp_path,
                                                          tiny_model_dir):
    stage = generate(make_recipe(tmp_path, tiny_model_dir, ray_executor(cluster)))
    assert written(stage) == written(local_stage)  # candidates, rejected and every shard
    assert stage.manifest()["executor"] == {"kind": "ray", "replicas": 2,
                                            "gpus_per_replica": 0.0, "retried_chunks": 0,
                                            "dtype": "float32"}


@pytest.mark.slow
def test_a_killed_replica_costs_its_chunk_and_nothing_else(local_stage, cluster, tmp_path,
                                                           tiny_model_dir):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_a_busy_replica, args=(stop, killed))
    killer.start()
    try:
        stage = generate(make_recipe(tmp_path, tiny_model_dir, ray_executor(cluster)))
    finally:
        stop.set()
        killer.join()
    assert killed, "no replica was seen generating"
    assert stage.manifest()["executor"]["retried_chunks"] == 1
    rows = [json.loads(line) for name, data in written(stage).items()
            if name.startswith("checkpoints/") for line in data.decode().splitlines()]
    ids = sorted(row["request_id"] for row in rows)
    assert len(ids) == len(set(ids)) == RECORDS  # every request exactly once
    assert written(stage) == written(local_stage)


@pytest.mark.slow
def test_ray_resumes_the_chunks_the_local_executor_made(local_stage, cluster, tmp_path,
                                                        tiny_model_dir):
    class Interrupted(Exception):
        pass

    def interrupt_after_two_chunks(task: str, done: int, total: int) -> None:
        if done >= 2 * CHUNK:
            raise Interrupted

    with pytest.raises(Interrupted):
        generate(make_recipe(tmp_path, tiny_model_dir),
                 RunOptions(progress=interrupt_after_two_chunks))
    stage = generate(make_recipe(tmp_path, tiny_model_dir, ray_executor(cluster)))
    manifest = stage.manifest()
    assert manifest["resumed_requests"] == 2 * CHUNK
    assert manifest["tokens"] == local_stage.manifest()["tokens"]
    assert written(stage) == written(local_stage)


def kill_a_busy_replica(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first replica of this test's cluster seen in the middle of a chunk."""
    while not stop.is_set():
        for pid in descendants(os.getpid()):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::EngineReplica.generate"):  # Ray's title while busy
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.05)


def descendants(root: int) -> set[int]:
    """Processes below `root` (the cluster's raylets and their workers are ours)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.slow
def test_a_replica_lost_past_max_restarts_fails_the_stage_and_a_rerun_resumes(
        local_stage, cluster, tmp_path, tiny_model_dir):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=kill_a_busy_replica, args=(stop, killed))
    killer.start()
    try:
        with pytest.raises(RuntimeError, match=r"executor.max_restarts 0\); every finished "
                                               r"chunk is saved, rerun to resume"):
            generate(make_recipe(tmp_path, tiny_model_dir,
                                 {**ray_executor(cluster), "max_restarts": 0}))
    finally:
        stop.set()
        killer.join()
    saved = list((tmp_path / "exec" / "round_0" / ".generate.work").rglob("chunk*.jsonl"))
    stage = generate(make_recipe(tmp_path, tiny_model_dir))  # the rerun, here locally
    assert stage.manifest()["resumed_requests"] == len(saved) * CHUNK
    assert written(stage) == written(local_stage)


def test_the_report_says_which_dtype_the_teacher_ran_in(local_stage):
    from distill.report import write_report

    report = write_report(local_stage.path.parents[1]).read_text(encoding="utf-8")
    assert "The teacher ran in float32." in report


def test_a_served_and_a_loaded_model_of_the_same_name_keep_their_own_identities(
        tmp_path, tiny_model_dir):
    from distill.models import ModelSpec, ServedModel

    runner = Runner(make_recipe(tmp_path, tiny_model_dir))
    served = ServedModel(model=str(tiny_model_dir), backend="openai")
    loaded = ModelSpec(model=str(tiny_model_dir))
    assert runner._model_ref(served).identity != runner._model_ref(loaded).identity
    assert "weights" in str(runner._model_ref(loaded).identity)  # hashed, not only named


@pytest.mark.slow
def test_an_engine_that_cannot_be_built_fails_with_its_own_message_not_as_a_lost_replica(
        cluster, tmp_path, tiny_model_dir):
    recipe = make_recipe(tmp_path, tiny_model_dir, ray_executor(cluster))
    recipe.teacher.engine["device"] = "cuda:7"  # no such device here: every build fails
    with pytest.raises(RuntimeError) as caught:
        generate(recipe)
    message = str(caught.value)
    assert message.startswith("ray executor: the teacher's engine could not be built")
    assert "lost" not in message and "cuda" in message.lower()


@pytest.mark.slow
def test_fewer_chunks_than_replicas_says_which_chunk_size_keeps_them_busy(
        cluster, tiny_model_dir, caplog):
    from distill.backends.base import GenerationRequest, Sampling

    engine = EngineSpec(backend="hf", model=str(tiny_model_dir), engine={"dtype": "float32"})
    executor = RayConfig(**ray_executor(cluster)).create(engine)
    requests = [GenerationRequest(f"r{i}", Sampling(max_tokens=2), prompt="the") for i in range(4)]
    try:
        with caplog.at_level("WARNING", logger="distill.executors.ray"):
            done = dict(executor.run([(0, requests)]))
    finally:
        executor.close()
    assert [g.request_id for g in done[0]] == ["r0", "r1", "r2", "r3"]
    assert "1 chunk(s) for 2 replicas, so 1 replica(s) wait; a teacher.checkpoint_every of " \
           "at most 2 keeps them all busy" in caplog.text
