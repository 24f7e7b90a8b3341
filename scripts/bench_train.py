"""SFT throughput and peak memory: TRL's padded batches against padding-free ones.

    .venv/bin/python scripts/bench_train.py                      # CPU: tiny Qwen2, 3 repeats
    .venv/bin/python scripts/bench_train.py --dry-run            # CPU, seconds: the code path
    bash scripts/gpu_check.sh --bench-train                      # GPU: Qwen2.5-1.5B shape, MFU
    python scripts/bench_train.py --model qwen2.5-1.5b --repeats 1 --out bench.json   # the same

The same examples (chats whose answer lengths follow a seeded lognormal, as Alpaca's
answers do; prompts uniform) train for one epoch through distill's own SFT path
(`distill.train.sft.prepare_sft`, LoRA, distill's defaults, gradient checkpointing off) in
three arms, each in a fresh process:

    padded        TRL's default: a batch is per_device_train_batch_size examples, padded
    padding_free  the same batches, flattened into one row (padding_free, max_length null)
    packed        packing: true (bfd): rows of up to max_length tokens, trained padding-free

Attention: sdpa on a CPU; on a GPU flash_attention_2 when flash_attn imports, else sdpa
(--attention overrides). tokens/s counts the non-padding tokens TRL logs (num_tokens) over
the steps after the first (which pays for start-up). Peak memory: on a GPU
torch.cuda.max_memory_allocated; on a CPU the process's peak RSS (ru_maxrss) and its rise
above the RSS just before training (model, data and libraries already loaded). Arms run
interleaved, in a rotating order, `--repeats` times; the table gives medians and each
arm's median ratio to padded within the same repeat, so a busy machine shifts all arms
alike. Model FLOPs utilisation (GPU): per example of L tokens, (4N + 6A) L for the matmuls
(N frozen base matmul weights: forward and backward to the activations, 2N each; A adapter
weights, 6A with their weight gradient) plus 6 x layers x d_q x L(L+1) for causal
attention scores (QK^T and AV, 2 d_q FLOPs per visible query-key pair each, forward, and
twice that backward), over the timed seconds and the GPU's dense bf16 peak
(scripts/gpu_check.py's table and its `train_flops_per_token`, the one formula both use).
Padding is not counted: it is waste, not model FLOPs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):  # distill from this checkout, and gpu_check's models
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import gpu_check  # noqa: E402  (after the path)

ARMS: dict[str, dict[str, Any]] = {
    "padded": {},
    "padding_free": {"padding_free": True, "max_length": None},  # TRL: no max_length with it
    "packed": {"packing": True},
}
# (examples, batch, max_length, answer words: lognormal median and sigma, cap) per device
CPU_WORK = dict(examples=128, batch=8, max_length=256, median_words=30, sigma=0.8,
                max_words=90)
GPU_WORK = dict(examples=1024, batch=8, max_length=1024, median_words=110, sigma=0.8,
                max_words=400)
DRY_WORK = dict(examples=24, batch=4, max_length=320, median_words=12, sigma=0.8,
                max_words=40)


def answer_words(rng: random.Random, work: dict[str, Any]) -> int:
    """Words of one answer: lognormal around the median, 4 words at least, capped."""
    return max(4, min(work["max_words"],
                      round(rng.lognormvariate(math.log(work["median_words"]), work["sigma"]))))


def write_chats(path: Path, work: dict[str, Any], words_pool: list[str], seed: int) -> Path:
    """The benchmark's examples: short prompts, lognormal answers (distill.records JSONL)."""
    from distill.records import Example, write_jsonl

    rng = random.Random(seed)
    examples = []
    for i in range(work["examples"]):
        prompt = " ".join(rng.choice(words_pool) for _ in range(rng.randint(5, 30)))
        answer = " ".join(rng.choice(words_pool) for _ in range(answer_words(rng, work)))
        examples.append(Example(id=f"b{i}", instruction=prompt, output=answer))
    write_jsonl(path, examples)
    return path


def fitting_chats(path: Path, model_dir: Path, work: dict[str, Any],
                  words_pool: list[str]) -> tuple[Path, list[int]]:
    """The chats that fit max_length whole, and their lengths: every arm trains them all.

    The padding_free arm cannot truncate (TRL wants max_length null with it), so a longer
    chat would give it more tokens to train than the others.
    """
    from distill.records import iter_jsonl, write_jsonl

    write_chats(path, work, words_pool, seed=7)
    lengths = gpu_check.example_lengths(model_dir, path)
    rows = list(iter_jsonl(path))
    kept = [(row, n) for row, n in zip(rows, lengths, strict=True) if n <= work["max_length"]]
    write_jsonl(path, [row for row, _ in kept])
    return path, [n for _, n in kept]


# ---------------------------------------------------------------------------------------
# One arm, in its own process (so that its peak memory is its own)


def worker(config_path: str) -> int:
    """Train one arm for one epoch and write its timings, tokens and peak memory as JSON."""
    import torch
    from transformers import TrainerCallback

    from distill.train.config import LoraSettings, TrainSpec
    from distill.train.sft import prepare_sft

    config = json.loads(Path(config_path).read_text())
    cuda = torch.cuda.is_available() and config["device"] == "cuda"
    spec = TrainSpec(model=config["model_dir"], lora=LoraSettings(), args=config["args"],
                     data_path=config["data"], output_dir=config["out"], seed=0, quiet=True)
    prepared = prepare_sft(spec)
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

    prepared.trainer.add_callback(Stamp())
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stamps.append(time.perf_counter())
    prepared.trainer.train()
    tokens = [int(e["num_tokens"]) for e in prepared.trainer.state.log_history
              if "num_tokens" in e and "loss" in e]
    record = {"stamps": stamps, "tokens": tokens, "steps": len(stamps) - 1,
              "rss_before": rss_before,
              "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
              "peak_cuda": torch.cuda.max_memory_allocated() if cuda else None,
              "trainable_params": sum(p.numel() for p in prepared.trainer.model.parameters()
                                      if p.requires_grad)}
    Path(config["result"]).write_text(json.dumps(record))
    return 0


def steady_rate(record: dict[str, Any]) -> tuple[float, int, float]:
    """(tokens/s, tokens, seconds) over the steps after the first."""
    stamps, tokens = record["stamps"], record["tokens"]
    if len(tokens) < 2:  # one step: nothing left after the start-up step
        seconds, count = stamps[-1] - stamps[0], tokens[-1]
    else:
        seconds, count = stamps[-1] - stamps[1], tokens[-1] - tokens[0]
    return count / seconds, count, seconds


# ---------------------------------------------------------------------------------------
# The benchmark


def run_arm(arm: str, base: dict[str, Any], work_dir: Path, repeat: int,
            timeout_s: float) -> dict[str, Any]:
    out = work_dir / f"{arm}-{repeat}"
    config = {**base, "args": {**base["args"], **ARMS[arm]}, "out": str(out / "train"),
              "result": str(out / "result.json")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker",
                           str(out / "config.json")], capture_output=True, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(f"arm {arm} failed:\n{done.stderr[-3000:]}")
    return json.loads((out / "result.json").read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny", choices=["tiny", *gpu_check.MODELS],
                        help="tiny (CPU) or a real shape with random weights (GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attention", help="attn_implementation (default: see the docstring)")
    parser.add_argument("--dry-run", action="store_true",
                        help="a few examples, one repeat: that the code runs, not a measure")
    parser.add_argument("--out", help="JSON of every run and the table")
    parser.add_argument("--timeout-s", type=float, default=600, help="per arm and repeat")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    import torch

    cuda = torch.cuda.is_available() and args.model != "tiny" and not args.dry_run
    if args.model != "tiny" and not cuda:
        parser.error(f"--model {args.model} needs a CUDA GPU; use --model tiny on a CPU")
    work = DRY_WORK if args.dry_run else GPU_WORK if cuda else CPU_WORK
    repeats = 1 if args.dry_run else args.repeats
    attention = args.attention or ("flash_attention_2" if cuda and _imports("flash_attn")
                                   else "sdpa")
    shape = gpu_check.MODELS[args.model] if cuda else gpu_check.TINY_MODELS["qwen2.5-0.5b"]
    dtype = "bfloat16" if cuda else "float32"
    model_init = {"attn_implementation": attention, **({"dtype": dtype} if cuda else {})}
    meta = gpu_check.environment(not cuda)
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        work_dir = Path(tmp)
        tokenizer = gpu_check.make_tokenizer(gpu_check.GPU_WORK if cuda else gpu_check.TINY_WORK)
        model_dir = gpu_check.build_model(shape, tokenizer, work_dir / "model",
                                          "cuda" if cuda else "cpu", dtype)
        words = gpu_check.random_words((gpu_check.GPU_WORK if cuda else gpu_check.TINY_WORK).words)
        data, lengths = fitting_chats(work_dir / "train.jsonl", model_dir, work, words)
        _, matmul = gpu_check.count_params(gpu_check.qwen2_config(shape, tokenizer))
        base = {"model_dir": str(model_dir), "data": str(data), "device": "cuda" if cuda else "cpu",
                "args": {"num_train_epochs": 1, "per_device_train_batch_size": work["batch"],
                         "max_length": work["max_length"], "gradient_checkpointing": False,
                         "logging_steps": 1, "lr_scheduler_type": "constant",
                         "model_init_kwargs": model_init, **({"bf16": True} if cuda else {})}}
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
        order = list(ARMS)
        for repeat in range(repeats):
            for arm in order[repeat % len(order):] + order[:repeat % len(order)]:
                runs[arm].append(run_arm(arm, base, work_dir, repeat, args.timeout_s))
                print(f"bench_train: repeat {repeat} {arm}: "
                      f"{steady_rate(runs[arm][-1])[0]:,.0f} tokens/s", flush=True)
    peak = gpu_check.peak_bf16_flops(meta["device"]) if cuda else None
    adapters = runs["padded"][0]["trainable_params"]
    per_token = gpu_check.train_flops_per_token(matmul, adapters, shape.layers, shape.hidden,
                                                lengths)
    rows = summarize(runs, cuda, per_token, peak)
    report = {"meta": {**meta, "model": shape.__dict__, "attention": attention, "work": work,
                       "repeats": repeats, "matmul_params": matmul, "adapter_params": adapters,
                       "flops_per_token": per_token, "examples": len(lengths),
                       "mean_tokens": statistics.mean(lengths),
                       "padding_share_padded": padding_share(lengths, work["batch"])},
              "rows": rows, "runs": runs}
    print(table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))
    return 0


def padding_share(lengths: list[int], batch: int) -> float:
    """Share of padding in padded batches of the examples in order (TRL shuffles: about)."""
    padded = sum(max(lengths[i:i + batch]) * len(lengths[i:i + batch])
                 for i in range(0, len(lengths), batch))
    return 1 - sum(lengths) / padded


def summarize(runs: dict[str, list[dict[str, Any]]], cuda: bool, per_token: float,
              peak: float | None) -> list[dict[str, Any]]:
    """Per arm: median tokens/s, memory and MFU, and median ratios to padded per repeat."""
    memory = (lambda r: r["peak_cuda"]) if cuda else (lambda r: r["peak_rss"])
    rows = []
    for arm, records in runs.items():
        rates = [steady_rate(r)[0] for r in records]
        speedups = [steady_rate(r)[0] / steady_rate(p)[0]
                    for r, p in zip(records, runs["padded"], strict=True)]
        memory_ratios = [memory(r) / memory(p) for r, p in zip(records, runs["padded"],
                                                               strict=True)]
        rows.append({
            "arm": arm, "steps": records[0]["steps"],
            "tokens_per_s": statistics.median(rates),
            "speedup": statistics.median(speedups),
            "peak_memory_gib": statistics.median(memory(r) for r in records) / 2**30,
            "memory_ratio": statistics.median(memory_ratios),
            "rss_rise_gib": None if cuda else statistics.median(
                (r["peak_rss"] - r["rss_before"]) for r in records) / 2**30,
            "mfu": None if peak is None else statistics.median(rates) * per_token / peak,
        })
    return rows


def table(report: dict[str, Any]) -> str:
    meta = report["meta"]
    memory = "max_memory_allocated" if meta["device_count"] else "peak RSS (rise in training)"
    lines = [f"bench_train {meta['date']} device: {meta['device']} attention: "
             f"{meta['attention']} model: {meta['model']['name']} commit {meta['commit']}",
             f"{meta['examples']} examples, {meta['mean_tokens']:.0f} tokens on average, "
             f"padding in padded batches ~{100 * meta['padding_share_padded']:.0f} %; "
             f"{meta['repeats']} repeats, medians",
             f"{'arm':<13} {'steps':>5} {'tokens/s':>10} {'x padded':>8} "
             f"{'peak GiB':>9} {'x padded':>8} {'MFU':>6}  memory: {memory}"]
    for row in report["rows"]:
        rise = "" if row["rss_rise_gib"] is None else f" ({row['rss_rise_gib']:.2f})"
        mfu = "n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f}%"
        lines.append(f"{row['arm']:<13} {row['steps']:>5} {row['tokens_per_s']:>10,.0f} "
                     f"{row['speedup']:>8.2f} {row['peak_memory_gib']:>9.2f} "
                     f"{row['memory_ratio']:>8.2f} {mfu:>6}{rise}")
    lines.append(f"MFU: ((4N + 6A) + 6 x layers x d_q x mean L(L+1)/L) x tokens/s / peak = "
                 f"{meta['flops_per_token']:.3g} FLOPs/token x tokens/s / peak")
    return "\n".join(lines)


def _imports(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    sys.exit(main())
