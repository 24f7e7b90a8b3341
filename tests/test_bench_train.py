"""scripts/bench_train.py: padded vs padding-free SFT, the CPU path of the GPU benchmark.

The GPU run (`bash scripts/gpu_check.sh --bench-train`) is the same code with a real shape;
here --dry-run trains the three arms on the tiny model as subprocesses, the way a user
starts it, and the FLOP count is checked by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "bench_train.py"


def load_script():
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_per_token_counts_matmuls_adapters_and_causal_attention():
    bench = load_script()
    # gpu_check's formula (tests/test_gpu_check.py checks it by hand): 4 x 10 frozen +
    # 6 x 2 adapter weights; attention 6 x 2 layers x d_q 4 x (1*2 + 3*4) / 4
    assert bench.gpu_check.train_flops_per_token(10, 2, layers=2, d_q=4,
                                                 lengths=[1, 3]) == 40 + 12 + 168


def test_padding_share_of_padded_batches():
    bench = load_script()
    assert bench.padding_share([2, 4, 3, 3], batch=2) == pytest.approx(1 - 12 / 14)


def test_dry_run_trains_the_same_tokens_in_every_arm(tmp_path):
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = {row["arm"]: row for row in report["rows"]}
    assert set(rows) == {"padded", "padding_free", "packed"}
    examples = report["meta"]["examples"]
    assert examples >= 20  # the chats that fit max_length whole
    # padded and padding_free: the same batches of 4 examples; packed: rows of several
    assert rows["padded"]["steps"] == rows["padding_free"]["steps"] == -(-examples // 4)
    assert rows["packed"]["steps"] < rows["padded"]["steps"]
    # every arm trained every token of every example once, padding not counted
    trained = {arm: runs[0]["tokens"][-1] for arm, runs in report["runs"].items()}
    assert len(set(trained.values())) == 1, trained
    assert report["meta"]["padding_share_padded"] > 0.05
    for row in rows.values():
        assert row["tokens_per_s"] > 0 and row["peak_memory_gib"] > 0
        assert row["mfu"] is None  # no GPU peak on a CPU
    assert rows["padded"]["speedup"] == 1.0
    assert "x padded" in done.stdout and "padding_free" in done.stdout
