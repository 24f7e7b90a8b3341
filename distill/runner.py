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
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.recipe import Recipe
from distill.records import read_examples, write_json, write_jsonl
from distill.store import RunStore, Stage, file_sha256

log = logging.getLogger("distill")

STAGES = ("generate", "filter", "decontaminate", "train", "evaluate")


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
        for round_index in range(recipe.rounds.count):
            label = f"round_{round_index}"
            generated = self.generate(label, round_index, teacher)
            filtered = self.filter(label, generated)
            clean_data.append(self.decontaminate(label, filtered))
            trained = self.train(label, student, clean_data)
            merged = ModelRef(path=str(trained.path / "merged"),
                              identity={"train_stage": trained.fingerprint},
                              chat_template=recipe.student.chat_template)
            self.evaluate(label, merged)
            if recipe.rounds.next_teacher == "student":
                teacher = merged

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

    def generate(self, label: str, round_index: int, teacher: ModelRef) -> Stage:
        """Teacher writes candidates: `candidates.jsonl` (+ `rejected.jsonl`)."""
        recipe = self.recipe
        seed_tasks = self._seed_tasks_path()
        config = {"method": recipe.generate.model_dump(mode="json"), "seed": recipe.seed,
                  "round": round_index, "backend": recipe.teacher.backend}
        inputs = {"teacher": teacher.identity, "seed_tasks": file_sha256(seed_tasks)}

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
                result = generate(recipe.generate, context, load_seed_tasks(seed_tasks),
                                  teacher_name=teacher.path)
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

    def filter(self, label: str, generated: Stage) -> Stage:
        """Quality filters in order: `kept.jsonl`, `rejected.jsonl`, `funnel.json`."""
        recipe = self.recipe
        config = {"filters": [f.model_dump(mode="json") for f in recipe.filters],
                  "seed": recipe.seed}
        inputs = {"generate": generated.fingerprint,
                  "seed_tasks": file_sha256(self._seed_tasks_path())}

        def work(out: Path) -> dict[str, Any]:
            if not self.ranks.is_main:
                return {}
            from distill.filters.base import FilterContext, build_filter, run_funnel
            from distill.generate.self_instruct import load_seed_tasks

            candidates = read_examples(generated.path / "candidates.jsonl")
            context = FilterContext(seed_examples=load_seed_tasks(self._seed_tasks_path()),
                                    run_dir=self.store.root, seed=recipe.seed)
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
        config = {"decontamination": decon.model_dump(mode="json"), "tasks": tasks,
                  "include_path": recipe.eval.include_path}
        inputs = {"filter": filtered.fingerprint}

        def work(out: Path) -> dict[str, Any]:
            if not self.ranks.is_main:
                return {}
            from distill.evaluate.contamination import apply_policy, find_contamination

            kept = read_examples(filtered.path / "kept.jsonl")
            if not decon.enabled:
                write_jsonl(out / "clean.jsonl", kept)
                return {"counts": {"in": len(kept), "clean": len(kept), "contaminated": 0}}
            report = find_contamination(kept, decon, include_path=recipe.eval.include_path,
                                        tasks=tasks)
            write_json(out / "contamination.json", report.model_dump(mode="json"))
            if report.contaminated:
                log.warning("%s", report.summary())
            clean, dropped = apply_policy(report, kept)  # policy "fail" raises here
            write_jsonl(out / "clean.jsonl", clean)
            write_jsonl(out / "rejected.jsonl", dropped)
            return {"counts": {"in": len(kept), "clean": len(clean),
                               "contaminated": len(report.contaminated)},
                    "per_task": {task: stats.contaminated_examples
                                 for task, stats in report.tasks.items()},
                    "policy": decon.policy}

        return self._stage(label, "decontaminate", config, inputs, work)

    def train(self, label: str, student: ModelRef, clean_data: list[Stage]) -> Stage:
        """LoRA (or full) fine-tuning of the base student on this round's data policy."""
        recipe = self.recipe
        sources = clean_data if recipe.rounds.data_policy == "accumulate" else clean_data[-1:]
        real = recipe.data.real_data if recipe.rounds.data_policy == "accumulate" else None
        config = {"train": recipe.train.model_dump(mode="json", exclude={"accelerate_config"}),
                  "lora": recipe.student.lora and recipe.student.lora.model_dump(mode="json"),
                  "policy": recipe.rounds.data_policy, "seed": recipe.seed}
        inputs = {"student": student.identity, "data": [s.fingerprint for s in sources],
                  "real_data": real and file_sha256(real)}

        def work(out: Path) -> dict[str, Any]:
            from distill.train.launch import launch_training
            from distill.train.sft import TrainSpec

            data_path = out / "train.jsonl"
            if self.ranks.is_main:
                records = [row for s in sources for row in read_examples(s.path / "clean.jsonl")]
                if real:
                    records += read_examples(real)
                if not records:
                    raise RuntimeError(f"{label}: no training data survived the filters; see "
                                       f"the funnel in {sources[-1].round_dir}")
                random.Random(recipe.seed).shuffle(records)
                write_jsonl(data_path, records)
            self.ranks.barrier()
            spec = TrainSpec(model=student.path, chat_template=student.chat_template,
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
            return {"counts": {"examples": result.num_examples}, "train": summary}

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

    # -- helpers --------------------------------------------------------------------------

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
