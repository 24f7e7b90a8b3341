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

Requests that ask for the teacher's top-k log-probabilities (`Sampling.top_logprobs`)
get them back as `Generation.tokens`. Those stay out of the JSONL shard: a chunk that has
them keeps them in a sidecar, `chunk<size>-<index>.tokens.safetensors`
(`distill.teacher_tokens`, one entry per sample, keyed `<request id>#<sample index>`),
written before the shard, so a shard on disk implies its complete sidecar. A missing or
damaged sidecar, or one whose entries are not exactly the shard's answers to such
requests, is a damaged checkpoint: its chunk is generated again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.backends.base import FAILED, Backend, Generation, GenerationRequest
from distill.budget import Budget, Price
from distill.component import undeclared
from distill.executors.base import Executor
from distill.executors.local import LocalExecutor
from distill.generate.failures import FailedRequests, retried_later
from distill.records import Rejected, atomic_write_text
from distill.teacher_tokens import TeacherTokens, load_teacher_tokens, save_teacher_tokens

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
    # k of the teacher's top-k log-probabilities that answers keep (train.method kd);
    # 0: none. Methods that ask for them put it in their requests' sampling.
    top_logprobs: int = 0
    # The teacher's tokens and top-k log-probabilities of each answered record, by
    # record id, filled by the methods that asked for them (generate_responses).
    teacher_tokens: dict[str, TeacherTokens] = field(default_factory=dict)
    # The run's budget caps (distill.budget): chunks found on disk and chunks generated
    # count against it, and no chunk starts once a cap is reached. None: no caps.
    budget: Budget | None = None
    # What this context's model costs (its ServedModel's price); what it spends counts at
    # it. None: nothing known (validation refuses budget.max_cost without prices).
    price: Price | None = None

    def _shard_path(self, key: str, chunk: int) -> Path:
        # The chunk size is in the name: a resume with another size regenerates instead of
        # misreading chunks cut at other boundaries.
        return self.checkpoint_dir / key / f"chunk{self.chunk_size}-{chunk:05d}.jsonl"

    def _tokens_path(self, key: str, chunk: int) -> Path:
        """The sidecar of a shard: its answers' teacher tokens."""
        shard = self._shard_path(key, chunk)
        return shard.with_name(shard.stem + TOKENS_SUFFIX)

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
            if self.budget is not None:
                self.budget.spend(*_usage(loaded), self.price)  # spent by an earlier run
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
        held_back = self._within_budget(todo)
        sent = dict(todo)
        running = executor.run(todo)
        for index, generations in running:
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
            if self.budget is not None:
                self.budget.spend(*_usage(by_request), self.price)
                if self.budget.exceeded() is not None and finished < len(requests):
                    held_back = True  # the chunks still running are not waited for
                    break
        if held_back:
            getattr(running, "close", lambda: None)()
            raise self.budget.stop(key, len(requests) - finished)
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

    def _within_budget(self, todo: list[tuple[int, list[GenerationRequest]]]) -> bool:
        """Cut `todo` (in place) to the chunks the budget lets start; whether it cut any."""
        if self.budget is None:
            return False
        starting = 0
        for position, (_, part) in enumerate(todo):
            if not self.budget.fits(starting + len(part)):
                del todo[position:]
                return True
            starting += len(part)
        return False

    def _save_chunk(self, key: str, index: int, chunk: list[GenerationRequest],
                    by_request: dict[str, list[Generation]]) -> None:
        generations = [g for request in chunk for g in by_request[request.id]]
        tokens = {_sample_key(g): g.tokens for g in generations if g.tokens is not None}
        sidecar = self._tokens_path(key, index)
        # the sidecar first: a shard on disk promises a complete one
        if tokens:
            save_teacher_tokens(sidecar, tokens)
        else:
            sidecar.unlink(missing_ok=True)
        rows = [json.dumps({**_row(g), "request": request_digest(request)},
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
            self._attach_tokens(key, index, chunk, generations)
            return _check_answers(key, index, chunk, generations)
        except (ValueError, TypeError) as error:  # a cut line, a lost line, other requests
            log.warning("generation %s: checkpoint %s is not complete (%s); generating its "
                        "chunk again", key, path, error)
            return None

    def _attach_tokens(self, key: str, index: int, chunk: list[GenerationRequest],
                       generations: list[Generation]) -> None:
        """Give a loaded shard's answers their teacher tokens from its sidecar.

        Raises:
            ValueError: the sidecar is missing or damaged, or its entries are not exactly
                the answers (not failed) to the chunk's requests that asked for tokens.
        """
        asked = {r.id for r in chunk if r.sampling.top_logprobs}
        expected = [_sample_key(g) for g in generations
                    if g.request_id in asked and g.finish_reason != FAILED]
        if not expected:
            return
        sidecar = self._tokens_path(key, index)
        if not sidecar.exists():
            raise ValueError(f"its teacher tokens {sidecar.name} are missing")
        tokens = load_teacher_tokens(sidecar)  # ValueError when damaged
        if set(tokens) != set(expected):
            raise ValueError(f"its teacher tokens {sidecar.name} hold other answers")
        for generation in generations:
            generation.tokens = tokens.get(_sample_key(generation))

    def request_seed(self, *parts: Any) -> int:
        """A stable per-request seed from the stage seed and the request's identity."""
        text = json.dumps([self.seed, self.round, *parts], default=str)
        return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def request_digest(request: GenerationRequest) -> str:
    """sha256 of everything that makes a request's answer: its prompt and its sampling."""
    text = json.dumps([request.id, request.messages, request.prompt,
                       request.sampling.as_dict()], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _usage(by_request: dict[str, list[Generation]]) -> tuple[int, int, int]:
    """Answered requests, prompt tokens and completion tokens of a chunk's answers."""
    answers = [gs for gs in by_request.values() if not _failed(gs)]
    return (len(answers), sum(g.prompt_tokens for gs in answers for g in gs if g.index == 0),
            sum(g.completion_tokens for gs in answers for g in gs))


def _failed(generations: list[Generation]) -> bool:
    return any(g.finish_reason == FAILED for g in generations)


# the sidecar of `chunk<size>-<index>.jsonl`
TOKENS_SUFFIX = ".tokens.safetensors"


def _sample_key(generation: Generation) -> str:
    """A sample's entry in its shard's sidecar: request id and sample index."""
    return f"{generation.request_id}#{generation.index}"


def _row(generation: Generation) -> dict[str, Any]:
    """A generation's JSONL row: every field but its tokens (those go to the sidecar)."""
    row = asdict(dataclasses.replace(generation, tokens=None))
    del row["tokens"]
    return row


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
        failed = _failed(by_request[request.id])
        expected = [0] if failed else list(range(request.sampling.n))
        if found != expected:
            raise ValueError(f"generation {key}: chunk {index} has samples {found} of request "
                             f"{request.id!r}, expected {expected}")
        by_request[request.id].sort(key=lambda g: g.index)
        if request.sampling.top_logprobs and not failed:
            for generation in by_request[request.id]:
                _check_tokens(key, index, request, generation)
    return by_request


def _check_tokens(key: str, index: int, request: GenerationRequest,
                  generation: Generation) -> None:
    """A sample of a request that asked for top-k log-probabilities has them, all of them.

    A backend that drops them would otherwise leave a KD training without its targets.
    """
    tokens, k = generation.tokens, request.sampling.top_logprobs
    where = f"generation {key}: chunk {index}, request {request.id!r} sample {generation.index}"
    if tokens is None:
        raise ValueError(f"{where} asked for the top {k} log-probabilities and has none")
    if tokens.k != k:
        raise ValueError(f"{where} keeps the top {tokens.k} log-probabilities, not {k}")
    if len(tokens) != generation.completion_tokens:
        raise ValueError(f"{where} has {len(tokens)} teacher tokens for "
                         f"{generation.completion_tokens} completion tokens")


@dataclass
class GenerationResult:
    """What a generation method returns (see `distill.generate`).

    Records, everything refused on the way (kept on disk with a reason), and counts for
    the report.
    """

    examples: list[Any]  # Example, or PreferencePair for preference methods
    rejected: list[Rejected]
    stats: dict[str, Any] = field(default_factory=dict)
