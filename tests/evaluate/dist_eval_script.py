"""Run by test_eval_harness under `accelerate launch` with 2 CPU processes.

Usage: dist_eval_script.py MODEL_DIR TASKS_DIR OUT_DIR; writes OUT_DIR/rank<r>.json.
"""

import json
import os
import sys
from pathlib import Path

from lm_eval.models.huggingface import HFLM

from distill.evaluate.harness import Config, evaluate_model

model_dir, tasks_dir, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
seen = {"requests": 0, "world_size": None}
original = HFLM.loglikelihood


def counting(self, requests, *args, **kwargs):
    seen["requests"] += len(requests)
    seen["world_size"] = self.world_size
    return original(self, requests, *args, **kwargs)


HFLM.loglikelihood = counting
config = Config(tasks=["distill_fixture_mc"], include_path=tasks_dir, bootstrap_iters=0)
result = evaluate_model(model_dir, config, out)
rank = int(os.environ["RANK"])
out.mkdir(parents=True, exist_ok=True)
(out / f"rank{rank}.json").write_text(json.dumps({
    "returned": result is not None,
    "world_size": seen["world_size"],
    "docs_on_rank": seen["requests"] // 4,  # 4 choices per document
}))
