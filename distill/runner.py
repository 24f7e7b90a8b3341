"""The round loop: generate, filter, decontaminate, train, evaluate; then maybe again.

    distill run recipes/quickstart.yaml

`distill run` is one process, the orchestrator: it owns the run directory and the loop,
and hands work that needs many devices to what launches it there. Generation goes to the
recipe's executor (`executor: ray` for one engine per GPU, or per node of a cluster;
distill.executors), training launches itself with `train.accelerate_config` (DDP, FSDP,
DeepSpeed on every GPU), and evaluation runs lm-eval. It is never itself started by
`accelerate launch` or torchrun: one engine per rank would all land on cuda:0, and vLLM's
cleanup destroys the process group accelerate made (`refuse_launched_ranks`).

Every stage goes through `Runner._stage`: if its fingerprint is already committed it is
skipped, otherwise it works in a temporary directory and commits with a manifest.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill import LOG_ONLY
from distill.backends.base import FAILED
from distill.budget import Budget, BudgetReached
from distill.component import Component, Dependent, fingerprint_inputs, path_sha256
from distill.flywheel.real import RealDraw
from distill.generate.failures import FailedRequests
from distill.models import ModelRef, ModelSpec
from distill.recipe import Recipe
from distill.records import read_json, read_records, write_json, write_jsonl
from distill.store import RunStore, Stage, file_sha256
from distill.tracking import LoopTracking, trainer_report_to

log = logging.getLogger("distill")

STAGES = ("generate", "filter", "decontaminate", "train", "evaluate", "measure")

LAUNCHED_RANKS_HINT = (
    "distill run is one process and does not run under accelerate launch or torchrun "
    "(WORLD_SIZE={world_size}): run `distill run recipe.yaml` with "
    "`train.accelerate_config` naming recipes/accelerate/ddp.yaml (training launches "
    "itself on every GPU) and `executor: ray` for several generation engines")


def refuse_launched_ranks() -> None:
    """Raise when this process is one of several ranks of a launcher (WORLD_SIZE > 1).

    Raises:
        RuntimeError: with `LAUNCHED_RANKS_HINT`, saying how to run instead.
    """
    world_size = os.environ.get("WORLD_SIZE", "1")
    if world_size.strip().isdigit() and int(world_size) > 1:
        raise RuntimeError(LAUNCHED_RANKS_HINT.format(world_size=world_size))


@dataclass
class RunOptions:
    """How to run, as opposed to what to run (never part of a fingerprint)."""

    force: set[str] = field(default_factory=set)
    stop_after: str | None = None  # stop once this stage of round 0 is done (debugging)
    quiet: bool = False
    progress: Callable[[str, int, int], None] | None = None  # (task, done, total)


class _StopAfter(Exception):  # noqa: N818 - control flow, not an error
    """Raised after the stage named by `RunOptions.stop_after` is committed."""


class Runner:
    """Runs one recipe, round by round, resuming whatever is already committed."""

    def __init__(self, recipe: Recipe, options: RunOptions | None = None) -> None:
        self.recipe = recipe
        refuse_launched_ranks()
        self.options = options or RunOptions()
        self.store = RunStore(Path(recipe.output_dir) / recipe.name)
        self._forcing: set[str] = set()
        self._models: dict[str, ModelRef] = {}  # resolved once per run
        # what the run's generation spent, against budget: (distill.budget)
        self.budget = Budget(recipe.budget)
        self.tracking: LoopTracking | None = None  # opened by run()

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> Path:
        """Run every round and write the report; returns the run directory."""
        from distill.report import write_report

        recipe = self.recipe
        self.store.root.mkdir(parents=True, exist_ok=True)
        write_json(self.store.root / "recipe.resolved.json", recipe.model_dump(mode="json"))
        budget_path = self.store.root / BUDGET_FILE
        budget_path.unlink(missing_ok=True)  # said again if a cap stops this run
        if recipe.tracking.report_to:
            self.tracking = LoopTracking(recipe.tracking, self.store.root, recipe.name)
        try:
            self._rounds()
        except _StopAfter:
            log.info("stopped after %s, as asked", self.options.stop_after)
        except BudgetReached as stop:  # the stage stays uncommitted: a rerun resumes it
            write_json(budget_path, stop.as_dict())
            log.info("stopped by the budget: %s", stop)  # the CLI says it once
            log.info("report: %s", write_report(self.store.root))
            raise
        finally:
            if self.tracking is not None:
                self.tracking.close()
        log.info("report: %s", write_report(self.store.root))
        return self.store.root

    def _rounds(self) -> None:
        recipe = self.recipe
        self._resolve_models()
        self._record_licences()
        student = self._model_ref(recipe.student)
        teacher = self._model_ref(recipe.teacher)
        self.evaluate("base", student)
        clean_data: list[Stage] = []
        real_draws: list[RealDraw] = []
        history: list[dict[str, float]] = []
        reference = teacher  # scores generated data for the histograms (measure stage)
        stopped_path = self.store.root / "stopped.json"
        stopped_path.unlink(missing_ok=True)  # decided again from the metrics below
        for round_index in range(recipe.rounds.count):
            label = f"round_{round_index}"
            real = self._real_draw(round_index)
            if real is not None:
                real_draws.append(real)
            generated = self.generate(label, round_index, teacher, real)
            filtered = self.filter(label, generated)
            clean_data.append(self.decontaminate(label, filtered))
            trained = self.train(label, student, clean_data, real_draws, teacher)
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
                    write_json(stopped_path, stop)
                    break
            if recipe.rounds.next_teacher == "student":
                teacher = merged

    def _real_draw(self, round_index: int) -> RealDraw | None:
        """The round's real data (training sample and held-out set), or None."""
        from distill.flywheel.real import draw_real

        real = self.recipe.data.real
        if real is None:
            return None
        return draw_real(real, self.recipe.seed, round_index, fresh=self.recipe.rounds.fresh_real)

    def _resolve_models(self) -> None:
        """Resolve every model the recipe names before any stage runs.

        Hub models are downloaded here (offline: found in the cache) and pinned to their
        commits, so that a missing or unreachable one stops the run before any work rather
        than at the stage that needs it, hours later (`distill.identity.ModelUnavailable`).
        """
        recipe = self.recipe
        specs: list[ModelSpec] = [recipe.student, recipe.teacher]
        for component in (recipe.generate, *recipe.filters, recipe.decontamination):
            specs += [spec for spec in component.dependencies().models.values()
                      if spec != "teacher"]
        for spec in specs:
            self._model_ref(spec)
        if recipe.train.method in ("kd", "on_policy", "sft_then_on_policy"):
            self._check_vocabularies()

    def _record_licences(self) -> None:
        """Write licences.json for the cards; warn about terms that restrict training.

        Hub models' cards are read at their resolved commits. Never part of a fingerprint.
        """
        from distill.cards import licence_survey

        survey = licence_survey(self.recipe,
                                lambda spec: self._model_ref(spec).identity.get("commit"))
        survey.save(self.store.root)
        for line in survey.warnings():
            log.warning("licences: %s", line)

    def _check_vocabularies(self) -> None:
        """Refuse teacher and student vocabularies that differ (kd and the on-policy methods).

        Both methods compare the two models' distributions token id by token id.
        """
        from distill.identity import ModelsIncompatible
        from distill.train.vocab import check_output_sizes, check_shared_vocabulary

        recipe = self.recipe
        teacher, student = self._model_ref(recipe.teacher), self._model_ref(recipe.student)
        try:
            check_shared_vocabulary(teacher.path, student.path)
            if recipe.train.method in ("on_policy", "sft_then_on_policy"):
                check_output_sizes(teacher.path, student.path)
        except ValueError as error:
            raise ModelsIncompatible(
                f"train.method {recipe.train.method} compares the teacher's and the student's "
                f"next-token distributions, which needs one vocabulary: {error}") from None

    def _model_ref(self, spec: ModelSpec) -> ModelRef:
        # a model a server serves is only named, one loaded here is hashed: two entries
        key = (spec.model_dump_json(include={"model", "revision", "chat_template"}) +
               f"|loads weights: {spec.loads_weights()}")
        if key not in self._models:
            self._models[key] = ModelRef.resolve(spec)
        return self._models[key]

    def _identity(self, spec: ModelSpec | str) -> str:
        """A declared model's identity fingerprint ("teacher": the recipe's teacher)."""
        return self._model_ref(self.recipe.teacher if spec == "teacher" else spec
                               ).identity["fingerprint"]

    def _seed_tasks(self) -> list[Any]:
        from distill.data import load_seed_tasks

        return load_seed_tasks(self.recipe.data.seed_tasks_path())

    def _component(self, component: Dependent, real: RealDraw | None = None) -> dict[str, Any]:
        """What a generator or filter contributes to its stage's fingerprint."""
        seed_tasks = self.recipe.data.seed_tasks_path()
        run_inputs = {"seed_tasks": file_sha256(seed_tasks),
                      "real": real.identity if real is not None else None}
        return fingerprint_inputs(component, self._identity, run_inputs)

    def _stage(self, label: str, name: str, config: Any, inputs: dict[str, Any],
               work: Callable[[Path], dict[str, Any]]) -> Stage:
        """Skip a committed stage, or run `work` in its work directory and commit."""
        stage = self.store.stage(label, name, config, inputs)
        if name in self.options.force:
            # Forcing a stage also redoes everything after it, in every round.
            self._forcing.update(STAGES[STAGES.index(name):])
        if stage.is_done() and name not in self._forcing:
            log.info("%s/%s: done (fingerprint %s), skipped", label, name, stage.fingerprint[:12])
            if name in SPENDING_STAGES:  # what it spent counts against the budget
                self._count_spent(stage)
            self._track(label, name, stage)
            if name == self.options.stop_after:
                raise _StopAfter
            return stage
        log.info("%s/%s: running (fingerprint %s)", label, name, stage.fingerprint[:12])
        if stage.failed_requests():
            log.info("%s/%s: asking the %d request(s) that failed last time again", label,
                     name, stage.failed_requests())
        stage.begin()
        before = self.budget.snapshot()  # resumed chunks count as they are found
        summary = work(stage.work)
        if name in SPENDING_STAGES:
            summary["spent"] = self.budget.since(before)
        stage.commit(summary)
        self._track(label, name, stage)
        if name == self.options.stop_after:
            raise _StopAfter
        return stage

    def _count_spent(self, stage: Stage) -> None:
        """Count what a committed stage spent: its manifest's `spent`, at its run's prices."""
        spent = (stage.manifest() or {}).get("spent")
        if spent is not None:
            self.budget.add(spent)
        elif stage.name == "generate":  # committed before manifests recorded it
            self.budget.spend(*checkpoint_usage(stage.path / "checkpoints"),
                              self.recipe.teacher.price)
        else:  # a filter stage from then: its judges' requests and tokens, cost unknown
            self.budget.spend(*checkpoint_usage(stage.path / "judge-checkpoints"), None)

    # -- stages ---------------------------------------------------------------------------

    def generate(self, label: str, round_index: int, teacher: ModelRef,
                 real: RealDraw | None = None) -> Stage:
        """Teacher writes candidates: `candidates.jsonl` (+ `rejected.jsonl`).

        The recipe's executor runs the teacher; it is left out of the fingerprint (it
        changes where chunks run, not their bytes), so a run resumes under another one.
        """
        from distill.models import semantic_engine_options

        recipe = self.recipe
        method = recipe.generate
        if recipe.rounds.real_first and round_index == 0:
            # round 0 trains on real data: the "generation" is the real draw
            config = {"real_first": True, "seed": recipe.seed}
            return self._stage(label, "generate", config, {"real": real.identity},
                               lambda out: self._real_as_candidates(out, real))
        backend = recipe.teacher.backend
        top_logprobs = recipe.train.kd.top_k if recipe.train.method == "kd" else 0
        config = {"method": self._component(method, real), "seed": recipe.seed,
                  "round": round_index, "backend": backend,
                  "engine": semantic_engine_options(backend, recipe.teacher.engine)}
        if top_logprobs:
            config["top_logprobs"] = top_logprobs
        inputs = {"teacher": teacher.identity}

        def work(out: Path) -> dict[str, Any]:
            from distill.executors.base import EngineSpec
            from distill.generate.context import GenerationContext

            declared = method.dependencies().inputs
            loaders: dict[str, Any] = {}
            if "seed_tasks" in declared:
                loaders["seed_tasks"] = self._seed_tasks
            if "real" in declared:
                loaders["real_records"] = lambda: list(real.train)
            # a hub teacher loads at its fingerprinted commit, here or on a Ray node
            model, revision = teacher.pinned()
            engine = dict(recipe.teacher.engine)
            if revision is not None:
                engine["revision"] = revision
            executor = recipe.executor.create(EngineSpec(
                backend=backend, model=model, chat_template=teacher.chat_template,
                seed=recipe.seed, engine=engine))
            context = GenerationContext(
                backend=executor.backend, checkpoint_dir=out / "checkpoints",
                teacher_name=teacher.path, round=round_index, seed=recipe.seed,
                chunk_size=recipe.teacher.checkpoint_every, executor=executor,
                progress=self._progress(f"{label} generate"),
                failures=FailedRequests(max_fraction=recipe.teacher.max_failed_fraction),
                top_logprobs=top_logprobs, budget=self.budget,
                price=recipe.teacher.price, **loaders)
            self.budget.where = f"{label}/generate"

            try:
                result = method.run(context)
                ran = executor.summary()  # while its engines are up to say how they ran
            finally:
                executor.close()
            failed = _failed_requests(f"{label}/generate", context.failures)
            rejected = [*result.rejected, *context.failures.rejected]
            write_jsonl(out / "candidates.jsonl", result.examples)
            write_jsonl(out / "rejected.jsonl", rejected)
            if top_logprobs:
                save_candidate_tokens(out / TEACHER_TOKENS_FILE, result.examples,
                                      context.teacher_tokens)
            return {"counts": {"candidates": len(result.examples), "rejected": len(rejected)},
                    "failed_requests": failed,
                    "tokens": checkpoint_tokens(out / "checkpoints"),
                    "resumed_requests": context.stats.resumed_requests,
                    "executor": ran, "stats": result.stats,
                    "teacher": teacher.path}

        return self._stage(label, "generate", config, inputs, work)

    def _real_as_candidates(self, out: Path, real: RealDraw) -> dict[str, Any]:
        write_jsonl(out / "candidates.jsonl", real.train)
        write_jsonl(out / "rejected.jsonl", [])
        return {"counts": {"candidates": len(real.train), "rejected": 0},
                "stats": {"method": "real_first"}, "teacher": "real data"}

    def filter(self, label: str, generated: Stage) -> Stage:
        """Quality filters in order: `kept.jsonl`, `rejected.jsonl`, `funnel.json`."""
        recipe = self.recipe
        config = {"filters": [self._component(f) for f in recipe.filters], "seed": recipe.seed}
        inputs = {"generate": generated.fingerprint}

        def work(out: Path) -> dict[str, Any]:
            from distill.filters.base import FilterContext, run_funnel

            failures = FailedRequests(stage="filter")  # a judge's requests

            def context(settings: Component) -> FilterContext:
                declared = settings.dependencies().inputs
                loaders = {"seed_tasks": self._seed_tasks} if "seed_tasks" in declared else {}
                return FilterContext(seed=recipe.seed, work_dir=out, teacher=recipe.teacher,
                                     failures=failures, budget=self.budget, **loaders)

            candidates = read_records(generated.path / "candidates.jsonl")
            filters = [settings.create(context(settings)) for settings in recipe.filters]
            report = self._progress(f"{label} filter")
            self.budget.where = f"{label}/filter"  # judges' requests count too
            result = run_funnel(filters, candidates,
                                progress=lambda name, n: report and report(name, n, n))
            write_jsonl(out / "kept.jsonl", result.kept)
            write_jsonl(out / "rejected.jsonl", result.rejected)
            write_json(out / "funnel.json", result.funnel)
            return {"counts": {"in": len(candidates), "kept": len(result.kept),
                               "rejected": len(result.rejected)},
                    "failed_requests": _failed_requests(f"{label}/filter", failures)}

        return self._stage(label, "filter", config, inputs, work)

    def decontaminate(self, label: str, filtered: Stage) -> Stage:
        """Drop (or fail on, or warn about) training data that overlaps the benchmarks."""
        recipe = self.recipe
        decon = recipe.decontamination
        tasks = decon.tasks or recipe.eval.tasks
        # The section's own include_path wins; the eval tasks' is the default.
        include_path = decon.include_path or recipe.eval.include_path
        config = {"decontamination": self._component(decon), "tasks": tasks}
        inputs = {"filter": filtered.fingerprint, "benchmarks": _tasks_identity(include_path)}

        def work(out: Path) -> dict[str, Any]:
            from collections import Counter

            from distill.evaluate.contamination import apply_policy, find_contamination

            kept = read_records(filtered.path / "kept.jsonl")
            if not decon.enabled:
                write_jsonl(out / "clean.jsonl", kept)
                return {"counts": {"in": len(kept), "clean": len(kept), "contaminated": 0}}
            report = find_contamination(kept, decon, include_path=include_path, tasks=tasks)
            write_json(out / "contamination.json", report.model_dump(mode="json"))
            if report.contaminated:
                # one line on the console; every task and match in the log and the report
                summary = report.summary()
                log.warning("%s (details: %s/decontaminate/contamination.json)",
                            summary.splitlines()[0], label)
                logging.getLogger(LOG_ONLY).info("%s", summary)
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
              real_draws: list[RealDraw] | None = None,
              teacher: ModelRef | None = None) -> Stage:
        """LoRA (or full) fine-tuning of the base student on this round's data policy.

        Method kd also reads the teacher's tokens that each data round's generate stage
        kept; on_policy (and sft_then_on_policy) loads `teacher` (the round's teacher) to score
        the student's samples.
        """
        recipe = self.recipe
        policy = recipe.rounds.data_policy
        round_index = len(clean_data) - 1
        sources = policy.sources(round_index, real_first=recipe.rounds.real_first)
        data = [clean_data[r] for r in sources.synthetic]
        real = [real_draws[r] for r in sources.real] if real_draws else []  # no data.real
        from distill.train.launch import training_shape

        config = {"train": recipe.train.fingerprint_settings(),
                  "launch": training_shape(recipe.train),
                  "lora": recipe.student.lora and recipe.student.lora.model_dump(mode="json"),
                  "policy": policy.model_dump(mode="json"), "seed": recipe.seed}
        inputs = {"student": student.identity, "data": [s.fingerprint for s in data],
                  "real": [draw.identity for draw in real]}
        on_policy = recipe.train.method in ("on_policy", "sft_then_on_policy")
        if on_policy:
            if teacher is None:
                raise ValueError(f"train.method {recipe.train.method} needs the round's "
                                 "teacher")
            inputs["teacher"] = teacher.identity
        if recipe.review.apply:  # importing decisions retrains (distill.review)
            from distill.review import decisions_hash

            inputs["review"] = [decisions_hash(self.store.root, s.round_dir.name) for s in data]

        def work(out: Path) -> dict[str, Any]:
            from distill.train.config import TrainSpec
            from distill.train.launch import launch_training

            data_path = out / "train.jsonl"
            synthetic = {r: read_records(s.path / "clean.jsonl")
                         for r, s in zip(sources.synthetic, data, strict=True)}
            if recipe.review.apply:  # drop rejected examples, train on fixes
                from distill.review import apply_decisions

                synthetic = {r: apply_decisions(self.store.root, f"round_{r}", rows)[0]
                             for r, rows in synthetic.items()}
            # sequential sampling trains in the order the stages wrote (the textbook
            # method's curriculum order, simple to complex)
            selection = policy.select(
                round_index, synthetic, [draw.train for draw in real], seed=recipe.seed,
                shuffle=recipe.train.args.get("train_sampling_strategy") != "sequential")
            if not selection.records:
                raise RuntimeError(f"{label}: no training data survived the filters; see "
                                   f"the funnel in {data[-1].round_dir}")
            records = selection.records
            if not recipe.train.with_reasoning:  # the answer alone (distill.records)
                records = [record.model_copy(update={"reasoning": ""})
                           if getattr(record, "reasoning", "") else record
                           for record in records]
            write_jsonl(data_path, records)
            kd = recipe.train.method == "kd"
            if kd:  # the teacher's tokens of exactly the records trained on, in one file
                gather_teacher_tokens(out / TEACHER_TOKENS_FILE, records,
                                      [s.round_dir / "generate" / TEACHER_TOKENS_FILE
                                       for s in data])
            spec = TrainSpec(method=recipe.train.method, sft_args=recipe.train.sft_args,
                             kd=recipe.train.kd if kd else None,
                             teacher_tokens_path=str(out / TEACHER_TOKENS_FILE) if kd else None,
                             teacher_model=teacher.path if on_policy and teacher else None,
                             model=student.path, chat_template=student.chat_template,
                             lora=recipe.student.lora,
                             args=trainer_report_to(recipe.tracking, recipe.train.args),
                             global_batch_size=recipe.train.global_batch_size,
                             data_path=str(data_path), output_dir=str(out), seed=recipe.seed,
                             quiet=self.options.quiet)
            report = self._progress(f"{label} train")
            with (self.tracking.trainer_env(label) if self.tracking is not None
                  else nullcontext()):
                result = launch_training(spec, recipe.train.accelerate_config,
                                         launcher=recipe.train.launcher,
                                         log_path=self.store.root / "train.log",
                                         progress=report and (lambda done, total:
                                                              report("steps", done, total)))
            # the result's paths (sft_step's too) point into the work directory, renamed
            # at commit: the summary leaves them out
            return {"counts": {"examples": result.num_examples}, "train": result.summary(),
                    "data_mix": selection.counts}

        return self._stage(label, "train", config, inputs, work)

    def evaluate(self, label: str, model: ModelRef) -> Stage:
        """lm-eval on a model: the base student (`base`) or a round's trained student."""
        recipe = self.recipe
        # batch size and parallelism change only speed: they stay out of the fingerprint
        config = {"eval": recipe.eval.fingerprint_settings(),
                  "seed": recipe.seed}
        inputs = {"model": model.identity, "benchmarks": _tasks_identity(recipe.eval.include_path)}

        def work(out: Path) -> dict[str, Any]:
            from distill.evaluate.harness import evaluate_model

            path, revision = model.pinned()  # a hub model at its fingerprinted commit
            settings = recipe.eval if revision is None else recipe.eval.model_copy(
                update={"model_args": {**recipe.eval.model_args, "revision": revision}})
            result = evaluate_model(path, settings, output_dir=out, seed=recipe.seed,
                                    progress=self._progress(f"{label} evaluate"))
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
        config = {"measure": settings.model_dump(mode="json", exclude=set(settings.OPERATIONAL)),
                  "microworld": microworld, "seed": recipe.seed}
        inputs = {"stages": {name: stage.fingerprint for name, stage in stages.items()},
                  "model": model.identity, "reference": reference.identity,
                  "held_out": real and real.identity}

        def work(out: Path) -> dict[str, Any]:
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

    def _track(self, label: str, name: str, stage: Stage) -> None:
        """Hand a committed stage to the trackers (each logs it once; distill.tracking)."""
        if self.tracking is not None:
            self.tracking.stage_done(label, name, stage.manifest() or {}, stage.fingerprint)

    def _progress(self, task: str) -> Callable[[str, int, int], None] | None:
        callback = self.options.progress
        if callback is None:
            return None
        return lambda key, done, total: callback(f"{task}: {key}", done, total)


def _tasks_identity(include_path: str | None) -> str | None:
    """The local task folder's contents: editing a benchmark or its YAML re-runs what read it.

    Tasks that lm-eval ships are identified by their names (in the stage config) and the
    installed lm-eval.
    """
    from importlib.metadata import version

    local = path_sha256(include_path) if include_path else None
    return f"{local}|lm-eval {version('lm_eval')}"


def _failed_requests(where: str, failures: FailedRequests) -> int:
    """How many of a stage's requests the next run asks again (it redoes the stage)."""
    refused = len(failures.rejected) - failures.to_retry
    if failures.to_retry:
        log.warning("%s: %d request(s) ran out of retries (last error: %s); they are "
                    "rejected as request_failed, and the next run asks them again",
                    where, failures.to_retry, failures.last_error)
    if refused:
        log.warning("%s: the server refused %d request(s) (rejected as request_refused)",
                    where, refused)
    return failures.to_retry


# The teacher's tokens and top-k log-probabilities of a stage's records (train.method kd):
# the generate stage keeps those of its candidates, the train stage those it trains on.
TEACHER_TOKENS_FILE = "teacher_tokens.safetensors"


def save_candidate_tokens(path: Path, examples: list[Any], kept: dict[str, Any]) -> None:
    """Save the teacher's tokens of every candidate; a candidate without them is an error.

    A method that declares `keeps_teacher_tokens()` answers every record in one teacher
    generation; a record without tokens would train on nothing, so the stage fails.
    """
    from distill.teacher_tokens import save_teacher_tokens

    missing = [example.id for example in examples if example.id not in kept]
    if missing:
        raise RuntimeError(f"{len(missing)} candidate(s) have no teacher tokens to train "
                           f"on with method kd (first: {missing[0]!r}): the generation "
                           "method did not keep them")
    save_teacher_tokens(path, {example.id: kept[example.id] for example in examples})


def gather_teacher_tokens(path: Path, records: list[Any], sources: list[Path]) -> None:
    """The teacher's tokens of `records` from their rounds' generate stages, in one file."""
    from distill.teacher_tokens import load_teacher_tokens, save_teacher_tokens

    wanted = {record.id for record in records}
    found: dict[str, Any] = {}
    for source in sources:
        if not source.is_file():
            raise RuntimeError(f"{source} is missing: its round was generated without the "
                               "teacher's log-probabilities that method kd trains on")
        found.update((record_id, tokens) for record_id, tokens
                     in load_teacher_tokens(source).items() if record_id in wanted)
    missing = sorted(wanted - found.keys())
    if missing:
        raise RuntimeError(f"{len(missing)} training record(s) have no teacher tokens "
                           f"(first: {missing[0]!r}); method kd trains only on teacher answers")
    save_teacher_tokens(path, {record.id: found[record.id] for record in records})


# Written to the run directory when a budget cap stopped the run (distill.budget).
BUDGET_FILE = "budget.json"
# The stages whose requests count against the budget (a filter's: its LLM judges').
SPENDING_STAGES = ("generate", "filter")


def checkpoint_usage(checkpoint_dir: Path) -> tuple[int, int, int]:
    """Answered requests, prompt and completion tokens of a stage's generation shards."""
    tokens = checkpoint_tokens(checkpoint_dir)
    return tokens["requests"], tokens["prompt_tokens"], tokens["completion_tokens"]


def checkpoint_tokens(checkpoint_dir: Path) -> dict[str, int]:
    """Prompt and completion tokens over every generation shard (every run's)."""
    prompt = completion = generations = requests = 0
    for shard in sorted(checkpoint_dir.glob("*/chunk*.jsonl")):
        for line in shard.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row.get("finish_reason") == FAILED:  # not a generation: a request to ask again
                continue
            generations += 1
            completion += row.get("completion_tokens", 0)
            if row.get("index", 0) == 0:
                requests += 1
                prompt += row.get("prompt_tokens", 0)
    return {"generations": generations, "prompt_tokens": prompt, "completion_tokens": completion,
            "requests": requests}
