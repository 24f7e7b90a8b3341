"""Loop tracking, for real and offline: a two-round microworld run with
`tracking.report_to: [tensorboard, mlflow]` leaves TensorBoard event files and an MLflow run
(a local file store) whose numbers are the report's; report.md embeds its plots and
report.html exists; a rerun logs nothing twice.
"""

import os
import re
import time
from pathlib import Path

import pytest

from distill.recipe import load_recipe
from distill.report import main_scores
from distill.runner import Runner
from distill.store import RunStore
from distill.tracking import metric_name, stage_metrics

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"

# The quickstart, small: two rounds of a few dozen tasks, training in this process.
SMALL = ["rounds.count=2", "generate.num_instructions=48", "generate.prompts_per_step=16",
         "teacher.checkpoint_every=16", "eval.limit=10", "train.args.num_train_epochs=3",
         "train.args.logging_steps=1", "train.accelerate_config=null",
         "measure.sample_size=16", "tracking.report_to=[tensorboard, mlflow]"]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    from distill.microworld.build import build_models

    build_models(quiet=True)
    out = tmp_path_factory.mktemp("runs")
    recipe = load_recipe(QUICKSTART, [f"output_dir={out}", *SMALL])
    run_dir = Runner(recipe).run()
    return run_dir


def expected(run_dir: Path) -> dict[str, dict[int, float]]:
    """metric -> step -> value, from the committed manifests (what report.md prints)."""
    found: dict[str, dict[int, float]] = {}
    for manifest in RunStore(run_dir).manifests():
        points = stage_metrics(run_dir, manifest["round"], manifest["stage"], manifest)
        for step, values in points.items():
            for key, value in values.items():
                found.setdefault(key, {})[step] = value
    return found


def tensorboard_scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in directory.glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value)
                                               for e in accumulator.Scalars(tag))
    return scalars


def mlflow_loop_run(run_dir: Path):
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(run_dir / "tracking" / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name(run_dir.name)
    runs = client.search_runs([experiment.experiment_id],
                              filter_string="tags.`distill.role` = 'loop'")
    assert len(runs) == 1
    return client, runs[0]


def test_the_report_numbers_reach_tensorboard_and_mlflow(tracked_run):
    want = expected(tracked_run)
    # what the report prints: the scores and losses of every round are among the metrics
    manifests = {(m["round"], m["stage"]): m for m in RunStore(tracked_run).manifests()}
    for r in (0, 1):
        scores = main_scores(manifests[(f"round_{r}", "evaluate")])
        assert scores and all(want[metric_name("eval", k)][r] == v for k, v in scores.items())
        train = manifests[(f"round_{r}", "train")]["train"]
        assert want["train/final_loss"][r] == train["final_loss"]
        curve = want[f"train_curve/round_{r}/loss"]
        assert len(curve) == len(train["loss_history"]) > 1
        assert want["funnel/kept"][r] == manifests[(f"round_{r}", "filter")]["counts"]["kept"]
        assert (want["contamination/clean"][r]
                == manifests[(f"round_{r}", "decontaminate")]["counts"]["clean"])
    assert any(key.startswith("flywheel/") for key in want)
    report = (tracked_run / "report.md").read_text()
    for r in (0, 1):  # the summary table's loss is the tracked one
        assert f"{want['train/final_loss'][r]:.4f}" in report

    scalars = tensorboard_scalars(tracked_run / "tracking" / "tensorboard")
    assert set(scalars) == set(want)
    for key, steps in want.items():
        logged = dict(scalars[key])
        assert len(scalars[key]) == len(steps), key  # each step once
        assert logged == pytest.approx(steps, rel=1e-6), key  # event files hold float32

    client, run = mlflow_loop_run(tracked_run)
    assert set(run.data.metrics) == set(want)
    for key, steps in want.items():
        history = client.get_metric_history(run.info.run_id, key)
        assert {m.step: m.value for m in history} == steps, key
        assert len(history) == len(steps), key


def test_the_trainers_log_beside_the_loop(tracked_run):
    """The trainers' own report_to followed the loop's: their event files and MLflow runs."""
    for r in (0, 1):
        trainer_dir = tracked_run / "tracking" / "tensorboard" / f"round_{r}" / "trainer"
        assert any(tag.startswith("train/") for tag in tensorboard_scalars(trainer_dir))
    client, run = mlflow_loop_run(tracked_run)
    trainers = client.search_runs([run.info.experiment_id],
                                  filter_string="tags.`distill.role` = 'trainer'")
    assert sorted(t.data.tags["distill.round"] for t in trainers) == ["round_0", "round_1"]


def test_the_report_embeds_its_plots_and_has_an_html_twin(tracked_run):
    report = (tracked_run / "report.md").read_text()
    images = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", report)
    for name in ("training_loss", "funnel", "scores"):
        assert f"plots/{name}.png" in images
    assert any(image.startswith("plots/flywheel_") for image in images)
    for image in images:
        assert (tracked_run / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tracked_run / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "<table>" in page
    assert all(f"src=\"{image}\"" in page for image in images)


def test_a_rerun_logs_nothing_twice(tracked_run):
    def mlflow_histories():
        client, run = mlflow_loop_run(tracked_run)  # one loop run: the rerun resumes it
        return {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                for key in run.data.metrics}

    before = tensorboard_scalars(tracked_run / "tracking" / "tensorboard")
    histories = mlflow_histories()
    recipe = load_recipe(QUICKSTART, [f"output_dir={tracked_run.parent}", *SMALL])
    Runner(recipe).run()  # every stage is committed: skipped, and logged already
    assert tensorboard_scalars(tracked_run / "tracking" / "tensorboard") == before
    assert mlflow_histories() == histories


def test_where_training_logs_stays_out_of_the_fingerprint():
    plain = load_recipe(QUICKSTART, [])
    logged = load_recipe(QUICKSTART, ["train.args.report_to=[tensorboard]",
                                      "train.args.run_name=x"])
    assert plain.train.fingerprint_settings() == logged.train.fingerprint_settings()
    assert plain.train.fingerprint_settings() != load_recipe(
        QUICKSTART, ["train.args.learning_rate=1e-4"]).train.fingerprint_settings()


def test_a_tracker_that_is_not_installed_or_known_is_refused_naming_the_field():
    from distill.recipe import RecipeError

    with pytest.raises(RecipeError, match="tracking.report_to"):
        load_recipe(QUICKSTART, ["tracking.report_to=[comet]"])


def test_wandb_offline_writes_a_run_that_a_resumed_run_continues(tmp_path, monkeypatch):
    """W&B in offline mode: the run's file holds the logged metrics; a second open reuses it."""
    pytest.importorskip("wandb")
    from distill.tracking import LoopTracking, TrackingSettings

    monkeypatch.setenv("WANDB_SILENT", "true")
    settings = TrackingSettings(report_to=["wandb"], wandb_mode="offline")
    manifest = {"counts": {"in": 7, "clean": 5, "contaminated": 2}, "per_task": {"t": 2}}
    tracking = LoopTracking(settings, tmp_path, "demo")
    tracking.stage_done("round_0", "decontaminate", manifest, "f1")
    tracking.close()
    run_id = tracking.ledger["wandb"]["state"]["wandb_id"]
    (run_file,) = (tmp_path / "tracking" / "wandb").glob(f"offline-run-*-{run_id}/*.wandb")
    # wandb-core (a process of its own) writes the file; under load it lags finish()
    deadline = time.monotonic() + 60
    while b"contamination/clean" not in run_file.read_bytes() and time.monotonic() < deadline:
        time.sleep(1)
    assert b"contamination/clean" in run_file.read_bytes()
    again = LoopTracking(settings, tmp_path, "demo")  # resumed: same id, nothing new logged
    again.stage_done("round_0", "decontaminate", manifest, "f1")
    again.close()
    assert again.ledger["wandb"]["state"]["wandb_id"] == run_id
