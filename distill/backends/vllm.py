"""Generation with vLLM's offline engine (`vllm.LLM`), prefix caching on.

Prompts are rendered here with the same code as the HF backend (`encode_request`: the
tokenizer's chat template, or the `chat_template` override, with
`add_generation_prompt=True`, tokenised without special tokens; raw prompts tokenised as
is) and handed to `LLM.generate` as token ids, so both backends feed the model exactly the
same tokens. Every `Sampling` field maps onto `SamplingParams` with its own meaning: `n`,
`temperature` (0 = greedy), `top_p`, `max_tokens`, `presence_penalty`,
`frequency_penalty`, `stop` (excluded from the text), `logprobs` (the chosen token's
log-probability, vLLM's raw model distribution) and the per-request `seed` (from
`Sampling.seed`, else derived from the backend seed and the request id; vLLM gives sample
i the seed `seed + i`), so a request's samples do not depend on the batch it ran in.

`top_logprobs` (k) is `SamplingParams(logprobs=k)`: each position's entries of ranks 1..k
become `Generation.tokens` (vLLM adds the sampled token, with its own rank, when it is
not among them). They are raw log-probabilities only under vLLM's default
`logprobs_mode: raw_logprobs`, so another mode is refused. vLLM caps k at the engine's
`max_logprobs` (default 20); a larger k is refused before anything runs, naming the
engine option to raise, rather than raised here behind the recipe's back (the engine is
built before the requests, and their k, are known). `max_logprobs` only bounds what may
be asked, so it is operational.

A PEFT adapter directory is served as a LoRA on its base model (`enable_lora`).

`dtype: auto` (the default) means the checkpoint's own dtype (config.json `dtype` /
`torch_dtype`; for an adapter, its base model's), as in the hf backend, so switching
backends does not change the data. vLLM's own `auto` would run a float32 checkpoint in
bfloat16 (on CPU, 17 of 256 microworld task lists came out as the hf backend's). Where
the device cannot run the checkpoint's dtype, or the config names none, the backend
refuses rather than picks another: `auto` stays a function of the checkpoint, which the
generation fingerprint already holds, and an explicit `dtype` enters the fingerprint
itself. The dtype that ran is in `identity()["dtype"]`.

Engine options (`**engine`) go to `vllm.LLM` unchanged (`enforce_eager`,
`kv_cache_memory_bytes`, `max_num_seqs`, `quantization`, ...). On vLLM's CPU build the
KV cache is sized by `kv_cache_memory_bytes` (or the `VLLM_CPU_KVCACHE_SPACE` environment
variable, in GiB); when neither is given this backend reserves 1 GiB, because the CPU
build otherwise reserves `gpu_memory_utilization` of the machine's memory and refuses to
start when that much is not free. Chunked prefill is off there (`cpu_engine_options`):
every request is seeded, and the CPU engine crashes on a seeded request whose prefill is
split across scheduler steps (`RuntimeError: CPU Generator does not use offset`, then
`EngineDeadError`), which happens as soon as one step's prompts overflow
`max_num_batched_tokens`; an explicit `enable_chunked_prefill: true` is refused. Without
chunking a prompt must fit one step, so `max_num_batched_tokens` must be at least
`max_model_len` (vLLM's default then is the larger of `max_model_len` and 4096). vLLM
logs that disabling chunked prefill "may cause the engine to crash"; on CPU it is the
enabled path that crashes. vLLM starts worker processes with `spawn`, so a script
that builds this backend needs an `if __name__ == "__main__":` guard.

`close()` shuts the engine-core processes down, then collects garbage, tears down
vLLM's distributed state and empties the CUDA cache, so the next stage gets the memory.
A torch.distributed default process group that existed before the engine was built
(accelerate's) is the caller's: vLLM's teardown would destroy it, so then only vLLM's
own model-parallel groups are destroyed.

`VLLM_ENABLE_V1_MULTIPROCESSING=0` runs the engine inside the calling process: on the CPU
build it starts in about 8 s instead of about 40 s (no spawned engine-core and worker
processes re-importing vLLM). The tests use it; production keeps vLLM's default. Not in a
process that holds a process group: the in-process engine builds its groups on that one,
and its own shutdown destroys it.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from distill.backends.base import Generation, GenerationRequest, ProgressFn, request_seed
from distill.backends.hf import encode_request, encode_requests
from distill.engine_options import PassedOn
from distill.identity import model_identity, resolve_chat_template
from distill.registry import BACKENDS
from distill.teacher_tokens import TeacherTokens

logger = logging.getLogger(__name__)

CPU_DEFAULT_KV_CACHE_BYTES = 1 << 30
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
# Modules vllm-cpu's start-up cannot scan: registering its C++ stand-ins for Triton
# kernels (vllm/triton_utils/dispatcher.py) calls vars() on every module global that
# claims a __dict__, and llvmlite's `ffi.lib` (loaded with numba, which the novelty
# filter's join runs) answers every attribute, __dict__ included, with a function
# wrapper: the engine died with "'_lib_fn_wrapper' object has no attribute 'get'".
_UNSCANNABLE_MODULES = ("llvmlite.binding.ffi",)


@contextlib.contextmanager
def hidden_from_kernel_scan():
    """Take `_UNSCANNABLE_MODULES` out of sys.modules while an engine starts.

    Wrap every in-process engine start in it (this backend's, lm-eval's vllm model). The
    engine core, forked while the engine starts, inherits the same view; vLLM uses none
    of them, and numba finds them again once they are put back.
    """
    hidden = {name: sys.modules.pop(name) for name in _UNSCANNABLE_MODULES
              if name in sys.modules}
    try:
        yield
    finally:
        sys.modules.update(hidden)


def _progress_bar_factory(progress: ProgressFn):
    """A tqdm factory for `LLM.generate(use_tqdm=...)` that reports finished requests."""
    from tqdm import tqdm

    class _Bar(tqdm):
        finished = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["file"] = io.StringIO()
            kwargs["mininterval"] = 3600
            super().__init__(*args, **kwargs)

        def update(self, n: float | None = 1) -> bool | None:
            result = super().update(n)
            if self.desc.startswith("Processed"):
                _Bar.finished += 1
                progress(_Bar.finished)
            return result

    return _Bar


def vllm_engine_arguments() -> frozenset[str] | None:
    """What `vllm.LLM` takes as keywords (its parameters, `EngineArgs`); None without vLLM.

    Asked only for engine options that `VLLMBackend` does not name itself, since importing
    vLLM takes seconds.
    """
    import dataclasses
    import inspect

    try:
        from vllm import LLM
        from vllm.engine.arg_utils import EngineArgs
    except ImportError:
        return None
    return (frozenset(inspect.signature(LLM.__init__).parameters)
            | {f.name for f in dataclasses.fields(EngineArgs)})


@BACKENDS.register("vllm")
class VLLMBackend:
    """vLLM offline generation behind the backend protocol (see the module docstring)."""

    name = "vllm"
    # memory, parallelism and scheduling change speed (design.md: parallel sizes are
    # operational), not what a seeded request samples
    LOADS_WEIGHTS: ClassVar[bool] = True  # does `model` name weights to load here?
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({
        "gpu_memory_utilization", "tensor_parallel_size", "pipeline_parallel_size",
        "data_parallel_size", "enable_prefix_caching", "max_num_seqs", "max_num_batched_tokens",
        "enable_chunked_prefill", "enforce_eager", "swap_space", "max_logprobs"})

    def __init__(self, model: str, chat_template: str | None = None,
                 dtype: Literal["auto", "float32", "bfloat16", "float16", "half",
                                "float"] = "auto",
                 seed: int = 0, enable_prefix_caching: bool = True,
                 gpu_memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.85,
                 max_model_len: Annotated[int | None, Field(ge=1)] = None,
                 tensor_parallel_size: Annotated[int, Field(ge=1)] = 1,
                 **engine: Annotated[Any, PassedOn("vLLM's engine arguments",
                                                   vllm_engine_arguments)]) -> None:
        """Start a vLLM engine; the signature declares the `vllm` backend's engine options.

        Every other keyword goes to `vllm.LLM` (its own parameters and `EngineArgs`), and
        a recipe is checked against those names when vLLM is installed.
        """
        import torch.distributed
        from vllm import LLM
        from vllm.platforms import current_platform

        self.model_name = str(model)
        self.chat_template_source = chat_template
        self.chat_template = resolve_chat_template(chat_template)
        self.seed = int(seed)
        self.revision = engine.get("revision")
        self._identity: dict[str, Any] | None = None
        self.lora_request = None
        engine_model = self.model_name
        adapter_config = Path(self.model_name) / "adapter_config.json"
        if adapter_config.is_file():
            from vllm.lora.request import LoRARequest

            adapter = json.loads(adapter_config.read_text(encoding="utf-8"))
            engine_model = adapter["base_model_name_or_path"]
            rank = int(adapter.get("r", 8))
            engine.setdefault("enable_lora", True)
            engine.setdefault("max_lora_rank",
                              next((r for r in _LORA_RANKS if r >= rank), rank))
            if any((Path(self.model_name) / f).exists()
                   for f in ("tokenizer.json", "tokenizer_config.json")):
                engine.setdefault("tokenizer", self.model_name)
            self.lora_request = LoRARequest("adapter", 1, self.model_name)
        if engine.get("logprobs_mode", "raw_logprobs") != "raw_logprobs":
            raise ValueError(f"logprobs_mode {engine['logprobs_mode']!r} is refused: the "
                             "backend's logprobs and top_logprobs are the raw model "
                             "distribution (vLLM's default raw_logprobs)")
        if current_platform.is_cpu():
            engine = cpu_engine_options(engine, max_model_len)
        dtype = resolve_dtype(engine_model, dtype, revision=self.revision,
                              trust_remote_code=bool(engine.get("trust_remote_code")))
        self.engine_options = {
            "dtype": dtype, "seed": self.seed, "enable_prefix_caching": enable_prefix_caching,
            "gpu_memory_utilization": gpu_memory_utilization, "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size, **engine,
        }
        # vLLM's teardown destroys the default process group: only one it created is ours
        self._owns_process_group = not (torch.distributed.is_available()
                                        and torch.distributed.is_initialized())
        with hidden_from_kernel_scan():
            self.llm = LLM(model=engine_model, **self.engine_options)
        self.tokenizer = self.llm.get_tokenizer()
        self.dtype = dtype_name(self.llm.llm_engine.model_config.dtype)
        logger.info("vLLM serves %s in %s", self.model_name, self.dtype)

    def __repr__(self) -> str:
        return f"VLLMBackend(model={self.model_name!r})"

    def identity(self) -> dict[str, Any]:
        """Model id or path, content hashes, the chat template's hash and the dtype that ran."""
        if self._identity is None:
            self._identity = {
                "backend": "vllm", "dtype": self.dtype,
                **model_identity(self.model_name, self.chat_template_source, self.revision),
            }
        return dict(self._identity)

    def encode(self, request: GenerationRequest) -> list[int]:
        """The prompt token ids this backend feeds the engine for `request`."""
        return encode_request(self.tokenizer, request, self.chat_template)

    def sampling_params(self, request: GenerationRequest):
        """`vllm.SamplingParams` for one request."""
        from vllm import SamplingParams

        s = request.sampling
        return SamplingParams(
            n=max(1, int(s.n)),
            temperature=float(s.temperature),
            top_p=float(s.top_p),
            max_tokens=int(s.max_tokens),
            presence_penalty=float(s.presence_penalty),
            frequency_penalty=float(s.frequency_penalty),
            stop=list(s.stop) or None,
            seed=request_seed(request, self.seed),
            # k alternatives (the sampled token's own log-probability comes with them)
            logprobs=int(s.top_logprobs) if s.top_logprobs else (0 if s.logprobs else None),
        )

    def generate(self, requests: list[GenerationRequest],
                 progress: ProgressFn | None = None) -> list[Generation]:
        """Complete every request; `n` generations per request, in request order."""
        if not requests:
            return []
        if self.llm is None:
            raise RuntimeError("VLLMBackend is closed")
        self._check_top_logprobs(requests)
        prompts, params = self.engine_inputs(requests)
        use_tqdm = _progress_bar_factory(progress) if progress is not None else False
        outputs = self.llm.generate(prompts, params, use_tqdm=use_tqdm,
                                    lora_request=self.lora_request)
        return self.generations(requests, outputs)

    def engine_inputs(self, requests: list[GenerationRequest]) -> tuple[list[Any], list[Any]]:
        """The `TokensPrompt`s and `SamplingParams` that `LLM.generate` gets for `requests`.

        The prompts are encoded in one batch (`encode_requests`), the way that costs the
        least next to the engine (scripts/bench_generation.py).
        """
        from vllm.inputs import TokensPrompt

        encoded = encode_requests(self.tokenizer, requests, self.chat_template)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in encoded]
        return prompts, [self.sampling_params(r) for r in requests]

    def generations(self, requests: list[GenerationRequest],
                    outputs: list[Any]) -> list[Generation]:
        """`LLM.generate`'s outputs for `requests` as generations, in request order."""
        generations = []
        for request, output in zip(requests, outputs, strict=True):
            prompt_tokens = len(output.prompt_token_ids or [])
            for completion in sorted(output.outputs, key=lambda c: c.index):
                logprobs = None
                if request.sampling.logprobs and completion.logprobs is not None:
                    logprobs = [float(step[token].logprob)
                                for token, step in zip(completion.token_ids,
                                                       completion.logprobs, strict=False)]
                finish = completion.finish_reason or "length"
                if finish not in ("stop", "length"):
                    raise RuntimeError(f"request {request.id}: vLLM finished it with {finish!r}")
                generations.append(Generation(
                    request_id=request.id,
                    index=completion.index,
                    text=completion.text,
                    finish_reason=finish,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=len(completion.token_ids),
                    logprobs=logprobs,
                    extra={"stop_reason": completion.stop_reason}
                    if completion.stop_reason is not None else {},
                    tokens=teacher_tokens(request, completion)
                    if request.sampling.top_logprobs else None,
                ))
        return generations

    def _check_top_logprobs(self, requests: list[GenerationRequest]) -> None:
        """Refuse a k above the engine's `max_logprobs` before any request runs."""
        top_k = max((int(r.sampling.top_logprobs) for r in requests), default=0)
        cap = self.llm.llm_engine.model_config.max_logprobs
        if top_k and cap != -1 and top_k > cap:
            raise ValueError(f"top_logprobs {top_k} is above vLLM's max_logprobs ({cap}); "
                             f"set the vllm engine option max_logprobs: {top_k} (or more)")

    def close(self) -> None:
        """Shut the engine down and give its memory back."""
        import gc

        llm, self.llm = self.llm, None
        if llm is None:
            return
        shutdown_engine(llm)
        del llm
        self.tokenizer = None
        try:  # gc.collect, distributed teardown and accelerator cache, in vLLM's order
            from vllm.distributed import parallel_state

            if self._owns_process_group:
                parallel_state.cleanup_dist_env_and_memory()
            else:  # the default group is the caller's: leave it (and vLLM's world on it)
                parallel_state.destroy_model_parallel()
                gc.collect()
        except Exception as error:  # noqa: BLE001
            logger.debug("vLLM cleanup raised %s", error)
            gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def teacher_tokens(request: GenerationRequest, completion: Any) -> TeacherTokens:
    """A vLLM completion's tokens and their top-k log-probabilities (ranks 1..k).

    `completion.logprobs` holds, per position, a dict token id -> `Logprob` (or vLLM's
    `FlatLogprobs`, which reads the same): the sampled token first, then ranks 1..k. A
    sampled token outside the top k keeps its own rank and is left out; one that ties
    the k-th takes its rank, and the top-k entry after it wins.

    Raises:
        RuntimeError: vLLM returned no logprobs, or a position lacks one of ranks 1..k.
    """
    import numpy

    top_k = int(request.sampling.top_logprobs)
    steps = completion.logprobs
    token_ids = list(completion.token_ids)
    if steps is None or len(steps) != len(token_ids):
        raise RuntimeError(f"request {request.id}: vLLM returned logprobs for "
                           f"{0 if steps is None else len(steps)} of {len(token_ids)} tokens")
    top_ids = numpy.zeros((len(token_ids), top_k), dtype=numpy.int32)
    top_logprobs = numpy.zeros((len(token_ids), top_k), dtype=numpy.float32)
    for position, step in enumerate(steps):
        by_rank = {entry.rank: (token, entry.logprob) for token, entry in step.items()
                   if entry.rank is not None and 1 <= entry.rank <= top_k}
        if len(by_rank) != top_k:
            raise RuntimeError(f"request {request.id}: vLLM gave ranks {sorted(by_rank)} at "
                               f"token {position}, expected 1..{top_k}")
        for rank, (token, logprob) in by_rank.items():
            top_ids[position, rank - 1] = token
            top_logprobs[position, rank - 1] = logprob
    return TeacherTokens(numpy.array(token_ids, dtype=numpy.int32), top_ids, top_logprobs)


def cpu_engine_options(engine: dict[str, Any], max_model_len: int | None = None
                       ) -> dict[str, Any]:
    """`engine` with the defaults vLLM's CPU build needs (see the module docstring).

    Also used for lm-eval's vLLM model on CPU.

    Raises:
        ValueError: `enable_chunked_prefill` is true (the CPU engine crashes on it), or
            `max_num_batched_tokens` is below `max_model_len` (a prompt must fit one step).
    """
    import os

    if engine.get("enable_chunked_prefill"):
        raise ValueError("enable_chunked_prefill: true is refused on vLLM's CPU build: a seeded "
                         "request whose prefill is split crashes the engine (CPU Generator does "
                         "not use offset); leave it unset")
    step = engine.get("max_num_batched_tokens")
    if step is not None and max_model_len is not None and step < max_model_len:
        raise ValueError(f"max_num_batched_tokens ({step}) is below max_model_len "
                         f"({max_model_len}): vLLM's CPU build does not chunk prefill, so one "
                         "step must hold a whole prompt; raise it or lower max_model_len")
    engine = {**engine, "enable_chunked_prefill": False}
    if (engine.get("kv_cache_memory_bytes") is None
            and not os.environ.get("VLLM_CPU_KVCACHE_SPACE")):
        engine["kv_cache_memory_bytes"] = CPU_DEFAULT_KV_CACHE_BYTES
    return engine


def resolve_dtype(model: str, dtype: str | None, revision: str | None = None,
                  trust_remote_code: bool = False) -> str:
    """The dtype to run `model` in: `auto` (or None) is the checkpoint's own.

    Args:
        model: a checkpoint directory or hub id (for an adapter, its base model).
        dtype: the engine option as given.
        revision: the hub revision of `model`.
        trust_remote_code: passed to `AutoConfig` for custom configs.

    Raises:
        ValueError: `auto`, and the config names no dtype or this device cannot run it.
    """
    if dtype not in (None, "auto"):
        return dtype
    import torch
    from transformers import AutoConfig
    from vllm.platforms import current_platform

    config = AutoConfig.from_pretrained(model, revision=revision,
                                        trust_remote_code=trust_remote_code)
    own = getattr(config, "dtype", None) or getattr(config.get_text_config(), "dtype", None)
    if own is None:
        raise ValueError(f"dtype: auto, but {model}'s config names no dtype; set dtype "
                         "(float32, bfloat16 or float16) in the engine options")
    own = getattr(torch, own) if isinstance(own, str) else own
    supported = current_platform.supported_dtypes
    if own not in supported:
        raise ValueError(f"dtype: auto means {model}'s own {dtype_name(own)}, which this device "
                         f"cannot run; set dtype to one of {[dtype_name(d) for d in supported]}")
    return dtype_name(own)


def dtype_name(dtype: Any) -> str:
    """`torch.bfloat16` -> "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def shutdown_engine(llm: Any) -> None:
    """Stop a `vllm.LLM`'s engine-core processes; also used for lm-eval's vLLM model."""
    engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if engine_core is not None and hasattr(engine_core, "shutdown"):
        try:
            engine_core.shutdown()
        except Exception as error:  # noqa: BLE001 - shutting down regardless
            logger.warning("vLLM engine shutdown raised %s", error)
