"""Training on several nodes of a Ray cluster (distill.train.ray_launch).

The slow tests start a real two-node Ray cluster on this machine (`ray.cluster_utils`, one
CPU per node) and train the tiny model with one gloo process per node, each node running
its own `accelerate launch --machine_rank i` of recipes/accelerate/cpu_2proc.yaml.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import yaml
from train_data import FAST_ARGS, MINIMAL

from distill.recipe import RecipeError, load_recipe
from distill.train.config import LoraSettings, RayLauncher, TrainSpec
from distill.train.launch import TrainingError, launch_training
from distill.train.ray_launch import NodeJob, node_command, run_node

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "accelerate"

def recipe_with(tmp_path: Path, train: dict):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "output_dir": str(tmp_path / "runs"),
                                    "train": train}))
    return load_recipe(path)


# -- the recipe's train.launcher -------------------------------------------------------------

def test_launcher_is_local_by_default_and_ray_takes_its_settings(tmp_path):
    assert recipe_with(tmp_path, {}).train.launcher.kind == "local"
    shutil.copy(CONFIGS / "cpu_2proc.yaml", tmp_path / "multi.yaml")
    train = recipe_with(tmp_path, {"accelerate_config": "multi.yaml",
                                   "launcher": {"kind": "ray", "address": "head:6379"}}).train
    assert train.launcher == RayLauncher(nodes=2, address="head:6379")
    assert train.accelerate_config == str(tmp_path / "multi.yaml")


@pytest.mark.parametrize(("train", "expected"), [
    ({"launcher": {"kind": "ray"}}, "train.launcher: kind ray needs "
     "train.accelerate_config"),
    ({"accelerate_config": str(CONFIGS / "cpu.yaml"), "launcher": {"kind": "ray"}},
     "has distributed_type NO, which does not train across machines"),
    ({"accelerate_config": str(CONFIGS / "cpu_2proc.yaml"),
      "launcher": {"kind": "ray", "node": 3}}, "train.launcher.ray.node"),
    ({"accelerate_config": str(CONFIGS / "cpu_2proc.yaml"),
      "launcher": {"kind": "ray", "nodes": 0}}, "train.launcher.ray.nodes"),
    ({"launcher": {"kind": "slurm"}}, "train.launcher"),
])
def test_bad_launcher_settings_name_the_field(tmp_path, train, expected):
    with pytest.raises(RecipeError) as error:
        recipe_with(tmp_path, train)
    assert expected in str(error.value)


def test_the_launcher_stays_out_of_the_train_stage_fingerprint(tmp_path):
    """Moving a run's training onto a cluster (or back) must not retrain a finished round."""
    from distill.models import ModelRef
    from distill.runner import Runner, RunOptions

    def train_stage_config(train: dict) -> dict:
        runner = Runner(recipe_with(tmp_path, train), RunOptions())
        seen = []
        runner._stage = lambda label, name, config, inputs, work: seen.append(config)
        clean = SimpleNamespace(fingerprint="clean", round_dir=tmp_path)
        runner.train("round_0", ModelRef(path="m", identity={"fingerprint": "m"}), [clean])
        return seen[0]

    # with a global batch, the process count does not change what is learnt
    fixed = {"global_batch_size": 64}
    local = train_stage_config({"accelerate_config": str(CONFIGS / "cpu.yaml"), **fixed})
    assert train_stage_config({"accelerate_config": str(CONFIGS / "cpu_2proc.yaml"),
                               "launcher": {"kind": "ray", "nodes": 4}, **fixed}) == local
    assert train_stage_config({"args": {"learning_rate": 1e-3}, **fixed}) != local
    # without one it does: 4 nodes multiply the effective batch
    assert train_stage_config({"accelerate_config": str(CONFIGS / "cpu_2proc.yaml"),
                               "launcher": {"kind": "ray", "nodes": 4}}) != \
        train_stage_config({"accelerate_config": str(CONFIGS / "cpu.yaml")})


def test_the_train_stage_hands_the_recipe_launcher_to_the_launch(tmp_path, monkeypatch):
    """Runner.train's work reaches the Ray launcher (which, with no cluster named, says so)."""
    pytest.importorskip("ray")
    from distill.models import ModelRef
    from distill.records import Example, write_jsonl
    from distill.runner import Runner, RunOptions

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    runner = Runner(recipe_with(tmp_path, {"accelerate_config": str(CONFIGS / "cpu_2proc.yaml"),
                                           "launcher": {"kind": "ray"}}), RunOptions())
    runner._stage = lambda label, name, config, inputs, work: work(tmp_path / "work")
    (tmp_path / "work").mkdir()
    (tmp_path / "clean").mkdir()
    write_jsonl(tmp_path / "clean" / "clean.jsonl", [Example(id="a", instruction="q", output="a")])
    clean = SimpleNamespace(fingerprint="clean", round_dir=tmp_path, path=tmp_path / "clean")
    with pytest.raises(TrainingError, match="needs a running Ray cluster"):
        runner.train("round_0", ModelRef(path="m", identity={"fingerprint": "m"}), [clean])


# -- pieces that run without a cluster -------------------------------------------------------

def node_job(tmp_path: Path, **fields) -> NodeJob:
    values = {"machine_rank": 1, "num_machines": 2, "node_id": "n1", "ip": "10.0.0.2",
              "main_ip": "10.0.0.1", "main_port": 29511, "num_processes": 4,
              "deepspeed": False, "config": str(CONFIGS / "cpu_2proc.yaml"),
              "module": "distill.train.sft", "spec_path": str(tmp_path / "train_spec.json"),
              "log_path": str(tmp_path / "nodes" / "node1.log"), **fields}
    return NodeJob(**values)


def test_each_node_command_is_a_machine_of_one_accelerate_launch(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    command = node_command(node_job(tmp_path))
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    args = launch_command_parser().parse_args(command[3:])  # accelerate's own parser
    assert (args.num_machines, args.machine_rank, args.num_processes) == (2, 1, 4)
    assert (args.main_process_ip, args.main_process_port) == ("10.0.0.1", 29511)
    assert args.module and args.training_script == "distill.train.sft"
    assert args.training_script_args == [str(tmp_path / "train_spec.json")]
    assert args.deepspeed_multinode_launcher is None
    deepspeed = launch_command_parser().parse_args(
        node_command(node_job(tmp_path, deepspeed=True))[3:])
    # one launcher per node, not DeepSpeed's pdsh fan-out from the first node
    assert deepspeed.deepspeed_multinode_launcher == "standard"


def test_a_node_that_does_not_see_the_run_directory_fails_naming_the_path(tmp_path):
    report = run_node(node_job(tmp_path))
    assert not report.ok and report.exit_code is None
    assert report.error.startswith(f"{tmp_path / 'train_spec.json'}: no such file on node "
                                   "10.0.0.2; the run directory must be on storage every "
                                   "node sees")
    assert not (tmp_path / "nodes").exists()  # nothing was started


def test_without_a_cluster_address_the_launch_says_how_to_get_one(make_spec, monkeypatch,
                                                                    tmp_path):
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(TrainingError, match="needs a running Ray cluster: set "
                       "train.launcher.address or RAY_ADDRESS"):
        launch_training(make_spec(), CONFIGS / "cpu_2proc.yaml", log_path=tmp_path / "log",
                        launcher=RayLauncher())


# -- a two-node cluster on this machine ------------------------------------------------------

@pytest.fixture
def two_node_cluster():
    """`make(second_node_env)`: a Ray cluster of two 1-CPU nodes; shut down after the test."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    clusters = []

    def make(second_node_env: dict[str, str] | None = None):
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        clusters.append(cluster)
        second = cluster.add_node(num_cpus=1, env_vars=second_node_env)
        return cluster, second

    yield make
    if ray.is_initialized():
        ray.shutdown()
    for cluster in clusters:
        cluster.shutdown()


def shared_spec(tmp_path: Path, tiny_model_dir: Path, chat_data: Path) -> TrainSpec:
    """A spec laid out as the runner does: data inside the output directory."""
    out = tmp_path / ".train.work"
    out.mkdir()
    shutil.copy(chat_data, out / "train.jsonl")
    return TrainSpec(model=str(tiny_model_dir), data_path=str(out / "train.jsonl"),
                     output_dir=str(out), seed=0, quiet=True, lora=LoraSettings(),
                     args=FAST_ARGS)


@pytest.mark.slow
def test_training_runs_on_both_nodes_as_one_job(two_node_cluster, tiny_model_dir, chat_data,
                                                 tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cluster, _ = two_node_cluster()
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # launcher.address is null
    spec = shared_spec(tmp_path, tiny_model_dir, chat_data)
    steps: list[tuple[int, int]] = []
    result = launch_training(spec, CONFIGS / "cpu_2proc.yaml", log_path=tmp_path / "train.log",
                             progress=lambda done, total: steps.append((done, total)),
                             launcher=RayLauncher(nodes=2))

    # one DDP job of two processes: each epoch's 60 records split, 4 steps of 2 x 8
    assert result.num_processes == 2 and result.steps == 2 * 4
    assert result.ranks_in_sync is True
    assert result.final_loss < result.first_loss
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), result.adapter_dir)
    lora_b = [p for name, p in peft_model.named_parameters() if "lora_B" in name]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero

    # both machine ranks ran, one per node, and ended well
    out = Path(spec.output_dir)
    nodes = json.loads((out / "nodes.json").read_text())
    assert [(n["machine_rank"], n["exit_code"], n["error"]) for n in nodes] == [
        (0, 0, None), (1, 0, None)]
    assert len({n["node_id"] for n in nodes}) == 2
    alive = {node.node_id for node in [cluster.head_node, *cluster.worker_nodes]}
    assert {n["node_id"] for n in nodes} == alive
    for rank, node in enumerate(nodes):
        assert f"--num_machines 2 --machine_rank {rank}" in " ".join(node["command"])
        assert "--num_processes 2" in " ".join(node["command"])
        assert (out / node["log"]).is_file()

    # node 0's output is the training log; progress came through progress.jsonl
    log = (tmp_path / "train.log").read_text()
    assert "--machine_rank 0" in log and "--machine_rank 1" not in log
    assert "distill.train.sft: 60 examples, 8 steps" in log
    assert steps == [(step, 8) for step in range(9)]


@pytest.mark.slow
def test_a_failing_node_fails_the_launch_with_its_output_tail(two_node_cluster, tiny_model_dir,
                                                              chat_data, tmp_path):
    # accelerate reads OMP_NUM_THREADS as a number: this node's launcher dies at once, while
    # the healthy node's waits for its peer until it is stopped
    cluster, broken = two_node_cluster({"OMP_NUM_THREADS": "not-a-number"})
    spec = shared_spec(tmp_path, tiny_model_dir, chat_data)
    with pytest.raises(TrainingError) as caught:
        launch_training(spec, CONFIGS / "cpu_2proc.yaml", log_path=tmp_path / "train.log",
                        launcher=RayLauncher(nodes=2, address=cluster.address))

    nodes = json.loads((Path(spec.output_dir) / "nodes.json").read_text())
    (bad,) = [n for n in nodes if n["node_id"] == broken.node_id]
    (good,) = [n for n in nodes if n["node_id"] != broken.node_id]
    assert bad["exit_code"] not in (0, None) and bad["error"] is None
    assert good["error"] == "stopped after another node failed"
    message = str(caught.value)
    assert message.startswith(f"training on 2 Ray nodes failed: machine rank "
                              f"{bad['machine_rank']} ")
    # the broken node's own last lines, and a section for the node that was stopped
    assert "invalid literal for int() with base 10: 'not-a-number'" in message
    assert f"-- machine rank {good['machine_rank']} on " in message
    assert f"{good['node_id'][:12]}; stopped after another node failed)" in message
    assert not (Path(spec.output_dir) / "train_log.json").exists()
    # the stopped node's launcher and its ranks did not outlive the launch
    spec_file = str(Path(spec.output_dir) / "train_spec.json")
    assert not [p.pid for p in psutil.process_iter(["cmdline"])
                if spec_file in (p.info["cmdline"] or [])]


@pytest.mark.slow
def test_a_global_batch_the_nodes_cannot_split_is_refused_before_any_node_starts(
        two_node_cluster, tiny_model_dir, chat_data, tmp_path):
    cluster, _ = two_node_cluster()
    per_device = FAST_ARGS["per_device_train_batch_size"]
    spec = shared_spec(tmp_path, tiny_model_dir, chat_data).model_copy(
        update={"global_batch_size": 3 * per_device})  # 2 nodes x 1 process: no whole split
    with pytest.raises(ValueError, match=r"x 2 process\(es\)"):
        launch_training(spec, CONFIGS / "cpu_2proc.yaml", log_path=tmp_path / "train.log",
                        launcher=RayLauncher(nodes=2, address=cluster.address))
    assert not (Path(spec.output_dir) / "nodes.json").exists()  # no node ran anything
