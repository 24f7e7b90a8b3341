"""LLM-as-judge: UltraFeedback rubric scores and pairwise comparisons in both orders.

Shared by the preference generator (`distill.generate.preference`) and the judge filter
(`distill.filters.judge`). Two modes, both at temperature 0 as UltraFeedback's GPT-4
annotation (Cui et al. 2023):

- rubric: the judge rates one response 1-5 on UltraFeedback's four aspects
  (instruction following, truthfulness, honesty, helpfulness) with a one-sentence
  rationale each; the response's score is the mean. UltraFeedback asks one prompt per
  aspect; distill asks for every chosen aspect in one prompt (4x fewer judge calls).
- pairwise: the judge picks the better of two responses (or a tie). Every comparison is
  asked in both orders, and the two verdicts are averaged, so a judge that prefers the
  first (or second) position cancels out; how often the two orders agree is reported.

Judge output is parsed leniently (markdown, "4/5", a JSON object) but never guessed:
output that does not give every asked score is a `Rating` with `ok=False` and a reason
(`empty`, `missing:<aspect>`, `out_of_range:<aspect>`, `no_verdict`, `request_failed`
when the judge's request ran out of retries), counted by the
callers and kept out of the data, never an exception.

`kind: verifier` scores with an exact checker instead (the microworld's: a correct
answer 5, a wrong one 1), for worlds whose answers can be checked.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import Field

from distill.backends.base import GenerationRequest, Sampling
from distill.filters.verify import CheckerName
from distill.generate.context import GenerationContext
from distill.models import ServedModel
from distill.records import Example
from distill.settings import Strict

# UltraFeedback's aspects and the question its annotation templates ask of each.
ASPECTS: dict[str, tuple[str, str]] = {
    "instruction_following": (
        "Instruction following",
        "does the response fulfil the task goal and respect the instruction's restrictions?"),
    "truthfulness": (
        "Truthfulness",
        "is the response accurate, free of misleading or fabricated details?"),
    "honesty": (
        "Honesty",
        "does the response's confidence match its correctness, expressing uncertainty "
        "where it should?"),
    "helpfulness": (
        "Helpfulness",
        "is the response correct, informative and useful for the task?"),
}
Aspect = Literal["instruction_following", "truthfulness", "honesty", "helpfulness"]
RUBRIC_TEMPLATE = "judge_rubric"
PAIRWISE_TEMPLATE = "judge_pairwise"
# why a judgement is missing when the judge's request ran out of retries (the stage files
# the request itself as rejected and asks again next run: distill.generate.failures)
REQUEST_FAILED = "request_failed"


class JudgeSettings(Strict):
    """Which model judges, on which aspects (shared by the generator and the filter)."""

    model: ServedModel | None = Field(
        None, description="The judge model; null: the teacher (the report warns when the "
        "judge also wrote the responses: LLM judges favour their own outputs).")
    aspects: list[Aspect] = Field(
        default_factory=lambda: list(ASPECTS), min_length=1,
        description="UltraFeedback aspects rated 1-5 in rubric mode; the score is their mean.")
    max_tokens: int = Field(512, ge=1, description="Most new tokens per judgement "
                            "(sampling is greedy, temperature 0, as UltraFeedback).")


class LLMJudgeConfig(JudgeSettings):
    """An LLM judge: rubric scores or pairwise comparisons."""

    kind: Literal["llm"] = "llm"
    mode: Literal["rubric", "pairwise"] = Field(
        "rubric", description="rubric: each response rated 1-5 per aspect (score = mean); "
        "pairwise: every two responses of a prompt compared, in both orders (score = share "
        "of comparisons won, ties half).")

    @property
    def template(self) -> str:
        """The prompt template this judge renders (declared by whoever uses the judge)."""
        return RUBRIC_TEMPLATE if self.mode == "rubric" else PAIRWISE_TEMPLATE


class VerifierJudgeConfig(Strict):
    """An exact checker as judge: a correct answer scores 5, a wrong one 1."""

    kind: Literal["verifier"] = "verifier"
    checker: CheckerName = Field(description="A registered answer checker (the verify "
                                 "filter's); answers it cannot verify are unjudged.")


@dataclass
class Rating:
    """One judgement of one response (rubric, or a pairwise win share)."""

    ok: bool
    scores: dict[str, float] = field(default_factory=dict)
    rationales: dict[str, str] = field(default_factory=dict)
    reason: str = ""  # why not ok
    raw: str = ""

    @property
    def score(self) -> float | None:
        """Mean over aspects; None when unjudged."""
        return sum(self.scores.values()) / len(self.scores) if self.ok and self.scores else None


@dataclass
class Comparison:
    """Two responses compared in both orders; `share` is the first one's (0..1)."""

    ok: bool
    share: float = 0.5
    verdicts: tuple[str, str] = ("", "")  # winner per order, as the judge saw it: A / B / tie
    agree: bool = False  # both orders picked the same response (or both a tie)
    rationales: tuple[str, str] = ("", "")
    reason: str = ""


# -- parsing ------------------------------------------------------------------------------

_SCORE = r"\**\s*\[?\s*(?P<score>-?\d+(?:\.\d+)?)\s*\]?\s*(?:/\s*5|out of 5)?"
_VERDICT = re.compile(
    r"(?im)^[\s>*#_-]*(?:final\s+)?(?:winner|verdict|better\s+response|answer)\s*\**\s*[:=-]"
    r"\s*\**\s*\[*\s*(?:response\s+)?(?P<verdict>a|b|tie|both|neither|equal)\b")
_BARE_VERDICT = re.compile(r"(?i)^\W*(?:\[\[)?\s*(?:response\s+)?(a|b|tie)\s*(?:\]\])?\W*$")


def parse_rubric(text: str, aspects: list[str]) -> Rating:
    """Scores and rationales for `aspects` from a judge's rubric answer.

    Reads "Aspect: 4" lines (markdown, "4/5" and "[4]" tolerated) with a following
    "Rationale:" line, or a JSON object keyed by aspect (values a number or
    {"score", "rationale"}). Every aspect needs a score in 1..5.
    """
    if not text or not text.strip():
        return Rating(ok=False, reason="empty", raw=text or "")
    rating = _parse_rubric_lines(text, aspects)
    if not rating.ok:
        from_json = _parse_rubric_json(text, aspects)
        if from_json is not None and from_json.ok:
            return from_json
    return rating


def _parse_rubric_lines(text: str, aspects: list[str]) -> Rating:
    found: list[tuple[int, int, str, float]] = []  # (start, end, aspect, score)
    for aspect in aspects:
        title = re.escape(ASPECTS[aspect][0]).replace(r"\ ", r"[\s_-]*")
        pattern = re.compile(rf"(?im)^[\s>*#_-]*{title}[\s*]*(?:\([^)]*\))?\s*[:=-]\s*{_SCORE}")
        match = pattern.search(text)
        if match is None:
            return Rating(ok=False, reason=f"missing:{aspect}", raw=text)
        score = float(match.group("score"))
        if not 1 <= score <= 5:
            return Rating(ok=False, reason=f"out_of_range:{aspect}", raw=text)
        found.append((match.start(), match.end(), aspect, score))
    scores = {aspect: score for _, _, aspect, score in found}  # in the asked order
    found.sort()  # by position: an aspect's rationale runs up to the next aspect
    rationales = {}
    for i, (_, end, aspect, _) in enumerate(found):
        stop = found[i + 1][0] if i + 1 < len(found) else len(text)
        tail = text[end:stop].strip()
        tail = re.sub(r"(?i)^[\s*_-]*rationale[\s*]*:\s*", "", tail.lstrip(" -:.)\n*"))
        rationales[aspect] = " ".join(tail.split())
    return Rating(ok=True, scores=scores, rationales=rationales, raw=text)


def _parse_rubric_json(text: str, aspects: list[str]) -> Rating | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        data = json.loads(text[start:end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    keyed = {re.sub(r"[\s_-]+", "_", str(k).strip().lower()): v for k, v in data.items()}
    scores, rationales = {}, {}
    for aspect in aspects:
        value = keyed.get(aspect)
        if isinstance(value, dict):
            rationales[aspect] = str(value.get("rationale", ""))
            value = value.get("score", value.get("rating"))
        try:
            score = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return Rating(ok=False, reason=f"missing:{aspect}", raw=text)
        if not 1 <= score <= 5:
            return Rating(ok=False, reason=f"out_of_range:{aspect}", raw=text)
        scores[aspect] = score
        rationales.setdefault(aspect, "")
    return Rating(ok=True, scores=scores, rationales=rationales, raw=text)


def parse_verdict(text: str) -> tuple[str | None, str]:
    """("A" | "B" | "tie" | None, rationale) from a pairwise answer; None: no verdict."""
    if not text or not text.strip():
        return None, ""
    matches = list(_VERDICT.finditer(text))
    if matches:
        word = matches[-1].group("verdict").lower()  # the last one is the final answer
    else:
        bare = _BARE_VERDICT.match(text.strip())
        if bare is None:
            return None, ""
        word = bare.group(1).lower()
    verdict = {"a": "A", "b": "B"}.get(word, "tie")
    rationale = re.search(r"(?im)^[\s*_-]*rationale[\s*]*:\s*(.+)$", text)
    return verdict, (rationale.group(1).strip() if rationale else "")


def combine_orders(first: str | None, second: str | None) -> Comparison:
    """One comparison from the verdict with x shown first and the one with y shown first.

    Each order gives x 1 (win), 0.5 (tie) or 0 (loss); x's share is the mean, so a judge
    that always picks the same position gives 0.5: position bias cancels.
    """
    if first is None or second is None:
        return Comparison(ok=False, verdicts=(first or "", second or ""), reason="no_verdict")
    x_first = {"A": 1.0, "tie": 0.5, "B": 0.0}[first]
    x_second = {"B": 1.0, "tie": 0.5, "A": 0.0}[second]  # in the second order, x is B
    return Comparison(ok=True, share=(x_first + x_second) / 2, verdicts=(first, second),
                      agree=x_first == x_second)


# -- judges -------------------------------------------------------------------------------


@dataclass
class JudgeStats:
    """Counts for the report: judgements made, failures by reason, position agreement."""

    judged: int = 0
    malformed: Counter = field(default_factory=Counter)
    comparisons: int = 0
    agreements: int = 0
    first_position_wins: int = 0  # decisive verdicts (not ties) that picked response A
    decisive: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON form; agreement and first-position share as fractions."""
        data: dict[str, Any] = {"judged": self.judged, "malformed": dict(self.malformed)}
        if self.comparisons:
            data["comparisons"] = self.comparisons
            data["order_agreement"] = round(self.agreements / self.comparisons, 4)
        if self.decisive:
            data["first_position_win_rate"] = round(self.first_position_wins / self.decisive, 4)
        return data


class LLMJudge:
    """Asks a model (through a checkpointed `GenerationContext`) for judgements."""

    def __init__(self, config: JudgeSettings, ctx: GenerationContext, name: str) -> None:
        self.config = config
        self.ctx = ctx
        self.name = name  # model identity for lineage
        self.stats = JudgeStats()

    def _sampling(self, key: str, request_id: str) -> Sampling:
        return Sampling(temperature=0.0, top_p=1.0, max_tokens=self.config.max_tokens, n=1,
                        seed=self.ctx.request_seed("judge", key, request_id))

    def _ask(self, key: str, prompts: list[tuple[str, str]]) -> dict[str, str]:
        requests = [GenerationRequest(id=rid, messages=[{"role": "user", "content": text}],
                                      sampling=self._sampling(key, rid))
                    for rid, text in prompts]
        generations = self.ctx.generate(key, requests) if requests else []
        return {g.request_id: g.text or "" for g in generations if g.index == 0}

    def rate(self, records: list[Example], key: str = "judge") -> list[Rating]:
        """A rubric rating of each record's `output` as an answer to its user turn."""
        from distill.prompts import render

        aspects = [{"title": ASPECTS[a][0], "question": ASPECTS[a][1]}
                   for a in self.config.aspects]
        answers = self._ask(key, [
            (r.id, render(RUBRIC_TEMPLATE, aspects=aspects, instruction=r.prompt_text,
                          response=r.output)) for r in records])
        ratings = []
        for record in records:
            rating = (parse_rubric(answers[record.id], list(self.config.aspects))
                      if record.id in answers else Rating(ok=False, reason=REQUEST_FAILED))
            self._count(rating.ok, rating.reason)
            ratings.append(rating)
        return ratings

    def compare(self, items: list[tuple[str, Example, str, str]],
                key: str = "judge-pairwise") -> list[Comparison]:
        """Compare (id, task, x, y) items, each asked as (x, y) and as (y, x)."""
        from distill.prompts import render

        prompts = []
        for item_id, task, x, y in items:
            for suffix, a, b in (("xy", x, y), ("yx", y, x)):
                prompts.append((f"{item_id}-{suffix}", render(
                    PAIRWISE_TEMPLATE, instruction=task.prompt_text, response_a=a,
                    response_b=b)))
        answers = self._ask(key, prompts)
        comparisons = []
        for item_id, *_ in items:
            if f"{item_id}-xy" not in answers or f"{item_id}-yx" not in answers:
                comparison = Comparison(ok=False, reason=REQUEST_FAILED)
                self._count(False, REQUEST_FAILED)
                comparisons.append(comparison)
                continue
            first, why_first = parse_verdict(answers[f"{item_id}-xy"])
            second, why_second = parse_verdict(answers[f"{item_id}-yx"])
            comparison = combine_orders(first, second)
            comparison.rationales = (why_first, why_second)
            self._count(comparison.ok, comparison.reason)
            if comparison.ok:
                self.stats.comparisons += 1
                self.stats.agreements += comparison.agree
                for verdict in comparison.verdicts:
                    if verdict != "tie":
                        self.stats.decisive += 1
                        self.stats.first_position_wins += verdict == "A"
            comparisons.append(comparison)
        return comparisons

    def _count(self, ok: bool, reason: str) -> None:
        if ok:
            self.stats.judged += 1
        else:
            self.stats.malformed[reason.split(":")[0]] += 1


class VerifierJudge:
    """Rates answers with the verify filter's checker: correct 5, wrong 1, else unjudged."""

    def __init__(self, config: VerifierJudgeConfig) -> None:
        from distill.filters.verify import Config, VerifyFilter

        self.config = config
        self.verify = VerifyFilter(Config(checker=config.checker, keep_unverifiable=False))
        self.name = f"verifier:{config.checker}"
        self.stats = JudgeStats()

    def rate(self, records: list[Example], key: str = "judge") -> list[Rating]:
        """One rating per record."""
        ratings = []
        for verdict in self.verify(records):
            if verdict.reason == "unverifiable":
                rating = Rating(ok=False, reason="unverifiable")
                self.stats.malformed[rating.reason] += 1
            else:
                rating = Rating(ok=True, scores={"correct": 5.0 if verdict.keep else 1.0},
                                rationales={"correct": verdict.reason or "correct"})
                self.stats.judged += 1
            ratings.append(rating)
        return ratings


def open_judge_backend(model: ServedModel, seed: int):
    """Load a judge or answer model's backend (`scheme:name` references resolved)."""
    from distill.backends.base import load_backend
    from distill.models import model_path

    engine = dict(model.engine)
    if model.revision is not None and model.loads_weights():  # the revision fingerprinted
        engine.setdefault("revision", model.revision)
    return load_backend(model.backend, model=model_path(model.model),
                        chat_template=model.chat_template, seed=seed, **engine)


def judge_context(ctx: GenerationContext, backend, model: ServedModel) -> GenerationContext:
    """`ctx` with `model`'s backend, run in this process (same checkpoints, seed, budget).

    The stage's executor serves the teacher alone: judges stay in the orchestrator. What
    the model's requests cost counts against the run's budget at its own price.
    """
    return dataclasses.replace(ctx, backend=backend, executor=None, price=model.price)
