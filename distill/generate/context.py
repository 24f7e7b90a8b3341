"""Checkpointed generation: what every generation method calls.

A method builds requests and calls `GenerationContext.generate(key, requests)`. The
context answers from the checkpoint what earlier (possibly killed) runs already
generated, hands the missing chunks to the stage's executor (`distill.executors`: the
backend in this process, or replicas on Ray), saves each chunk as an append-only shard
file as the executor finishes it, and returns every request's generations in request
order. Only this process writes shards, so nothing is written twice.

Each request carries its own seed, so a request's output does not depend on which chunk,
replica, executor or run produced it: a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.backends.base import Backend, Generation, GenerationRequest
from distill.component import undeclared
from distill.executors.base import Executor
from distill.executors.local import LocalExecutor
from distill.records import Rejected, atomic_write_text, iter_jsonl


@dataclass
class GenerationStats:
    """Token and request counts for the report."""

    requests: int = 0
    generations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    resumed_requests: int = 0

    def add(self, generations: list[Generation]) -> None:
        """Count newly produced generations."""
        self.generations += len(generations)
        self.prompt_tokens += sum(g.prompt_tokens for g in generations if g.index == 0)
        self.completion_tokens += sum(g.completion_tokens for g in generations)


@dataclass
class GenerationContext:
    """Checkpoint directory, executor, backend and run inputs for one generation stage."""

    # The teacher's engine in this process; None when the executor's replicas hold it.
    backend: Backend | None
    checkpoint_dir: Path
    teacher_name: str = ""  # the teacher's path or hub id, for lineage
    # The run inputs; each raises unless the method declared it in dependencies().inputs.
    seed_tasks: Callable[[], list[Any]] = undeclared("seed_tasks")
    real_records: Callable[[], list[Any]] = undeclared("real")
    round: int = 0
    seed: int = 0
    chunk_size: int = 64
    # Where missing chunks run; None: on `backend`, in this process. Judges and answer
    # models get a context of their own backend and no executor (distill.judge).
    executor: Executor | None = None
    progress: Callable[[str, int, int], None] | None = None  # (key, done, total)
    stats: GenerationStats = field(default_factory=GenerationStats)

    def _shard_path(self, key: str, chunk: int) -> Path:
        # The chunk size is in the name: a resume with another size regenerates instead of
        # misreading chunks cut at other boundaries.
        return self.checkpoint_dir / key / f"chunk{self.chunk_size}-{chunk:05d}.jsonl"

    def _load_chunk(self, key: str, chunk: int) -> list[Generation] | None:
        path = self._shard_path(key, chunk)
        if not path.exists():
            return None
        return [Generation(**row) for row in iter_jsonl(path)]

    def generate(self, key: str, requests: list[GenerationRequest]) -> list[Generation]:
        """Generate (or reload) all requests under a checkpoint `key`; results in order.

        Chunks are fixed slices of `requests`, so the same call after a crash finds the
        same chunks; the executor runs those not on disk yet.
        """
        ids = [r.id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError(f"generation {key}: request ids are not unique")
        chunks = [requests[i:i + self.chunk_size]
                  for i in range(0, len(requests), self.chunk_size)]
        missing = [(i, chunk) for i, chunk in enumerate(chunks)
                   if not self._shard_path(key, i).exists()]
        self.stats.requests += len(requests)
        finished = len(requests) - sum(len(chunk) for _, chunk in missing)
        self.stats.resumed_requests += finished
        executor = self.executor
        if executor is None:
            if self.backend is None:
                raise ValueError(f"generation {key}: a context needs a backend or an executor")
            executor = LocalExecutor(self.backend)
        for index, generations in executor.run(missing):
            _check_chunk(key, index, chunks[index], generations)
            self.stats.add(generations)
            rows = [json.dumps(asdict(g), ensure_ascii=False) for g in generations]
            atomic_write_text(self._shard_path(key, index), "".join(r + "\n" for r in rows))
            finished += len(chunks[index])
            if self.progress is not None:
                self.progress(key, finished, len(requests))
        by_request: dict[str, list[Generation]] = {}
        for index in range(len(chunks)):
            loaded = self._load_chunk(key, index)
            if loaded is None:
                raise RuntimeError(f"generation {key}: the executor never returned chunk {index}")
            for generation in loaded:
                by_request.setdefault(generation.request_id, []).append(generation)
        return [g for rid in ids for g in sorted(by_request.get(rid, []), key=lambda g: g.index)]

    def request_seed(self, *parts: Any) -> int:
        """A stable per-request seed from the stage seed and the request's identity."""
        import hashlib

        text = json.dumps([self.seed, self.round, *parts], default=str)
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _check_chunk(key: str, index: int, chunk: list[GenerationRequest],
                 generations: list[Generation]) -> None:
    """Refuse generations that are not those of the chunk's requests (an executor's bug)."""
    if {g.request_id for g in generations} != {r.id for r in chunk}:
        raise RuntimeError(f"generation {key}: chunk {index} came back with the generations "
                           "of other requests")


@dataclass
class GenerationResult:
    """What a generation method returns (see `distill.generate`).

    Records, everything refused on the way (kept on disk with a reason), and counts for
    the report.
    """

    examples: list[Any]  # Example, or PreferencePair for preference methods
    rejected: list[Rejected]
    stats: dict[str, Any] = field(default_factory=dict)
