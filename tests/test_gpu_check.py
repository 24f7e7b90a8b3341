"""scripts/gpu_check.{sh,py}: the GPU check's code paths, run here on the CPU (--tiny).

The check itself runs only where a GPU is lent; these tests run the same code (distill's
hf backend, distill.train under `accelerate launch`, the budget, the set-up script) with
tiny models, as subprocesses, the way a user starts it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"
SHELL = ROOT / "scripts" / "gpu_check.sh"
MODELS = ["qwen2.5-0.5b", "qwen2.5-1.5b"]


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without $OUT (the device tool's) or a set-up start time."""
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_CHECK_STARTED")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def run_check(args: list[str], out: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """`gpu_check.py --tiny ARGS`; a budget far above 8 minutes unless ARGS set one, so
    that a busy machine makes the run slower, never a section skipped."""
    command = [sys.executable, str(SCRIPT), "--tiny", "--out", str(out), "--budget-s", "1800"]
    proc = subprocess.run([*command, *args], cwd=ROOT, env=clean_env(), capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`python scripts/gpu_check.py --tiny`: both models, one training process."""
    out = tmp_path_factory.mktemp("gpu-check") / "gpu_check.json"
    return (*run_check([], out), out)


def test_tiny_check_measures_every_section(tiny_run):
    proc, data, out = tiny_run
    sections = data["sections"]
    assert [(s["name"], s["model"], s["processes"]) for s in sections] == [
        (name, model, 1) for model in MODELS for name in ("generate", "train")]
    for section in sections:
        assert section["status"] == "ok", section
        assert section["tokens_per_s"] > 0
        assert section["mfu"] is None  # no bf16 peak is known for a CPU
        assert section["peak_memory_gib"] is None  # no GPU memory to measure
    generated = [s["details"]["generated_tokens"] for s in sections if s["name"] == "generate"]
    assert all(tokens > 0 for tokens in generated)
    # one table, its header naming device, versions and date; MFU printed as n/a
    meta = data["meta"]
    assert meta["device"].startswith("cpu") and meta["peak_bf16_tflops"] is None
    assert all(meta["versions"][name] for name in ("torch", "transformers", "trl"))
    datetime.fromisoformat(meta["date"])
    header = next(line for line in proc.stdout.splitlines() if line.startswith("gpu_check 20"))
    assert meta["device"] in header and f"trl {meta['versions']['trl']}" in header
    train_lines = [line for line in proc.stdout.splitlines() if line.startswith("train ")]
    assert len(train_lines) == 2 and all(" n/a " in line for line in train_lines)
    assert "===== train qwen2.5-1.5b x1" in (out.with_name("gpu_check.log")).read_text()


def test_training_goes_through_distill_with_the_stated_flops(tiny_run):
    """The adapters counted are PEFT's real ones; FLOPs per token = 4 N + 6 A."""
    _, data, _ = tiny_run
    script = load_script()
    for section in (s for s in data["sections"] if s["name"] == "train"):
        details = section["details"]
        shape = script.TINY_MODELS[section["model"]]
        assert details["trainable_params"] == lora_params(shape, rank=16)
        assert details["matmul_params"] == data["meta"]["models"][section["model"]][
            "matmul_params"]
        # the shared formula, on the trained examples' lengths (cut at max_length 96)
        attention = details["flops_per_token"] - (4 * details["matmul_params"]
                                                  + 6 * details["trainable_params"])
        assert (details["attention_layers"], details["attention_d_q"]) == (
            shape.layers, shape.hidden)
        mean = details["mean_example_tokens"]
        # 6 x layers x d_q x mean(L(L+1))/mean(L) lies between the mean and the max length
        assert 6 * shape.layers * shape.hidden * (mean + 1) <= attention * 1.001
        assert attention <= 6 * shape.layers * shape.hidden * 97
        # distill's SFT defaults reached TRL, with the check's bounded run on top
        args = details["train_args"]
        assert args["assistant_only_loss"] is True and args["max_steps"] == 6
        assert details["num_processes"] == 1 and details["tokens_timed"] > 0


def lora_params(shape, rank: int) -> int:
    """LoRA A and B of every linear layer of the decoder ('all-linear': not lm_head)."""
    head = shape.hidden // shape.heads
    kv = shape.kv_heads * head
    linears = [(shape.hidden, shape.hidden), (shape.hidden, kv), (shape.hidden, kv),
               (shape.hidden, shape.hidden), (shape.hidden, shape.intermediate),
               (shape.hidden, shape.intermediate), (shape.intermediate, shape.hidden)]
    return shape.layers * sum(rank * (fan_in + fan_out) for fan_in, fan_out in linears)


@pytest.mark.slow  # two more ranks of imports: half a minute on two cores
def test_two_training_processes(tmp_path):
    """The multi-GPU path (`accelerate launch --num_processes 2`), here as two CPU ranks."""
    _, data = run_check(["--models", "qwen2.5-0.5b", "--processes", "2"],
                        tmp_path / "gpu_check.json")
    train = next(s for s in data["sections"] if s["name"] == "train")
    assert train["status"] == "ok" and train["processes"] == 2
    assert train["details"]["num_processes"] == 2 and train["details"]["ranks_in_sync"] is True
    assert train["tokens_per_s"] > 0 and train["mfu"] is None


def test_real_shapes_have_the_published_parameter_counts():
    """Qwen2.5-0.5B: 494,032,768 parameters; Qwen2.5-1.5B: 1,543,714,304 (model cards)."""
    script = load_script()
    no_tokens = SimpleNamespace(bos_token_id=None, eos_token_id=None, pad_token_id=None)
    counts = {name: script.count_params(script.qwen2_config(shape, no_tokens))
              for name, shape in script.MODELS.items()}
    assert counts["qwen2.5-0.5b"][0] == 494_032_768
    assert counts["qwen2.5-1.5b"][0] == 1_543_714_304
    # matmul weights: all but norms and biases; the tied embedding counts once, as lm_head
    hidden, layers, kv = 896, 24, 128
    assert counts["qwen2.5-0.5b"][1] == (494_032_768 - layers * (2 * hidden + hidden + 2 * kv)
                                         - hidden)


def test_peak_flops_table():
    script = load_script()
    assert script.peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert script.peak_bf16_flops("NVIDIA H200") == 989e12
    assert script.peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert script.peak_bf16_flops("Tesla T4") is None


def test_one_flop_formula_on_a_known_config():
    """Qwen2.5-0.5B's attention (24 layers, d_q 896), checked by hand (bench_train.py
    calls the same function: tests/test_bench_train.py)."""
    script = load_script()
    # a full fine-tune of N weights on one 2048-token example: PaLM's 6N + 12 x layers x
    # d_q x T per token, with causal attention's T(T+1)/2 visible pairs in place of T^2:
    # 6N + 12 x 24 x 896 x 2049 / 2 = 6N + 264,370,176
    n = 494_032_768
    assert script.train_flops_per_token(0, n, 24, 896, [2048]) == 6 * n + 264_370_176
    # LoRA: 4 per frozen weight, 6 per adapter weight; two examples, the mean over tokens:
    # attention 6 x 2 x 4 x (1 x 2 + 3 x 4) / (1 + 3) = 168
    assert script.train_flops_per_token(10, 2, 2, 4, [1, 3]) == 40 + 12 + 168


def test_the_budget_skips_what_it_cannot_fit(tmp_path):
    """With 5 s for the whole check, every section is skipped, with the reason."""
    _, data = run_check(["--budget-s", "5"], tmp_path / "gpu_check.json")
    assert len(data["sections"]) == 4
    assert all(s["status"] == "skipped" and s["note"].startswith("skipped: ")
               for s in data["sections"])
    assert "models" not in data["meta"]  # nothing was built


@pytest.fixture
def trl_blocked(tmp_path) -> Path:
    """A directory that, first on PYTHONPATH, makes `import trl` fail."""
    blocker = tmp_path / "blocker" / "trl"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ModuleNotFoundError('trl is blocked by the test', name='trl')\n")
    return blocker.parent


def test_a_missing_package_is_named_and_stops_the_check(tmp_path, trl_blocked):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    proc = subprocess.run(["bash", str(SHELL), "--tiny", "--out", str(tmp_path / "x.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=clean_env(PYTHON=sys.executable, PYTHONPATH=str(trl_blocked),
                                        GPU_CHECK_WHEELS=str(empty), GPU_CHECK_OFFLINE="1"))
    assert proc.returncode == 2
    # named as pyproject.toml requires it, e.g. trl>=1.1
    assert re.search(r"missing Python packages: trl[<>=~]", proc.stderr), proc.stderr[-2000:]
    assert not (tmp_path / "x.json").exists()


def test_carried_wheels_supply_a_missing_package(tmp_path, trl_blocked):
    """Wheels in $GPU_CHECK_WHEELS are installed aside and put first on PYTHONPATH."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    stand_in_wheel(wheels / "trl-99.0-py3-none-any.whl", "trl", "99.0")
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(SHELL), "--tiny", "--budget-s", "5", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=clean_env(PYTHON=sys.executable, PYTHONPATH=str(trl_blocked),
                                        GPU_CHECK_WHEELS=str(wheels), GPU_CHECK_OFFLINE="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "installing the wheels" in proc.stderr
    assert json.loads(out.read_text())["meta"]["versions"]["trl"] == "99.0"  # the stand-in


def stand_in_wheel(path: Path, name: str, version: str) -> None:
    """A minimal wheel of an importable, empty package `name`."""
    info = f"{name}-{version}.dist-info"
    files = {f"{name}/__init__.py": "",
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{p},,\n" for p in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)
