"""The round loop: generate, filter, decontaminate, train, evaluate; then maybe again.

    distill run recipes/quickstart.yaml
    accelerate launch --config_file recipes/accelerate/ddp.yaml -m distill run recipes/x.yaml

Every stage goes through `Runner._stage`: if its fingerprint is already committed it is
skipped, otherwise it works in a temporary directory and commits with a manifest. Under
`accelerate launch` every rank runs this same loop: generation and evaluation are shared
across ranks, filtering and decontamination run on the main rank while the others wait,
and training is collective.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from distill.flywheel.data import RealDraw
from distill.recipe import Recipe
from distill.records import read_json, read_records, write_json, write_jsonl
from distill.store import RunStore, Stage, file_sha256

log = logging.getLogger("distill")

STAGES = ("generate", "filter", "decontaminate", "train", "evaluate", "measure")


@dataclass
class Ranks:
    """This process's place among the accelerate ranks (one rank when not launched)."""

    rank: int = 0
    world_size: int = 1
    _state: Any = None

    @classmethod
    def from_env(cls) -> Ranks:
        """Join the process group only when `accelerate launch` started several ranks."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        import torch
        from accelerate import PartialState

        # Without cpu=True, accelerate 1.x silently starts a lone non-distributed state on a
        # machine without GPUs, and every rank believes it is the main one.
        use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        state = PartialState(cpu=use_cpu or not torch.cuda.is_available())
        if state.num_processes != int(os.environ["WORLD_SIZE"]):
            raise RuntimeError(f"accelerate started {state.num_processes} process(es) but "
                               f"WORLD_SIZE is {os.environ['WORLD_SIZE']}")
        return cls(rank=state.process_index, world_size=state.num_processes, _state=state)

    @property
    def is_main(self) -> bool:
        """True on the rank that filters, decontaminates and writes shared files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op on one process)."""
        if self._state is not None:
            self._state.wait_for_everyone()


@dataclass
class ModelRef:
    """A model some stage loads, and what makes it that model (for fingerprints)."""

    path: str
    identity: dict[str, Any]
    chat_template: str | None = None


@dataclass
class RunOptions:
    """How to run, as opposed to what to run (never part of a fingerprint)."""

    force: set[str] = field(default_factory=set)
    stop_after: str | None = None  # stop once this stage of round 0 is done (debugging)
    quiet: bool = False
    progress: Callable[[str, int, int], None] | None = None  # (task, done, total)


def resolve_model_path(model: str) -> str:
    """Turn `microworld:<name>` into its built checkpoint; other references pass through."""
    if model.startswith("microworld:"):
        from distill.microworld.build import resolve_model_ref

        log.info("%s: using the cached build, or building it now (a few minutes, once)", model)
        return str(resolve_model_ref(model))
    return model


def fingerprinted(settings: BaseModel) -> dict[str, Any]:
    """A stage's settings as they enter its fingerprint, less those that change only speed.

    A settings class names those in its `OPERATIONAL` class variable.
    """
    return settings.model_dump(mode="json", exclude=set(getattr(settings, "OPERATIONAL", ())))


class _StopAfter(Exception):  # noqa: N818 - control flow, not an error
    """Raised after the stage named by `RunOptions.stop_after` is committed."""


class Runner:
    """Runs one recipe, round by round, resuming whatever is already committed."""

    def __init__(self, recipe: Recipe, options: RunOptions | None = None) -> None:
        self.recipe = recipe
        self.options = options or RunOptions()
        self.ranks = Ranks.from_env()
        self.store = RunStore(Path(recipe.output_dir) / recipe.name)
        self._forcing: set[str] = set()

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> Path:
        """Run every round and write the report; returns the run directory."""
        recipe = self.recipe
        if self.ranks.is_main:
            self.store.root.mkdir(parents=True, exist_ok=True)
            write_json(self.store.root / "recipe.resolved.json", recipe.model_dump(mode="json"))
        try:
            self._rounds()
        except _StopAfter:
            log.info("stopped after %s, as asked", self.options.stop_after)
        if self.ranks.is_main:
            from distill.report import write_report

            log.info("report: %s", write_report(self.store.root))
        self.ranks.barrier()
        return self.store.root

    def _rounds(self) -> None:
        recipe = self.recipe
        student = self._model_ref(recipe.student.model, recipe.student.chat_template)
        teacher = self._model_ref(recipe.teacher.model, recipe.teacher.chat_template)
        self.evaluate("base", student)
        clean_data: list[Stage] = []
        real_draws: list[RealDraw] = []
        history: list[dict[str, float]] = []
        reference = teacher  # scores generated data for the histograms (measure stage)
        stopped_path = self.store.root / "stopped.json"
        if self.ranks.is_main:
            stopped_path.unlink(missing_ok=True)  # decided again from the metrics below
        for round_index in range(recipe.rounds.count):
            label = f"round_{round_index}"
            real = self._real_draw(round_index)
            if real is not None:
                real_draws.append(real)
            generated = self.generate(label, round_index, teacher, real)
            filtered = self.filter(label, generated)
            clean_data.append(self.decontaminate(label, filtered))
            trained = self.train(label, student, clean_data, real_draws)
            merged = ModelRef(path=str(trained.path / "merged"),
                              identity={"train_stage": trained.fingerprint},
                              chat_template=recipe.student.chat_template)
            evaluated = self.evaluate(label, merged)
            if round_index == 0 and recipe.measure.reference_model == "round_0":
                reference = merged
            if recipe.measure.enabled:
                stages = {"generate": generated, "filter": filtered,
                          "decontaminate": clean_data[-1], "train": trained,
                          "evaluate": evaluated}
                measured = self.measure(label, round_index, stages, merged, reference, real)
                from distill.flywheel.stopping import check_stop, flatten_metrics

                history.append(flatten_metrics(read_json(measured.path / "metrics.json")))
                stop = check_stop(recipe.rounds.stop, history)
                if stop is not None:
                    log.warning("stopping after %s: %s", label, stop["reason"])
                    if self.ranks.is_main:
                        write_json(stopped_path, stop)
                    break
            if recipe.rounds.next_teacher == "student":
                teacher = merged

    def _real_draw(self, round_index: int) -> RealDraw | None:
        """The round's real data (training sample and held-out set), or None."""
        from distill.flywheel.data import draw_real

        real = self.recipe.data.real
        if real is None:
            return None
        return draw_real(real, self.recipe.seed, round_index, fresh=self.recipe.rounds.fresh_real)

    def _model_ref(self, model: str, chat_template: str | None) -> ModelRef:
        from distill.backends.identity import model_identity

        # The main rank builds microworld models first; the others then find them cached.
        if self.ranks.is_main:
            path = resolve_model_path(model)
        self.ranks.barrier()
        if not self.ranks.is_main:
            path = resolve_model_path(model)
        return ModelRef(path=path, identity=model_identity(path, chat_template=chat_template),
                        chat_template=chat_template)

    def _stage(self, label: str, name: str, config: Any, inputs: dict[str, Any],
               work: Callable[[Path], dict[str, Any]]) -> Stage:
        """Skip a committed stage, or run `work` in its work directory and commit."""
        stage = self.store.stage(label, name, config, inputs)
        if name in self.options.force:
            # Forcing a stage also redoes everything after it, in every round.
            self._forcing.update(STAGES[STAGES.index(name):])
        if stage.is_done() and name not in self._forcing:
            log.info("%s/%s: done (fingerprint %s), skipped", label, name, stage.fingerprint[:12])
            if name == self.options.stop_after:
                raise _StopAfter
            return stage
        log.info("%s/%s: running (fingerprint %s)", label, name, stage.fingerprint[:12])
        if self.ranks.is_main:
            stage.begin()
        self.ranks.barrier()
        summary = work(stage.work)
        self.ranks.barrier()
        if self.ranks.is_main:
            stage.commit(summary)
        self.ranks.barrier()
        if name == self.options.stop_after:
            raise _StopAfter
        return stage

    # -- stages ---------------------------------------------------------------------------

    def generate(self, label: str, round_index: int, teacher: ModelRef,
                 real: RealDraw | None = None) -> Stage:
        """Teacher writes candidates: `candidates.jsonl` (+ `rejected.jsonl`)."""
        recipe = self.recipe
        seed_tasks = self._seed_tasks_path()
        config = {"method": recipe.generate.model_dump(mode="json"), "seed": recipe.seed,
                  "round": round_index, "backend": recipe.teacher.backend}
        inputs = {"teacher": teacher.identity, "seed_tasks": file_sha256(seed_tasks)}
        # the continuation method prompts with the round's real data, not the seed tasks
        prompts_from_real = recipe.generate.kind == "continuation"
        real_first = recipe.rounds.real_first and round_index == 0
        if prompts_from_real or real_first:
            inputs["real"] = real.identity
        if real_first:  # round 0 trains on real data: the "generation" is the real draw
            config = {"real_first": True, "seed": recipe.seed}
            inputs = {"real": real.identity}
            return self._stage(label, "generate", config, inputs,
                               lambda out: self._real_as_candidates(out, real))
        # files a method reads besides the seed tasks (e.g. evol_instruct's instructions)
        input_files = getattr(recipe.generate, "input_files", dict)()
        inputs.update({name: file_sha256(path) for name, path in input_files.items()})
        # models a method uses besides the teacher (preference: answer models, the judge)
        inputs.update(self._models_used([recipe.generate]))

        def work(out: Path) -> dict[str, Any]:
            from distill.backends.base import load_backend
            from distill.generate import load_generator
            from distill.generate.context import GenerationContext
            from distill.generate.self_instruct import load_seed_tasks

            backend = load_backend(recipe.teacher.backend, model=teacher.path,
                                   chat_template=teacher.chat_template, seed=recipe.seed,
                                   **recipe.teacher.engine)
            context = GenerationContext(
                backend=backend, checkpoint_dir=out / "checkpoints", round=round_index,
                seed=recipe.seed, rank=self.ranks.rank, world_size=self.ranks.world_size,
                chunk_size=recipe.teacher.checkpoint_every,
                barrier=self.ranks.barrier, progress=self._progress(f"{label} generate"))
            try:
                generate = load_generator(recipe.generate.kind)
                seeds = real.train if prompts_from_real else load_seed_tasks(seed_tasks)
                result = generate(recipe.generate, context, seeds, teacher_name=teacher.path)
            finally:
                backend.close()
            if not self.ranks.is_main:
                return {}
            write_jsonl(out / "candidates.jsonl", result.examples)
            write_jsonl(out / "rejected.jsonl", result.rejected)
            return {"counts": {"candidates": len(result.examples),
                               "rejected": len(result.rejected)},
                    "tokens": checkpoint_tokens(out / "checkpoints"),
                    "resumed_requests": context.stats.resumed_requests,
                    "stats": result.stats, "teacher": teacher.path}

        return self._stage(label, "generate", config, inputs, work)

    def _real_as_candidates(self, out: Path, real: RealDraw) -> dict[str, Any]:
        if self.ranks.is_main:
            write_jsonl(out / "candidates.jsonl", real.train)
            write_jsonl(out / "rejected.jsonl", [])
        return {"counts": {"candidates": len(real.train), "rejected": 0},
                "stats": {"method": "real_first"}, "teacher": "real data"}

    def filter(self, label: str, generated: Stage) -> Stage:
        """Quality filters in order: `kept.jsonl`, `rejected.jsonl`, `funnel.json`."""
        recipe = self.recipe
        config = {"filters": [fingerprinted(f) for f in recipe.filters],
                  "seed": recipe.seed}
        inputs = {"generate": generated.fingerprint,
                  "seed_tasks": file_sha256(self._seed_tasks_path()),
                  **self._models_used(recipe.filters)}  # the judge filter's judge

        def work(out: Path) -> dict[str, Any]:
            if not self.ranks.is_main:
                return {}
            from distill.filters.base import FilterContext, build_filter, run_funnel
            from distill.generate.self_instruct import load_seed_tasks

            candidates = read_records(generated.path / "candidates.jsonl")
            context = FilterContext(seed_examples=load_seed_tasks(self._seed_tasks_path()),
                                    run_dir=self.store.root, seed=recipe.seed,
                                    teacher=recipe.teacher, work_dir=out)
            filters = [build_filter(config, context) for config in recipe.filters]
            report = self._progress(f"{label} filter")
            result = run_funnel(filters, candidates,
                                progress=lambda name, n: report and report(name, n, n))
            write_jsonl(out / "kept.jsonl", result.kept)
            write_jsonl(out / "rejected.jsonl", result.rejected)
            write_json(out / "funnel.json", result.funnel)
            return {"counts": {"in": len(candidates), "kept": len(result.kept),
                               "rejected": len(result.rejected)}}

        return self._stage(label, "filter", config, inputs, work)

    def decontaminate(self, label: str, filtered: Stage) -> Stage:
        """Drop (or fail on, or warn about) training data that overlaps the benchmarks."""
        recipe = self.recipe
        decon = recipe.decontamination
        tasks = decon.tasks or recipe.eval.tasks
        # The section's own include_path wins; the eval tasks' is the default.
        include_path = decon.include_path or recipe.eval.include_path
        config = {"decontamination": decon.model_dump(mode="json"), "tasks": tasks,
                  "include_path": include_path}
        inputs = {"filter": filtered.fingerprint}

        def work(out: Path) -> dict[str, Any]:
            if not self.ranks.is_main:
                return {}
            from collections import Counter

            from distill.evaluate.contamination import apply_policy, find_contamination

            kept = read_records(filtered.path / "kept.jsonl")
            if not decon.enabled:
                write_jsonl(out / "clean.jsonl", kept)
                return {"counts": {"in": len(kept), "clean": len(kept), "contaminated": 0}}
            report = find_contamination(kept, decon, include_path=include_path, tasks=tasks)
            write_json(out / "contamination.json", report.model_dump(mode="json"))
            if report.contaminated:
                log.warning("%s", report.summary())
            clean, dropped = apply_policy(report, kept)  # policy "fail" raises here
            write_jsonl(out / "clean.jsonl", clean)
            write_jsonl(out / "rejected.jsonl", dropped)
            return {"counts": {"in": len(kept), "clean": len(clean),
                               "contaminated": len(report.contaminated),
                               "suspect": len(report.suspect)},
                    "per_task": {task: stats.contaminated_examples
                                 for task, stats in report.tasks.items()},
                    "by_kind": dict(Counter(item.kind for item in report.contaminated)),
                    "policy": decon.policy, "method": decon.method}

        return self._stage(label, "decontaminate", config, inputs, work)

    def train(self, label: str, student: ModelRef, clean_data: list[Stage],
              real_draws: list[RealDraw] | None = None) -> Stage:
        """LoRA (or full) fine-tuning of the base student on this round's data policy."""
        from distill.flywheel.data import select_training_data

        recipe = self.recipe
        rounds = recipe.rounds
        policy = rounds.data_policy
        accumulating = policy in ("accumulate", "accumulate_subsample")
        sources = clean_data if accumulating else clean_data[-1:]
        real_draws = (real_draws or []) if policy != "replace" else []
        if rounds.real_first and policy != "mix":
            real_draws = []  # round 0's data is the real data; counting it twice would skew
        config = {"train": recipe.train.model_dump(mode="json", exclude={"accelerate_config"}),
                  "lora": recipe.student.lora and recipe.student.lora.model_dump(mode="json"),
                  "policy": policy, "budget": rounds.budget,
                  "real_fraction": rounds.real_fraction, "seed": recipe.seed}
        inputs = {"student": student.identity, "data": [s.fingerprint for s in sources],
                  "real": [d.identity for d in (real_draws if accumulating else real_draws[-1:])]}
        if recipe.review.apply:  # importing decisions retrains (distill.review)
            from distill.review import decisions_hash

            inputs["review"] = [decisions_hash(self.store.root, s.round_dir.name)
                                for s in clean_data]

        def work(out: Path) -> dict[str, Any]:
            from distill.train.launch import launch_training
            from distill.train.sft import TrainSpec

            data_path = out / "train.jsonl"
            mix: dict[str, int] = {}
            if self.ranks.is_main:
                synthetic = [read_records(s.path / "clean.jsonl") for s in clean_data]
                if recipe.review.apply:  # drop rejected examples, train on fixes
                    from distill.review import apply_decisions

                    synthetic = [apply_decisions(self.store.root, s.round_dir.name, rows)[0]
                                 for s, rows in zip(clean_data, synthetic, strict=True)]
                # sequential sampling trains in the order the stages wrote (the textbook
                # method's curriculum order, simple to complex)
                selection = select_training_data(
                    policy, len(clean_data) - 1, synthetic, [d.train for d in real_draws],
                    seed=recipe.seed, budget=rounds.budget, real_fraction=rounds.real_fraction,
                    shuffle=recipe.train.args.get("train_sampling_strategy") != "sequential")
                if not selection.records:
                    raise RuntimeError(f"{label}: no training data survived the filters; see "
                                       f"the funnel in {sources[-1].round_dir}")
                write_jsonl(data_path, selection.records)
                mix = selection.counts
            self.ranks.barrier()
            spec = TrainSpec(method=recipe.train.method, sft_args=recipe.train.sft_args,
                             model=student.path, chat_template=student.chat_template,
                             lora=recipe.student.lora, args=recipe.train.args,
                             data_path=str(data_path), output_dir=str(out), seed=recipe.seed,
                             quiet=self.options.quiet)
            report = self._progress(f"{label} train")
            result = launch_training(spec, recipe.train.accelerate_config,
                                     log_path=self.store.root / "train.log",
                                     progress=report and (lambda done, total:
                                                          report("steps", done, total)))
            # the result's paths point into the work directory, renamed at commit
            summary = result.model_dump(mode="json", exclude={"output_dir", "merged_dir",
                                                              "adapter_dir", "args"})
            return {"counts": {"examples": result.num_examples}, "train": summary,
                    "data_mix": mix}

        return self._stage(label, "train", config, inputs, work)

    def evaluate(self, label: str, model: ModelRef) -> Stage:
        """lm-eval on a model: the base student (`base`) or a round's trained student."""
        recipe = self.recipe
        # batch size only changes speed, so it stays out of the fingerprint
        config = {"eval": recipe.eval.model_dump(mode="json", exclude={"batch_size"}),
                  "seed": recipe.seed}
        inputs = {"model": model.identity}

        def work(out: Path) -> dict[str, Any]:
            from distill.evaluate.harness import evaluate_model

            result = evaluate_model(model.path, recipe.eval, output_dir=out, seed=recipe.seed)
            return {"scores": result["scores"] if result else {}, "model": model.path,
                    "tasks": recipe.eval.tasks}

        return self._stage(label, "evaluate", config, inputs, work)

    def measure(self, label: str, round_index: int, stages: dict[str, Stage],
                model: ModelRef, reference: ModelRef, real: RealDraw | None) -> Stage:
        """Per-round metrics (distill.flywheel.measure): `metrics.json`."""
        from distill.flywheel.measure import measure_round

        recipe = self.recipe
        settings = recipe.measure
        microworld = settings.microworld
        if microworld is None:
            microworld = any(task.startswith("microworld") for task in recipe.eval.tasks)
        config = {"measure": fingerprinted(settings),
                  "microworld": microworld, "seed": recipe.seed}
        inputs = {"stages": {name: stage.fingerprint for name, stage in stages.items()},
                  "model": model.identity, "reference": reference.identity,
                  "held_out": real and real.identity}

        def work(out: Path) -> dict[str, Any]:
            if not self.ranks.is_main:
                return {}
            manifests = {name: stage.manifest() or {} for name, stage in stages.items()}
            metrics = measure_round(
                settings, out, round_index=round_index, seed=recipe.seed,
                synthetic=read_records(stages["decontaminate"].path / "clean.jsonl"),
                held_out=real.held_out if real else [], student=model.path,
                reference=reference.path, scores=manifests["evaluate"].get("scores") or {},
                manifests=manifests, microworld=microworld,
                training_mix=manifests["train"].get("data_mix"))
            headline = {key: metrics[key].get("mean") for key in
                        ("held_out_perplexity", "generated_perplexity") if key in metrics}
            return {"metrics": headline}

        return self._stage(label, "measure", config, inputs, work)

    # -- helpers --------------------------------------------------------------------------

    def _models_used(self, configs: list[Any]) -> dict[str, Any]:
        """Identities of the models that generation or filter configs load themselves."""
        refs = [ref for config in configs
                for ref in getattr(config, "models_used", lambda teacher: [])(self.recipe.teacher)]
        if not refs:
            return {}
        return {"models": [self._model_ref(model, template).identity for model, template in refs]}

    def _seed_tasks_path(self) -> Path:
        if self.recipe.data.seed_tasks:
            return Path(self.recipe.data.seed_tasks)
        from distill.generate.self_instruct import DEFAULT_SEED_TASKS

        return Path(DEFAULT_SEED_TASKS)

    def _progress(self, task: str) -> Callable[[str, int, int], None] | None:
        callback = self.options.progress
        if callback is None or not self.ranks.is_main:
            return None
        return lambda key, done, total: callback(f"{task}: {key}", done, total)


def checkpoint_tokens(checkpoint_dir: Path) -> dict[str, int]:
    """Prompt and completion tokens over every generation shard (all ranks, all runs)."""
    prompt = completion = generations = 0
    for shard in sorted(checkpoint_dir.glob("*/chunk*.jsonl")):
        for line in shard.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            generations += 1
            completion += row.get("completion_tokens", 0)
            if row.get("index", 0) == 0:
                prompt += row.get("prompt_tokens", 0)
    return {"generations": generations, "prompt_tokens": prompt, "completion_tokens": completion}
