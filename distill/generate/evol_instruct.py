"""Evol-Instruct: instructions rewritten round after round into harder and rarer ones.

Follows WizardLM (Xu et al. 2023, "WizardLM: Empowering Large Language Models to Follow
Complex Instructions", arXiv:2304.12244; prompts from nlpxucan/WizardLM Evol_Instruct/):

1. The pool starts with the seed tasks (or the `instructions` file, e.g. Alpaca's 52K
   alpaca_data.json), at most `max_initial` of them; each pool entry is one evolution chain.
2. In each of `evolution_rounds` rounds (paper: 4) every pool entry is evolved once by an
   operation a seeded RNG draws per instruction and round (`operation_weights`): one of
   the five in-depth operations (add constraints, deepening, concretizing, increase
   reasoning steps, complicate input; the rewrite may add only 10-20 words) or in-breadth
   evolving (a new, rarer prompt in the same domain). The teacher rewrites the "#The Given
   Prompt#" (instruction and input, as one text) after "#Rewritten Prompt#:".
3. Elimination, the paper's four rules: (1) no information gain over the parent, judged
   by the teacher with the paper's equality prompt (`equality_check`); (2) the response
   contains "sorry" and is shorter than 80 words; (3) the response is only punctuation
   and stop words; (4) the evolved instruction copies words of the evolving prompt
   ("#Rewritten Prompt#", "given prompt", ...). Malformed teacher output (an empty or
   cut-off rewrite, an unreadable judgement, an empty answer) also fails the evolution.
   A failed evolution leaves its parent in the pool, to be evolved again next round;
   every failure is a `Rejected` record with its reason.
4. The result, as in the paper, merges the initial instructions (`include_initial`) with
   every round's successful evolutions, each answered by the teacher
   (`distill.generate.responses.generate_responses`).

Failure reasons: `empty_evolution`, `truncated_evolution`, `copies_template` (rule 4),
`no_information_gain` (rule 1), `malformed_judgement`, `empty_response`,
`sorry_short_response` (rule 2), `stopwords_only_response` (rule 3).

Lineage records the curriculum: `evolution_round`, `evolution_depth` (successful
evolutions since the initial instruction), `operations` (the chain), `operation`,
`parent_id` and `root_id`; stats hold per round the operations drawn and kept, failures
by reason and a difficulty proxy (mean instruction length in words, and a 1-10 teacher
score with `difficulty_judge: true`). Checkpoint keys are per evolution round
("evolve-round01", "equality-round01", "responses-round01", "difficulty-round01"), and
every request has its own seed, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from distill.backends.base import GenerationRequest
from distill.component import Dependencies
from distill.generate.base import GeneratorSettings
from distill.generate.context import GenerationContext, GenerationResult
from distill.generate.responses import ResponseSampling, SamplingConfig, generate_responses
from distill.records import Example, Lineage, Rejected, numbered_json_objects, read_utf8
from distill.registry import GENERATORS
from distill.settings import resolve_path

METHOD = "evol_instruct"

Operation = Literal["add_constraints", "deepening", "concretizing", "increase_reasoning",
                    "complicate_input", "in_breadth"]
IN_DEPTH = ("add_constraints", "deepening", "concretizing", "increase_reasoning",
            "complicate_input")
OPERATIONS: tuple[str, ...] = (*IN_DEPTH, "in_breadth")

# NLTK's English stop words (rule 3: a response of only these and punctuation is empty).
_NLTK_STOP_WORDS = """
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
yourselves he him his himself she she's her hers herself it it's its itself they them their
theirs themselves what which who whom this that that'll these those am is are was were be
been being have has had having do does did doing a an the and but if or because as until
while of at by for with about against between into through during before after above below
to from up down in out on off over under again further then once here there when where why
how all any both each few more most other some such no nor not only own same so than too
very s t can will just don don't should should've now d ll m o re ve y ain aren aren't
couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma
mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren
weren't won won't wouldn wouldn't
"""
STOP_WORDS = frozenset(_NLTK_STOP_WORDS.split())


class EvolutionSampling(SamplingConfig):
    """Sampling for rewriting instructions; defaults are WizardLM's ChatGPT calls."""

    temperature: float = Field(1.0, ge=0.0, description="WizardLM: 1.0.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="WizardLM: 0.95.")
    max_tokens: int = Field(2048, ge=1, description="WizardLM: 2048. An evolved instruction "
                            "is one completion, so this also bounds its length.")


class JudgeSampling(SamplingConfig):
    """Sampling for the equality and difficulty judgements: greedy, a few tokens."""

    temperature: float = Field(0.0, ge=0.0, description="Softmax temperature; 0 is greedy.")
    max_tokens: int = Field(16, ge=1, description="Most new tokens per judgement.")


@GENERATORS.register
class Config(GeneratorSettings):
    """`generate:` settings of the Evol-Instruct method."""

    kind: Literal["evol_instruct"] = "evol_instruct"
    instructions: str | None = Field(
        None, description="JSONL or JSON array of initial instructions (`instruction`, "
        "optional `input`, `output`, `id`; Alpaca's alpaca_data.json works as is); null "
        "starts from the seed tasks.")
    max_initial: int | None = Field(
        None, ge=1, description="Use at most this many initial instructions (a seeded sample, "
        "kept in file order); null uses all.")
    evolution_rounds: int = Field(4, ge=1, description="Evolution rounds; WizardLM: 4.")
    operation_weights: dict[Operation, float] = Field(
        default_factory=lambda: dict.fromkeys(OPERATIONS, 1.0),
        description="Relative odds of each operation, drawn per instruction and round: "
        "add_constraints, deepening, concretizing, increase_reasoning, complicate_input "
        "(in-depth) and in_breadth. Missing operations get 0; WizardLM draws uniformly.")
    input_formats: list[str] = Field(
        default_factory=lambda: ["XML data", "SQL database", "Python code", "HTML page",
                                 "Shell cmd", "JSON data", "Latex", "Markdown",
                                 "Excel table", "C++ code"],
        min_length=1, description="Data formats complicate_input asks to add, one drawn "
        "per evolution (the paper's examples).")
    depth_template: str = Field(
        "evol_depth", description="In-depth prompt template (variables operation, "
        "instruction, input_format): evol_depth (WizardLM's) or evol_depth_compact "
        "(short, for small teachers with short contexts).")
    breadth_template: str = Field(
        "evol_breadth", description="In-breadth prompt template (variable instruction): "
        "evol_breadth (WizardLM's) or evol_breadth_compact.")
    system_prompt: str | None = Field(
        "You are a helpful assistant.",
        description="System message of the evolution and judgement requests (WizardLM's "
        "ChatGPT calls); null sends none.")
    sampling: EvolutionSampling = Field(default_factory=EvolutionSampling)
    equality_check: Literal["teacher", "exact", "off"] = Field(
        "teacher", description="Rule 1, no information gain: teacher asks the teacher the "
        "paper's equality prompt (an unreadable judgement fails the evolution as "
        "`malformed_judgement`); exact only drops rewrites identical to their parent; off "
        "skips the rule.")
    equality_template: str = Field("evol_equal", description="Equality prompt template "
                                   "(variables first, second).")
    sorry_max_words: int = Field(
        80, ge=0, description='Rule 2: a response containing "sorry" with fewer words than '
        "this fails the evolution; WizardLM: 80. 0 disables.")
    copy_markers: list[str] = Field(
        default_factory=lambda: ["given prompt", "rewritten prompt", "created prompt"],
        description="Rule 4: an evolved instruction containing one of these (any case, so "
        "'#The Given Prompt#' and '#Rewritten Prompt#' match too) fails. [] disables.")
    difficulty_judge: bool = Field(
        False, description="Ask the teacher for a 1-10 difficulty score of every kept "
        "instruction (initial and evolved) to show difficulty growth per round; an "
        "unreadable score is a `malformed_difficulty` reject, the instruction stays.")
    difficulty_template: str = Field("evol_difficulty", description="Difficulty prompt "
                                     "template (variable instruction).")
    judge_sampling: JudgeSampling = Field(default_factory=JudgeSampling)
    include_initial: bool = Field(
        True, description="Merge the initial instructions into the result, as WizardLM "
        "merged Alpaca's data with every round's evolutions.")
    initial_responses: Literal["regenerate", "keep"] = Field(
        "regenerate", description="regenerate: the teacher answers the initial "
        "instructions too; keep: keep their outputs (empty ones are answered).")
    response_sampling: ResponseSampling = Field(default_factory=ResponseSampling)
    response_system_prompt: str | None = Field(
        None, description="Optional system message for the response step.")
    response_template: str | None = Field(
        None, description="Optional template (variables instruction, input) rendering the "
        "user message of the response step; null sends the instruction.")

    @field_validator("depth_template", "breadth_template", "equality_template",
                     "difficulty_template", "response_template")
    @classmethod
    def _template_exists(cls, name: str | None) -> str | None:
        from distill.prompts import template_source

        if name is not None:
            template_source(name)  # ValueError listing the available templates
        return name

    @field_validator("operation_weights")
    @classmethod
    def _some_weight(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in weights.values()):
            raise ValueError("operation weights must be >= 0")
        if not any(w > 0 for w in weights.values()):
            raise ValueError("at least one operation needs a positive weight")
        return weights

    @field_validator("instructions")
    @classmethod
    def _instructions_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        path = resolve_path(value, info)
        if path is not None:
            load_instructions(path)  # the run's reader: a bad line is named at load
        return path

    def dependencies(self) -> Dependencies:
        """The templates it renders, and its instructions file or else the seed pool."""
        weights = self.operation_weights
        templates = []
        if any(weights.get(op, 0.0) > 0 for op in IN_DEPTH):
            templates.append(self.depth_template)
        if weights.get("in_breadth", 0.0) > 0:
            templates.append(self.breadth_template)
        if self.equality_check == "teacher":
            templates.append(self.equality_template)
        if self.difficulty_judge:
            templates.append(self.difficulty_template)
        if self.response_template is not None:
            templates.append(self.response_template)
        if self.instructions:
            return Dependencies(files={"instructions": self.instructions},
                                templates=tuple(templates))
        return Dependencies(templates=tuple(templates), inputs=("seed_tasks",))

    def keeps_teacher_tokens(self) -> bool:
        """Every record's output is a teacher answer unless the seeds' own are kept."""
        return self.initial_responses == "regenerate"

    def run(self, ctx: GenerationContext) -> GenerationResult:
        """Evolve the initial instructions for `evolution_rounds` rounds and answer them.

        The initial pool is the `instructions` file, or else the run's seed tasks.

        Returns:
            Examples (initial ones "r{round}-c{chain}-e0", evolved ones
            "r{round}-c{chain}-e{t}" for evolution round t), every failed evolution and
            malformed output as `Rejected`, and stats with a per-round table
            (`stats["rounds"]`).
        """
        initial = _initial_pool(self, ctx)
        pool = list(initial)  # one entry per chain: its newest successful evolution
        rejected: list[Rejected] = []
        examples: list[Example] = []
        rounds: list[dict[str, Any]] = []

        if self.include_initial:
            answered, refused = _answer_initial(self, initial, ctx)
            scored, malformed = _difficulty(self, answered, ctx, 0)
            examples += scored
            rejected += refused + malformed
            rounds.append(_round_stats(0, initial, scored, [], Counter(r.reason for r in refused)))
        else:
            rounds.append(_round_stats(0, initial, initial, [], Counter()))

        for t in range(1, self.evolution_rounds + 1):
            attempts = [_attempt(self, ctx, t, chain, parent) for chain, parent in enumerate(pool)]
            generations = ctx.generate(f"evolve-round{t:02d}", [a.request for a in attempts])
            by_id = {g.request_id: g for g in generations if g.index == 0}
            failures: Counter[str] = Counter()
            children: list[tuple[_Attempt, Example]] = []
            for attempt in attempts:
                generation = by_id.get(attempt.request.id)
                if generation is None:
                    continue  # failed: the context filed it as rejected
                text, finish = generation.text or "", generation.finish_reason
                child = _child(attempt, text.strip(), finish, ctx)
                reason = _instruction_failure(self, attempt, child.instruction, finish)
                if reason is not None:
                    rejected.append(_reject(child, reason, raw=text))
                    failures[reason] += 1
                else:
                    children.append((attempt, child))

            children, judged_out = _equality(self, children, ctx, t)
            for child, reason, raw in judged_out:
                rejected.append(_reject(child, reason, raw=raw))
                failures[reason] += 1

            answered, refused = generate_responses(
                [child for _, child in children], self.response_sampling, ctx,
                key=f"responses-round{t:02d}", system_prompt=self.response_system_prompt,
                template=self.response_template)
            for item in refused:
                failures[item.reason] += 1
            rejected += refused
            kept: list[Example] = []
            for child in answered:
                reason = _response_failure(self, child.output)
                if reason is not None:
                    rejected.append(_reject(child, reason, raw=child.output))
                    failures[reason] += 1
                else:
                    kept.append(child)

            scored, malformed = _difficulty(self, kept, ctx, t)
            rejected += malformed
            examples += scored
            by_chain = {child.lineage.model_extra["chain"]: child for child in scored}
            # A failed evolution leaves the parent in place: it is evolved again next round.
            pool = [by_chain.get(chain, parent) for chain, parent in enumerate(pool)]
            drawn = Counter(a.operation for a in attempts)
            evolved = Counter(c.lineage.model_extra["operation"] for c in scored)
            rounds.append(_round_stats(t, [a.parent for a in attempts], scored,
                                       [(op, drawn[op], evolved[op]) for op in OPERATIONS],
                                       failures))

        failures_total: Counter[str] = Counter()
        for row in rounds[1:]:  # round 0's rejects are unanswered initial instructions
            failures_total.update(row["failures"])
        stats = {
            "method": METHOD,
            "evolution_rounds": self.evolution_rounds,
            "operation_weights": {op: self.operation_weights.get(op, 0.0) for op in OPERATIONS},
            "equality_check": self.equality_check,
            "initial": len(initial),
            "evolved": sum(row["evolved"] for row in rounds[1:]),
            "examples": len(examples),
            "failures": dict(sorted(failures_total.items())),
            "rejected": dict(sorted(Counter(r.reason for r in rejected).items())),
            "final_pool_mean_depth": _mean([p.lineage.model_extra.get("evolution_depth", 0)
                                            for p in pool]),
            "rounds": rounds,
        }
        return GenerationResult(examples=examples, rejected=rejected, stats=stats)

    @classmethod
    def report_section(cls, stats: dict[str, Any]) -> list[str]:
        """The per-round curriculum table: what was tried, what survived, how hard it is."""
        return difficulty_table(stats)

    @classmethod
    def reject_counts(cls, stats: dict[str, Any]) -> dict[str, int]:
        """Every refused evolution and answer, by reason."""
        return stats.get("rejected", {})


@dataclass
class _Attempt:
    """One evolution of one pool entry in one round."""

    round: int
    chain: int
    parent: Example
    child_id: str
    operation: str
    input_format: str | None
    template: str
    request: GenerationRequest


# -- the initial pool ----------------------------------------------------------------------

def load_instructions(path: str | Path) -> list[Example]:
    """Read initial instructions: JSONL, or a JSON array such as Alpaca's alpaca_data.json.

    Each object needs `instruction`; `input`, `output` and `id` are optional (ids default
    to "line-N", or "item-N" in an array). Raises ValueError naming the file and line (or
    item) for bad JSON, a missing or empty instruction, mistyped fields and duplicate ids.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: instructions file not found")
    text = read_utf8(path)
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
        located = [(f"{path}: item {i}", f"item-{i}", row) for i, row in enumerate(items)]
    else:
        located = [(f"{path}:{number}", f"line-{number}", row)
                   for number, row in numbered_json_objects(text.splitlines(), path)]
    rows: list[Example] = []
    seen: set[str] = set()
    for where, default_id, row in located:
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for field in ("instruction", "input", "output", "id"):
            if field in row and not isinstance(row[field], str):
                raise ValueError(f"{where}: {field} must be a string")
        if not row.get("instruction", "").strip():
            raise ValueError(f"{where}: missing or empty instruction")
        task_id = row.get("id") or default_id
        if task_id in seen:
            raise ValueError(f"{where}: duplicate id {task_id!r}")
        seen.add(task_id)
        rows.append(Example(id=task_id, instruction=row["instruction"],
                            input=row.get("input", ""), output=row.get("output", "")))
    if not rows:
        raise ValueError(f"{path}: no instructions")
    return rows


def _initial_pool(config: Config, ctx: GenerationContext) -> list[Example]:
    source = load_instructions(config.instructions) if config.instructions \
        else ctx.seed_tasks()
    if not source:
        raise ValueError("evol_instruct needs at least one initial instruction")
    if config.max_initial is not None and config.max_initial < len(source):
        picked = random.Random(ctx.request_seed("initial")).sample(range(len(source)),
                                                                   config.max_initial)
        source = [source[i] for i in sorted(picked)]
    return [Example(
        id=f"r{ctx.round}-c{chain:05d}-e0", instruction=task.instruction, input=task.input,
        output=task.output,
        lineage=Lineage(round=ctx.round, method=METHOD, teacher=ctx.teacher_name, chain=chain,
                        evolution_round=0, evolution_depth=0, operations=[], operation=None,
                        parent_id=None, root_id=task.id))
        for chain, task in enumerate(source)]


def _answer_initial(config: Config, initial: list[Example],
                    ctx: GenerationContext) -> tuple[list[Example], list[Rejected]]:
    if config.initial_responses == "keep":
        ask = [e for e in initial if not e.output.strip()]
    else:
        ask = list(initial)
    answered, refused = generate_responses(
        ask, config.response_sampling, ctx, key="responses-round00",
        system_prompt=config.response_system_prompt, template=config.response_template)
    by_id = {e.id: e for e in answered}
    asked = {e.id for e in ask}
    return [by_id[e.id] if e.id in asked else e for e in initial
            if e.id in by_id or e.id not in asked], refused


# -- one evolution -------------------------------------------------------------------------

def _attempt(config: Config, ctx: GenerationContext, t: int, chain: int,
             parent: Example) -> _Attempt:
    from distill.prompts import render

    rng = random.Random(ctx.request_seed("operation", t, chain))
    weights = [config.operation_weights.get(op, 0.0) for op in OPERATIONS]
    operation = rng.choices(OPERATIONS, weights=weights)[0]
    input_format = rng.choice(config.input_formats) if operation == "complicate_input" else None
    if operation == "in_breadth":
        template = config.breadth_template
        content = render(template, instruction=parent.prompt_text)
    else:
        template = config.depth_template
        content = render(template, operation=operation, instruction=parent.prompt_text,
                         input_format=input_format)
    child_id = f"r{ctx.round}-c{chain:05d}-e{t}"
    request = GenerationRequest(
        id=child_id, messages=_messages(config.system_prompt, content),
        sampling=config.sampling.to_sampling(seed=ctx.request_seed("evolve", t, chain)))
    return _Attempt(round=t, chain=chain, parent=parent, child_id=child_id, operation=operation,
                    input_format=input_format, template=template, request=request)


def _child(attempt: _Attempt, text: str, finish: str, ctx: GenerationContext) -> Example:
    from distill.prompts import template_hash

    parent = attempt.parent.lineage.model_extra
    lineage = Lineage(
        round=ctx.round, method=METHOD, teacher=ctx.teacher_name, template=attempt.template,
        template_hash=template_hash(attempt.template), chain=attempt.chain,
        evolution_round=attempt.round,
        evolution_depth=parent.get("evolution_depth", 0) + 1,
        operations=[*parent.get("operations", []), attempt.operation],
        operation=attempt.operation, input_format=attempt.input_format,
        parent_id=attempt.parent.id, root_id=parent.get("root_id"),
        evolution_sampling=attempt.request.sampling.as_dict(),
        evolution_finish_reason=finish,
        # read by the heuristics filter; a cut-off rewrite never gets that far
        instruction_finish_reason="stop")
    return Example(id=attempt.child_id, instruction=text, lineage=lineage)


def _instruction_failure(config: Config, attempt: _Attempt, text: str,
                         finish: str) -> str | None:
    if not text:
        return "empty_evolution"
    if finish == "length":
        return "truncated_evolution"
    lowered = text.lower()
    if any(marker.lower() in lowered for marker in config.copy_markers):
        return "copies_template"
    if config.equality_check == "exact" and _normal(text) == _normal(attempt.parent.prompt_text):
        return "no_information_gain"
    return None


def _equality(config: Config, children: list[tuple[_Attempt, Example]],
              ctx: GenerationContext, t: int
              ) -> tuple[list[tuple[_Attempt, Example]], list[tuple[Example, str, str]]]:
    """Rule 1: keep the children the teacher judges "Not Equal" to their parent."""
    if config.equality_check != "teacher":
        return children, []
    from distill.prompts import render

    requests = [GenerationRequest(
        id=child.id,
        messages=_messages(config.system_prompt, render(
            config.equality_template, first=attempt.parent.prompt_text,
            second=child.instruction)),
        sampling=config.judge_sampling.to_sampling(seed=ctx.request_seed("equal", t, child.id)))
        for attempt, child in children]
    generations = ctx.generate(f"equality-round{t:02d}", requests)
    by_id = {g.request_id: g.text or "" for g in generations if g.index == 0}
    kept, failed = [], []
    for attempt, child in children:
        if child.id not in by_id:
            continue  # failed: the context filed it as rejected
        raw = by_id[child.id]
        verdict = parse_equality(raw)
        if verdict is None:
            failed.append((child, "malformed_judgement", raw))
        elif verdict:
            failed.append((child, "no_information_gain", raw))
        else:
            kept.append((attempt, child))
    return kept, failed


def parse_equality(text: str) -> bool | None:
    """True for "Equal", False for "Not Equal", None when the judgement says neither."""
    lowered = text.lower()
    if re.search(r"\bnot\s+equal\b|\bunequal\b", lowered):
        return False
    if re.search(r"\bequal\b", lowered):
        return True
    return None


def _response_failure(config: Config, response: str) -> str | None:
    words = response.split()
    if config.sorry_max_words and "sorry" in response.lower() \
            and len(words) < config.sorry_max_words:
        return "sorry_short_response"
    if all(token in STOP_WORDS for token in re.findall(r"[^\W_]+(?:'[^\W_]+)*",
                                                       response.lower())):
        return "stopwords_only_response"
    return None


# -- difficulty ----------------------------------------------------------------------------

def _difficulty(config: Config, examples: list[Example], ctx: GenerationContext,
                t: int) -> tuple[list[Example], list[Rejected]]:
    """Attach a 1-10 teacher difficulty score (`lineage.difficulty`) when asked for."""
    if not config.difficulty_judge:
        return examples, []
    from distill.generate.responses import with_lineage
    from distill.prompts import render

    requests = [GenerationRequest(
        id=example.id,
        messages=_messages(config.system_prompt, render(config.difficulty_template,
                                                        instruction=example.prompt_text)),
        sampling=config.judge_sampling.to_sampling(
            seed=ctx.request_seed("difficulty", t, example.id)))
        for example in examples]
    generations = ctx.generate(f"difficulty-round{t:02d}", requests)
    by_id = {g.request_id: g.text or "" for g in generations if g.index == 0}
    scored, malformed = [], []
    for example in examples:
        if example.id not in by_id:
            continue  # failed: the context filed it as rejected
        raw = by_id[example.id]
        score = parse_difficulty(raw)
        if score is None:
            malformed.append(Rejected(id=example.id, stage="difficulty",
                                      reason="malformed_difficulty",
                                      record={"raw": raw, "instruction_kept": True}))
        scored.append(with_lineage(example, difficulty=score))
    return scored, malformed


def parse_difficulty(text: str) -> float | None:
    """The first number from 1 to 10 in a judgement ("7", "Score: 8/10"), else None."""
    match = re.search(r"(?<![\d.])(10|[1-9])(\.\d+)?(?![\d])", text)
    if match is None:
        return None
    value = float(match.group(0))
    return value if 1 <= value <= 10 else None


# -- helpers -------------------------------------------------------------------------------

def _messages(system_prompt: str | None, content: str) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _reject(child: Example, reason: str, raw: str) -> Rejected:
    return Rejected(id=child.id, stage="evolve", reason=reason,
                    record=child.to_json() | {"raw": raw})


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _round_stats(t: int, attempted: list[Example], kept: list[Example],
                 operations: list[tuple[str, int, int]],
                 failures: Counter[str]) -> dict[str, Any]:
    """One row of the curriculum table: what was tried, what survived, how hard it is."""
    scores = [e.lineage.model_extra.get("difficulty") for e in kept]
    scores = [s for s in scores if s is not None]
    return {
        "round": t,
        "attempted": len(attempted),
        "evolved": len(kept) if t else 0,
        "kept": len(kept),
        "by_operation": {op: {"drawn": n, "evolved": k} for op, n, k in operations},
        "failures": dict(sorted(failures.items())),
        "mean_words": _mean([len(e.prompt_text.split()) for e in kept]),
        "mean_difficulty": _mean(scores),
        "difficulty_scored": len(scores),
    }


def difficulty_table(stats: dict[str, Any]) -> list[str]:
    """Markdown lines of the per-round curriculum table, for the run report."""
    lines = ["### Evol-Instruct rounds", "",
             "Round 0 is the initial pool; each later round evolves every pool entry once "
             "(a failed evolution leaves its parent for the next round).", "",
             "| round | attempted | evolved | failures | mean words | mean difficulty | "
             "operations (evolved/drawn) |", "|---|---|---|---|---|---|---|"]
    for row in stats.get("rounds", []):
        failures = ", ".join(f"{k} {v}" for k, v in row.get("failures", {}).items()) or "-"
        operations = ", ".join(f"{op} {c['evolved']}/{c['drawn']}" for op, c in
                               row.get("by_operation", {}).items() if c["drawn"]) or "-"
        words = row.get("mean_words")
        difficulty = row.get("mean_difficulty")
        evolved = row["evolved"] if row["round"] else f"{row['kept']} kept"
        lines.append(f"| {row['round']} | {row['attempted']} | {evolved} | {failures} | "
                     f"{'' if words is None else f'{words:.1f}'} | "
                     f"{'' if difficulty is None else f'{difficulty:.2f}'} | {operations} |")
    return lines + [""]
