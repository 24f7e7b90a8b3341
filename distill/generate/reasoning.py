r"""Reasoning traces with verified rejection sampling (`generate.kind: reasoning`).

The recipe of DeepSeek-R1-Distill (DeepSeek-AI 2025), s1 (Muennighoff et al. 2025), LIMO
(Ye et al. 2025) and OpenThoughts (Guha et al. 2025): problems with reference answers go
to a teacher that thinks before it answers, N times each; the final answer of every
sample is checked against the reference; the correct traces are kept, up to k per
problem; each problem's pass rate (correct / N) is its difficulty.

    generate:
      kind: reasoning
      problems: {path: problems.jsonl}   # or {dataset: openai/gsm8k, config_name: main,
                                         #     problem_field: question, answer_field: answer}
                                         # or {generator: microworld, count: 400}
      checker: math                      # or code, or a plugin's (microworld)
      samples: 4                         # N
      keep: 1                            # k

1. Problems: a JSONL file (`problem`, `answer`, optional `id`, `input`, `checker`,
   `entry_point`), a dataset `datasets.load_dataset` reads (a hub id or a local
   directory, with its split and column names), or a plugin's generator registered in
   `PROBLEM_SOURCES` (the microworld's draws its multi-step families). `count` takes a
   seeded sample (or makes that many).
2. One request per problem with n = N, seeded per problem (`ctx.request_seed`), so a
   resumed run asks exactly what an uninterrupted one asked. The system prompt asks for
   the thinking inside <think> </think> tags, then the answer; a reasoning model's own
   template that opens the block itself (DeepSeek-R1's) is read as well.
3. Each sample splits into trace and answer (`distill.records.split_trace`); the answer
   (the text after </think>) goes to the problem's checker: `math` reads \boxed{}, "####",
   "the answer is" and the last number (`distill.filters.math_check`); `code` runs the
   answer's code against the reference tests in the sandbox; a plugin's checker (the
   microworld's exact verifiers) reads the answer its own way, and may check the trace
   too (`microworld_steps`: every step must compute right).
4. Rejection sampling. A sample counts as correct when the checker accepts it (its
   answer; with a checker of steps, its trace too), with or without a trace. The
   problem's pass rate is correct / N. A correct sample with a trace within
   the length limits is a candidate; the first `keep` candidates (in sample order) become
   records when the pass rate lies within [`min_pass_rate`, `max_pass_rate`]; then, with
   `max_problems`, the hardest problems first. Everything else is a `Rejected` record
   with its reason (`REASONS`).

Records: `instruction` (and `input`) = the problem, `reasoning` = the trace, `output` = the
answer as the teacher wrote it; `split_trace` keeps both verbatim, so `Example.messages()`
renders exactly the teacher's completion. Lineage holds `pass_rate`, `samples`, `correct`,
the sample's index and the checker's findings (`check`). The reference answer stays in the
record (`answer`; `code_tests` for code) so the verify filter can check it again.

Presets (`preset:`) set N, k, the difficulty band and the problem count of a published
recipe; settings given beside a preset override it (`PRESETS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from distill.backends.base import Generation, GenerationRequest
from distill.component import Dependencies
from distill.filters.sandbox import SandboxConfig
from distill.generate.base import GeneratorSettings
from distill.generate.context import GenerationContext, GenerationResult
from distill.generate.responses import SamplingConfig
from distill.records import Example, Lineage, Rejected, has_open_trace, split_trace
from distill.registry import CHECKERS, GENERATORS, PROBLEM_SOURCES
from distill.settings import Strict, resolve_path

METHOD = "reasoning"

# The default system prompt. The microworld teacher learned to think under exactly this
# text (distill.microworld.build), so a change here is a change of its build.
SYSTEM_PROMPT = ("Think through the problem step by step inside <think> </think> tags, "
                 "then write the final answer after </think>.")

# Why a sample was not kept, in the order they are decided.
REASONS = (
    "trace_too_long",  # cut at max_tokens while thinking, or longer than max_trace_*
    "truncated_answer",  # cut at max_tokens after the trace: the answer may be cut
    "no_answer",  # nothing after the trace, a trace never closed, no answer to read
    "wrong_answer",  # the checker found the answer wrong
    "wrong_steps",  # a right answer after a wrong step (a checker of steps: microworld_steps)
    "unverifiable",  # the checker cannot check this problem (no tests, bad reference)
    "no_trace",  # a correct answer without a <think> trace
    "too_easy",  # a correct trace of a problem whose pass rate is above max_pass_rate
    "too_hard",  # a correct trace of a problem whose pass rate is below min_pass_rate
    "beyond_keep",  # a correct trace after the first `keep` of its problem
    "beyond_max_problems",  # a kept trace of a problem past `max_problems`
)

# A plugin's problem generator: the name registered in PROBLEM_SOURCES (listed in the schema).
ProblemGeneratorName = PROBLEM_SOURCES.name_type()
CheckerName = CHECKERS.name_type()


@dataclass(frozen=True)
class Problem:
    """A problem with its reference answer, and the checker that compares answers with it.

    For the `code` checker, `answer` holds the tests (Python asserts) the answer's code
    must pass. `fields` go to the records as extra fields (`entry_point`, a plugin's
    `family` and `difficulty`).
    """

    id: str
    problem: str
    answer: str
    input: str = ""
    checker: str | None = None  # None: the method's `checker`
    fields: dict[str, Any] = field(default_factory=dict)


# -- presets ------------------------------------------------------------------------------

PRESETS: dict[str, dict[str, Any]] = {
    # s1 (Muennighoff et al. 2025, s1K): 1,000 problems kept from 59K for quality,
    # difficulty and diversity, one trace each (Gemini Thinking; R1 in s1K-1.1).
    # Reproduced: 1,000 problems, one trace each, hard problems only. Not reproduced:
    # s1 called a problem too easy when Qwen2.5-7B- and 32B-Instruct both solved it, and
    # drew problems across 50 MSC domains favouring long traces; here the teacher's own
    # pass rate over 4 samples stands for difficulty (at most half solved) and problems
    # are taken hardest first, with no domain balance.
    "s1": {"samples": 4, "keep": 1, "min_pass_rate": 0.0, "max_pass_rate": 0.5,
           "max_problems": 1000},
    # LIMO (Ye et al. 2025): 817 problems whose solutions DeepSeek-R1-Distill-Qwen-32B
    # found in only 1 to 3 of 32 attempts (after Qwen2.5-Math-7B removed the easy ones),
    # one chain each, chosen by a rubric of chain quality. Reproduced: 32 samples, the
    # 1-3-of-32 band, 817 problems, one trace each. Not reproduced: the first filtering
    # model and the quality rubric (here the first correct trace is kept).
    "limo": {"samples": 32, "keep": 1, "min_pass_rate": 1 / 32, "max_pass_rate": 3 / 32,
             "max_problems": 817},
    # OpenThoughts3 (Guha et al. 2025): 16 answers per question from QwQ-32B, questions
    # selected by difficulty (an LLM's rating for code, response length for math and
    # science), and no answer filtering, which no verifier they tried improved on.
    # Reproduced: 16 samples, up to 16 traces per problem, a difficulty selection (here:
    # drop problems the teacher solves in all 16 samples). Not reproduced: the LLM
    # difficulty rating, and keeping unverified answers (this kind keeps verified ones).
    "openthoughts": {"samples": 16, "keep": 16, "min_pass_rate": 0.0,
                     "max_pass_rate": 15 / 16, "max_problems": None},
}


# -- settings -------------------------------------------------------------------------------


class Problems(Strict):
    """Where the problems come from: one of `path`, `dataset` or `generator`."""

    path: str | None = Field(
        None, description="JSONL of problems: `problem`, `answer` (for the code checker: "
        "the tests), optional `id`, `input`, `checker`, `entry_point` (names as set below).")
    dataset: str | None = Field(
        None, description="A dataset `datasets.load_dataset` reads: a hub id (pin "
        "`revision` for a reproducible run) or a local directory of data files.")
    config_name: str | None = Field(None, description="dataset: its configuration name.")
    split: str = Field("train", description="dataset: the split to read.")
    revision: str | None = Field(None, description="dataset: a hub commit, tag or branch.")
    generator: ProblemGeneratorName | None = Field(  # type: ignore[valid-type]
        None, description="A plugin's problem generator (distill.registry.PROBLEM_SOURCES; "
        "the microworld's draws its multi-step families); needs `count`.")
    problem_field: str = Field("problem", description="The field holding the problem.")
    answer_field: str = Field("answer", description="The field holding the reference answer.")
    input_field: str = Field("input", description="The field holding an optional input "
                             "shown after the problem.")
    id_field: str = Field("id", description="The field holding an optional unique id "
                          "(default: a hash of the problem).")
    count: int | None = Field(
        None, ge=1, description="Problems per round: a seeded sample of the file or dataset "
        "(null: all of them), or how many the generator makes.")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)

    @field_validator("dataset")
    @classmethod
    def _local_dataset(cls, value: str | None, info: ValidationInfo) -> str | None:
        # a directory (relative to the recipe's) is read from disk, as load_dataset would;
        # anything else is a hub id
        local = resolve_path(value, info, must_exist=False)
        return local if local is not None and os.path.isdir(local) else value

    @model_validator(mode="after")
    def _one_source(self) -> Problems:
        given = [name for name in ("path", "dataset", "generator") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("problems: give exactly one of path, dataset or generator "
                             f"(got {given or 'none'})")
        if self.generator is not None and self.count is None:
            raise ValueError("problems: a generator needs `count`")
        if self.path is not None:
            read_problems_file(self.path, self)  # a bad line is named now, not mid-run
        return self

    def local_dataset(self) -> str | None:
        """The dataset's directory when it is a local one (its files are a dependency)."""
        return self.dataset if self.dataset and os.path.isdir(self.dataset) else None


class ReasoningSampling(SamplingConfig):
    """Sampling of the traces: DeepSeek-R1's recommended temperature 0.6 and top-p 0.95."""

    temperature: float = Field(0.6, ge=0.0, description="R1: 0.6 (0.5-0.7); 0 makes the "
                               "N samples one.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="R1: 0.95.")
    max_tokens: int = Field(16384, ge=1, description="Most tokens per sample, trace and "
                            "answer; a sample cut while thinking is `trace_too_long`.")


@GENERATORS.register
class Config(GeneratorSettings):
    """`generate:` settings of reasoning traces with verified rejection sampling."""

    OPERATIONAL: ClassVar[frozenset[str]] = frozenset()

    kind: Literal["reasoning"] = "reasoning"
    preset: Literal["s1", "limo", "openthoughts"] | None = Field(
        None, description="A published recipe's N, k, difficulty band and problem count "
        "(distill.generate.reasoning.PRESETS: what each reproduces and what it does not); "
        "settings given beside it override it.")
    problems: Problems = Field(description="The problems and their reference answers.")
    checker: CheckerName = Field(  # type: ignore[valid-type]
        "math", description="The answer checker of problems that name none "
        "(distill.registry.CHECKERS): math, code, or a plugin's (microworld; "
        "microworld_steps checks every step of the trace too).")
    samples: int = Field(4, ge=1, description="N: samples per problem, one request with n = N.")
    keep: int = Field(1, ge=1, description="k: the most correct traces kept per problem.")
    min_pass_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Problems the teacher solves less often are "
        "`too_hard` (LIMO: 1/32).")
    max_pass_rate: float = Field(
        1.0, ge=0.0, le=1.0, description="Problems the teacher solves more often are "
        "`too_easy` (s1: 0.5 here; LIMO: 3/32).")
    max_problems: int | None = Field(
        None, ge=1, description="The most problems with kept traces, hardest (lowest pass "
        "rate) first, then in problem order; null: all (s1: 1000, LIMO: 817).")
    max_trace_chars: int | None = Field(
        None, ge=1, description="Longer traces (characters between the tags) are "
        "`trace_too_long`.")
    max_trace_tokens: int | None = Field(
        None, ge=1, description="Samples with more completion tokens (trace and answer, as "
        "the teacher's engine counted them) are `trace_too_long`.")
    system_prompt: str | None = Field(
        SYSTEM_PROMPT, description="The system message; null sends none (DeepSeek advises "
        "none for R1, whose template opens the <think> block itself).")
    template: str | None = Field(
        None, description="Optional prompt template (distill/prompts, variables "
        "instruction, input) rendering the user message; null sends the problem, then its "
        "input after a blank line.")
    sampling: ReasoningSampling = Field(default_factory=ReasoningSampling)
    tolerance: float = Field(1e-6, ge=0, description="math: relative tolerance when "
                             "comparing numbers.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig,
                                   description="code: limits of each program run.")
    workers: int = Field(2, ge=1, description="code: programs run at the same time.")

    # Settings the fingerprint probes (tests/fingerprint_probe.py) start from: problems
    # cannot be derived from the field types alone.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"problems": {"generator": "microworld", "count": 3}, "checker": "microworld",
         "samples": 2},
        {"problems": {"path": "records.jsonl", "problem_field": "instruction",
                      "answer_field": "output"}, "samples": 2, "keep": 2},
    ]})

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        # The preset fills in what the recipe left out; what it gives wins.
        if isinstance(data, dict) and data.get("preset") is not None:
            preset = PRESETS.get(data["preset"])
            if preset is not None:
                data = {**preset, **data}
        return data

    @field_validator("template")
    @classmethod
    def _template_exists(cls, name: str | None) -> str | None:
        from distill.prompts import template_source

        if name is not None:
            template_source(name)  # ValueError listing the available templates
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.min_pass_rate > self.max_pass_rate:
            raise ValueError(f"min_pass_rate ({self.min_pass_rate}) is above max_pass_rate "
                             f"({self.max_pass_rate}): no problem could be kept")
        if self.keep > self.samples:
            raise ValueError(f"keep ({self.keep}) is more traces than the {self.samples} "
                             "samples per problem")
        if self.samples > 1 and self.sampling.temperature == 0:
            # vLLM refuses n > 1 when greedy; other backends return n identical traces,
            # and the pass rate of one answer copied N times measures nothing
            raise ValueError(f"samples ({self.samples}) at sampling.temperature 0 are one "
                             "greedy trace repeated: use samples 1 or a temperature above 0")
        return self

    def dependencies(self) -> Dependencies:
        """The problems file or local dataset, the template, the sandbox's interpreter."""
        files = {}
        if self.problems.path is not None:
            files["problems"] = self.problems.path
        if self.problems.local_dataset() is not None:
            files["problems"] = self.problems.dataset
        if self.sandbox.python is not None:
            files["sandbox_python"] = os.path.realpath(self.sandbox.python)
        templates = (self.template,) if self.template is not None else ()
        return Dependencies(files=files, templates=templates)

    def keeps_teacher_tokens(self) -> bool:
        """Every record is one teacher sample as generated (trace and answer)."""
        return True

    def run(self, ctx: GenerationContext) -> GenerationResult:
        """Sample, check and keep traces for this round's problems (checkpoint "traces")."""
        problems = load_problems(self.problems, ctx.request_seed("problems"))
        requests = [self._request(problem, ctx) for problem in problems]
        generations = ctx.generate("traces", requests)
        by_problem: dict[str, list[Generation]] = {}
        for generation in generations:
            by_problem.setdefault(generation.request_id, []).append(generation)
        outcomes = [self._judge(problem, request, by_problem.get(problem.id, []), ctx)
                    for problem, request in zip(problems, requests, strict=True)]
        self._cap_problems(outcomes)
        examples = [record for outcome in outcomes for record in outcome.kept]
        rejected = [item for outcome in outcomes for item in outcome.rejected]
        if ctx.top_logprobs:
            for outcome in outcomes:
                for record, generation in zip(outcome.kept, outcome.kept_generations,
                                              strict=True):
                    if generation.tokens is not None:
                        ctx.teacher_tokens[record.id] = generation.tokens
        return GenerationResult(examples=examples, rejected=rejected,
                                stats=self._stats(outcomes, examples, rejected))

    # -- one problem ------------------------------------------------------------------------

    def _request(self, problem: Problem, ctx: GenerationContext) -> GenerationRequest:
        from distill.prompts import render

        task = Example(id=problem.id, instruction=problem.problem, input=problem.input)
        content = (render(self.template, instruction=task.instruction, input=task.input)
                   if self.template is not None else task.prompt_text)
        messages = [{"role": "user", "content": content}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        sampling = self.sampling.to_sampling(seed=ctx.request_seed("trace", problem.id),
                                             n=self.samples)
        sampling = dataclasses.replace(sampling, top_logprobs=ctx.top_logprobs)
        return GenerationRequest(id=problem.id, messages=messages, sampling=sampling)

    def _judge(self, problem: Problem, request: GenerationRequest,
               generations: list[Generation], ctx: GenerationContext) -> _Outcome:
        """Check every sample of a problem; keep up to `keep` correct traces in band."""
        outcome = _Outcome(problem=problem)
        if not generations:
            return outcome  # the request failed: the context filed it as rejected
        checker = problem.checker or self.checker
        samples = [_Sample(g, *split_trace(g.text)) for g in generations]
        for sample in samples:
            sample.reason = _unreadable(sample)
        readable = [s for s in samples if not s.reason]
        for sample, (status, reason, scores) in zip(
                readable, self._check(problem, checker, readable), strict=True):
            sample.check = scores
            sample.correct = status == "correct"
            if not sample.correct:
                sample.reason = ("unverifiable" if status == "unverifiable" else
                                 "no_answer" if reason in _NO_ANSWER else
                                 "wrong_steps" if reason == "wrong_steps" else "wrong_answer")
            elif not sample.reasoning.strip():
                sample.reason = "no_trace"
            elif self._too_long(sample):
                sample.reason = "trace_too_long"
        outcome.samples = len(samples)
        outcome.correct = sum(s.correct for s in samples)
        rate = outcome.pass_rate
        band = ("too_hard" if rate < self.min_pass_rate else
                "too_easy" if rate > self.max_pass_rate else "")
        for sample in samples:
            if not sample.reason:
                sample.reason = band or ("beyond_keep" if len(outcome.kept) >= self.keep
                                         else "")
            record = self._record(problem, checker, request, sample, outcome, ctx)
            if sample.reason:
                outcome.rejected.append(Rejected(
                    id=record.id, stage="generate", reason=sample.reason,
                    record=record.to_json() | {"raw": sample.generation.text}))
            else:
                outcome.kept.append(record)
                outcome.kept_generations.append(sample.generation)
        return outcome

    def _too_long(self, sample: _Sample) -> bool:
        chars = self.max_trace_chars is not None and len(sample.reasoning) > self.max_trace_chars
        tokens = (self.max_trace_tokens is not None
                  and sample.generation.completion_tokens > self.max_trace_tokens)
        return chars or tokens

    def _check(self, problem: Problem, checker: str, samples: list[_Sample]
               ) -> list[tuple[str, str, dict[str, Any]]]:
        """The checker's verdicts on the samples' answers (the text after the trace)."""
        from distill.filters.verify import Config as VerifyConfig

        blank = [not s.answer.strip() for s in samples]
        records = [_answer_record(problem, checker, s)
                   for s, b in zip(samples, blank, strict=True) if not b]
        settings = VerifyConfig(checker=checker, tolerance=self.tolerance,
                                sandbox=self.sandbox, workers=self.workers)
        checked = iter(CHECKERS.get(checker)(records, settings) if records else [])
        return [("wrong_answer", "no_answer", {"correct": False}) if b else next(checked)
                for b in blank]

    def _record(self, problem: Problem, checker: str, request: GenerationRequest,
                sample: _Sample, outcome: _Outcome, ctx: GenerationContext) -> Example:
        lineage = Lineage(
            round=ctx.round, method=METHOD, teacher=ctx.teacher_name,
            sampling=request.sampling.as_dict(), problem_id=problem.id, checker=checker,
            system_prompt=self.system_prompt, sample_index=sample.generation.index,
            finish_reason=sample.generation.finish_reason, samples=outcome.samples,
            correct=outcome.correct, pass_rate=outcome.pass_rate, check=sample.check)
        if self.template is not None:
            from distill.prompts import template_hash

            lineage.template_hash = template_hash(self.template)
        return Example(id=f"{problem.id}-s{sample.generation.index}",
                       instruction=problem.problem, input=problem.input,
                       reasoning=sample.reasoning, output=sample.answer, lineage=lineage,
                       **_reference_fields(problem, checker))

    def _cap_problems(self, outcomes: list[_Outcome]) -> None:
        """Keep the traces of at most `max_problems` problems, hardest first."""
        with_traces = [o for o in outcomes if o.kept]
        if self.max_problems is None or len(with_traces) <= self.max_problems:
            return
        order = sorted(range(len(with_traces)), key=lambda i: (with_traces[i].pass_rate, i))
        for index in order[self.max_problems:]:
            outcome = with_traces[index]
            outcome.rejected += [Rejected(id=record.id, stage="generate",
                                          reason="beyond_max_problems", record=record.to_json())
                                 for record in outcome.kept]
            outcome.kept, outcome.kept_generations = [], []

    # -- report -----------------------------------------------------------------------------

    def _stats(self, outcomes: list[_Outcome], examples: list[Example],
               rejected: list[Rejected]) -> dict[str, Any]:
        answered = [o for o in outcomes if o.samples]
        rates = Counter(round(o.pass_rate, 4) for o in answered)
        return {
            "method": METHOD,
            "preset": self.preset,
            "problems": len(outcomes),
            "problems_answered": len(answered),
            "samples_per_problem": self.samples,
            "samples": sum(o.samples for o in answered),
            "correct_samples": sum(o.correct for o in answered),
            "mean_pass_rate": (round(sum(o.pass_rate for o in answered) / len(answered), 4)
                               if answered else None),
            "pass_rates": {str(rate): count for rate, count in sorted(rates.items())},
            "problems_kept": sum(bool(o.kept) for o in outcomes),
            "traces": len(examples),
            "rejected": dict(sorted(Counter(r.reason for r in rejected).items())),
        }

    @classmethod
    def report_section(cls, stats: dict[str, Any]) -> list[str]:
        """The report's "Reasoning traces" section: pass rates and what was kept."""
        rejected = stats.get("rejected", {})
        lines = ["### Reasoning traces", "",
                 f"{stats.get('problems_answered', 0)} problems answered (of "
                 f"{stats.get('problems', 0)}) x {stats.get('samples_per_problem', 0)} "
                 f"samples: {stats.get('correct_samples', 0)} of {stats.get('samples', 0)} "
                 f"answers verified correct (mean pass rate {stats.get('mean_pass_rate')}); "
                 f"{stats.get('traces', 0)} traces kept from {stats.get('problems_kept', 0)} "
                 "problems.",
                 "Not kept: " + (", ".join(f"{k} {v}" for k, v in rejected.items()) or "none")
                 + ".", "", "| pass rate | problems |", "|---|---|"]
        lines += [f"| {rate} | {count} |" for rate, count in stats.get("pass_rates", {}).items()]
        return lines + [""]

    @classmethod
    def reject_counts(cls, stats: dict[str, Any]) -> dict[str, int]:
        """Every sample not kept, by reason."""
        return stats.get("rejected", {})


# Checker reasons that mean "no final answer to compare" rather than a wrong one.
_NO_ANSWER = {"no_answer", "no_final_answer", "no_code"}


@dataclass
class _Sample:
    generation: Generation
    reasoning: str
    answer: str
    correct: bool = False
    reason: str = ""
    check: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Outcome:
    problem: Problem
    samples: int = 0
    correct: int = 0
    kept: list[Example] = field(default_factory=list)
    kept_generations: list[Generation] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return self.correct / self.samples if self.samples else 0.0


def _unreadable(sample: _Sample) -> str:
    """Why a sample has no answer to check at all ("" when it has one)."""
    text = sample.generation.text
    if sample.generation.finish_reason == "length":  # cut at max_tokens
        return "truncated_answer" if sample.reasoning else "trace_too_long"
    if has_open_trace(text):  # stopped while thinking: no answer was written
        return "no_answer"
    return ""


def _reference_fields(problem: Problem, checker: str) -> dict[str, Any]:
    """The fields a checker reads beside the answer: the reference, or the tests."""
    reference = {"code_tests": problem.answer} if checker == "code" else {"answer":
                                                                          problem.answer}
    return {**problem.fields, **reference}


def _answer_record(problem: Problem, checker: str, sample: _Sample) -> Example:
    """What a checker sees: the problem, the sample's answer (and trace), the reference."""
    return Example(id=problem.id, instruction=problem.problem, input=problem.input,
                   output=sample.answer, reasoning=sample.reasoning,
                   **_reference_fields(problem, checker))


# -- loading problems ---------------------------------------------------------------------


def load_problems(source: Problems, seed: int) -> list[Problem]:
    """The round's problems from the source (a seeded sample when `count` is set)."""
    if source.generator is not None:
        assert source.count is not None  # Problems checks it
        problems = list(PROBLEM_SOURCES.get(source.generator)(source.count, seed))
        _check_ids(problems, f"problem generator {source.generator!r}")
        return problems
    if source.path is not None:
        problems = read_problems_file(source.path, source)
    else:
        problems = read_problems_dataset(source)
    if source.count is not None and source.count < len(problems):
        chosen = sorted(random.Random(seed).sample(range(len(problems)), source.count))
        problems = [problems[i] for i in chosen]
    return problems


def read_problems_file(path: str, source: Problems) -> list[Problem]:
    """Problems from a JSONL file; a bad row raises ValueError naming its line."""
    from distill.records import numbered_json_objects

    if not os.path.isfile(path):
        raise ValueError(f"{path}: not a JSONL file of problems")
    with open(path, "rb") as handle:
        rows = list(numbered_json_objects(handle, path))
    if not rows:
        raise ValueError(f"{path}: no problems")
    problems = [_problem(row, source, f"{path}:{number}") for number, row in rows]
    _check_ids(problems, path, [f"line {number}" for number, _ in rows])
    return problems


def read_problems_dataset(source: Problems) -> list[Problem]:
    """Problems from `datasets.load_dataset(dataset, config_name, split=...)`."""
    import datasets

    assert source.dataset is not None
    try:
        table = datasets.load_dataset(source.dataset, source.config_name, split=source.split,
                                      revision=source.revision)
    except Exception as error:  # noqa: BLE001 - any loading failure is a recipe error here
        raise ValueError(f"problems: cannot load dataset {source.dataset!r} (split "
                         f"{source.split!r}): {error}") from error
    missing = [name for name in (source.problem_field, source.answer_field)
               if name not in table.column_names]
    if missing:
        raise ValueError(f"problems: dataset {source.dataset!r} has no column {missing} "
                         f"(columns: {table.column_names}); set problem_field / answer_field")
    problems = [_problem(row, source, f"{source.dataset}[{index}]")
                for index, row in enumerate(table)]
    _check_ids(problems, source.dataset, [f"row {i}" for i in range(len(problems))])
    return problems


def _problem(row: dict[str, Any], source: Problems, where: str) -> Problem:
    problem, answer = row.get(source.problem_field), row.get(source.answer_field)
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{where}: no problem (field {source.problem_field!r})")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise ValueError(f"{where}: no reference answer (field {source.answer_field!r})")
    if isinstance(answer, list):  # a list of tests
        answer = "\n".join(str(item) for item in answer)
    task_input = row.get(source.input_field) or ""
    checker = row.get("checker")
    if checker is not None and checker not in CHECKERS:
        raise ValueError(f"{where}: unknown checker {checker!r}; choose one of "
                         f"{CHECKERS.names()}")
    given_id = row.get(source.id_field)
    problem_id = str(given_id) if given_id not in (None, "") else _problem_id(problem,
                                                                              task_input)
    fields = {"entry_point": row["entry_point"]} if row.get("entry_point") else {}
    return Problem(id=problem_id, problem=problem, answer=str(answer), input=str(task_input),
                   checker=checker, fields=fields)


def _problem_id(problem: str, task_input: str) -> str:
    digest = hashlib.sha256(f"{problem}\x1f{task_input}".encode()).hexdigest()
    return f"p-{digest[:12]}"


def _check_ids(problems: list[Problem], where: str, places: list[str] | None = None) -> None:
    seen: dict[str, int] = {}
    for index, problem in enumerate(problems):
        if problem.id in seen:
            first, second = ((places[seen[problem.id]], places[index]) if places
                             else (f"#{seen[problem.id]}", f"#{index}"))
            raise ValueError(f"{where}: problem id {problem.id!r} repeats ({first} and "
                             f"{second}); ids (or, without ids, problems) must be unique")
        seen[problem.id] = index
