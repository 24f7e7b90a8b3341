"""This process's place among the ranks that `accelerate launch` started.

The orchestrator (`distill run`) is one process; training and multi-GPU work run in
processes of their own. A rank only matters to code that runs inside a launched job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Ranks:
    """This process's place among the accelerate ranks (one rank when not launched)."""

    rank: int = 0
    world_size: int = 1
    _state: Any = None

    @classmethod
    def from_env(cls) -> Ranks:
        """Join the process group only when `accelerate launch` started several ranks."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        import torch
        from accelerate import PartialState

        # Without cpu=True, accelerate 1.x silently starts a lone non-distributed state on a
        # machine without GPUs, and every rank believes it is the main one.
        use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
        state = PartialState(cpu=use_cpu or not torch.cuda.is_available())
        if state.num_processes != int(os.environ["WORLD_SIZE"]):
            raise RuntimeError(f"accelerate started {state.num_processes} process(es) but "
                               f"WORLD_SIZE is {os.environ['WORLD_SIZE']}")
        return cls(rank=state.process_index, world_size=state.num_processes, _state=state)

    @property
    def is_main(self) -> bool:
        """True on the rank that filters, decontaminates and writes shared files."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (a no-op on one process)."""
        if self._state is not None:
            self._state.wait_for_everyone()
