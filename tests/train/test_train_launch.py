"""Training through `accelerate launch`: one CPU process, two CPU processes over gloo."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from train_data import FAST_ARGS

from distill.registry import TRAINERS
from distill.train import launch as launch_module
from distill.train.config import LoraSettings, TrainResult, TrainSpec
from distill.train.launch import TrainingError, _LogWriter, _ProgressFile, launch_training

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "accelerate"


def assert_plain_checkpoint(result):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = Path(result.merged_dir)
    assert not (merged / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert not any("lora" in name for name, _ in model.named_parameters())
    assert AutoTokenizer.from_pretrained(merged).chat_template


@pytest.fixture(scope="module")
def launched(tiny_model_dir, chat_data, tmp_path_factory):
    """One training through `accelerate launch` with cpu.yaml, laid out as the runner does.

    The data lie inside the output directory, the log beside it; progress goes to a list.
    """
    root = tmp_path_factory.mktemp("launch")
    out = root / ".train.work"
    out.mkdir()
    shutil.copy(chat_data, out / "train.jsonl")
    spec = TrainSpec(model=str(tiny_model_dir), data_path=str(out / "train.jsonl"),
                     output_dir=str(out), seed=0, quiet=True, lora=LoraSettings(),
                     args=FAST_ARGS)
    steps: list[tuple[int, int]] = []
    result = launch_training(spec, CONFIGS / "cpu.yaml", log_path=root / "train.log",
                             progress=lambda done, total: steps.append((done, total)))
    return spec, result, steps, root / "train.log"


def test_launch_through_accelerate_with_cpu_yaml(launched):
    spec, result, _, log_path = launched
    assert result.num_processes == 1 and result.steps == 2 * 8
    assert result.final_loss < result.first_loss
    assert result.merged_dir == str(Path(spec.output_dir) / "merged")
    assert json.loads((Path(spec.output_dir) / "train_log.json").read_text())["steps"] == 16
    assert_plain_checkpoint(result)
    log = log_path.read_text()
    assert "accelerate.commands.launch --config_file" in log and "-m distill.train.sft" in log
    assert "distill.train.sft: 60 examples, 16 steps" in log


def test_launch_reports_progress_from_the_subprocess(launched):
    spec, _, steps, _ = launched
    # read from the JSON lines the subprocess's callback appended, each step once, in order
    assert steps == [(step, 16) for step in range(17)]
    lines = Path(spec.output_dir, "progress.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == json.loads(lines[-1])["max_steps"] == 16


def test_records_stay_true_after_the_output_dir_is_renamed(launched):
    """The runner trains in `.train.work/` and renames it `train/` when the stage commits."""
    spec, result, _, _ = launched
    work = Path(spec.output_dir)
    committed = work.with_name("train")
    work.rename(committed)
    try:
        log = json.loads((committed / "train_log.json").read_text())
        for key in ("output_dir", "merged_dir", "adapter_dir"):
            assert (committed / log[key]).is_dir(), (key, log[key])
        assert (committed / log["merged_dir"] / "config.json").is_file()
        assert TrainResult.load(committed / "train_log.json") == result.model_copy(update={
            "output_dir": str(committed), "merged_dir": str(committed / "merged"),
            "adapter_dir": str(committed / "adapter")})
        written = json.loads((committed / "train_spec.json").read_text())
        assert (committed / written["data_path"]).is_file()
        assert (committed / written["output_dir"]).resolve() == committed.resolve()
        assert (committed / written["progress_path"]).is_file()
        loaded = TrainSpec.load(committed / "train_spec.json")
        assert Path(loaded.data_path) == committed / "train.jsonl"
        assert loaded.model == spec.model  # the base model is not the job's: kept as given
    finally:
        committed.rename(work)


def test_failed_launch_raises_with_the_log_tail(make_spec, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x"}\n')
    spec = make_spec(data_path=bad)
    with pytest.raises(TrainingError) as caught:
        launch_training(spec, CONFIGS / "cpu.yaml", log_path=tmp_path / "train.log")
    message = str(caught.value)
    assert "exit code" in message and "record 1 has no `messages`" in message


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_ranks_env() -> dict[str, str]:
    """Environment for CPU ranks over gloo, with this checkout importable."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": path}


def test_two_cpu_processes_over_gloo(make_spec, tmp_path):
    """`ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 -m ...sft`."""
    spec = make_spec(progress_path=str(tmp_path / "progress.jsonl"))
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--main_process_port", str(free_port()),
               "-m", "distill.train.sft", str(spec_path)]
    proc = subprocess.run(command, env=cpu_ranks_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = json.loads((Path(spec.output_dir) / "train_log.json").read_text())
    # Two ranks split each epoch's 60 records: 4 steps of 2 x 8 instead of 8 steps of 8.
    assert log["num_processes"] == 2 and log["steps"] == 2 * 4
    assert log["ranks_in_sync"] is True  # DDP kept both ranks' weights identical
    assert log["final_loss"] < log["first_loss"]
    assert_plain_checkpoint(TrainResult.load(Path(spec.output_dir) / "train_log.json"))
    # the main rank alone records progress: each step's loss once
    lines = [json.loads(line) for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == list(range(1, 9))


def test_runner_ranks_train_collectively_without_a_nested_launch(make_spec, tmp_path):
    """`accelerate launch -m distill run`: each rank calls launch_training itself."""
    spec = make_spec(args={"num_train_epochs": 1})
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(spec.model_dump_json())
    out = tmp_path / "ranks"
    out.mkdir()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
               "--num_processes", "2", "--main_process_port", str(free_port()),
               str(Path(__file__).with_name("ranks_script.py")), str(spec_path), str(out)]
    proc = subprocess.run(command, env=cpu_ranks_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1] == {"num_processes": 2, "steps": 4, "ranks_in_sync": True,
                                    "merged_visible": True}
    assert not (out / "nested-launch.log").exists()


@pytest.mark.slow  # the same ranks as above, started from the shipped config file
def test_two_cpu_processes_through_cpu_2proc_yaml(make_spec, tmp_path):
    result = launch_training(make_spec(), CONFIGS / "cpu_2proc.yaml",
                             log_path=tmp_path / "train.log")
    assert result.num_processes == 2 and result.ranks_in_sync is True
    assert_plain_checkpoint(result)


@pytest.fixture
def fake_method():
    """A throwaway training method `fake` that records its calls."""
    calls = []

    def train_fake(spec, callbacks=None):
        calls.append((spec, callbacks))
        return "ok"

    TRAINERS.register("fake")(train_fake)
    yield calls
    TRAINERS.unregister("fake")


def test_inside_a_launch_every_rank_trains_in_process(make_spec, monkeypatch, fake_method):
    monkeypatch.setattr(launch_module, "_launch_subprocess",
                        lambda *a, **k: pytest.fail("launched a nested accelerate"))
    spec = make_spec(method="fake")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launch_training(spec, CONFIGS / "cpu.yaml") == "ok"
    monkeypatch.delenv("WORLD_SIZE")
    assert launch_training(spec, None) == "ok"  # no accelerate config: in this process
    assert fake_method == [(spec, None), (spec, None)]


def test_in_process_training_reports_progress_through_a_callback(make_spec, fake_method):
    from transformers import TrainerCallback, TrainerControl, TrainerState

    steps = []
    launch_training(make_spec(method="fake"), None, progress=lambda *step: steps.append(step))
    ((_, callbacks),) = fake_method
    (callback,) = callbacks
    assert isinstance(callback, TrainerCallback)
    state, control = TrainerState(global_step=3, max_steps=8), TrainerControl()
    callback.on_log(None, state, control, logs={"loss": 1.0})
    state.is_world_process_zero = False  # another rank: the main rank alone reports
    callback.on_log(None, state, control, logs={"loss": 1.0})
    assert steps == [(3, 8)]


def test_the_subprocess_runs_the_registered_module(make_spec, monkeypatch, tmp_path):
    commands = []

    def popen(command, **kwargs):
        commands.append(command)
        raise RuntimeError("stop here")

    monkeypatch.setattr(subprocess, "Popen", popen)
    for method, module in (("sft", "distill.train.sft"), ("dpo", "distill.train.dpo"),
                           ("sft_then_dpo", "distill.train.dpo")):
        with pytest.raises(RuntimeError, match="stop here"):
            launch_training(make_spec(method, method=method), CONFIGS / "cpu.yaml",
                            log_path=tmp_path / "train.log")
        assert commands[-1][-3:] == ["-m", module, str(tmp_path / method / "train_spec.json")]


def test_log_keeps_lines_and_thins_out_progress_bars(tmp_path):
    path = tmp_path / "log"
    with path.open("w") as handle:
        writer = _LogWriter(handle, echo=False, progress_every_s=3600)
        writer.write("start\n\r 10%|#")
        writer.write("   \r 20%|##  \r 30%|###\n")
        writer.write("error: boom")
        writer.close()
    assert path.read_text().splitlines() == ["start", " 10%|#   ", " 30%|###", "error: boom"]
    assert writer.tail().splitlines()[-1] == "error: boom"


def test_progress_file_lines_reach_the_callback_once_and_whole(tmp_path):
    path = tmp_path / "progress.jsonl"
    path.write_text("stale from an earlier attempt\n")
    steps: list[tuple[int, int]] = []
    reader = _ProgressFile(path, lambda done, total: steps.append((done, total)))
    reader.read()  # nothing yet: the old file was removed
    with path.open("a") as handle:
        handle.write('{"step": 0, "max_steps": 4, "epoch": 0.0}\n{"step": 1, "max_')
        handle.flush()
        reader.read()  # the second line is not complete yet
        assert steps == [(0, 4)]
        handle.write('steps": 4, "loss": 2.5}\n{"step": 2, "max_steps": 4}\n')
        handle.write('{"step": 2, "max_steps": 4, "train_loss": 2.0}\n')
    reader.read()
    assert steps == [(0, 4), (1, 4), (2, 4)]  # step 2's two lines report once
