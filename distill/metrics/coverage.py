"""How well a set of records covers a known task distribution (the microworld's).

    from distill.metrics.coverage import microworld_coverage
    microworld_coverage(examples)
    # {"n": ..., "recognised": ..., "families": {family: share}, "kl_families": ...,
    #  "tail_mass": ..., "true_tail_mass": ..., "families_covered": ..., ...}

Model collapse shows first in the tails (Shumailov et al. 2024; Dohmatob et al. 2024):
rare task families and hard tasks vanish from the data one generation after another.
The microworld draws families from a Zipf law (`FAMILY_WEIGHTS`) and difficulties from
`DIFFICULTY_WEIGHTS`, so the data of every round can be compared with the truth:

- family of a record: the family whose instruction wording it uses, recognised from its
  text alone as the verifier does (`Family.claims`); others count as unrecognised.
- difficulty: the record's own `difficulty` field (ground-truth tasks carry one), else an
  estimate: the level whose generated inputs most often have this input's length in
  characters, within the family (sampled once from the generators).
- KL(true || observed) over families (and difficulties), with the observed counts
  smoothed by +0.5 each so that a vanished family costs a large finite amount.
- tail mass: the share of recognised records in the tail families, by default the rarer
  half of the families by true frequency.
"""

from __future__ import annotations

import functools
import math
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

SMOOTHING = 0.5  # added to every observed count before the KL divergence


def kl_divergence(true: Mapping[str, float], counts: Mapping[str, int | float],
                  smoothing: float = SMOOTHING) -> float:
    """KL(true || observed) in nats; observed = (count + smoothing) / (total + K smoothing).

    Args:
        true: the true probabilities over K categories (summing to 1).
        counts: observed counts; categories outside `true` are ignored.
        smoothing: pseudo-count per category (0: a missing category gives infinity).
    """
    total = sum(counts.get(key, 0) for key in true) + smoothing * len(true)
    if total <= 0:
        return float("nan")
    divergence = 0.0
    for key, p in true.items():
        if p <= 0:
            continue
        q = (counts.get(key, 0) + smoothing) / total
        if q <= 0:
            return float("inf")
        divergence += p * math.log(p / q)
    return divergence


def tail_mass(counts: Mapping[str, int | float], tail: Iterable[str]) -> float:
    """Share of all counted items that fall in the tail categories (NaN when empty)."""
    total = sum(counts.values())
    return sum(counts.get(key, 0) for key in tail) / total if total else float("nan")


def tail_families(fraction: float = 0.5) -> list[str]:
    """The rarest `fraction` of the microworld's families by true frequency."""
    from distill.microworld.tasks import FAMILY_WEIGHTS

    ranked = sorted(FAMILY_WEIGHTS, key=lambda name: -FAMILY_WEIGHTS[name])
    return ranked[len(ranked) - round(len(ranked) * fraction):]


def family_of(instruction: str) -> str | None:
    """The microworld family whose wording the instruction uses, or None."""
    from distill.microworld.families import FAMILIES

    for name, family in FAMILIES.items():
        if family.claims(instruction):
            return name
    return None


@functools.lru_cache(maxsize=1)
def _length_profiles(per_level: int = 300) -> dict[str, dict[int, Counter[int]]]:
    """Per family and difficulty, how often each input length (characters) is generated."""
    from distill.microworld.families import FAMILIES
    from distill.microworld.tasks import DIFFICULTY_WEIGHTS, generate_task

    rng = random.Random(20_240_601)
    return {family: {level: Counter(len(generate_task(rng, family, level).input.strip())
                                    for _ in range(per_level))
                     for level in DIFFICULTY_WEIGHTS}
            for family in FAMILIES}


def estimate_difficulty(family: str, input: str) -> int:
    """The difficulty whose generated inputs most often have this length (ties: easier)."""
    profiles = _length_profiles()[family]
    length = len(input.strip())
    # +1 smoothing so an unseen length still picks the nearest-looking level deterministically
    return max(profiles, key=lambda level: (profiles[level][length] + 1, -level))


def microworld_coverage(examples: Sequence[Any], tail_fraction: float = 0.5) -> dict[str, Any]:
    """Family and difficulty coverage of records against the microworld's true distribution.

    Args:
        examples: `Example`s (or anything with `instruction`, `input` and optionally a
            `difficulty` attribute).
        tail_fraction: which share of the families (the rarest) counts as the tail.
    """
    from distill.microworld.tasks import DIFFICULTY_WEIGHTS, FAMILY_WEIGHTS

    families: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    for example in examples:
        family = family_of(example.instruction)
        if family is None:
            continue
        families[family] += 1
        level = getattr(example, "difficulty", None)
        if not isinstance(level, int):
            level = estimate_difficulty(family, example.input)
        levels[str(level)] += 1
    recognised = sum(families.values())
    tail = tail_families(tail_fraction)
    true_levels = {str(level): p for level, p in DIFFICULTY_WEIGHTS.items()}
    return {
        "n": len(examples),
        "recognised": recognised,
        "recognised_share": recognised / len(examples) if examples else float("nan"),
        "families": {name: families.get(name, 0) / recognised if recognised else 0.0
                     for name in FAMILY_WEIGHTS},
        "families_covered": sum(1 for name in FAMILY_WEIGHTS if families.get(name)),
        "kl_families": kl_divergence(FAMILY_WEIGHTS, families),
        "tail_families": tail,
        "tail_mass": tail_mass(families, tail),
        "true_tail_mass": sum(FAMILY_WEIGHTS[name] for name in tail),
        "difficulties": {level: levels.get(level, 0) / recognised if recognised else 0.0
                         for level in true_levels},
        "kl_difficulties": kl_divergence(true_levels, levels),
        "hard_share": levels.get(str(max(DIFFICULTY_WEIGHTS)), 0) / recognised
        if recognised else float("nan"),
    }


def family_accuracy(scores: Mapping[str, Mapping[str, Any]],
                    metric: str = "exact_match") -> dict[str, float]:
    """Per-family benchmark accuracy from lm-eval scores of `microworld_<family>` tasks."""
    from distill.microworld.tasks import FAMILY_WEIGHTS

    accuracy = {}
    for family in FAMILY_WEIGHTS:
        value = (scores.get(f"microworld_{family}") or {}).get(metric)
        if isinstance(value, int | float):
            accuracy[family] = float(value)
    return accuracy
