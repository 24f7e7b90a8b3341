"""The default executor: the teacher's backend in the orchestrator's own process.

Chunks run one after another, in index order; this is how distill has always generated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from distill.backends.base import Backend, Generation
from distill.executors.base import Chunk, EngineSpec, ExecutorSettings
from distill.registry import EXECUTORS


@EXECUTORS.register
class LocalConfig(ExecutorSettings):
    """One engine in this process, on this machine's devices (`executor: local`)."""

    kind: Literal["local"] = "local"

    def create(self, engine: EngineSpec) -> LocalExecutor:
        """Load the teacher here, now."""
        return LocalExecutor(engine.load())


class LocalExecutor:
    """Runs chunks on a backend in this process."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def run(self, chunks: list[Chunk]) -> Iterator[tuple[int, list[Generation]]]:
        """Generate the chunks in order, yielding each as it finishes."""
        for index, requests in chunks:
            yield index, self.backend.generate(requests)

    def summary(self) -> dict[str, Any]:
        """The executor's kind and the dtype the engine ran in (None: a served model)."""
        return {"kind": "local", "dtype": getattr(self.backend, "dtype", None)}

    def close(self) -> None:
        """Free the backend."""
        self.backend.close()
