"""Build the microworld's teacher, thinker and student from scratch, cached by config and code.

    distill microworld build                 # or: python scripts/build_microworld.py
    from distill.microworld.build import build_models, resolve_model_ref
    paths = build_models()                   # {"teacher": Path, "student": Path}
    resolve_model_ref("microworld:thinker")  # builds on first use, then reads the cache

The models share one tokenizer (byte-level BPE with single-digit numbers, trained on
microworld text) and the project's chat template. The teacher (a 2-layer Llama, head
size 64 so vLLM's CPU build serves it) learns the world from chats and Self-Instruct
task lists, with loss on the whole chat: it learns to write tasks as well as to answer
them. The thinker is the teacher after a second phase that teaches it to think: under
the reasoning method's system prompt it answers the multi-step families with their worked
solution first (`<think>3 + 4 = 7; 7 * 2 = 14</think>14`), the teacher of
`generate.kind: reasoning`; without that prompt it answers about as the teacher does.
It is a model of its own because the phase moves the teacher's answers and tasks
enough to move the quickstart (round 1 at seed 0: 0.083 instead of 0.117, with the
thinker as its teacher). The student (smaller) learns the same facts as plain sentences
only, so it cannot follow instructions until it is fine-tuned. None ever sees a
benchmark item.

The teacher and the student train at the same time, on a share of the cores each (see
`side_by_side_threads`): a cold start's build took 269 s one after the other on 2 cores,
206 s side by side. The weights depend on the thread counts, so on the machine's cores,
never on timing.

The result lives in `$DISTILL_CACHE/microworld/<hash>` (default `~/.cache/distill`),
where the hash covers the build config and `BUILD_VERSION`; it is built in a temporary
directory and renamed into place, under a file lock, so concurrent callers build once.
The thinker is built only when asked for (`models=` or `microworld:thinker`), into
`<hash>/thinker` the same way: the quickstart needs the teacher and student alone, and
the thinker's phase is a third of a cold start's build time. Its bytes do not depend on
when it is built: its data, seeds and starting weights are the base build's.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.microworld.train import ModelSpec

if TYPE_CHECKING:
    from distill.microworld.corpus import Document

MODEL_NAMES = ("teacher", "student", "thinker")
BASE_MODELS = ("teacher", "student")  # what a build makes; the thinker follows on demand




def _reasoning_system_prompt() -> str:
    from distill.generate.reasoning import SYSTEM_PROMPT

    return SYSTEM_PROMPT


# Bump when a change to the generators, corpus or training changes what a build produces.
BUILD_VERSION = 7


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines the built models."""

    seed: int = 0
    vocab_size: int = 1024
    tokenizer_tasks: int = 3000
    # One-off runs of train_model (docs/results.md, "Microworld teacher's learning rate"):
    # the learning rate matters most, and 5e-4 learned the mix best. Small batches give
    # more steps for the same compute. `distill microworld build --evaluate` reports what
    # this config reaches.
    teacher: ModelSpec = field(default_factory=lambda: ModelSpec(
        hidden_size=128, layers=2, heads=2, intermediate_size=512, steps=3500,
        batch_tokens=1024, lr=5e-4))
    teacher_chats: int = 100000
    # Self-Instruct task lists, about a third of the teacher's tokens, and loss on the
    # chats' user turns too: with 1,500 lists and loss on answers only the teacher wrote
    # no coherent, verifiable task, with 8,000 and loss on whole chats nearly every task it
    # writes is verifiable, at a little answer accuracy (`evaluate.task_writing`, which
    # `--evaluate` runs; figures in docs/results.md, "How the quickstart got here").
    teacher_task_lists: int = 8000
    teacher_learns_user_turns: bool = True
    # The student needs about 3,000 steps to know enough facts for fine-tuning to unlock:
    # after 1,000 steps it learned nothing but the answer format from the teacher's data;
    # after 3,000 (lr 1e-3) two quickstart rounds raise its benchmark score several-fold
    # (scripts/probe_student_base.py; figures in docs/results.md, "Quickstart").
    student: ModelSpec = field(default_factory=lambda: ModelSpec(
        hidden_size=128, layers=2, heads=2, intermediate_size=256, steps=3000,
        batch_tokens=1024, lr=1e-3))
    student_documents: int = 20000
    # The two train side by side, on a share of the cores each; after this many steps the
    # teacher waits for the student and goes on on every core. The student is done about
    # then on 2 cores (student 3,000 x 48 ms, teacher 2,300 x 62 ms: docs/performance.md).
    # A fixed step, not "when the student is done", so that the weights do not depend on
    # timing.
    teacher_steps_beside_student: int = 2300
    # The thinker: the teacher above, trained on reasoning chats (the worked solutions
    # of the multi-step families as <think> traces, under the reasoning method's system
    # prompt, loss on the answer only) mixed with fresh chats and task lists, so that it
    # keeps answering and writing tasks; the teacher itself is left as it is.
    # One-off runs of this phase from build 4's teacher (greedy; 150 fresh reasoning
    # tasks, then the 420 benchmark items, where build 4 scores 0.257), as (steps, share
    # of tokens in reasoning chats, lr): steps right / traces with every step right /
    # answers right / benchmark score:
    #   600, 1/3, 3e-4:   6 % / 3 % / 7 % / 0.250
    #   600, 1/2, 3e-4:  19 % / 11 % / 11 % / 0.226 (built: 12 % / 10 % / 11 % / 0.243)
    #   600, 1/2, 2e-4:  11 % / 9 % / 9 % / 0.231
    #   2000, 3/4, 3e-4: 37 % / 23 % / 16 % / 0.257   <- this config (built: 0.245)
    # The longer phase keeps the benchmark score and doubles whole right traces, for
    # about 80 s more of build time on 2 cores. New `<think>` tokens, tried at lr 1e-4,
    # were never written: the tags are pieces the tokenizer has.
    thinker: ModelSpec = field(default_factory=lambda: ModelSpec(
        hidden_size=128, layers=2, heads=2, intermediate_size=512, steps=2000,
        batch_tokens=1024, lr=3e-4))
    thinker_reasoning_chats: int = 15000
    thinker_replay_chats: int = 12000
    thinker_replay_task_lists: int = 1000
    reasoning_system_prompt: str = field(default_factory=_reasoning_system_prompt)
    # Family weights of the training chats and sentences: Zipf weights ** this exponent.
    # Below 1 the models know the tail better than they see it in Self-Instruct lists.
    family_exponent: float = 0.3

    def as_dict(self) -> dict[str, Any]:
        """JSON form, hashed into the cache key and saved with the models."""
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """Short hash of the config and the build version."""
        blob = json.dumps({"config": self.as_dict(), "version": BUILD_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def tiny(cls, seed: int = 0) -> BuildConfig:
        """A seconds-long build for tests: same pipeline, few steps and documents."""
        small = ModelSpec(hidden_size=128, layers=1, heads=2, intermediate_size=256, steps=3,
                          batch_tokens=1024)
        return cls(seed=seed, vocab_size=400, tokenizer_tasks=200, teacher=small,
                   teacher_chats=60, teacher_task_lists=6, student=small, student_documents=20,
                   teacher_steps_beside_student=2,
                   thinker=small, thinker_reasoning_chats=20, thinker_replay_chats=20,
                   thinker_replay_task_lists=2)


def cache_root() -> Path:
    """`$DISTILL_CACHE/microworld`, default `~/.cache/distill/microworld`."""
    base = os.environ.get("DISTILL_CACHE") or "~/.cache/distill"
    return Path(base).expanduser() / "microworld"


def build_models(cache_dir: Path | None = None, seed: int = 0, force: bool = False, *,
                 config: BuildConfig | None = None, quiet: bool = False,
                 models: tuple[str, ...] = BASE_MODELS) -> dict[str, Path]:
    """Build (or find cached) the models asked for; returns {name: directory}.

    Args:
        cache_dir: where builds live (default `cache_root()`); each in `<hash>/`.
        seed: the build's seed (ignored when `config` is given).
        force: rebuild even when a finished build exists.
        config: the full build config (default `BuildConfig(seed=seed)`).
        quiet: no progress output.
        models: names from `MODEL_NAMES`; the teacher and student are always built.
    """
    unknown = sorted(set(models) - set(MODEL_NAMES))
    if unknown:
        raise ValueError(f"unknown microworld models {unknown}: choose from {MODEL_NAMES}")
    config = config or BuildConfig(seed=seed)
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    target = root / config.fingerprint()
    with _lock(root / f"{target.name}.lock"):
        if force or not (target / "microworld.json").is_file():
            # microworld.json last: a directory without it is an unfinished build.
            _build_into(target, lambda work: _write_report(work, _build(config, work,
                                                                        quiet=quiet)))
        if "thinker" in models and (force or not (target / "thinker").is_dir()):
            _build_into(target / "thinker",
                        lambda work: _build_thinker(config, target, work, quiet=quiet))
    return {name: target / name for name in (*BASE_MODELS, *models)}


def _build_into(target: Path, build: Any) -> None:
    """Run `build(work_dir)` in a temporary sibling of `target`, then rename it into place."""
    work = target.parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        build(work)
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _write_report(work: Path, report: dict[str, Any]) -> None:
    (work / "microworld.json").write_text(json.dumps(report, indent=2) + "\n")


def resolve_model_ref(ref: str, cache_dir: Path | None = None) -> Path:
    """`"microworld:teacher"` (`student`, `thinker`) -> the built model's directory."""
    prefix, _, name = ref.partition(":")
    if prefix != "microworld" or name not in MODEL_NAMES:
        raise ValueError(f"not a microworld model reference: {ref!r} "
                         f"(use one of {[f'microworld:{n}' for n in MODEL_NAMES]})")
    return build_models(cache_dir, models=(name,))[name]


class _lock:
    """An exclusive `flock` on a file, for the duration of a `with` block."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.handle = self.path.open("w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _build(config: BuildConfig, out: Path, *, quiet: bool) -> dict[str, Any]:
    from distill.microworld.benchmark import benchmark_keys
    from distill.microworld.corpus import student_documents, teacher_documents, tokenizer_texts
    from distill.microworld.side_by_side import ChildTraining
    from distill.microworld.train import train_model, train_tokenizer, usable_cpus

    started = time.perf_counter()
    timings: dict[str, float] = {}
    held_out = benchmark_keys()
    with _progress(quiet) as progress:
        step = progress.add_task("tokenizer + data", total=3, loss="")
        rng = random.Random(config.seed)
        tokenizer = train_tokenizer(tokenizer_texts(rng, config.tokenizer_tasks),
                                    config.vocab_size)
        progress.advance(step)
        teacher_docs = teacher_documents(config.teacher_chats, config.teacher_task_lists,
                                         random.Random(config.seed + 1), held_out, tokenizer,
                                         family_exponent=config.family_exponent)
        progress.advance(step)
        student_docs = student_documents(config.student_documents,
                                         random.Random(config.seed + 2), held_out,
                                         family_exponent=config.family_exponent)
        progress.advance(step)
        timings["data"] = time.perf_counter() - started

        teacher_masked = set() if config.teacher_learns_user_turns else {"chat"}
        jobs = {"teacher": dict(documents=teacher_docs, spec=config.teacher,
                                mask_prompts=teacher_masked),
                "student": dict(documents=student_docs, spec=config.student, mask_prompts=set())}
        reports = {name: _bar_report(progress, name, job["spec"].steps)
                   for name, job in jobs.items()}
        threads = side_by_side_threads(usable_cpus())
        if threads is None:  # one core: one model after the other
            stats = {name: train_model(tokenizer=tokenizer, out_dir=out / name,
                                       seed=config.seed, progress=reports[name], **job)
                     for name, job in jobs.items()}
        else:
            with ChildTraining(out / ".student-job", reports["student"], tokenizer=tokenizer,
                               out_dir=out / "student", seed=config.seed,
                               threads=threads["student"], **jobs["student"]) as child:

                def teacher_threads(step: int) -> int:
                    if step < config.teacher_steps_beside_student:
                        return threads["teacher"]
                    child.result()  # wait for the student's cores (or its error)
                    return threads["teacher"] + threads["student"]

                stats = {"teacher": train_model(tokenizer=tokenizer, out_dir=out / "teacher",
                                                seed=config.seed, progress=reports["teacher"],
                                                threads=teacher_threads, **jobs["teacher"]),
                         "student": child.result()}
            shutil.rmtree(out / ".student-job")
        timings.update({name: s["seconds"] for name, s in stats.items()})
    timings["total"] = time.perf_counter() - started
    return {"fingerprint": config.fingerprint(), "build_version": BUILD_VERSION,
            "config": config.as_dict(), "stats": stats,
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "cpus": _cpus(), "held_out_items": len(held_out)}


def side_by_side_threads(cpus: int) -> dict[str, int] | None:
    """Threads of the teacher and the student training side by side; None on one CPU.

    Training each model on its share of the cores at the same time is faster than each on
    every core in turn (docs/performance.md); the teacher, twice the student's MLP, gets
    the odd core. The thread counts are part of what determines the weights.
    """
    if cpus < 2:
        return None
    return {"teacher": cpus - cpus // 2, "student": cpus // 2}


def _progress(quiet: bool) -> Any:
    """The build's progress display: a bar, steps done and the loss per model."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[loss]}"),
                    TimeElapsedColumn(), disable=quiet, transient=False)


def _bar_report(progress: Any, name: str, steps: int) -> Any:
    """A `train_model` progress callback that moves a bar of its own."""
    bar = progress.add_task(name, total=steps, loss="")

    def report(done: int, total: int, loss: float) -> None:
        progress.update(bar, completed=done, loss=f"loss {loss:.3f}")

    return report


def _build_thinker(config: BuildConfig, base: Path, out: Path, *, quiet: bool) -> None:
    """The thinker: the base build's teacher, trained on to think; stats in build.json."""
    from transformers import AutoTokenizer

    from distill.microworld.benchmark import benchmark_keys
    from distill.microworld.train import train_model

    tokenizer = AutoTokenizer.from_pretrained(base / "teacher")
    masked = {"reasoning"} | (set() if config.teacher_learns_user_turns else {"chat"})
    with _progress(quiet) as progress:
        stats = train_model(reasoning_documents(config, benchmark_keys(), tokenizer), tokenizer,
                            config.thinker, out, seed=config.seed, mask_prompts=masked,
                            progress=_bar_report(progress, "thinker", config.thinker.steps),
                            init_dir=base / "teacher")
    (out / "build.json").write_text(json.dumps({"fingerprint": config.fingerprint(),
                                                "stats": stats, "cpus": _cpus()}, indent=2) + "\n")


def reasoning_documents(config: BuildConfig, held_out: set[tuple[str, str]], tokenizer
                        ) -> list[Document]:
    """The thinker's data: reasoning chats, with fresh chats and task lists."""
    from distill.microworld.corpus import teacher_documents

    return teacher_documents(config.thinker_replay_chats, config.thinker_replay_task_lists,
                             random.Random(config.seed + 3), held_out, tokenizer,
                             family_exponent=config.family_exponent,
                             n_reasoning=config.thinker_reasoning_chats,
                             system_prompt=config.reasoning_system_prompt)


def _cpus() -> int:
    from distill.microworld.train import usable_cpus

    return usable_cpus()
