"""Preference pairs, UltraFeedback style: several answers per prompt, a judge, best vs other.

Follows UltraFeedback (Cui et al. 2023) and its binarized form used to train Zephyr
(Tunstall et al. 2023, HuggingFaceH4/ultrafeedback_binarized):

1. Prompts: the seed tasks, or a JSONL of prompts (`prompts:`; rows with `instruction`
   and optional `input`, or a `prompt` string).
2. Responses: every prompt is answered once per combination of `models` x
   `temperatures` x `system_prompts` x `samples` (UltraFeedback: 4 answers from 4 of 17
   models, each under one of several principle system prompts). System prompts steer
   generation only; the pair's prompt is the user turn alone, as in UltraFeedback.
3. Judge (`distill.judge`): rubric (1-5 on instruction following, truthfulness,
   honesty, helpfulness, temperature 0; score = mean), pairwise (every two answers,
   asked in both orders; score = share of comparisons won), or an exact verifier.
   Unparseable judgements leave that answer unjudged; they are counted, never fatal.
4. Pairs: the best-scored answer is `chosen`; `rejected` is a random other answer
   (`best_vs_random`, UltraFeedback binarized) or the worst (`best_vs_worst`). Ties are
   dropped, as are pairs whose margin is below `min_margin` and prompts with fewer than
   two distinct judged answers; every dropped prompt is kept in rejected.jsonl.

Judge hygiene: the stats (and the report) give how often the two orders of a pairwise
comparison agree and how often the first position wins, and warn when the judge is one
of the models that wrote the answers (LLM judges prefer their own outputs).

    generate:
      kind: preference
      temperatures: [0.7, 1.0]
      judge: {kind: llm, mode: rubric}
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter, defaultdict
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from distill.backends.base import GenerationRequest
from distill.component import Dependencies
from distill.generate.base import GeneratorSettings
from distill.generate.context import GenerationContext, GenerationResult
from distill.generate.responses import ResponseSampling
from distill.judge import (
    LLMJudge,
    LLMJudgeConfig,
    Rating,
    VerifierJudge,
    VerifierJudgeConfig,
    judge_context,
    open_judge_backend,
)
from distill.models import ModelSpec, ServedModel
from distill.records import Example, Lineage, PreferencePair, Rejected, iter_jsonl
from distill.registry import GENERATORS
from distill.settings import resolve_path

METHOD = "preference"
SELF_JUDGE_WARNING = ("the judge is also one of the models that wrote the responses: LLM "
                      "judges favour their own outputs (self-preference bias); name another "
                      "judge.model for unbiased pairs")

log = logging.getLogger("distill")


@GENERATORS.register
class Config(GeneratorSettings):
    """`generate:` settings of the preference-pair method."""

    OUTPUT: ClassVar[Literal["examples", "pairs"]] = "pairs"

    kind: Literal["preference"] = "preference"
    prompts: str | None = Field(
        None, description="JSONL of prompts (`instruction` + optional `input`, or `prompt`); "
        "null: the seed tasks.")
    num_prompts: int | None = Field(
        None, ge=1, description="Use the first this many prompts; null: all.")
    models: list[Literal["teacher"] | ServedModel] = Field(
        default_factory=lambda: ["teacher"], min_length=1,
        description="Models that answer every prompt: `teacher` or {model, revision, "
        "backend, engine, chat_template}. UltraFeedback: 4 of a pool of 17.")
    temperatures: list[Annotated[float, Field(ge=0.0)]] = Field(
        default_factory=lambda: [0.7, 1.0], min_length=1,
        description="Each model answers once per temperature (replaces "
        "sampling.temperature).")
    system_prompts: list[str | None] = Field(
        default_factory=lambda: [None], min_length=1,
        description="Each model answers once per system prompt (null: none); they steer "
        "generation only and are not part of the pair's prompt.")
    samples: int = Field(1, ge=1, description="Answers per model, temperature and system "
                         "prompt.")
    sampling: ResponseSampling = Field(default_factory=ResponseSampling)
    judge: LLMJudgeConfig | VerifierJudgeConfig = Field(
        default_factory=LLMJudgeConfig, discriminator="kind",
        description="llm: an LLM judge (rubric or pairwise, default model: the teacher); "
        "verifier: an exact checker.")
    pairing: Literal["best_vs_random", "best_vs_worst"] = Field(
        "best_vs_random", description="best_vs_random: rejected is a random other answer "
        "(UltraFeedback binarized); best_vs_worst: the lowest-scored one.")
    min_margin: float = Field(
        0.0, ge=0.0, description="Drop pairs whose chosen-minus-rejected score is below "
        "this (rubric: points on 1-5; pairwise: win share). Ties are always dropped.")

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: str | None, info: ValidationInfo) -> str | None:
        path = resolve_path(value, info)
        if path is not None:
            load_prompts(path)  # the run's reader: a bad line is named at load, not later
        return path

    @model_validator(mode="after")
    def _two_answers(self) -> Config:
        if self.responses_per_prompt < 2:
            raise ValueError("a preference pair needs at least two responses per prompt: "
                             "give more models, temperatures, system_prompts or samples")
        greedy = self.temperatures.count(0.0)
        if greedy and (self.samples > 1 or greedy > 1):
            # greedy decoding ignores the seed: the copies are identical, and identical
            # answers make no pair (ties are dropped); vLLM refuses greedy n > 1 outright
            raise ValueError(f"{self.samples * greedy} answers per model and system prompt "
                             f"at temperature 0 (samples {self.samples} x temperatures "
                             f"{self.temperatures}) are one greedy answer repeated: use "
                             "samples 1 and temperature 0 once, or temperatures above 0")
        return self

    @property
    def responses_per_prompt(self) -> int:
        """Answers written for every prompt."""
        return (len(self.models) * len(self.temperatures) * len(self.system_prompts)
                * self.samples)

    def dependencies(self) -> Dependencies:
        """Answer models and judge ("teacher": the recipe's), prompts, judge template, seeds."""
        models: dict[str, ModelSpec | str] = {f"answers:{m}": model
                                              for m, model in enumerate(self.models)}
        templates: tuple[str, ...] = ()
        if self.judge.kind == "llm":
            templates = (self.judge.template,)
            models["judge"] = self.judge.model if self.judge.model is not None else "teacher"
        if self.prompts:
            return Dependencies(models=models, files={"prompts": self.prompts},
                                templates=templates)
        return Dependencies(models=models, templates=templates, inputs=("seed_tasks",))

    def run(self, ctx: GenerationContext) -> GenerationResult:
        """Answer each prompt several times, judge the answers and pair best vs other."""
        tasks = load_prompts(self.prompts) if self.prompts else list(ctx.seed_tasks())
        tasks = tasks[:self.num_prompts] if self.num_prompts else tasks
        if not tasks:
            raise ValueError("preference: no prompts (no seed tasks and no `prompts` file)")
        # Prompt ids of our own: the seed or prompt file's ids need not be unique or safe.
        tasks = [task.model_copy(update={"id": f"r{ctx.round}-q{i:05d}",
                                         "lineage": Lineage(prompt_id=task.id)})
                 for i, task in enumerate(tasks)]
        rejected: list[Rejected] = []
        responses = _generate_responses(self, ctx, tasks, rejected)
        judge, ratings, judge_name = _judge(self, ctx, tasks, responses)
        for response, rating in zip(responses, ratings, strict=True):
            if not rating.ok:
                rejected.append(Rejected(id=response.id, stage="judge",
                                         reason=f"judge_{rating.reason.split(':')[0]}",
                                         record=response.to_json() | {"raw": rating.raw}))

        pairs, dropped = _make_pairs(self, ctx, tasks, responses, ratings, judge_name)
        rejected += dropped
        generators = _generator_names(self, ctx.teacher_name)
        is_generator = self.judge.kind == "llm" and judge_name in generators
        warnings = [SELF_JUDGE_WARNING] if is_generator else []
        for warning in warnings:
            log.warning("preference: %s", warning)
        reasons = Counter(r.reason for r in rejected)
        chosen = [p.score_chosen for p in pairs if p.score_chosen is not None]
        rejected_scores = [p.score_rejected for p in pairs if p.score_rejected is not None]
        stats = {
            "method": METHOD,
            "prompts": len(tasks),
            "responses_per_prompt": self.responses_per_prompt,
            "responses": len(responses),
            "pairs": len(pairs),
            "parse_rejected": dict(reasons),
            "judge": {"kind": self.judge.kind, "model": judge_name,
                      "mode": self.judge.mode if self.judge.kind == "llm" else "verifier",
                      "is_generator": is_generator, **judge.stats.as_dict()},
            "mean_score_chosen": round(sum(chosen) / len(chosen), 4) if chosen else None,
            "mean_score_rejected": (round(sum(rejected_scores) / len(rejected_scores), 4)
                                    if rejected_scores else None),
            "warnings": warnings,
        }
        return GenerationResult(examples=pairs, rejected=rejected, stats=stats)

    @classmethod
    def report_section(cls, stats: dict[str, Any]) -> list[str]:
        """The report's "Preference pairs" section: pairs, the judge and its hygiene."""
        judge = stats.get("judge", {})
        dropped = stats.get("parse_rejected", {})
        lines = ["### Preference pairs", "",
                 f"{stats.get('pairs', 0)} pairs from {stats.get('prompts', 0)} prompts x "
                 f"{stats.get('responses_per_prompt', 0)} responses ({stats.get('responses', 0)} "
                 f"non-empty). Judge `{judge.get('model')}` ({judge.get('kind')}, "
                 f"{judge.get('mode')}): {judge.get('judged', 0)} judgements, unusable: "
                 + (", ".join(f"{k} {v}" for k, v in judge.get("malformed", {}).items()) or "none")
                 + "."]
        if "order_agreement" in judge:
            lines.append(f"Both orders agreed on {judge['order_agreement']:.0%} of "
                         f"{judge['comparisons']} comparisons; the first position won "
                         f"{judge.get('first_position_win_rate', 0):.0%} of decisive verdicts "
                         "(50 % is unbiased).")
        if stats.get("mean_score_chosen") is not None:
            lines.append(f"Mean score: chosen {stats['mean_score_chosen']}, rejected "
                         f"{stats['mean_score_rejected']}.")
        lines.append("Not paired or judged: "
                     + (", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) or "none") + ".")
        lines += [f"**Warning:** {warning}." for warning in stats.get("warnings", [])]
        return lines + [""]


def load_prompts(path: str) -> list[Example]:
    """Prompts from a JSONL file; a row without a usable prompt is an error naming its line."""
    tasks = []
    for number, row in enumerate(iter_jsonl(path), start=1):
        instruction = row.get("instruction", row.get("prompt"))
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"{path}:{number}: a prompt row needs a non-empty `instruction` "
                             "(or `prompt`) string")
        tasks.append(Example(id=str(row.get("id", f"prompt-{number}")),
                             instruction=instruction.strip(), input=row.get("input") or ""))
    if not tasks:
        raise ValueError(f"{path}: no prompts")
    return tasks


def _generator_names(config: Config, teacher_name: str) -> set[str]:
    from distill.models import model_path

    return {teacher_name if m == "teacher" else model_path(m.model)
            for m in config.models}


def _generate_responses(config: Config, ctx: GenerationContext, tasks: list[Example],
                        rejected: list[Rejected]) -> list[Example]:
    """Every model's answers to every task; empty ones go to `rejected`."""
    responses: list[Example] = []
    for m, model in enumerate(config.models):
        backend = None if model == "teacher" else open_judge_backend(model, ctx.seed)
        model_ctx = ctx if backend is None else judge_context(ctx, backend, model)
        name = ctx.teacher_name if model == "teacher" else model.model
        try:
            requests, sources = [], {}
            for task in tasks:
                for t, temperature in enumerate(config.temperatures):
                    for s, system in enumerate(config.system_prompts):
                        for k in range(config.samples):
                            rid = f"{task.id}-m{m}-t{t}-s{s}-k{k}"
                            sampling = dataclasses.replace(
                                config.sampling.to_sampling(
                                    seed=ctx.request_seed("preference", rid)),
                                temperature=temperature)
                            messages = [{"role": "user", "content": task.prompt_text}]
                            if system:
                                messages.insert(0, {"role": "system", "content": system})
                            requests.append(GenerationRequest(id=rid, messages=messages,
                                                              sampling=sampling))
                            sources[rid] = (task, sampling, system)
            generations = model_ctx.generate(f"responses-m{m}", requests)
        finally:
            if backend is not None:
                backend.close()
        for generation in generations:
            if generation.index != 0:
                continue
            task, sampling, system = sources[generation.request_id]
            lineage = Lineage(round=ctx.round, method=METHOD, teacher=name,
                              sampling=sampling.as_dict(), prompt_id=task.lineage.prompt_id,
                              finish_reason=generation.finish_reason, system_prompt=system)
            response = Example(id=generation.request_id, instruction=task.instruction,
                               input=task.input, output=(generation.text or "").strip(),
                               lineage=lineage)
            if response.output:
                responses.append(response)
            else:
                rejected.append(Rejected(id=response.id, stage="responses",
                                         reason="empty_response", record=response.to_json()))
    return responses


def _judge(config: Config, ctx: GenerationContext, tasks: list[Example],
           responses: list[Example]):
    """(judge, one rating per response, judge identity)."""
    if config.judge.kind == "verifier":
        judge = VerifierJudge(config.judge)
        return judge, judge.rate(responses), judge.name
    from distill.models import model_path

    choice = config.judge.model
    backend = None if choice is None else open_judge_backend(choice, ctx.seed)
    name = ctx.teacher_name if choice is None else model_path(choice.model)
    judge_ctx = ctx if backend is None else judge_context(ctx, backend, choice)
    judge = LLMJudge(config.judge, judge_ctx, name)
    try:
        if config.judge.mode == "rubric":
            ratings = judge.rate(responses, key="judge-rubric")
        else:
            ratings = _pairwise_ratings(judge, tasks, responses)
    finally:
        if backend is not None:
            backend.close()
    return judge, ratings, name


def _pairwise_ratings(judge: LLMJudge, tasks: list[Example],
                      responses: list[Example]) -> list[Rating]:
    """Each response's share of its comparisons won, over every other answer to its prompt."""
    by_task = _group(tasks, responses)
    items, pairs = [], []
    for task in tasks:
        group = by_task[task.id]
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                if group[i].output.strip() != group[j].output.strip():
                    item_id = f"{group[i].id}-vs-{group[j].id[len(task.id) + 1:]}"
                    items.append((item_id, task, group[i].output, group[j].output))
                    pairs.append((group[i].id, group[j].id))
    comparisons = judge.compare(items, key="judge-pairwise")
    shares: dict[str, list[float]] = defaultdict(list)
    failures: Counter[str] = Counter()
    for (x, y), comparison in zip(pairs, comparisons, strict=True):
        if comparison.ok:
            shares[x].append(comparison.share)
            shares[y].append(1.0 - comparison.share)
        else:
            failures[x] += 1
            failures[y] += 1
    ratings = []
    for response in responses:
        won = shares.get(response.id)
        if won:
            ratings.append(Rating(ok=True, scores={"win_rate": sum(won) / len(won)},
                                  rationales={"comparisons": str(len(won))}))
        else:
            reason = "no_verdict" if failures[response.id] else "no_comparison"
            ratings.append(Rating(ok=False, reason=reason))
    return ratings


def _group(tasks: list[Example], responses: list[Example]) -> dict[str, list[Example]]:
    by_task: dict[str, list[Example]] = {task.id: [] for task in tasks}
    for response in responses:  # ids are "<task id>-m<m>-t<t>-s<s>-k<k>"
        by_task[response.id.rsplit("-", 4)[0]].append(response)
    return by_task


def _make_pairs(config: Config, ctx: GenerationContext, tasks: list[Example],
                responses: list[Example], ratings: list[Rating],
                judge_name: str) -> tuple[list[PreferencePair], list[Rejected]]:
    """Best vs random other (or worst) per prompt; ties and small margins dropped."""
    from distill.prompts import template_hash

    rating_of = {r.id: rating for r, rating in zip(responses, ratings, strict=True)}
    llm = config.judge.kind == "llm"
    mode = config.judge.mode if llm else "verifier"
    template = config.judge.template if llm else None
    pairs: list[PreferencePair] = []
    dropped: list[Rejected] = []
    by_task = _group(tasks, responses)
    for task in tasks:
        judged, seen = [], set()
        for response in by_task[task.id]:
            text = " ".join(response.output.split())
            if rating_of[response.id].ok and text not in seen:
                seen.add(text)
                judged.append((response, rating_of[response.id].score))
        reason = None
        if len(judged) < 2:
            reason = "too_few_judged" if len(by_task[task.id]) >= 2 else "too_few_responses"
        else:
            best = max(judged, key=lambda item: item[1])  # the first of equals
            others = [item for item in judged if item[0] is not best[0]]
            if config.pairing == "best_vs_random":
                worse = random.Random(ctx.request_seed("pair", task.id)).choice(others)
            else:
                worse = min(others, key=lambda item: item[1])
            margin = best[1] - worse[1]
            if margin <= 0:
                reason = "tie"
            elif margin < config.min_margin:
                reason = "below_min_margin"
        if reason is not None:
            dropped.append(Rejected(id=task.id, stage="pairs", reason=reason, record={
                "instruction": task.instruction, "input": task.input,
                "responses": [{"id": r.id, "output": r.output,
                               "score": rating_of[r.id].score} for r in by_task[task.id]]}))
            continue
        (good, good_score), (bad, bad_score) = best, worse
        pairs.append(PreferencePair.build(
            task.id, task, good.output, bad.output,
            score_chosen=good_score, score_rejected=bad_score,
            lineage=Lineage(round=ctx.round, method=METHOD, teacher=good.lineage.teacher,
                            template_hash=template_hash(template) if template else "",
                            sampling=good.lineage.sampling,
                            prompt_id=task.lineage.prompt_id,
                            chosen_source=_source(good), rejected_source=_source(bad),
                            judge={"kind": config.judge.kind, "model": judge_name,
                                   "mode": mode}),
            scores={"judge": {"chosen": rating_of[good.id].scores,
                              "rejected": rating_of[bad.id].scores,
                              "chosen_rationale": rating_of[good.id].rationales,
                              "rejected_rationale": rating_of[bad.id].rationales}}))
    return pairs, dropped


def _source(response: Example) -> dict[str, Any]:
    lineage = response.lineage
    return {"id": response.id, "model": lineage.teacher,
            "temperature": lineage.sampling.get("temperature"),
            "system_prompt": getattr(lineage, "system_prompt", None),
            "finish_reason": getattr(lineage, "finish_reason", "")}
