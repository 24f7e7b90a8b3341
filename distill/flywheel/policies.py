"""Data policies: which data each round trains on (`rounds.data_policy`).

After Shumailov et al. 2024, Gerstgrasser et al. 2024 and Kazdan et al. 2025:

- replace: this round's synthetic data only.
- accumulate: the real data plus every round's synthetic data so far.
- accumulate_subsample: accumulate, then a seeded sample of `budget` examples.
- mix: this round's synthetic data with a `real_fraction` share of real data in a
  training set of the synthetic set's size (Shumailov's "10 % of the original data").

A policy is one object that answers both questions the runner has: which rounds' data
round r depends on (`sources`, for the fingerprint and for loading) and what round r
trains on (`select`).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field

from distill.flywheel.real import draw_seed
from distill.records import Example
from distill.registry import POLICIES
from distill.settings import Strict


@dataclass(frozen=True)
class Sources:
    """The rounds whose synthetic data and whose real draws a round trains on."""

    synthetic: tuple[int, ...]
    real: tuple[int, ...]


@dataclass
class Selection:
    """A round's training set and where its records came from."""

    records: list[Example]
    counts: dict[str, int]


class DataPolicy(Strict, ABC):
    """Base of the data policies, registered in `POLICIES` under their `kind`."""

    kind: str
    NEEDS_REAL: ClassVar[bool] = False  # the recipe must give data.real

    @abstractmethod
    def sources(self, round_index: int, *, real_first: bool) -> Sources:
        """Which rounds' synthetic data and real draws round `round_index` trains on.

        Under `real_first`, round 0's data is the real data: it is not counted again.
        """

    @abstractmethod
    def choose(self, rng: random.Random, synthetic: dict[int, list[Example]],
               real: list[Example]) -> list[tuple[str, Example]]:
        """(source, record) pairs of the training set, before the shuffle."""

    def select(self, round_index: int, synthetic: dict[int, list[Example]],
               real: list[list[Example]], *, seed: int, shuffle: bool = True) -> Selection:
        """Choose a round's training set, shuffled with a seed of the round.

        Args:
            round_index: the round being trained.
            synthetic: clean synthetic records of the rounds `sources` named, by round.
            real: the real training draws `sources` named (equal draws count once).
            seed: the recipe's seed.
            shuffle: shuffle the result (false keeps real data first, then rounds in order).
        """
        rng = random.Random(draw_seed(seed, "policy", self.kind, round_index))
        tagged = self.choose(rng, synthetic, _distinct(real))
        if shuffle:
            # The shuffle leaves the policy out: under real_first every policy trains round
            # 0 on the same real data, and so on the very same batches, so arms share a start.
            random.Random(draw_seed(seed, "shuffle", round_index)).shuffle(tagged)
        counts: dict[str, int] = {}
        for source, _ in tagged:
            counts[source] = counts.get(source, 0) + 1
        return Selection(records=[record for _, record in tagged], counts=counts)


def _tag(synthetic: dict[int, list[Example]]) -> list[tuple[str, Example]]:
    return [(f"round_{index}", r) for index in sorted(synthetic) for r in synthetic[index]]


@POLICIES.register
class Replace(DataPolicy):
    """This round's synthetic data only."""

    kind: Literal["replace"] = "replace"

    def sources(self, round_index: int, *, real_first: bool) -> Sources:
        """The round's own data."""
        return Sources(synthetic=(round_index,), real=())

    def choose(self, rng: random.Random, synthetic: dict[int, list[Example]],
               real: list[Example]) -> list[tuple[str, Example]]:
        """Every record of the round."""
        return _tag(synthetic)


@POLICIES.register
class Accumulate(DataPolicy):
    """The real data plus every round's synthetic data so far."""

    kind: Literal["accumulate"] = "accumulate"

    def sources(self, round_index: int, *, real_first: bool) -> Sources:
        """Every round so far, and every real draw (none under real_first)."""
        rounds = tuple(range(round_index + 1))
        return Sources(synthetic=rounds, real=() if real_first else rounds)

    def choose(self, rng: random.Random, synthetic: dict[int, list[Example]],
               real: list[Example]) -> list[tuple[str, Example]]:
        """Real first, then the rounds in order."""
        return [("real", r) for r in real] + _tag(synthetic)


@POLICIES.register
class AccumulateSubsample(Accumulate):
    """Accumulate, then a seeded sample of a fixed budget (Kazdan et al.)."""

    kind: Literal["accumulate_subsample"] = "accumulate_subsample"  # type: ignore[assignment]
    budget: int = Field(ge=1, description="Training records per round.")

    def choose(self, rng: random.Random, synthetic: dict[int, list[Example]],
               real: list[Example]) -> list[tuple[str, Example]]:
        """A `budget`-sized sample, without replacement, of what accumulate trains on."""
        tagged = super().choose(rng, synthetic, real)
        return rng.sample(tagged, self.budget) if self.budget < len(tagged) else tagged


@POLICIES.register
class Mix(DataPolicy):
    """This round's synthetic data with a share of real data, at the synthetic set's size."""

    kind: Literal["mix"] = "mix"
    NEEDS_REAL: ClassVar[bool] = True
    real_fraction: float = Field(gt=0, lt=1, description="Share of real records in the "
                                 "training set (Shumailov: 0.1).")

    def sources(self, round_index: int, *, real_first: bool) -> Sources:
        """The round's own data and its real draw."""
        return Sources(synthetic=(round_index,), real=(round_index,))

    def choose(self, rng: random.Random, synthetic: dict[int, list[Example]],
               real: list[Example]) -> list[tuple[str, Example]]:
        """`real_fraction` of the size from real data, the rest from the round's data."""
        (index, current), = synthetic.items()
        n_real = round(self.real_fraction * len(current))
        if n_real > len(real):
            raise ValueError(f"mix needs {n_real} real records ({self.real_fraction:.0%} of "
                             f"{len(current)}), the real data has {len(real)}; raise "
                             "data.real's count")
        tagged = [("real", r) for r in rng.sample(real, n_real)]
        kept = rng.sample(current, len(current) - n_real)
        return tagged + [(f"round_{index}", r) for r in kept]


def _distinct(draws: list[list[Example]]) -> list[Example]:
    """Records of every draw, each id once (repeated draws of the same sample count once)."""
    seen: set[str] = set()
    records = []
    for draw in draws:
        for record in draw:
            if record.id not in seen:
                seen.add(record.id)
                records.append(record)
    return records
