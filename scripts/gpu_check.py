"""One short GPU check: generation and LoRA SFT throughput of Qwen2.5-sized students.

    bash scripts/gpu_check.sh                     # a GPU machine: under 8 minutes, one table
    bash scripts/gpu_check.sh --tiny              # CPU, tiny models, the same code paths
    python scripts/gpu_check.py --tiny --out /tmp/gpu_check.json   # without the set-up

Models of real sizes (Qwen2.5-0.5B and -1.5B, shapes below) get random weights built from
their configs in code, and a byte-level BPE tokenizer trained here (distill.tinymodel), so
nothing comes from a hub. For each model, within the time left:

1. generate: the prompts of one batch through distill's hf backend (distill/backends/hf.py,
   bf16): generated tokens/s and peak GPU memory;
2. train: LoRA SFT through distill's training path (`launch_training` -> TRL SFTTrainer,
   then the adapter is saved and merged) under `accelerate launch` with the repo's own
   configs (single_gpu.yaml; ddp.yaml with --num_processes N when there are N > 1 GPUs),
   on a JSONL of random-length chats, with distill's SFT defaults (TRL's: fp32 master
   weights, bf16 autocast, gradient checkpointing) unless --train-args overrides them:
   training tokens/s (non-padding tokens, all ranks, steps after the warm-up), peak GPU
   memory (the largest rank's) and MFU.

MFU counts model FLOPs, not hardware FLOPs (`train_flops_per_token`, which
scripts/bench_train.py uses too). Per trained token a matrix of P weights costs 2P
forward, 2P backward to the activations (needed to reach earlier adapters) and 2P more
for its weight gradient only if it trains. So a LoRA step costs 4*N + 6*A FLOPs per token,
N = the base's matmul weights (every linear layer, lm_head once even though tied; the
embedding lookup is free), A = the adapters' weights; a full fine-tune is the usual 6*N.
Causal attention adds, per example of L tokens, 6 x layers x d_q x L(L+1): QK^T and AV,
2 d_q FLOPs per visible query-key pair each (L(L+1)/2 pairs) forward, twice that backward;
averaged over the trained examples' token lengths (the chat template's, cut at
max_length). Gradient checkpointing's recomputed forward is not counted (so MFU is a
lower bound of the hardware's use), and neither are padding tokens. MFU = those FLOPs per
second / (processes x the GPU's dense bf16 peak): H100 SXM and H200 989 TFLOPS
(PEAK_BF16_TFLOPS); an unknown device or the CPU prints n/a.

Each section has its own time budget and is skipped, with a note, when less time is left
than it needs; a training subprocess that overruns its budget is stopped, so the whole
check ends within --budget-s (480 s by default, counted from $GPU_CHECK_STARTED, which
gpu_check.sh sets before it prepares the environment). The JSON goes to --out, else
$OUT/gpu_check.json when $OUT is set, else ./gpu_check.json; every subprocess's output to
gpu_check.log beside it. Exit status: 0 when no section failed (skipped ones are fine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # distill is imported from this checkout, installed or not
    sys.path.insert(0, str(ROOT))

BUDGET_S = 480.0  # the whole check, set-up included: 8 minutes
RESERVE_S = 10.0  # kept back for the report after the last section

# ---------------------------------------------------------------------------------------
# Models: shapes from the models' config.json (Qwen/Qwen2.5-0.5B, Qwen/Qwen2.5-1.5B); the
# rest is transformers' Qwen2Config default, which is Qwen2's (vocab 151936, SiLU, RMSNorm
# eps 1e-6, q/k/v biases; the RoPE base, 1e6 there, changes no cost and is left at the
# default). They have 494,032,768 and 1,543,714,304 parameters, as the model cards say.


@dataclass(frozen=True)
class Shape:
    """The numbers of a Qwen2 decoder that decide its cost."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool = True


MODELS = {
    "qwen2.5-0.5b": Shape("qwen2.5-0.5b", 896, 24, 14, 2, 4864, 151936),
    "qwen2.5-1.5b": Shape("qwen2.5-1.5b", 1536, 28, 12, 2, 8960, 151936),
}
# --tiny: the same architecture, small enough for two CPU cores in seconds.
TINY_MODELS = {
    "qwen2.5-0.5b": Shape("tiny-0.5b", 64, 2, 2, 1, 128, 512),
    "qwen2.5-1.5b": Shape("tiny-1.5b", 96, 3, 3, 1, 192, 512),
}

# Dense bf16 tensor-core peaks (no sparsity) from NVIDIA's datasheets, in TFLOPS; the
# first name contained in torch.cuda.get_device_name() wins.
PEAK_BF16_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM: "NVIDIA H100 80GB HBM3"
    ("A100", 312.0),
)


def peak_bf16_flops(device_name: str) -> float | None:
    """The device's dense bf16 peak in FLOP/s, or None when it is not in the table."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops * 1e12
    return None


def train_flops_per_token(matmul_params: int, adapter_params: int, layers: int, d_q: int,
                          lengths: list[int]) -> float:
    """Model FLOPs of one trained token: frozen matmuls, trained weights, causal attention.

    The one MFU formula of gpu_check.py and bench_train.py (see the module docstring).

    Args:
        matmul_params: frozen matmul weights, 4 FLOPs each (forward, backward to the
            activations); 0 for a full fine-tune.
        adapter_params: trained weights, 6 each (their weight gradient too): the adapters,
            or every matmul weight of a full fine-tune.
        layers: decoder layers.
        d_q: query width (heads x head size).
        lengths: the trained examples' token counts; their causal attention,
            6 x layers x d_q x L(L+1) per example, is averaged over their tokens.
    """
    attention = 6 * layers * d_q * sum(n * (n + 1) for n in lengths) / sum(lengths)
    return 4 * matmul_params + 6 * adapter_params + attention


def example_lengths(model_dir: Path, data: Path) -> list[int]:
    """Tokens of each example as SFT renders it (the chat template), for the FLOP count."""
    from transformers import AutoTokenizer

    from distill.train.sft import read_conversations

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [len(tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"])
            for c in read_conversations(data)]


def attention_shape(model_dir: Path) -> tuple[int, int]:
    """(layers, d_q) of a checkpoint, from its config.json."""
    config = json.loads((model_dir / "config.json").read_text())
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return config["num_hidden_layers"], heads * head_dim


def qwen2_config(shape: Shape, tokenizer: Any):
    """A transformers `Qwen2Config` of this shape, with the tokenizer's special tokens."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        max_position_embeddings=32768,
        tie_word_embeddings=shape.tied,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def count_params(config) -> tuple[int, int]:
    """(all parameters, matmul weights) of a model of `config`, built on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())  # a tied weight counts once
    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return total, matmul


def build_model(shape: Shape, tokenizer: Any, out_dir: Path, device: str, dtype: str) -> Path:
    """Write a randomly initialised checkpoint of `shape`, with the tokenizer, to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    config = qwen2_config(shape, tokenizer)
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs: seconds, not a minute of CPU
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del model
    free_accelerator_memory()
    return out_dir


# ---------------------------------------------------------------------------------------
# Data: random words, a tokenizer trained on them, prompts and chats of random lengths.


@dataclass(frozen=True)
class Workload:
    """How much work each section does (GPU sizes, or --tiny's)."""

    tokenizer_vocab: int
    words: int
    gen_requests: int
    gen_prompt_words: tuple[int, int]
    gen_max_tokens: int
    train_steps: int
    warmup_steps: int  # steps left out of the steady-state throughput
    batch_size: int
    max_length: int
    user_words: tuple[int, int]
    assistant_words: tuple[int, int]
    # (minimum seconds to start, budget) per section
    generate_s: tuple[float, float]
    train_s: tuple[float, float]


# About 2.3 tokens a word with this tokenizer: chats of 60 to 1,000 tokens (about 500 on
# average, so padding to the longest of a batch of 8 costs something, as in real data).
GPU_WORK = Workload(tokenizer_vocab=4096, words=3000, gen_requests=32,
                    gen_prompt_words=(16, 96), gen_max_tokens=256, train_steps=40,
                    warmup_steps=5, batch_size=8, max_length=1024, user_words=(8, 96),
                    assistant_words=(16, 320), generate_s=(45, 100), train_s=(90, 200))
TINY_WORK = Workload(tokenizer_vocab=512, words=200, gen_requests=4, gen_prompt_words=(4, 12),
                     gen_max_tokens=16, train_steps=6, warmup_steps=2, batch_size=2,
                     max_length=96, user_words=(4, 20), assistant_words=(8, 40),
                     generate_s=(5, 60), train_s=(10, 120))


def random_words(count: int, seed: int = 0) -> list[str]:
    """`count` distinct lowercase pseudo-words (2 to 9 letters)."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < count:
        words.add("".join(rng.choice("abcdefghijklmnopqrstuvwxyz")
                          for _ in range(rng.randint(2, 9))))
    return sorted(words)


def random_text(rng: random.Random, words: list[str], bounds: tuple[int, int]) -> str:
    """Between bounds[0] and bounds[1] random words."""
    return " ".join(rng.choice(words) for _ in range(rng.randint(*bounds)))


def make_tokenizer(work: Workload):
    """A byte-level BPE tokenizer with a chat template, trained on the random words."""
    from distill.tinymodel import train_tokenizer

    words = random_words(work.words)
    rng = random.Random(1)
    corpus = [random_text(rng, words, (20, 60)) for _ in range(400)]
    return train_tokenizer(corpus, vocab_size=work.tokenizer_vocab)


def write_chats(path: Path, work: Workload, count: int, seed: int) -> Path:
    """`count` user / assistant chats of random lengths, as distill.records writes them."""
    from distill.records import Example, write_jsonl

    words = random_words(work.words)
    rng = random.Random(seed)
    write_jsonl(path, [Example(id=f"chat{i}", instruction=random_text(rng, words, work.user_words),
                               output=random_text(rng, words, work.assistant_words))
                       for i in range(count)])
    return path


# ---------------------------------------------------------------------------------------
# Budget and results


@dataclass
class Section:
    """One measured line of the table (and one entry of the JSON's `sections`)."""

    name: str  # generate | train
    model: str
    processes: int = 1
    status: str = "pending"  # ok | skipped | failed
    note: str = ""
    tokens_per_s: float | None = None
    peak_memory_gib: float | None = None
    mfu: float | None = None
    wall_s: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Budget:
    """Seconds left before the deadline, and what a section may spend of them."""

    def __init__(self, started: float, total_s: float) -> None:
        self.deadline = started + total_s

    def left(self) -> float:
        return self.deadline - time.time() - RESERVE_S

    def allows(self, section: Section, need_s: float) -> bool:
        """Whether `section` can start; if not, it is marked skipped with the reason."""
        left = self.left()
        if left >= need_s:
            return True
        section.status = "skipped"
        section.note = f"skipped: {max(left, 0):.0f} s left, it needs {need_s:.0f} s"
        return False

    def cap(self, budget_s: float) -> float:
        """A section's time limit: its own budget, or less if the deadline comes first."""
        return max(1.0, min(budget_s, self.left()))


# ---------------------------------------------------------------------------------------
# Generation: in this process, through HFBackend


def run_generation(section: Section, model_dir: Path, work: Workload, device: str,
                   dtype: str) -> None:
    """Time one batch of prompts through the hf backend, after a short warm-up batch."""
    import torch

    from distill.backends.base import GenerationRequest, Sampling
    from distill.backends.hf import HFBackend

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    backend = HFBackend(model=str(model_dir), dtype=dtype, batch_size=work.gen_requests,
                        device=device, seed=0)
    try:
        words = random_words(work.words)
        rng = random.Random(2)

        def requests(count: int, max_tokens: int, tag: str) -> list[GenerationRequest]:
            sampling = Sampling(temperature=0.7, max_tokens=max_tokens)
            return [GenerationRequest(id=f"{tag}{i}", sampling=sampling, messages=[
                {"role": "user", "content": random_text(rng, words, work.gen_prompt_words)}])
                for i in range(count)]

        backend.generate(requests(min(4, work.gen_requests), 8, "warm"))
        batch = requests(work.gen_requests, work.gen_max_tokens, "p")
        synchronize(cuda)
        started = time.perf_counter()
        generations = backend.generate(batch)
        synchronize(cuda)
        seconds = time.perf_counter() - started
    finally:
        backend.close()
    tokens = sum(g.completion_tokens for g in generations)
    section.tokens_per_s = tokens / seconds
    section.peak_memory_gib = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    section.details = {"requests": len(batch), "batch_size": work.gen_requests,
                       "generated_tokens": tokens, "max_tokens": work.gen_max_tokens,
                       "prompt_tokens": sum(g.prompt_tokens for g in generations),
                       "seconds": round(seconds, 3), "dtype": dtype}
    section.status = "ok"


def synchronize(cuda: bool) -> None:
    if cuda:
        import torch

        torch.cuda.synchronize()


def free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------
# Training: `accelerate launch` of this script's --train-worker, which trains through
# distill.train.launch.launch_training (one process or N ranks)


def run_training(section: Section, model_dir: Path, work_dir: Path, work: Workload,
                 processes: int, tiny: bool, matmul_params: int, peak_flops: float | None,
                 train_args: dict[str, Any], timeout_s: float, log: Path) -> None:
    """Train the model as distill's train stage does, and read the throughput back."""
    from distill.train.config import LoraSettings, TrainSpec

    job = work_dir / f"train-{processes}"
    shutil.rmtree(job, ignore_errors=True)
    job.mkdir(parents=True)
    examples = work.train_steps * work.batch_size * processes  # every rank: fresh chats
    args = {"max_steps": work.train_steps, "per_device_train_batch_size": work.batch_size,
            "max_length": work.max_length, "save_strategy": "no", **train_args,
            "logging_steps": 1}  # the throughput is read from every step's token count
    data = write_chats(job / "train.jsonl", work, examples, seed=3)
    # what attention costs depends on the lengths trained: TRL cuts at max_length
    lengths = [min(n, work.max_length) for n in example_lengths(model_dir, data)]
    spec = TrainSpec(model=str(model_dir), lora=LoraSettings(), args=args,
                     data_path=str(data),
                     output_dir=str(job / "out"), progress_path=str(job / "progress.jsonl"),
                     seed=0, quiet=True)
    spec_path = spec.save(job / "train_spec.json")
    command, env = accelerate_command(processes, tiny, [str(Path(__file__).resolve()),
                                                        "--train-worker", str(spec_path)])
    started = time.perf_counter()
    code = run_logged(command, env, timeout_s, log, f"train {section.model} x{processes}")
    section.wall_s = time.perf_counter() - started
    if code is None:
        section.status, section.note = "failed", f"stopped after its budget of {timeout_s:.0f} s"
        return
    if code != 0:
        section.status, section.note = "failed", f"exit code {code} (see {log.name})"
        return
    ranks = [json.loads(p.read_text()) for p in job.glob("rank*.json")]
    main = next(r for r in ranks if r["rank"] == 0)
    steps = {}  # step -> (seconds on rank 0's clock, cumulative tokens of all ranks)
    stamps = {int(k): v for k, v in main["stamps"].items()}
    for line in (job / "progress.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "num_tokens" in record and record["step"] in stamps:
            steps.setdefault(record["step"], (stamps[record["step"]], record["num_tokens"]))
    last = max(steps)
    first = min((s for s in steps if s >= work.warmup_steps), default=min(steps))
    if last <= first:
        section.status, section.note = "failed", f"only {len(steps)} timed steps"
        return
    (t0, n0), (t1, n1) = steps[first], steps[last]
    result = main["result"]
    adapter_params = int(result["trainable_params"])
    layers, d_q = attention_shape(model_dir)
    per_token = train_flops_per_token(matmul_params, adapter_params, layers, d_q, lengths)
    flops = per_token * (n1 - n0) / (t1 - t0)
    section.tokens_per_s = (n1 - n0) / (t1 - t0)
    peaks = [r["peak_bytes"] for r in ranks if r["peak_bytes"] is not None]
    section.peak_memory_gib = max(peaks) / 2**30 if peaks else None
    section.mfu = flops / (processes * peak_flops) if peak_flops else None
    section.details = {
        "steps_timed": f"{first}..{last}", "tokens_timed": n1 - n0,
        "seconds_timed": round(t1 - t0, 3), "tokens_seen": result["tokens_seen"],
        "whole_run_tokens_per_s": round(n1 / (t1 - stamps[0]), 1) if 0 in stamps else None,
        "num_processes": result["num_processes"], "ranks_in_sync": result["ranks_in_sync"],
        "first_loss": result["first_loss"], "final_loss": result["final_loss"],
        "trainable_params": adapter_params, "matmul_params": matmul_params,
        "flops_per_token": per_token, "attention_layers": layers, "attention_d_q": d_q,
        "mean_example_tokens": round(sum(lengths) / len(lengths), 1),
        "train_args": result["args"],
    }
    section.status = "ok"


def accelerate_command(processes: int, tiny: bool,
                       script: list[str]) -> tuple[list[str], dict[str, str]]:
    """`accelerate launch` with the repo's config for this many processes, and its env."""
    configs = ROOT / "recipes" / "accelerate"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    if tiny:
        config = configs / ("cpu.yaml" if processes == 1 else "cpu_2proc.yaml")
        env["ACCELERATE_USE_CPU"] = "true"  # the multi-process launcher drops use_cpu
    else:
        config = configs / ("single_gpu.yaml" if processes == 1 else "ddp.yaml")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    if processes > 1:
        command += ["--num_processes", str(processes), "--main_process_port", str(free_port())]
    return command + script, env


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_logged(command: list[str], env: dict[str, str], timeout_s: float, log: Path,
               title: str) -> int | None:
    """Run `command` with its output appended to `log`; None if it ran out of time.

    It runs in a session of its own, so that the launcher and its ranks stop together.
    """
    with log.open("a", encoding="utf-8") as out:
        out.write(f"\n===== {title}: {' '.join(command)}\n")
        out.flush()
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            out.write(f"===== {title}: stopped after {timeout_s:.0f} s\n")
            return None


def train_worker(spec_path: str) -> int:
    """One rank under `accelerate launch`: train through launch_training, time each step.

    Writes rank<R>.json beside the spec: the rank's peak GPU memory, and on rank 0 the
    time of every step (the progress callback runs on the main process only) and the
    training result.
    """
    import torch

    from distill.train.config import TrainSpec
    from distill.train.launch import launch_training

    spec_path_ = Path(spec_path)
    spec = TrainSpec.load(spec_path_)
    stamps: dict[int, float] = {}
    cuda = torch.cuda.is_available() and not os.environ.get("ACCELERATE_USE_CPU")
    origin = time.perf_counter()

    def progress(step: int, total: int) -> None:
        stamps.setdefault(step, time.perf_counter() - origin)

    result = launch_training(spec, None, progress=progress)
    rank = int(os.environ.get("RANK", "0"))
    record = {"rank": rank, "stamps": stamps, "result": result.model_dump(mode="json"),
              # the high-water mark of training: merging the adapter runs on the CPU
              "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None}
    (spec_path_.parent / f"rank{rank}.json").write_text(json.dumps(record))
    return 0


# ---------------------------------------------------------------------------------------
# Environment and report


def environment(tiny: bool) -> dict[str, Any]:
    """Device, versions and date: printed above the table, stored in the JSON."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    cuda = torch.cuda.is_available() and not tiny
    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    device = torch.cuda.get_device_name(0) if cuda else f"cpu ({platform.processor() or 'cpu'})"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                            capture_output=True).stdout.strip() or None
    peak = None if tiny else peak_bf16_flops(device)
    return {"device": device, "device_count": torch.cuda.device_count() if cuda else 0,
            "peak_bf16_tflops": None if peak is None else peak / 1e12,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "versions": versions, "commit": commit,
            "tiny": tiny, "host": platform.node()}


def table(meta: dict[str, Any], sections: list[Section]) -> str:
    """The report: a header with device, versions and date, then one line per section."""
    v = meta["versions"]
    count = f" x{meta['device_count']}" if meta["device_count"] > 1 else ""
    lines = [f"gpu_check {meta['date']}  device: {meta['device']}{count}"
             f"  torch {v['torch']}  transformers {v['transformers']}  trl {v['trl']}"
             f"  peft {v['peft']}  commit {meta['commit']}"]
    header = ("section", "model", "procs", "tokens/s", "peak GiB", "MFU", "time s", "note")
    rows = [header]
    for s in sections:
        rows.append((s.name, s.model, str(s.processes),
                     "-" if s.tokens_per_s is None else f"{s.tokens_per_s:,.0f}",
                     "-" if s.peak_memory_gib is None else f"{s.peak_memory_gib:.1f}",
                     ("n/a" if s.mfu is None else f"{100 * s.mfu:.1f}%")
                     if s.name == "train" and s.status == "ok" else "-",
                     "-" if s.wall_s is None else f"{s.wall_s:.0f}",
                     s.note or s.status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
              for r in rows]
    lines.append("MFU: (4 x base matmul weights + 6 x adapter weights + causal attention "
                 "6 x layers x d_q x mean L(L+1)/L) x tokens/s / (processes x dense bf16 "
                 "peak); see scripts/gpu_check.py")
    return "\n".join(lines)


def output_path(given: str | None) -> Path:
    if given:
        return Path(given)
    return Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") \
        else Path("gpu_check.json")


# ---------------------------------------------------------------------------------------
# Preflight (standard library only): what the check needs that this Python lacks

# module -> distribution, for the packages the check imports
REQUIRED = {"torch": "torch", "transformers": "transformers", "tokenizers": "tokenizers",
            "trl": "trl", "peft": "peft", "accelerate": "accelerate", "datasets": "datasets",
            "pydantic": "pydantic", "yaml": "pyyaml"}


def check_env() -> int:
    """Print a pip requirement (from pyproject.toml) for each missing or unusable package.

    Exit status 0: all there; 3: some are missing (printed, one per line); 4: torch is
    missing, which pip should not guess (it must be the machine's CUDA build).
    """
    import importlib

    wanted = project_requirements()
    missing = []
    for module, dist in REQUIRED.items():
        try:
            importlib.import_module(module)
        except Exception as error:  # an import can fail on a broken dependency too
            print(f"gpu_check: {module}: {type(error).__name__}: {error}".splitlines()[0],
                  file=sys.stderr)
            missing.append(dist)
            continue
        problem = version_problem(dist, wanted.get(dist))
        if problem:
            print(f"gpu_check: {problem}", file=sys.stderr)
            missing.append(dist)
    if "torch" in missing:
        print("gpu_check: torch is missing: install this machine's CUDA build of torch",
              file=sys.stderr)
        return 4
    for dist in missing:
        print(wanted.get(dist, dist))
    return 3 if missing else 0


def project_requirements() -> dict[str, str]:
    """distribution name -> its requirement in pyproject.toml (e.g. 'trl>=0.24')."""
    import re

    try:
        import tomllib
    except ImportError:  # Python 3.10: bare names
        return {}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {re.split(r"[<>=!~ \[;]", req, maxsplit=1)[0].lower(): req
            for req in project["dependencies"]}


def version_problem(dist: str, requirement: str | None) -> str | None:
    """A message when the installed version does not satisfy the project's requirement."""
    if requirement is None:
        return None
    try:
        from importlib.metadata import version

        from packaging.requirements import Requirement
    except ImportError:
        return None
    installed = version(dist)
    if Requirement(requirement).specifier.contains(installed, prereleases=True):
        return None
    return f"{dist} {installed} is installed, distill needs {requirement}"


# ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true",
                        help="tiny models on the CPU (how the test-suite runs this)")
    parser.add_argument("--out", help="JSON path (default $OUT/gpu_check.json or ./gpu_check.json)")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="seconds for the whole check, counted from $GPU_CHECK_STARTED")
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--processes", help="training process counts, e.g. 1,2 (default: 1, "
                        "and the GPU count when there are several)")
    parser.add_argument("--train-args", default="{}",
                        help='JSON of trl.SFTConfig arguments, e.g. \'{"gradient_checkpointing": '
                        'false, "model_init_kwargs": {"dtype": "bfloat16"}}\'')
    parser.add_argument("--work-dir", help="where models and runs go (default: a temporary "
                        "directory, removed at the end)")
    parser.add_argument("--check-env", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--train-worker", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; known: {', '.join(MODELS)}")
    try:
        args.train_args = json.loads(args.train_args)
    except json.JSONDecodeError as error:
        parser.error(f"--train-args: not JSON ({error})")
    if not isinstance(args.train_args, dict):
        parser.error("--train-args: give a JSON object")
    if args.processes:
        try:
            args.processes = [int(p) for p in args.processes.split(",")]
        except ValueError:
            parser.error(f"--processes: expected numbers like 1,2, got {args.processes!r}")
        if any(p < 1 for p in args.processes):
            parser.error("--processes: counts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_env:
        return check_env()
    if args.train_worker:
        return train_worker(args.train_worker)
    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; --tiny runs the check on the CPU",
              file=sys.stderr)
        return 2
    check = Check.start(args)
    if not args.tiny and max(check.processes) > check.meta["device_count"]:
        print(f"gpu_check: --processes {max(check.processes)}, but there are "
              f"{check.meta['device_count']} GPUs", file=sys.stderr)
        return 2
    work_root = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu_check-"))
    work_root.mkdir(parents=True, exist_ok=True)
    try:
        for name in args.models:
            check.run_model(name, work_root / name)
    finally:
        if not args.work_dir:
            shutil.rmtree(work_root, ignore_errors=True)
    check.save()
    print(table(check.meta, check.sections))
    print(f"gpu_check: {check.meta['elapsed_s']} s in all; JSON in {check.out}, "
          f"subprocess output in {check.log}")
    return 1 if any(s.status == "failed" for s in check.sections) else 0


@dataclass
class Check:
    """One run of the check: its settings, budget and sections, saved after each section."""

    args: argparse.Namespace
    budget: Budget
    out: Path
    log: Path
    meta: dict[str, Any]
    work: Workload
    device: str
    dtype: str
    processes: list[int]
    sections: list[Section] = field(default_factory=list)
    tokenizer: Any = None  # trained when the first model is built

    @classmethod
    def start(cls, args: argparse.Namespace) -> Check:
        import torch

        started = float(os.environ.get("GPU_CHECK_STARTED") or time.time())
        out = output_path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        log = out.with_name("gpu_check.log")
        log.write_text("")
        meta = environment(args.tiny)
        work = TINY_WORK if args.tiny else GPU_WORK
        if args.tiny:
            dtype = "float32"
        else:
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        meta.update(started=started, budget_s=args.budget_s, dtype=dtype,
                    workload=work.__dict__, train_args=args.train_args, lora=_lora_defaults())
        return cls(args=args, budget=Budget(started, args.budget_s), out=out, log=log,
                   meta=meta, work=work, device="cpu" if args.tiny else "cuda", dtype=dtype,
                   processes=args.processes or sorted({1, meta["device_count"] or 1}))

    def save(self) -> None:
        """Write the JSON as it stands, so that a run stopped from outside leaves results."""
        self.meta["elapsed_s"] = round(time.time() - self.meta["started"], 1)
        self.out.write_text(json.dumps(
            {"meta": self.meta, "sections": [s.__dict__ for s in self.sections]},
            indent=2, default=str))

    def run_model(self, name: str, model_dir: Path) -> None:
        """Build one model, then run its sections in order, each if the budget allows."""
        work, budget = self.work, self.budget
        generate = Section("generate", name)
        trains = [Section("train", name, p) for p in self.processes]
        self.sections += [generate, *trains]
        if not budget.allows(generate, work.generate_s[0]):
            for section in trains:
                section.status, section.note = "skipped", "skipped: no time left for the model"
            return self.save()
        shape = (TINY_MODELS if self.args.tiny else MODELS)[name]
        try:
            started = time.perf_counter()
            self.tokenizer = self.tokenizer or make_tokenizer(work)
            build_model(shape, self.tokenizer, model_dir, self.device, self.dtype)
            total, matmul = count_params(qwen2_config(shape, self.tokenizer))
            self.meta.setdefault("models", {})[name] = {
                **shape.__dict__, "parameters": total, "matmul_params": matmul,
                "build_s": round(time.perf_counter() - started, 1)}
        except Exception as error:
            for section in (generate, *trains):
                section.status, section.note = "failed", f"building the model: {error}"
            return self.save()
        if budget.allows(generate, work.generate_s[0]):
            self._guarded(generate, lambda: run_generation(
                generate, model_dir, work, self.device, self.dtype))
            if generate.wall_s and generate.wall_s > work.generate_s[1]:
                generate.note = f"took longer than its budget of {work.generate_s[1]:.0f} s"
        peak = None if self.args.tiny else peak_bf16_flops(self.meta["device"])
        for section in trains:
            if budget.allows(section, work.train_s[0]):
                self._guarded(section, lambda s=section: run_training(
                    s, model_dir, model_dir.parent, work, s.processes, self.args.tiny, matmul,
                    peak, self.args.train_args, budget.cap(work.train_s[1]), self.log))
        shutil.rmtree(model_dir, ignore_errors=True)
        self.save()

    def _guarded(self, section: Section, run: Any) -> None:
        """Run a section; an exception fails it (with the message), not the whole check."""
        started = time.perf_counter()
        try:
            run()
        except Exception as error:
            section.status = "failed"
            section.note = f"{type(error).__name__}: {error}".splitlines()[0][:200]
            import traceback

            traceback.print_exc()
        if section.wall_s is None:
            section.wall_s = time.perf_counter() - started
        free_accelerator_memory()
        self.save()
        print(f"gpu_check: {section.name} {section.model} x{section.processes}: "
              f"{section.status} {section.note}".rstrip(), flush=True)


def _lora_defaults() -> dict[str, Any]:
    from distill.train.config import LoraSettings

    return LoraSettings().model_dump()


if __name__ == "__main__":
    sys.exit(main())
