"""Checkpointed generation: what every generation method calls.

A method builds requests and calls `GenerationContext.generate(key, requests)`. The
context answers from the checkpoint what earlier (possibly killed) runs already
generated, hands the missing chunks to the stage's executor (`distill.executors`: the
backend in this process, or replicas on Ray), saves each chunk as a shard file as the
executor finishes it, and returns every answered request's generations in request order.
Only this process writes shards, so nothing is written twice.

Each request carries its own seed, so a request's output does not depend on which chunk,
replica, executor or run produced it: a resumed run equals an uninterrupted one. Each
shard row names the digest of the request it answers; a shard that lost lines, holds a
request twice, or answers other requests (the prompts of a later step changed because an
earlier one was filled in) is regenerated with a warning, never trusted. Requests the
backend could not get answered are kept in their shard as failed, left out of what the
method sees, filed as rejected, and asked again on the next run (distill.generate.failures).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.backends.base import FAILED, Backend, Generation, GenerationRequest
from distill.component import undeclared
from distill.executors.base import Executor
from distill.executors.local import LocalExecutor
from distill.generate.failures import FailedRequests, retried_later
from distill.records import Rejected, atomic_write_text

log = logging.getLogger(__name__)


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
    # The stage's failed requests; contexts copied for judges share it.
    failures: FailedRequests = field(default_factory=FailedRequests)

    def _shard_path(self, key: str, chunk: int) -> Path:
        # The chunk size is in the name: a resume with another size regenerates instead of
        # misreading chunks cut at other boundaries.
        return self.checkpoint_dir / key / f"chunk{self.chunk_size}-{chunk:05d}.jsonl"

    def generate(self, key: str, requests: list[GenerationRequest]) -> list[Generation]:
        """Generate (or reload) all requests under a checkpoint `key`; results in order.

        Chunks are fixed slices of `requests`, so the same call after a crash finds the
        same chunks; the executor runs those not on disk yet, and the requests of a saved
        chunk that failed last time. Failed requests are left out of the result.
        """
        ids = [r.id for r in requests]
        if len(set(ids)) != len(ids):
            raise ValueError(f"generation {key}: request ids are not unique")
        chunks = [requests[i:i + self.chunk_size]
                  for i in range(0, len(requests), self.chunk_size)]
        saved: dict[int, dict[str, list[Generation]]] = {}
        todo: list[tuple[int, list[GenerationRequest]]] = []
        for index, chunk in enumerate(chunks):
            loaded = self._load_chunk(key, index, chunk)
            if loaded is None:
                todo.append((index, chunk))
                continue
            saved[index] = loaded
            again = [r for r in chunk if _failed(loaded[r.id]) and retried_later(loaded[r.id][0])]
            if again:
                todo.append((index, again))
        self.stats.requests += len(requests)
        finished = len(requests) - sum(len(part) for _, part in todo)
        self.stats.resumed_requests += finished
        executor = self.executor
        if executor is None:
            if self.backend is None:
                raise ValueError(f"generation {key}: a context needs a backend or an executor")
            executor = LocalExecutor(self.backend)
        sent = dict(todo)
        for index, generations in executor.run(todo):
            try:
                by_request = _check_answers(key, index, sent[index], generations)
            except ValueError as error:  # nothing of it is saved
                raise RuntimeError(f"{error}: the executor returned a wrong chunk") from None
            self.stats.add([g for g in generations if g.finish_reason != FAILED])
            saved[index] = {**saved.get(index, {}), **by_request}
            self._save_chunk(key, index, chunks[index], saved[index])
            finished += len(sent[index])
            if self.progress is not None:
                self.progress(key, finished, len(requests))
            self.failures.count(key, sent[index], generations)
        answered: list[Generation] = []
        for index, chunk in enumerate(chunks):
            if index not in saved:
                raise RuntimeError(f"generation {key}: the executor never returned chunk {index}")
            for request in chunk:
                generations = saved[index][request.id]
                if _failed(generations):
                    self.failures.reject(key, generations[0], request)
                else:
                    answered.extend(generations)
        return answered

    def _save_chunk(self, key: str, index: int, chunk: list[GenerationRequest],
                    by_request: dict[str, list[Generation]]) -> None:
        rows = [json.dumps({**asdict(g), "request": request_digest(request)},
                           ensure_ascii=False)
                for request in chunk for g in by_request[request.id]]
        atomic_write_text(self._shard_path(key, index), "".join(r + "\n" for r in rows))

    def _load_chunk(self, key: str, index: int, chunk: list[GenerationRequest]
                    ) -> dict[str, list[Generation]] | None:
        """The saved generations of a chunk by request id; None: missing or not trusted."""
        path = self._shard_path(key, index)
        if not path.exists():
            return None
        try:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                    if line.strip()]
            digests = {row.pop("request", None) for row in rows}
            generations = [Generation(**row) for row in rows]
            if digests - {request_digest(r) for r in chunk}:
                raise ValueError("it answers other requests")
            return _check_answers(key, index, chunk, generations)
        except (ValueError, TypeError) as error:  # a cut line, a lost line, other requests
            log.warning("generation %s: checkpoint %s is not complete (%s); generating its "
                        "chunk again", key, path, error)
            return None

    def request_seed(self, *parts: Any) -> int:
        """A stable per-request seed from the stage seed and the request's identity."""
        text = json.dumps([self.seed, self.round, *parts], default=str)
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def request_digest(request: GenerationRequest) -> str:
    """sha256 of everything that makes a request's answer: its prompt and its sampling."""
    text = json.dumps([request.id, request.messages, request.prompt,
                       request.sampling.as_dict()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _failed(generations: list[Generation]) -> bool:
    return any(g.finish_reason == FAILED for g in generations)


def _check_answers(key: str, index: int, chunk: list[GenerationRequest],
                   generations: list[Generation]) -> dict[str, list[Generation]]:
    """Each request's generations, indices 0..n-1 each exactly once; ValueError otherwise.

    Refuses a chunk that lost, doubled or mixed up answers, whether an executor returned
    it or a damaged shard held it.
    """
    by_request: dict[str, list[Generation]] = {r.id: [] for r in chunk}
    for generation in generations:
        if generation.request_id not in by_request:
            raise ValueError(f"generation {key}: chunk {index} holds an answer to "
                             f"{generation.request_id!r}, not one of its requests")
        by_request[generation.request_id].append(generation)
    for request in chunk:
        found = sorted(g.index for g in by_request[request.id])
        # a failed request has one generation standing for all n
        expected = [0] if _failed(by_request[request.id]) else list(range(request.sampling.n))
        if found != expected:
            raise ValueError(f"generation {key}: chunk {index} has samples {found} of request "
                             f"{request.id!r}, expected {expected}")
        by_request[request.id].sort(key=lambda g: g.index)
    return by_request


@dataclass
class GenerationResult:
    """What a generation method returns (see `distill.generate`).

    Records, everything refused on the way (kept on disk with a reason), and counts for
    the report.
    """

    examples: list[Any]  # Example, or PreferencePair for preference methods
    rejected: list[Rejected]
    stats: dict[str, Any] = field(default_factory=dict)
