"""The executor contract: chunks of requests in, each chunk's generations out as it finishes."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from distill.backends.base import Backend, Generation, GenerationRequest, load_backend
from distill.settings import Strict

# (chunk index, the chunk's requests): the index names the chunk's shard file
Chunk = tuple[int, list[GenerationRequest]]


@dataclass(frozen=True)
class EngineSpec:
    """How to build the teacher's backend, wherever an executor builds it.

    Picklable, so a Ray replica builds exactly the engine the local executor would.
    """

    backend: str  # a name in BACKENDS
    model: str  # a path or hub id, resolved by the orchestrator
    chat_template: str | None = None
    seed: int = 0
    engine: dict[str, Any] = field(default_factory=dict)  # the recipe's teacher.engine

    def load(self) -> Backend:
        """Build the backend (loads the model)."""
        return load_backend(self.backend, model=self.model, chat_template=self.chat_template,
                            seed=self.seed, **self.engine)


class Executor(Protocol):
    """Runs chunks of generation requests for one generation stage."""

    # The teacher's engine when it runs in this process (the continuation method reads its
    # tokenizer); None when replicas elsewhere hold it.
    backend: Backend | None

    def run(self, chunks: list[Chunk]) -> Iterator[tuple[int, list[Generation]]]:
        """Generate every chunk; yield (index, generations in request order) as each finishes.

        Each chunk is yielded exactly once, in any order; an error ends the iteration.
        """
        ...

    def summary(self) -> dict[str, Any]:
        """What the stage manifest records about how the chunks ran (never fingerprinted)."""
        ...

    def close(self) -> None:
        """Free the engines (GPU memory above all) before the next stage needs them."""
        ...


class ExecutorSettings(Strict, ABC):
    """Base of the recipe's `executor:` section, registered in `EXECUTORS` under `kind`.

    Every field is operational: the runner leaves the whole section out of fingerprints.
    """

    kind: str

    @abstractmethod
    def create(self, engine: EngineSpec) -> Executor:
        """An executor that builds `engine` where it runs chunks."""
