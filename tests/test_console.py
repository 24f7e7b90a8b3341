"""What a `distill run` console shows: distill's stage lines, not lm-eval's chatter."""

import os
import re
import subprocess
import sys
from pathlib import Path

from distill.evaluate.harness import Config, evaluate_model

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests" / "assets" / "tasks"

# One evaluation with logging set up as `distill run` sets it up, in a fresh process, so
# that the console is the process's real stderr and stdout (tqdm and print() included) and
# the libraries' logging state is that of a run.
EVALUATE_AS_A_RUN = """
import logging, sys
from pathlib import Path

from distill.cli import _setup_logging
from distill.evaluate.harness import Config, evaluate_model

model, tasks, run_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
_setup_logging(run_dir, quiet=False)
logging.getLogger("distill").info("base/evaluate: running (fingerprint 0123456789ab)")
evaluate_model(model, Config(tasks=["distill_fixture"], include_path=tasks, limit=2,
                             bootstrap_iters=0, gen_kwargs={"max_gen_toks": 2}),
               run_dir / "evaluate")
"""


def test_lm_eval_info_goes_to_the_log_not_the_console(tiny_model_dir, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")]))
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", EVALUATE_AS_A_RUN, str(tiny_model_dir),
                           str(TASKS), str(run_dir)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    console = proc.stdout + proc.stderr
    assert "base/evaluate: running" in console  # distill's own stage line stays
    for chatter in ("Building contexts", "lm_eval", "Selected tasks", "Using device",
                    "it/s]", "%|"):  # lm-eval's INFO and its (and transformers') tqdm bars
        assert chatter not in console, console
    log = (run_dir / "distill.log").read_text()
    assert "base/evaluate: running" in log
    assert "INFO lm_eval.api.task: Building contexts for distill_fixture_qa" in log
    assert (run_dir / "evaluate" / "scores.json").is_file()


def test_lm_eval_request_bars_report_to_progress(tiny_model_dir, tmp_path, capfd):
    calls = []
    evaluate_model(str(tiny_model_dir),
                   Config(tasks=["distill_fixture"], include_path=str(TASKS), limit=2,
                          bootstrap_iters=0, gen_kwargs={"max_gen_toks": 2}),
                   tmp_path, progress=lambda *call: calls.append(call))
    last = {name: (done, total) for name, done, total in calls}
    assert {"generate_until requests", "loglikelihood requests"} <= set(last)
    assert all(done == total > 0 for done, total in last.values())  # every bar finished
    terminal = capfd.readouterr()
    drawn = re.split(r"[\r\n]", terminal.err + terminal.out)
    # transformers' own bar is turned off by `distill run`'s logging setup, not here
    assert not [line for line in drawn if "%|" in line and "Loading weights" not in line]


def test_lm_eval_prints_become_log_records(caplog):
    from distill.evaluate.harness import _lm_eval_output

    stdout = sys.stdout
    with caplog.at_level("INFO", logger="lm_eval.stdout"), _lm_eval_output(None):
        print("bootstrapping for stddev: f1")
        print("Determined largest", end=" ")
        print("batch size: 64", end="")
    assert [r.getMessage() for r in caplog.records if r.name == "lm_eval.stdout"] == [
        "bootstrapping for stddev: f1", "Determined largest batch size: 64"]
    assert sys.stdout is stdout
