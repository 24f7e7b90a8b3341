"""Loop tracking: each round's numbers to TensorBoard, MLflow and Weights & Biases.

    tracking: {report_to: [tensorboard, mlflow]}      (in a recipe; `pip install -e .[tracking]`)

After each stage commits (or is found committed), the runner hands its manifest to
`LoopTracking.stage_done`, which turns it into metrics (`stage_metrics`: funnel counts,
contamination counts, scores per task, flywheel metrics, the training curve) and logs them
through each library's own API, with the round as the step. The numbers come from the
committed manifests, the same ones report.md prints, so a resumed run logs what an
uninterrupted one does. A ledger (`tracking/logged.json`) records which stage, at which
fingerprint, each tracker has logged: a resumed run logs only what it has not, into the
same MLflow run and W&B run (their ids are kept there too). A stage redone under a new
fingerprint is logged again at the same step; the later value is the current one.

Everything here is operational: no fingerprint reads the `tracking` section.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from pydantic import Field, field_validator

from distill.records import atomic_write_text, read_json
from distill.registry import TRACKERS
from distill.settings import Strict

# The package each tracker imports (the `tracking` extra installs them all).
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


class TrackingSettings(Strict):
    """The recipe's `tracking` section: where the loop's numbers are logged besides report.md."""

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset(
        {"report_to", "project", "tensorboard_dir", "mlflow_uri", "wandb_mode"})

    report_to: list[TRACKERS.name_type()] = Field(  # type: ignore[valid-type]
        default_factory=list, description="Trackers that receive every round's funnel counts, "
        "contamination counts, scores, flywheel metrics and training curve, with the round as "
        "the step: tensorboard, mlflow, wandb (`pip install -e .[tracking]`). The trainers' "
        "own `report_to` follows this list unless train.args.report_to is set.")
    project: str | None = Field(
        None, description="MLflow experiment and W&B project; null: the recipe's name.")
    tensorboard_dir: str | None = Field(
        None, description="TensorBoard log directory; null: <run dir>/tracking/tensorboard.")
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI (http://host:5000, sqlite:///mlflow.db with "
        "the full mlflow package); null: a local file store in <run dir>/tracking/mlruns.")
    wandb_mode: Literal["online", "offline"] | None = Field(
        None, description="W&B mode; null: W&B's own (WANDB_MODE, else online). Offline "
        "runs land in <run dir>/tracking/wandb, for `wandb sync` later.")

    @field_validator("report_to")
    @classmethod
    def _installed(cls, value: list[str]) -> list[str]:
        import importlib.util

        missing = [name for name in value if importlib.util.find_spec(PACKAGES[name]) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} is not installed: "
                             "pip install -e '.[tracking]'")
        if len(set(value)) != len(value):
            raise ValueError("names a tracker twice")
        return value


# -- metrics from the committed stages ---------------------------------------------------------

def metric_name(*parts: str) -> str:
    """A metric name every tracker accepts (MLflow refuses lm-eval's `acc,none` commas)."""
    return "/".join(re.sub(r"[^\w.\- /]+", "_", part) for part in parts)


def stage_metrics(run_dir: Path, label: str, stage: str,
                  manifest: dict[str, Any]) -> dict[int, dict[str, float]]:
    """A committed stage's numbers: step -> metric -> value.

    The step is the round index, except for the training curve (`train_curve/<label>/*`,
    stepped by the trainer's optimizer steps) and the base student's scores (`base/...`,
    step 0).
    """
    step = 0 if label == "base" else int(label.removeprefix("round_"))
    points: dict[str, float] = {}
    curve: dict[int, dict[str, float]] = {}
    counts = manifest.get("counts") or {}
    if stage == "generate":
        points["funnel/generated"] = counts.get("candidates", 0)
        points["funnel/generate_rejected"] = counts.get("rejected", 0)
    elif stage == "filter":
        funnel_path = run_dir / label / "filter" / "funnel.json"
        names: list[str] = []
        for item in read_json(funnel_path) if funnel_path.exists() else []:
            name = item["filter"]
            name = name if name not in names else f"{name}_{len(names)}"  # a filter twice
            names.append(name)
            points[metric_name("funnel", name, "in")] = item["in"]
            points[metric_name("funnel", name, "out")] = item["out"]
        points["funnel/kept"] = counts.get("kept", 0)
    elif stage == "decontaminate":
        for key in ("in", "clean", "contaminated", "suspect"):
            if key in counts:
                points[f"contamination/{key}"] = counts[key]
        for task, n in (manifest.get("per_task") or {}).items():
            points[metric_name("contamination/per_task", task)] = n
    elif stage == "train":
        train = manifest.get("train") or {}
        for key in ("final_loss", "train_loss", "wall_time_s", "num_examples", "steps"):
            if isinstance(train.get(key), int | float):
                points[f"train/{key}"] = train[key]
        for series, key in (("loss_history", "loss"), ("reward_margin_history", "reward_margin")):
            for point in train.get(series) or []:
                curve.setdefault(int(point["step"]), {})[f"train_curve/{label}/{key}"] = \
                    point["loss"]
    elif stage == "evaluate":
        from distill.report import main_scores

        prefix = "base/eval" if label == "base" else "eval"
        for key, value in main_scores(manifest).items():
            points[metric_name(prefix, key)] = value
    elif stage == "measure":
        from distill.flywheel.stopping import flatten_metrics

        metrics_path = run_dir / label / "measure" / "metrics.json"
        if metrics_path.exists():
            for key, value in flatten_metrics(read_json(metrics_path)).items():
                if key != "round":
                    points[metric_name("flywheel", key)] = value
    found = {step: points}
    for curve_step, values in curve.items():  # a trainer step may equal the round
        found[curve_step] = {**found.get(curve_step, {}), **values}
    return {s: finite for s, values in found.items()
            if (finite := {k: float(v) for k, v in values.items() if math.isfinite(float(v))})}


# -- one tracker per library ---------------------------------------------------------------

class Tracker(Protocol):
    """What the loop needs of a tracker."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log metrics at a step (the round, or the trainer's step for curves)."""

    def close(self) -> None:
        """Flush and finish."""


@TRACKERS.register("tensorboard")
class TensorBoardTracker:
    """Event files through tensorboard's own SummaryWriter (no torch, no tensorboardX)."""

    def __init__(self, settings: TrackingSettings, run_dir: Path, name: str,
                 state: dict[str, Any]) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.dir = tensorboard_dir(settings, run_dir)
        self._writer = EventFileWriter(str(self.dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        """One scalar summary per metric."""
        import time

        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=tag, simple_value=value)
                                 for tag, value in metrics.items()])
        self._writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))

    def close(self) -> None:
        """Flush the event file."""
        self._writer.close()


@TRACKERS.register("mlflow")
class MlflowTracker:
    """One MLflow run per distill run (resumed by id), through MlflowClient."""

    def __init__(self, settings: TrackingSettings, run_dir: Path, name: str,
                 state: dict[str, Any]) -> None:
        from mlflow.tracking import MlflowClient

        uri = mlflow_uri(settings, run_dir)
        self.client = MlflowClient(tracking_uri=uri)
        experiment = settings.project or name
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (found.experiment_id if found is not None
                         else self.client.create_experiment(experiment))
        if state.get("run_id") and state.get("uri") == uri:
            self.run_id = state["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            run = self.client.create_run(experiment_id, run_name=name,
                                         tags={"distill.role": "loop",
                                               "distill.run_dir": str(run_dir)})
            self.run_id = run.info.run_id
            state.update(run_id=self.run_id, uri=uri)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """All of a step's metrics in one batch."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, step)
                                                    for key, value in metrics.items()])

    def close(self) -> None:
        """Mark the run finished (a resumed run marks it running again)."""
        self.client.set_terminated(self.run_id)


@TRACKERS.register("wandb")
class WandbTracker:
    """One W&B run per distill run (resumed by id); each step key has its own x axis."""

    def __init__(self, settings: TrackingSettings, run_dir: Path, name: str,
                 state: dict[str, Any]) -> None:
        import wandb

        directory = run_dir / "tracking"
        directory.mkdir(parents=True, exist_ok=True)
        state.setdefault("wandb_id", uuid.uuid4().hex[:12])  # kept: a resumed run continues it
        self.run = wandb.init(project=settings.project or name, name=name, id=state["wandb_id"],
                              resume="allow", dir=str(directory), mode=settings.wandb_mode,
                              reinit="create_new")
        # W&B's own step only grows: rounds and trainer steps are metrics of their own
        self.run.define_metric("round")
        self.run.define_metric("train_step")
        self.run.define_metric("train_curve/*", step_metric="train_step")
        for prefix in ("funnel", "contamination", "train", "eval", "base", "flywheel"):
            self.run.define_metric(f"{prefix}/*", step_metric="round")

    def log(self, metrics: dict[str, float], step: int) -> None:
        """One W&B history row, with the step under its own key."""
        curve = {k: v for k, v in metrics.items() if k.startswith("train_curve/")}
        rounds = {k: v for k, v in metrics.items() if k not in curve}
        if rounds:
            self.run.log({**rounds, "round": step})
        if curve:
            self.run.log({**curve, "train_step": step})

    def close(self) -> None:
        """Finish the run (offline: its files stay for `wandb sync`)."""
        self.run.finish()


def tensorboard_dir(settings: TrackingSettings, run_dir: Path) -> Path:
    """Where the loop's (and the trainers') event files go."""
    return Path(settings.tensorboard_dir) if settings.tensorboard_dir else (
        run_dir / "tracking" / "tensorboard")


def mlflow_uri(settings: TrackingSettings, run_dir: Path) -> str:
    """The tracking URI; the default local file store needs MLflow's opt-in (set here).

    MLflow 3 keeps the file store in maintenance mode and refuses it unless
    MLFLOW_ALLOW_FILE_STORE is set; the database store needs the full mlflow package.
    """
    uri = settings.mlflow_uri or (run_dir / "tracking" / "mlruns").resolve().as_uri()
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


# -- the loop's side ---------------------------------------------------------------------------

class LoopTracking:
    """The trackers of one run and the ledger of what each has logged."""

    def __init__(self, settings: TrackingSettings, run_dir: Path, name: str) -> None:
        self.settings = settings
        self.run_dir = run_dir
        self.name = name
        self.ledger_path = run_dir / "tracking" / "logged.json"
        self.ledger: dict[str, Any] = (read_json(self.ledger_path)
                                       if self.ledger_path.exists() else {})
        self.trackers: dict[str, Tracker] = {}
        for kind in settings.report_to:
            state = self.ledger.setdefault(kind, {"state": {}, "stages": {}})
            self.trackers[kind] = TRACKERS.get(kind)(settings, run_dir, name, state["state"])
        self._save()

    def stage_done(self, label: str, stage: str, manifest: dict[str, Any],
                   fingerprint: str) -> None:
        """Log a committed stage's metrics to each tracker that has not logged them yet."""
        key = f"{label}/{stage}"
        metrics: dict[int, dict[str, float]] | None = None
        for kind, tracker in self.trackers.items():
            logged = self.ledger[kind]["stages"]
            if logged.get(key) == fingerprint:
                continue
            if metrics is None:
                metrics = stage_metrics(self.run_dir, label, stage, manifest)
            for step, values in sorted(metrics.items()):
                tracker.log(values, step)
            logged[key] = fingerprint
            self._save()

    def close(self) -> None:
        """Finish every tracker's run."""
        for tracker in self.trackers.values():
            tracker.close()

    def _save(self) -> None:
        self.ledger_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.ledger_path, json.dumps(self.ledger, indent=1, sort_keys=True))

    @contextmanager
    def trainer_env(self, label: str) -> Any:
        """Environment for the trainers' own integrations, so they log beside the loop.

        TensorBoard into <dir>/<label>/trainer, MLflow into the same store and experiment
        (a run of its own, tagged with the round), W&B into the same project.
        """
        env: dict[str, str] = {}
        if "tensorboard" in self.trackers:
            tb_dir = tensorboard_dir(self.settings, self.run_dir) / label / "trainer"
            env["TENSORBOARD_LOGGING_DIR"] = str(tb_dir)
        if "mlflow" in self.trackers:
            env["MLFLOW_TRACKING_URI"] = mlflow_uri(self.settings, self.run_dir)
            env["MLFLOW_EXPERIMENT_NAME"] = self.settings.project or self.name
            env["MLFLOW_TAGS"] = json.dumps({"distill.role": "trainer", "distill.round": label})
        if "wandb" in self.trackers:
            env["WANDB_PROJECT"] = self.settings.project or self.name
            env["WANDB_DIR"] = str(self.run_dir / "tracking")
            if self.settings.wandb_mode:
                env["WANDB_MODE"] = self.settings.wandb_mode
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def trainer_report_to(settings: TrackingSettings, args: dict[str, Any]) -> dict[str, Any]:
    """`train.args` with `report_to` following the loop's trackers, unless the recipe set it."""
    if "report_to" in args or not settings.report_to:
        return args
    return {**args, "report_to": list(settings.report_to)}
