"""Real data: the human or ground-truth records a run measures against and may mix in.

`data.real` in the recipe chooses a source by `kind`: `path` (a JSONL file, below) or a
plugin's source (the microworld registers `microworld`, its generators' ground truth).
A fixed, seeded share is held out for measurement (perplexity of real data) and never
trained on. Each round draws its real training sample with a seed of its own when
`rounds.fresh_real` is set (Alemohammad et al.'s fresh-data loop), else the same sample
every round.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from distill.records import Example
from distill.registry import REAL_SOURCES
from distill.settings import Strict, resolve_path


@dataclass
class RealDraw:
    """The real data one round sees: its training sample and the common held-out set."""

    train: list[Example]
    held_out: list[Example]
    identity: dict[str, Any] = field(default_factory=dict)  # for fingerprints


class RealSource(Strict, ABC):
    """Base of `data.real` sources, registered in `REAL_SOURCES` under their `kind`."""

    kind: str
    held_out: int = Field(200, ge=0, description="Real records set aside (seeded) for the "
                          "measure stage's perplexity of real data; never trained on.")

    @abstractmethod
    def draw(self, seed: int, draw_round: int) -> RealDraw:
        """The training sample of draw `draw_round` and the held-out set, both seeded."""


def draw_real(source: RealSource, seed: int, round_index: int, fresh: bool = False) -> RealDraw:
    """The real data of a round: a new draw per round when `fresh`, else round 0's."""
    return source.draw(seed, round_index if fresh else 0)


def draw_seed(*parts: Any) -> int:
    """A stable seed from any JSON-able parts."""
    text = json.dumps(parts, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


@REAL_SOURCES.register
class PathReal(RealSource):
    """Real records from a JSONL file (instruction, input, output; or a `text` field)."""

    kind: Literal["path"] = "path"
    path: str = Field(description="JSONL of real records.")
    count: int | None = Field(None, ge=1, description="Records per draw (seeded sample); "
                              "null takes every record not held out.")
    held_out_path: str | None = Field(None, description="JSONL the held-out records are drawn "
                                      "from instead (a test split); `path` is then all "
                                      "training data.")

    @field_validator("path", "held_out_path")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _readable(self) -> PathReal:
        # read as `draw` reads them, so a bad line or too few records is named now
        from distill.records import read_examples

        pool = read_examples(self.path)
        if not pool:
            raise ValueError(f"path {self.path}: no records")
        if self.held_out_path is not None and not read_examples(self.held_out_path):
            raise ValueError(f"held_out_path {self.held_out_path}: no records")
        if self.held_out_path is None and len(pool) <= self.held_out:
            raise ValueError(f"path {self.path}: {len(pool)} records, but held_out asks for "
                             f"{self.held_out} and training needs some")
        return self

    def draw(self, seed: int, draw_round: int) -> RealDraw:
        """Hold out a seeded share (or draw it from `held_out_path`); sample the rest."""
        from distill.records import read_examples
        from distill.store import file_sha256

        pool = read_examples(self.path)
        identity = {"path_sha256": file_sha256(self.path), "count": self.count,
                    "held_out": self.held_out, "seed": seed, "draw": draw_round}
        if self.held_out_path is not None:
            test = read_examples(self.held_out_path)
            held = (random.Random(draw_seed(seed, "held_out")).sample(test, self.held_out)
                    if self.held_out < len(test) else test)
            identity["held_out_sha256"] = file_sha256(self.held_out_path)
            return RealDraw(train=self._sample(pool, seed, draw_round), held_out=held,
                            identity=identity)
        if len(pool) <= self.held_out:
            raise ValueError(f"data.real.path {self.path}: {len(pool)} records, but held_out "
                             f"asks for {self.held_out} and training needs some")
        order = list(range(len(pool)))
        random.Random(draw_seed(seed, "held_out")).shuffle(order)
        held_out = [pool[i] for i in order[:self.held_out]]
        rest = [pool[i] for i in order[self.held_out:]]
        return RealDraw(train=self._sample(rest, seed, draw_round), held_out=held_out,
                        identity=identity)

    def _sample(self, pool: list[Example], seed: int, draw_round: int) -> list[Example]:
        if self.count is None or self.count >= len(pool):
            return pool
        return random.Random(draw_seed(seed, "real", draw_round)).sample(pool, self.count)
