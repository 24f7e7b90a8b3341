"""Real data and the data policies that choose each round's training set.

Real (human or ground-truth) data comes from `data.real` in the recipe: a JSONL file of
records, or the microworld's own generators. A fixed, seeded share of it is held out for
measurement (perplexity of real data) and never trained on. Each round draws its real
training sample with a seed of its own when `rounds.fresh_real` is set (Alemohammad et
al.'s fresh-data loop), else the same sample every round.

The policies (`rounds.data_policy`), after Shumailov et al. 2024, Gerstgrasser et al.
2024 and Kazdan et al. 2025:

- replace: this round's synthetic data only.
- accumulate: the real data plus every round's synthetic data so far.
- accumulate_subsample: accumulate, then a seeded sample of `rounds.budget` examples.
- mix: this round's synthetic data with a `rounds.real_fraction` share of real data in a
  training set of the synthetic set's size (Shumailov's "10 % of the original data").
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from distill.records import Example

POLICIES = ("replace", "accumulate", "accumulate_subsample", "mix")
Policy = Literal["replace", "accumulate", "accumulate_subsample", "mix"]


class MicroworldReal(BaseModel):
    """Ground-truth tasks drawn from the microworld's generators (Zipf families)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(ge=1, description="Real tasks per draw (per round with fresh_real).")


class RealDataConfig(BaseModel):
    """`data.real`: where real data comes from, and how much of it is held out."""

    model_config = ConfigDict(extra="forbid")

    path: str | None = Field(None, description="JSONL of real records (instruction, input, "
                             "output; or a `text` field for plain text).")
    microworld: MicroworldReal | None = Field(None, description="Draw ground-truth tasks "
                                              "from the microworld's generators instead.")
    count: int | None = Field(None, ge=1, description="For `path`: records per draw (seeded "
                              "sample); null takes every record not held out.")
    held_out: int = Field(200, ge=0, description="Real records set aside (seeded) for the "
                          "measure stage's perplexity of real data; never trained on.")
    held_out_path: str | None = Field(None, description="JSONL the held-out records are drawn "
                                      "from instead (a test split); `path` is then all "
                                      "training data.")

    @field_validator("path", "held_out_path")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        from distill.recipe import resolve_path

        return resolve_path(value, info)

    @model_validator(mode="after")
    def _one_source(self) -> RealDataConfig:
        if (self.path is None) == (self.microworld is None):
            raise ValueError("give exactly one source of real data: path or microworld")
        if self.microworld is not None and (self.count, self.held_out_path) != (None, None):
            raise ValueError("count and held_out_path are for path; the microworld source "
                             "has its own count")
        return self


@dataclass
class RealDraw:
    """The real data one round sees: its training sample and the common held-out set."""

    train: list[Example]
    held_out: list[Example]
    identity: dict[str, Any] = field(default_factory=dict)  # for fingerprints


def _seed(*parts: Any) -> int:
    text = json.dumps(parts, default=str)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def draw_real(config: RealDataConfig, seed: int, round_index: int,
              fresh: bool = False) -> RealDraw:
    """The real training sample of a round and the held-out set, both seeded.

    Args:
        config: the recipe's `data.real`.
        seed: the recipe's seed.
        round_index: the round; only matters when `fresh`.
        fresh: draw a new training sample for this round instead of the common one.
    """
    draw_round = round_index if fresh else 0
    if config.microworld is not None:
        return _draw_microworld(config, seed, draw_round)
    from distill.records import read_examples
    from distill.store import file_sha256

    pool = read_examples(config.path)
    if config.held_out_path is not None:
        test = read_examples(config.held_out_path)
        held = (random.Random(_seed(seed, "held_out")).sample(test, config.held_out)
                if config.held_out < len(test) else test)
        train = pool
        if config.count is not None and config.count < len(pool):
            train = random.Random(_seed(seed, "real", draw_round)).sample(pool, config.count)
        identity = {"path_sha256": file_sha256(config.path), "count": config.count,
                    "held_out": config.held_out, "seed": seed, "draw": draw_round,
                    "held_out_sha256": file_sha256(config.held_out_path)}
        return RealDraw(train=train, held_out=held, identity=identity)
    if len(pool) <= config.held_out:
        raise ValueError(f"data.real.path {config.path}: {len(pool)} records, but held_out "
                         f"asks for {config.held_out} and training needs some")
    order = list(range(len(pool)))
    random.Random(_seed(seed, "held_out")).shuffle(order)
    held_out = [pool[i] for i in order[:config.held_out]]
    rest = [pool[i] for i in order[config.held_out:]]
    train = rest
    if config.count is not None and config.count < len(rest):
        train = random.Random(_seed(seed, "real", draw_round)).sample(rest, config.count)
    identity = {"path_sha256": file_sha256(config.path), "count": config.count,
                "held_out": config.held_out, "seed": seed, "draw": draw_round}
    return RealDraw(train=train, held_out=held_out, identity=identity)


def _draw_microworld(config: RealDataConfig, seed: int, draw_round: int) -> RealDraw:
    from distill.microworld.benchmark import benchmark_keys
    from distill.microworld.tasks import generate_tasks

    benchmark = benchmark_keys()
    held_tasks = generate_tasks(config.held_out, _seed(seed, "mw_held_out"), exclude=benchmark,
                                unique=True) if config.held_out else []
    exclude = benchmark | {task.key for task in held_tasks}
    tasks = generate_tasks(config.microworld.count, _seed(seed, "mw_real", draw_round),
                           exclude=exclude)
    identity = {"microworld": config.microworld.model_dump(), "held_out": config.held_out,
                "seed": seed, "draw": draw_round}
    return RealDraw(train=[_real(t.to_example(), "real") for t in tasks],
                    held_out=[_real(t.to_example(), "held_out") for t in held_tasks],
                    identity=identity)


def _real(example: Example, source: str) -> Example:
    example.lineage.method = f"microworld_{source}"
    return example


@dataclass
class Selection:
    """A round's training set and where its records came from."""

    records: list[Example]
    counts: dict[str, int]


def select_training_data(policy: Policy, round_index: int, synthetic: list[list[Example]],
                         real: list[list[Example]], *, seed: int, budget: int | None = None,
                         real_fraction: float | None = None, shuffle: bool = True) -> Selection:
    """Choose a round's training set by policy, shuffled with a seed of the round.

    Args:
        policy: replace | accumulate | accumulate_subsample | mix.
        round_index: the round being trained (synthetic[round_index] is its own data).
        synthetic: clean synthetic records of rounds 0..round_index.
        real: the real training draws of rounds 0..round_index (equal lists when real data
            is not fresh per round; they are counted once); empty lists without real data.
        seed: the recipe's seed.
        budget: accumulate_subsample's training-set size.
        real_fraction: mix's share of real records in the training set.
        shuffle: shuffle the result (false keeps real data first, then rounds in order).

    Returns:
        The records and counts by source ("real", "round_<r>").
    """
    if len(synthetic) != round_index + 1:
        raise ValueError(f"round {round_index}: expected synthetic data of {round_index + 1} "
                         f"round(s), got {len(synthetic)}")
    rng = random.Random(_seed(seed, "policy", policy, round_index))
    # The shuffle leaves the policy out: under real_first every policy trains round 0 on
    # the same real data, and so on the very same batches, so the arms share a start.
    shuffle_rng = random.Random(_seed(seed, "shuffle", round_index))
    tagged: list[tuple[str, Example]] = []
    if policy == "replace":
        tagged = [(f"round_{round_index}", r) for r in synthetic[-1]]
    elif policy in ("accumulate", "accumulate_subsample"):
        tagged = [("real", r) for r in _distinct(real)]
        for index, records in enumerate(synthetic):
            tagged += [(f"round_{index}", r) for r in records]
        if policy == "accumulate_subsample":
            if budget is None:
                raise ValueError("accumulate_subsample needs rounds.budget")
            tagged = rng.sample(tagged, budget) if budget < len(tagged) else tagged
    elif policy == "mix":
        if real_fraction is None:
            raise ValueError("mix needs rounds.real_fraction")
        current = synthetic[-1]
        pool = real[-1] if real else []
        n_real = round(real_fraction * len(current))
        if n_real > len(pool):
            raise ValueError(f"round {round_index}: mix needs {n_real} real records "
                             f"({real_fraction:.0%} of {len(current)}), the real data has "
                             f"{len(pool)}; raise data.real's count")
        tagged = [("real", r) for r in rng.sample(pool, n_real)]
        kept = rng.sample(current, len(current) - n_real)
        tagged += [(f"round_{round_index}", r) for r in kept]
    else:
        raise ValueError(f"unknown data policy {policy!r}; choose one of {list(POLICIES)}")
    if shuffle:
        shuffle_rng.shuffle(tagged)
    counts: dict[str, int] = {}
    for source, _ in tagged:
        counts[source] = counts.get(source, 0) + 1
    return Selection(records=[record for _, record in tagged], counts=counts)


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
