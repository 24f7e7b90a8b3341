"""Run by test_train_launch under `accelerate launch` with 2 CPU ranks, like `distill run`.

Usage: ranks_script.py SPEC_JSON OUT_DIR. Every rank joins the process group first (as the
runner does), then calls launch_training with an accelerate config: it must train in
this process, collectively, and not launch accelerate again. Writes OUT_DIR/rank<r>.json.
"""

import json
import sys
from pathlib import Path

from accelerate import PartialState

from distill.train.config import TrainSpec
from distill.train.launch import launch_training

state = PartialState()
spec = TrainSpec.model_validate_json(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
config = Path(__file__).resolve().parents[2] / "recipes" / "accelerate" / "cpu.yaml"
result = launch_training(spec, config, log_path=out / "nested-launch.log")
state = PartialState()
state.wait_for_everyone()  # the ranks still form one group after training
(out / f"rank{state.process_index}.json").write_text(json.dumps({
    "num_processes": result.num_processes,
    "steps": result.steps,
    "ranks_in_sync": result.ranks_in_sync,
    "merged_visible": (Path(result.merged_dir) / "config.json").is_file(),
}))
