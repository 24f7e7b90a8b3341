"""Rephrased benchmark items: embedding candidates, confirmed by a second signal or an LLM.

N-gram checks miss a benchmark question that was reworded or translated (Yang et al. 2023,
"Rethinking Benchmarks and Contamination for Language Models with Rephrased Samples": a
Llama-2-13B trained on rephrased MMLU test items scored 85.9 and passed 13-gram checks).
Their LLM Decontaminator embeds every training sample and every benchmark item, takes
each sample's most similar benchmark item (top-1 cosine) and asks a strong LLM whether the
two are the same question. This module does the same for the decontamination gate:

    from distill.evaluate.paraphrase import ParaphraseConfig, find_paraphrases
    found = find_paraphrases(train_texts, benchmark_texts, ParaphraseConfig())

Two stages. A training text whose top-1 cosine is at or above `threshold` is a
candidate. The cosine alone cannot decide: with MiniLM, a look-alike on the same topic
(the same word problem with other numbers, the same sentence asking for another thing)
scores 0.8-1.0, as high as a rewording, so a threshold that keeps every look-alike out
also loses most rewordings (docs/decontamination.md has the measurements). So a
candidate is flagged only when a second signal confirms it:

- without a judge (`confirm: agreement`, the default), its numbers and words must agree
  with the item's (distill/evaluate/agreement.py: the same numbers once "twelve" and
  "12" are one, and every word of the item kept or a real rewording);
- with a judge, the judge's "same" flags, "different" lists it as suspect, and an answer
  it cannot parse falls back to the agreement check.

Unconfirmed candidates are listed as suspects, never silently dropped. Embeddings come
from `distill.metrics.embeddings.embed` (sentence-transformers, the bundled offline
MiniLM by default, or any local or hub model by name): the optional extra `embeddings`.
The thresholds were set on MiniLM; another model needs its own, which
`scripts/bench_paraphrase.py --model NAME` measures.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from distill.evaluate.agreement import Evidence, compare, confirms
from distill.models import ServedModel
from distill.settings import Strict

INSTALL_HINT = "pip install 'distill[embeddings]'"


class JudgeConfig(ServedModel):
    """The LLM that confirms a paraphrase candidate, on any backend.

    GPT-4 behind an OpenAI-compatible server, as in LLM Decontaminator: set
    engine.base_url and engine.api_key_env.
    """

    template: str = Field("decontamination_judge", description="Prompt template in "
                          "distill/prompts (variables benchmark, candidate).")
    max_tokens: int = Field(8, ge=1, description="The answer is one word.")


class ParaphraseConfig(Strict):
    """The recipe's `decontamination.paraphrase` section.

    The thresholds were chosen on the development half of tests/assets/paraphrase_eval.jsonl
    with the bundled MiniLM (scripts/bench_paraphrase.py): the values in the middle of
    the range that flags no clean look-alike there.
    """

    threshold: float = Field(
        0.7, ge=-1, le=1, description="Top-1 cosine similarity at or above which a training "
        "example is a paraphrase candidate; a candidate is flagged only once confirmed "
        "(`confirm`, or the judge). MiniLM on tests/assets/paraphrase_eval.jsonl: rephrased "
        "items 0.72-0.99, clean look-alikes on the same topic (other numbers, another "
        "question) 0.46-1.0.")
    confirm: Literal["agreement", "none"] = Field(
        "agreement", description="How a candidate is confirmed without a judge (and when "
        "the judge's answer cannot be parsed). agreement: its numbers must be the "
        "item's (\"twelve\" = \"12\", \"1,200\" = \"1200\"), its question must add no "
        "word of comparison, and it must keep every content word of the item or be a "
        "real rewording at `reworded_cosine` or above (the rule: "
        "distill/evaluate/agreement.py). none: every candidate is flagged, on the cosine "
        "alone (at 0.8 that flagged 72-78% of the clean look-alikes measured).")
    reworded_cosine: float = Field(
        0.8, ge=-1, le=1, description="With confirm: agreement, a candidate that lacks some "
        "of the item's words is flagged only at this cosine or above, and only when "
        "reworded (see reworded_max_similarity).")
    reworded_max_similarity: float = Field(
        0.5, ge=0, le=1, description="...and when its word sequence is at most this similar "
        "to the item's (difflib ratio after normalisation): the item with a word or two "
        "swapped (\"Celsius\" -> \"Fahrenheit\") scores 0.8-0.95, a rewording about 0.5 "
        "or less.")
    fields: list[Literal["instruction", "input", "output"]] = Field(
        default_factory=lambda: ["instruction", "input"], min_length=1,
        description="Fields of a training example that are embedded (the question, as the "
        "benchmark side is each item's prompt).")
    model: str | None = Field(None, description="sentence-transformers model (local path or "
                              "name); null: the bundled all-MiniLM-L6-v2. The thresholds "
                              "were set with MiniLM: measure another model's with "
                              "scripts/bench_paraphrase.py --model.")
    judge: JudgeConfig | None = Field(None, description="LLM judge that confirms candidates "
                                      "instead of the agreement check; null: no judge.")


@dataclass
class Neighbour:
    """A training text's most similar benchmark text, and whether it is confirmed."""

    item: int  # index into the training texts
    doc: int  # index into the benchmark texts
    cosine: float
    evidence: Evidence  # how its numbers and words compare with the benchmark text's
    agrees: bool  # whether that evidence confirms it (always True with confirm: none)
    judge: str | None = None  # "same", "different", "unclear"; None: no judge

    @property
    def confirmed(self) -> bool:
        """Flag it: the judge says "same", or no usable verdict and the evidence agrees."""
        if self.judge in ("same", "different"):
            return self.judge == "same"
        return self.agrees


def nearest(train_texts: Sequence[str], bench_texts: Sequence[str], model: str | None = None,
            block: int = 4096) -> list[tuple[int, float]]:
    """(index of the most similar benchmark text, cosine) for every training text."""
    import numpy as np

    embed = _embedder()
    bench = embed(list(bench_texts), model)
    result: list[tuple[int, float]] = []
    for start in range(0, len(train_texts), block):
        # Block by block, so that the similarity matrix stays small for large datasets.
        vectors = embed(list(train_texts[start:start + block]), model)
        sims = vectors @ bench.T
        best = np.argmax(sims, axis=1)
        result += [(int(j), float(sims[i, j])) for i, j in enumerate(best)]
    return result


def find_paraphrases(train_texts: Sequence[str], bench_texts: Sequence[str],
                     config: ParaphraseConfig, judge_backend: Any = None) -> list[Neighbour]:
    """Every training text whose top-1 benchmark neighbour is at or above the threshold.

    Each candidate carries the agreement evidence and, with `config.judge` (or a ready
    `judge_backend`), the judge's verdict; `Neighbour.confirmed` says whether to flag it.
    """
    if not train_texts or not bench_texts:
        return []
    candidates = []
    for i, (j, cosine) in enumerate(nearest(train_texts, bench_texts, config.model)):
        if cosine < config.threshold:
            continue
        evidence = compare(bench_texts[j], train_texts[i])
        agrees = config.confirm == "none" or confirms(
            evidence, cosine, config.reworded_cosine, config.reworded_max_similarity)
        candidates.append(Neighbour(item=i, doc=j, cosine=cosine, evidence=evidence,
                                    agrees=agrees))
    if candidates and (config.judge is not None or judge_backend is not None):
        verdicts = judge_pairs([(bench_texts[c.doc], train_texts[c.item]) for c in candidates],
                               config.judge, judge_backend)
        for candidate, verdict in zip(candidates, verdicts, strict=True):
            candidate.judge = verdict
    return candidates


def judge_pairs(pairs: Sequence[tuple[str, str]], config: JudgeConfig | None,
                backend: Any = None) -> list[str]:
    """The judge's verdict on each (benchmark item, training text): same / different / unclear.

    `backend` is any object with the Backend protocol; without it one is loaded from
    `config` and closed afterwards.
    """
    from distill.backends.base import FAILED, GenerationRequest, Sampling, load_backend
    from distill.models import model_path
    from distill.prompts import render

    template = config.template if config is not None else "decontamination_judge"
    max_tokens = config.max_tokens if config is not None else 8
    owned = backend is None
    if owned:
        if config is None:
            raise ValueError("judge_pairs: give a judge config or a backend")
        backend = load_backend(config.backend, model=model_path(config.model),
                               chat_template=config.chat_template, **config.engine)
    # Greedy: the same pair always gets the same verdict (LLM Decontaminator samples at 0.3).
    sampling = Sampling(temperature=0.0, max_tokens=max_tokens, seed=0)
    requests = [GenerationRequest(
        id=f"judge-{i}", sampling=sampling,
        messages=[{"role": "user", "content": render(template, benchmark=bench,
                                                     candidate=text)}])
        for i, (bench, text) in enumerate(pairs)]
    try:
        generations = backend.generate(requests)
    finally:
        if owned:
            backend.close()
    failed = [g for g in generations if g.finish_reason == FAILED]
    if failed:  # an unasked question must not read as an unclear answer: the gate would pass
        raise RuntimeError(f"decontamination judge: {len(failed)} of {len(requests)} "
                           f"questions got no answer ({failed[0].extra.get('error', '')}); "
                           "run again")
    by_request = {g.request_id: g.text for g in generations if g.index == 0}
    return [parse_verdict(by_request[request.id]) for request in requests]


_YES = re.compile(r"^\W*(true|yes|same)\b", re.IGNORECASE)
_NO = re.compile(r"^\W*(false|no|different)\b", re.IGNORECASE)


def parse_verdict(text: str) -> str:
    """The verdict in a judge's answer: same, different or unclear.

    "same" for an answer starting with True / Yes, "different" for False / No.
    """
    if _YES.match(text):
        return "same"
    return "different" if _NO.match(text) else "unclear"


def _embedder() -> Any:
    """`distill.metrics.embeddings.embed`, with a clear error when the extra is missing."""
    try:
        import sentence_transformers  # noqa: F401

        from distill.metrics.embeddings import embed
    except ImportError as error:
        raise ImportError(f"paraphrase decontamination needs sentence embeddings "
                          f"({error.name or error}): {INSTALL_HINT}") from None
    return embed
