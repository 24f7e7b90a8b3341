"""Generation speed against the baselines users would pick, as ratios measured in one run.

    .venv/bin/python scripts/bench_generation.py             # microworld:teacher, ~3 min on CPU
    .venv/bin/python scripts/bench_generation.py --quick     # smoke run, ~1 min
    .venv/bin/python scripts/bench_generation.py --model Qwen/Qwen2.5-0.5B-Instruct \
        --requests 1024 --max-tokens 256 --only vllm         # on a GPU, a hub model

Every comparison runs the same prompts with the same sampling parameters, its sides
interleaved (A B, B A, A B, ...: drift and warm caches fall on both), and reports median
wall and process CPU seconds and distill's speed against each baseline: the median over
repeats of baseline seconds / distill seconds (1.00 is parity, above 1 is faster than the
baseline). Set VLLM_ENABLE_V1_MULTIPROCESSING=0 on CPU so that vLLM's engine runs in this
process and its CPU time is counted.

1. vllm backend: `VLLMBackend.generate` against raw `LLM.generate` on the backend's own
   engine (built once, shared; prefix cache reset before every call), so only the
   per-call overhead is compared: rendering and tokenising the prompts, building
   `SamplingParams`, converting the outputs. Raw gets the prompts as token ids and the
   `SamplingParams` built before its clock starts (the engine alone: the strictest
   baseline), and as chat messages through `LLM.chat` (vLLM renders and tokenises: what a
   raw vLLM user writes). Raw's texts and token counts must equal the backend's. 1a times
   the prompt encoding alone: one batched call against one call per request; 1b the
   backend's own work outside `LLM.generate` (encoding, `SamplingParams`, converting the
   outputs), timed alone, as a share of raw's time: the bound on the ratio that load on a
   shared machine does not blur.
2. the generation stage: `GenerationContext.generate` (chunks of --chunk-size requests,
   each a shard written to a fresh checkpoint directory) against one raw call over all
   prompts, and against raw calls over the same chunks (what checkpointing alone costs).
3. hf backend: `HFBackend.generate` against batched `model.generate` (left padded, the
   same batch size, requests in the given order), greedy and sampling (temperature 1,
   top_p 0.95, top_k off); greedy texts must be identical, and the script says whether
   they are.

vLLM's CPU build needs `dtype: float32` here (`auto` would mean the checkpoint's own, and
raw vLLM's `auto` is bfloat16 on CPU); `--dtype` sets both sides. Timings on a shared
machine are noisy: read the ratios, and rerun on a quiet one before quoting them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.backends.base import Generation, GenerationRequest, Sampling  # noqa: E402


def build_requests(count: int, temperature: float, max_tokens: int) -> list[GenerationRequest]:
    """Microworld tasks as one-turn chats (what the response methods send)."""
    from distill.microworld.tasks import generate_tasks

    tasks = generate_tasks(count, seed=0)
    return [GenerationRequest(
        id=f"r{i}", sampling=Sampling(temperature=temperature, top_p=0.95,
                                      max_tokens=max_tokens),
        messages=[{"role": "user", "content": f"{t.instruction}\n{t.input}".strip()}])
        for i, t in enumerate(tasks)]


@dataclass
class Timing:
    """One side's timed runs: wall and process CPU seconds, one entry per repeat."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def interleaved(sides: dict[str, Callable[[], Any]], repeats: int) -> dict[str, Timing]:
    """Each side's timings, the sides run in turn, their order alternating by repeat.

    Each side runs once untimed first: on vLLM's CPU build the first steps at new batch
    sizes build their oneDNN kernels (a stage of two 32-request chunks took 6.2 s the
    first time, 0.2 s the next).
    """
    names = list(sides)
    for side in sides.values():
        side()
    times = {name: Timing() for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            wall, cpu = time.perf_counter(), time.process_time()
            sides[name]()
            times[name].cpu.append(time.process_time() - cpu)
            times[name].wall.append(time.perf_counter() - wall)
    return times


def report(title: str, times: dict[str, Timing], ours: str) -> None:
    """Print each side's medians and distill's speed relative to it.

    The ratio is the median over repeats of baseline seconds / distill seconds within a
    repeat (the two ran back to back, so a burst of load elsewhere falls on both), for
    wall time and for this process's CPU time (what the work cost here, less sensitive to
    other processes on a shared machine; it misses work in other processes, such as
    vLLM's engine core when multiprocessing is on, or the GPU's).
    """
    print(f"\n== {title}")
    print(f"  {'':<34} {'wall s':>8} {'cpu s':>8}   distill vs this (wall, cpu)")
    mine = times[ours]
    for name, timing in times.items():
        line = (f"  {name:<34} {statistics.median(timing.wall):8.3f} "
                f"{statistics.median(timing.cpu):8.3f}")
        if name != ours:
            wall = statistics.median(b / a for a, b in zip(mine.wall, timing.wall, strict=True))
            cpu = statistics.median(b / a for a, b in zip(mine.cpu, timing.cpu, strict=True))
            line += f"   {wall:.3f}x  {cpu:.3f}x"
        print(line)


# ---------------------------------------------------------------- 1 + 2: vLLM
def bench_vllm(args: argparse.Namespace, model: str, requests: list[GenerationRequest]) -> None:
    """The vllm backend and the generation stage against raw `LLM.generate`."""
    import torch
    from vllm.inputs import TokensPrompt

    from distill.backends.base import load_backend
    from distill.backends.hf import encode_request, encode_requests
    from distill.generate.context import GenerationContext

    # compiling on CPU takes minutes and gains little for a small model
    eager = args.enforce_eager or not torch.cuda.is_available()
    backend = load_backend("vllm", model=model, dtype=args.dtype, max_model_len=args.max_model_len,
                           max_num_seqs=args.max_num_seqs, enforce_eager=eager)
    llm = backend.llm
    try:
        prompts = [TokensPrompt(prompt_token_ids=backend.encode(r)) for r in requests]
        params = [backend.sampling_params(r) for r in requests]
        conversations = [r.messages for r in requests]
        backend.generate(requests[:8])  # warm-up: first shapes, first template render

        def raw_ids(part: slice = slice(None)) -> list[Any]:
            llm.reset_prefix_cache()
            return llm.generate(prompts[part], params[part], use_tqdm=False)

        def raw_chat() -> list[Any]:
            llm.reset_prefix_cache()
            return llm.chat(conversations, params, use_tqdm=False,
                            chat_template=backend.chat_template)

        def ours() -> list[Generation]:
            llm.reset_prefix_cache()
            return backend.generate(requests)

        tokenizer, template = backend.tokenizer, backend.chat_template
        times = interleaved({
            "encode_requests (one call)": lambda: encode_requests(tokenizer, requests, template),
            "encode_request per request": lambda: [encode_request(tokenizer, r, template)
                                                   for r in requests]}, args.repeats)
        report(f"1a. prompt encoding alone, {len(requests)} chats", times,
               "encode_requests (one call)")

        same_ids = same_outputs(ours(), raw_ids())
        same_chat = same_outputs(ours(), raw_chat())
        times = interleaved({"distill vllm backend": ours, "raw LLM.generate(token ids)": raw_ids,
                             "raw LLM.chat(messages)": raw_chat}, args.repeats)
        report(f"1. vllm backend, {len(requests)} chats, max_tokens {args.max_tokens}",
               times, "distill vllm backend")
        print(f"  outputs equal raw's: token-id prompts {same_ids}, LLM.chat {same_chat}")
        own_work(backend, requests, raw_ids(), statistics.median(
            times["raw LLM.generate(token ids)"].wall), args.repeats)

        size = args.chunk_size
        chunks = [slice(i, i + size) for i in range(0, len(requests), size)]

        def stage() -> list[Generation]:
            llm.reset_prefix_cache()
            with tempfile.TemporaryDirectory() as checkpoints:
                context = GenerationContext(backend=backend, checkpoint_dir=Path(checkpoints),
                                            chunk_size=size)
                return context.generate("bench", requests)

        def raw_chunks() -> list[Any]:
            llm.reset_prefix_cache()
            return [out for part in chunks for out in llm.generate(
                prompts[part], params[part], use_tqdm=False)]

        same_stage = same_outputs(stage(), raw_ids())
        times = interleaved({"distill generation stage": stage,
                               "raw LLM.generate, one call": raw_ids,
                               f"raw LLM.generate per {size}-chunk": raw_chunks}, args.repeats)
        report(f"2. generation stage, chunk size {size} ({len(chunks)} chunks, shards written)",
               times, "distill generation stage")
        print(f"  outputs equal raw's: {same_stage}")
    finally:
        backend.close()


def own_work(backend: Any, requests: list[GenerationRequest], outputs: list[Any],
             raw_seconds: float, repeats: int) -> None:
    """Time what the backend does besides `LLM.generate`, alone, against the engine's time.

    On a shared machine the end-to-end ratio of 1 swings by several per cent from call to
    call; this pure-Python work does not, so it bounds the ratio on a quiet machine:
    raw / (raw + own work).
    """
    def inputs() -> Any:
        backend._check_top_logprobs(requests)
        return backend.engine_inputs(requests)

    times = interleaved({"engine_inputs": inputs,
                         "generations": lambda: backend.generations(requests, outputs)},
                        max(repeats, 15))
    own = sum(statistics.median(t.wall) for t in times.values())
    print(f"\n== 1b. the backend's own work per call, outside LLM.generate, "
          f"{len(requests)} requests")
    for name, timing in times.items():
        print(f"  {name:<34} {1000 * statistics.median(timing.wall):8.1f} ms")
    print(f"  {own / raw_seconds:.2%} of raw LLM.generate's median wall time: distill's "
          f"speed vs raw bounded by {raw_seconds / (raw_seconds + own):.3f}x")


def same_outputs(generations: list[Generation], outputs: list[Any]) -> bool:
    """Whether raw vLLM's outputs have the backend's texts and token counts, in order."""
    raw = [(c.text, len(c.token_ids)) for o in outputs
           for c in sorted(o.outputs, key=lambda c: c.index)]
    return raw == [(g.text, g.completion_tokens) for g in generations]


# ---------------------------------------------------------------- 3: hf
def bench_hf(args: argparse.Namespace, model: str, requests: list[GenerationRequest]) -> None:
    """The hf backend against batched `model.generate`, greedy and sampling."""
    import dataclasses

    import torch

    from distill.backends.base import load_backend

    backend = load_backend("hf", model=model, dtype=args.dtype, batch_size=args.batch_size)
    tokenizer, hf_model = backend.tokenizer, backend.model
    encoded = [backend.encode(r) for r in requests]
    eos = sorted(backend.eos_ids)

    def model_generate(do_sample: bool) -> list[str]:
        texts = []
        for start in range(0, len(encoded), args.batch_size):
            batch = tokenizer.pad({"input_ids": encoded[start:start + args.batch_size]},
                                  padding=True, return_tensors="pt").to(backend.device)
            options = ({"do_sample": True, "temperature": 1.0, "top_p": 0.95, "top_k": 0}
                       if do_sample else {"do_sample": False})
            with torch.inference_mode():
                out = hf_model.generate(**batch, max_new_tokens=args.max_tokens,
                                        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                                        **options)
            width = batch["input_ids"].shape[1]
            texts += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return texts

    try:
        for label, temperature in (("greedy", 0.0), ("sampling", 1.0)):
            mode = [dataclasses.replace(r, sampling=dataclasses.replace(
                r.sampling, temperature=temperature)) for r in requests]

            def ours(mode: list[GenerationRequest] = mode) -> list[Generation]:
                return backend.generate(mode)

            def baseline(do_sample: bool = temperature > 0) -> list[str]:
                return model_generate(do_sample)

            times = interleaved({"distill hf backend": ours,
                                 "batched model.generate": baseline}, args.repeats)
            report(f"3. hf backend, {label}, {len(requests)} chats, batch {args.batch_size}",
                   times, "distill hf backend")
            if temperature == 0:
                same = [g.text for g in ours()] == baseline()
                print(f"  greedy texts identical to model.generate's: {same}")
    finally:
        backend.close()


def main() -> None:
    """Parse the options, resolve the model, run the comparisons asked for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="microworld:teacher",
                        help="checkpoint directory, hub id or microworld:<name>")
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per side")
    parser.add_argument("--chunk-size", type=int, default=64,
                        help="the stage's checkpoint_every (the recipe default is 64)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--enforce-eager", action="store_true",
                        help="no CUDA graphs / compilation (always on CPU)")
    parser.add_argument("--batch-size", type=int, default=32, help="hf batch size (both sides)")
    parser.add_argument("--only", choices=("vllm", "hf"), help="run one backend's comparisons")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 64 requests, 16 tokens, 3 repeats")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.max_tokens, args.repeats = 64, 16, 3
        args.chunk_size = min(args.chunk_size, 32)

    import distill.microworld.plugin  # noqa: F401 - registers the microworld: scheme
    from distill.models import model_path

    model = model_path(args.model)
    print(f"model {args.model} ({model}), dtype {args.dtype}, {args.requests} requests, "
          f"max_tokens {args.max_tokens}, {args.repeats} repeats per side (medians)")
    if args.only in (None, "vllm"):
        bench_vllm(args, model, build_requests(args.requests, 1.0, args.max_tokens))
    if args.only in (None, "hf"):
        bench_hf(args, model, build_requests(args.requests, 1.0, args.max_tokens))


if __name__ == "__main__":  # vLLM spawns its workers: the guard is required
    main()
