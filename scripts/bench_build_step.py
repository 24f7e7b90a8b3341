"""Where the microworld build's time goes: one training step of its teacher, several ways.

The cold quickstart is bound by the build (docs/performance.md), and the build by the
teacher's and student's training steps. This times one step of the teacher's shape
(`BuildConfig().teacher`: 2 layers, hidden 128, a batch of 16 x 64 tokens) as build 6 ran
it (AdamW, fp32, every usable core, one model after the other) against the alternatives
one might try, each in a fresh process, interleaved, and prints the ratio of each to
build 6's way, then the throughput of two steps side by side against it:

- one thread (so two models could train side by side, one per core);
- one thread, with a second such process training beside it (what the build does since
  build 7: teacher and student side by side), timed in the first;
- AdamW with `fused=True` (the build's since build 7), on all cores and on one thread;
- bfloat16 autocast (AMX or AVX-512 BF16 where the CPU has them).

    .venv/bin/python scripts/bench_build_step.py            # about a minute on 2 cores
    .venv/bin/python scripts/bench_build_step.py --steps 10 --repeats 1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

WAYS = {  # name: (threads, fused AdamW, bf16 autocast); threads 0 = every usable core
    "build 6 (fp32, all cores)": (0, False, False),
    "one thread": (1, False, False),
    "fused AdamW": (0, True, False),
    "fused AdamW, one thread": (1, True, False),
    "bf16 autocast": (0, False, True),
}
BESIDE = "fused, one thread, beside"  # WAYS' "fused AdamW, one thread", two at once


def step_ms(threads: int, fused: bool, bf16: bool, steps: int) -> float:
    """Mean ms per step over `steps` steps after 5 warm-up steps, in this process."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from distill.microworld.build import BuildConfig
    from distill.microworld.train import usable_cpus

    spec = BuildConfig().teacher
    torch.manual_seed(0)
    torch.set_num_threads(threads or usable_cpus())
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=BuildConfig().vocab_size, hidden_size=spec.hidden_size,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads, intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_length))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, fused=fused)
    ids = torch.randint(0, BuildConfig().vocab_size, (16, spec.batch_tokens // 16))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - started) / steps * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per way, interleaved")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        print(json.dumps(step_ms(*json.loads(options.worker), options.steps)))
        return 0
    times: dict[str, list[float]] = {name: [] for name in [*WAYS, BESIDE]}
    for repeat in range(options.repeats):
        names = list(times)
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            way = WAYS.get(name, WAYS["fused AdamW, one thread"])
            workers = [subprocess.Popen([sys.executable, __file__, "--steps",
                                         str(options.steps), "--worker", json.dumps(way)],
                                        stdout=subprocess.PIPE, text=True)
                       for _ in range(2 if name == BESIDE else 1)]
            outs = [worker.communicate()[0] for worker in workers]
            if any(worker.returncode for worker in workers):
                raise SystemExit(f"the {name!r} worker failed")
            times[name].append(float(outs[0].strip().splitlines()[-1]))
    base = statistics.median(times["build 6 (fp32, all cores)"])
    print(f"teacher step, {options.steps} steps x {options.repeats} repeats (medians)")
    print(f"{'way':<26}{'ms/step':>10}{'speed vs build 6':>18}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<26}{median:>10.1f}{base / median:>17.2f}x")
    beside = statistics.median(times[BESIDE])
    print(f"two steps side by side, one thread each: {2 * base / beside:.2f}x build 6's "
          "throughput")
    return 0


if __name__ == "__main__":
    sys.exit(main())
