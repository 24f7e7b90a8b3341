"""The shipped accelerate configs follow the GPUs a run is given, and the launcher counts them.

`CUDA_VISIBLE_DEVICES=3 distill run ...` generates on GPU 3, so training must not pin GPU 0
(`gpu_ids`); and a multi-GPU config must not hard-code 8 processes, so distill passes
`--num_processes` = the visible GPUs. accelerate's own launcher is the judge of the command.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from distill.train.launch import accelerate_command, launch_processes, visible_gpus

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "recipes" / "accelerate"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))
MULTI_GPU = ["ddp.yaml", "fsdp.yaml", "deepspeed_zero3.yaml"]


def settings(name: str) -> dict:
    return yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_no_config_pins_gpus(path):
    assert settings(path.name).get("gpu_ids", "all") == "all"


def test_single_gpu_uses_the_first_visible_gpu():
    single = settings("single_gpu.yaml")
    assert "gpu_ids" not in single and single["num_processes"] == 1


@pytest.mark.parametrize("name", MULTI_GPU)
def test_multi_gpu_configs_take_one_process_per_visible_gpu(name, monkeypatch, tmp_path):
    assert "num_processes" not in settings(name)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    command = accelerate_command(CONFIGS / name, "distill.train.sft", tmp_path / "spec.json")
    assert command[command.index("--num_processes") + 1] == "2"
    # the header says how to run it by hand, with a count
    assert f"--config_file recipes/accelerate/{name} --num_processes" in \
        (CONFIGS / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(("visible", "count"), [
    ("3,5", 2), ("0", 1), ("", 0), ("0,1,-1,2", 2), ("GPU-8a1b,GPU-77c2", 2), (" 1 , 2 ", 2)])
def test_visible_gpus_reads_cuda_visible_devices(visible, count, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert visible_gpus() == count


def test_without_cuda_visible_devices_torch_counts(monkeypatch):
    import torch

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert visible_gpus() == torch.cuda.device_count()


def test_a_count_in_the_config_wins(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert launch_processes(settings("cpu_2proc.yaml"), CONFIGS / "cpu_2proc.yaml") == 2
    assert launch_processes(settings("single_gpu.yaml"), CONFIGS / "single_gpu.yaml") == 1


@pytest.mark.parametrize(("change", "expected"), [
    ({}, "no num_processes, so it starts one process per visible GPU, and none is visible "
         "(CUDA_VISIBLE_DEVICES=)"),
    ({"num_machines": 2}, "which a multi-machine launch needs"),
    ({"use_cpu": True}, "which a CPU launch needs"),
])
def test_no_count_to_be_had_is_a_clear_error(change, expected, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="ddp.yaml has no num_processes") as error:
        launch_processes({**settings("ddp.yaml"), **change}, CONFIGS / "ddp.yaml")
    assert expected in str(error.value)


@pytest.mark.parametrize("name", MULTI_GPU)
def test_accelerate_accepts_the_command_and_refuses_the_config_alone(name, monkeypatch,
                                                                     tmp_path):
    """accelerate 1.16 refuses a config without num_processes unless given the count."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    command = accelerate_command(CONFIGS / name, "distill.train.sft", tmp_path / "spec.json")
    args = command[command.index("accelerate.commands.launch") + 1:]
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    parsed, _, _ = _validate_launch_command(launch_command_parser().parse_args(args))
    assert parsed.num_processes == 2
    bare = [a for i, a in enumerate(args)
            if "--num_processes" not in (a, args[i - 1] if i else None)]
    with pytest.raises(ValueError, match="manually pass in `--num_processes`"):
        _validate_launch_command(launch_command_parser().parse_args(bare))
