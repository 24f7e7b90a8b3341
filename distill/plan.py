"""What a recipe will ask of its teacher, estimated before any model loads.

    distill plan recipes/quickstart.yaml [key=value ...]            # assumptions stated
    distill plan recipes/quickstart.yaml --from runs/quickstart     # calibrated by a run
    distill plan recipes/x.yaml --throughput 2500 --json            # tokens/s, for machines

Per round and stage (generation, LLM judge filters), the plan counts requests and
estimates prompt and completion tokens. Prompts are the real ones: the generation
method runs against a recording context (`_Recorder`) that keeps the requests it is
asked for and answers none, so the method's own code renders its templates on the seed
data; the teacher's tokenizer counts them when it is on disk (otherwise characters / 4).
What depends on the teacher's answers (how many tasks a Self-Instruct list yields, how
many evolutions survive, how long answers are) is an assumption, printed with the plan:
a fill ratio of `max_tokens` by default, or what a previous run measured (`--from`),
read from its generation checkpoints and manifests. Wall time comes from `--throughput`
or the previous run's tokens per second; money from the `price` of the model each request
goes to (`teacher.price`, a judge filter's `model.price`, a preference model's).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill.backends.base import GenerationRequest
from distill.generate.context import GenerationContext
from distill.recipe import Recipe

# The share of max_tokens an answer is assumed to fill when no run measured it.
DEFAULT_FILL = 0.5


@dataclass
class Line:
    """One kind of request in one round: how many, and their tokens (totals)."""

    round: int
    stage: str  # "generate" or "filter"
    key: str  # the checkpoint key's family ("instructions", "responses", "judge", ...)
    requests: int
    prompt_tokens: int
    completion_tokens: int
    completion_basis: str  # how completion_tokens was estimated
    priced_by: str = "teacher.price"  # the recipe field of the answering model's price

    @property
    def tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Plan:
    """The estimate of a run, and every assumption it rests on."""

    recipe: str
    lines: list[Line]
    assumptions: list[str]
    throughput: float | None = None  # tokens (prompt + completion) per second
    # each line's `priced_by` field -> that price (None: the recipe gives none)
    prices: dict[str, dict[str, float] | None] = field(default_factory=dict)

    def totals(self, stage: str | None = None) -> dict[str, float | None]:
        """Requests, tokens, wall time (s) and cost, over all lines or one stage's.

        The cost is None unless every line's model has a price: a partial sum is no total.
        """
        lines = [line for line in self.lines if stage is None or line.stage == stage]
        prompt = sum(line.prompt_tokens for line in lines)
        completion = sum(line.completion_tokens for line in lines)
        cost = None
        prices = [self.prices.get(line.priced_by) for line in lines]
        if all(price is not None for price in prices):
            cost = sum((line.prompt_tokens * price["prompt_per_million"]
                        + line.completion_tokens * price["completion_per_million"]) / 1e6
                       for line, price in zip(lines, prices, strict=True))
        return {"requests": sum(line.requests for line in lines), "prompt_tokens": prompt,
                "completion_tokens": completion, "tokens": prompt + completion,
                "wall_time_s": (prompt + completion) / self.throughput if self.throughput
                else None, "cost": cost}

    def as_json(self) -> dict[str, Any]:
        """The plan for `--json`."""
        return {"recipe": self.recipe, "lines": [asdict(line) for line in self.lines],
                "totals": self.totals(), "generate": self.totals("generate"),
                "throughput": self.throughput, "prices": self.prices,
                "assumptions": self.assumptions}


# -- what a previous run measured ----------------------------------------------------------

def key_family(key: str) -> str:
    """A checkpoint key without its step or round number ("instructions-step0003")."""
    return re.sub(r"-(step|round)\d+$", "", key)


@dataclass
class Measured:
    """Per-request means and ratios from a previous run's generation (`--from`)."""

    run: str
    completion: dict[str, float] = field(default_factory=dict)  # family -> tokens/request
    requests: dict[str, int] = field(default_factory=dict)  # family -> requests, all rounds
    keys: dict[str, int] = field(default_factory=dict)  # checkpoint key -> requests
    stats: list[dict[str, Any]] = field(default_factory=list)  # generate manifests' stats
    throughput: float | None = None

    @classmethod
    def read(cls, run_dir: Path) -> Measured:
        """Read a run directory's generation checkpoints and manifests.

        Raises:
            ValueError: the directory holds no generation checkpoints.
        """
        completion: dict[str, list[int]] = defaultdict(list)
        keys: dict[str, int] = defaultdict(int)
        shards = sorted(run_dir.glob("round_*/*generate*/checkpoints/*/chunk*.jsonl"))
        shards += sorted(run_dir.glob("round_*/*filter*/judge-checkpoints/*/chunk*.jsonl"))
        for shard in shards:
            family = key_family(shard.parent.name)
            family = "judge" if shard.parent.parent.name == "judge-checkpoints" else family
            per_request: dict[str, int] = defaultdict(int)
            for line in shard.read_text(encoding="utf-8").splitlines():
                row = json.loads(line)
                if row.get("finish_reason") != "error":
                    per_request[row["request_id"]] += row.get("completion_tokens", 0)
            completion[family] += per_request.values()
            keys[shard.parent.name] += len(per_request)
        if not shards:
            raise ValueError(f"--from {run_dir}: no generation checkpoints there "
                             "(round_*/generate/checkpoints)")
        manifests = [json.loads(p.read_text()) for p in sorted(
            run_dir.glob("round_*/generate/manifest.json"))]
        tokens = sum(m.get("tokens", {}).get("prompt_tokens", 0)
                     + m.get("tokens", {}).get("completion_tokens", 0) for m in manifests)
        seconds = sum(m.get("wall_time_s") or 0 for m in manifests)
        return cls(run=str(run_dir),
                   completion={k: statistics.fmean(v) for k, v in completion.items() if v},
                   requests={k: len(v) for k, v in completion.items()}, keys=dict(keys),
                   stats=[m.get("stats", {}) for m in manifests],
                   throughput=tokens / seconds if tokens and seconds else None)

    def ratio(self, numerator: str, denominator: str) -> float | None:
        """Sum of a stats key over the measured rounds, over another's (None: not measured)."""
        top = sum(s.get(numerator, 0) for s in self.stats)
        bottom = sum(s.get(denominator, 0) for s in self.stats)
        return top / bottom if bottom else None


# -- counting prompt tokens ---------------------------------------------------------------

class TokenCounter:
    """Prompt tokens of a request, as the hf and vLLM backends send it.

    With the teacher's tokenizer when it is on disk; otherwise characters / 4.
    """

    def __init__(self, recipe: Recipe) -> None:
        self.tokenizer: Any = None
        self.chat_template = recipe.teacher.chat_template
        self.note = ("prompt tokens: characters / 4 (the teacher's tokenizer is not on "
                     "this machine)")
        try:
            from transformers import AutoTokenizer

            from distill.models import model_path

            path = model_path(recipe.teacher.model)
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.note = f"prompt tokens: counted with the teacher's tokenizer ({path})"
        except Exception:  # noqa: BLE001 - any failure to load means: estimate from characters
            self.tokenizer = None

    def __call__(self, request: GenerationRequest) -> int:
        """The request's prompt tokens."""
        if self.tokenizer is not None:
            from distill.backends.hf import encode_request

            try:
                return len(encode_request(self.tokenizer, request, self.chat_template))
            except ValueError:
                pass  # chat messages and no template: count characters
        text = request.prompt if request.prompt is not None else "".join(
            m["content"] for m in request.messages or [])
        return math.ceil(len(text) / 4)


@dataclass
class _Recorder(GenerationContext):
    """A generation context that keeps every request a method asks for and answers none."""

    recorded: dict[str, list[GenerationRequest]] = field(default_factory=dict)

    def generate(self, key: str, requests: list[GenerationRequest]) -> list[Any]:
        self.recorded.setdefault(key, []).extend(requests)
        return []


@dataclass
class _Asked:
    """Requests of one family as the recorder saw them, before scaling."""

    family: str
    requests: int
    prompt_mean: float
    max_tokens: int  # per request, all samples together
    stage: str = "generate"
    priced_by: str = "teacher.price"  # the recipe field of the answering model's price


# -- the planner --------------------------------------------------------------------------

class Planner:
    """Builds a `Plan` for a recipe (see the module docstring)."""

    def __init__(self, recipe: Recipe, measured: Measured | None = None,
                 fill: float = DEFAULT_FILL, throughput: float | None = None) -> None:
        if not 0 < fill <= 1:
            raise ValueError(f"--fill: a share of max_tokens in (0, 1], not {fill}")
        self.recipe, self.measured, self.fill = recipe, measured, fill
        self.count = TokenCounter(recipe)
        self.assumptions: list[str] = [self.count.note]
        self.throughput = throughput

    def plan(self) -> Plan:
        """Every round's requests, tokens, time and cost."""
        recipe = self.recipe
        asked = self._generation(0)
        asked += self._judge_filters(asked)
        lines = []
        first = 1 if recipe.rounds.real_first else 0
        if first:
            self.assumptions.append("round 0 trains on the real data (rounds.real_first): no "
                                    "generation")
        for round_index in range(first, recipe.rounds.count):
            lines += [self._line(round_index, a) for a in asked]
        bases = {line.completion_basis.startswith("measured") for line in lines}
        if False in bases:
            self.assumptions.append(f"completion tokens: {self.fill:g} of max_tokens per "
                                    "request (--fill) where no run measured them")
        if True in bases:
            self.assumptions.append(f"completion tokens: the mean per request of each key "
                                    f"that {self.measured.run} measured")
        if recipe.rounds.count - first > 1:
            self.assumptions.append("every round asks what round 0 asks (same counts and "
                                    "lengths, whichever model is the teacher)")
        self.assumptions.append("not counted: the base and per-round evaluation (lm-eval "
                                "runs the student, not the teacher) and training")
        throughput = self.throughput
        if throughput is not None:
            self.assumptions.append(f"wall time: {throughput:g} tokens/s (--throughput)")
        elif self.measured is not None and self.measured.throughput:
            throughput = self.measured.throughput
            self.assumptions.append(f"wall time: {throughput:.0f} tokens/s (prompt + "
                                    f"completion), measured over {self.measured.run}'s "
                                    "generate stages, model loading included")
        else:
            self.assumptions.append("wall time: not estimated (give --throughput or --from)")
        models = recipe.priced_models()
        prices = {}
        for where in dict.fromkeys(line.priced_by for line in lines):
            price = models[where].price if where in models else None
            prices[where] = price and price.model_dump()
            self.assumptions.append(
                f"cost: {where}, {price.prompt_per_million:g} per million prompt and "
                f"{price.completion_per_million:g} per million completion tokens" if price
                else f"cost: not estimated (no {where} in the recipe)")
        return Plan(recipe=recipe.name, lines=lines, assumptions=self.assumptions,
                    throughput=throughput, prices=prices)

    def _line(self, round_index: int, asked: _Asked) -> Line:
        measured = self.measured.completion.get(asked.family) if self.measured else None
        if measured is not None:
            completion, basis = measured, f"measured mean {measured:.1f}"
        else:
            completion = asked.max_tokens * self.fill
            basis = f"{self.fill:g} x max_tokens {asked.max_tokens}"
        return Line(round=round_index, stage=asked.stage, key=asked.family,
                    requests=asked.requests,
                    prompt_tokens=round(asked.requests * asked.prompt_mean),
                    completion_tokens=round(asked.requests * completion),
                    completion_basis=basis, priced_by=asked.priced_by)

    # -- generation -------------------------------------------------------------------

    def _recorder(self, round_index: int = 0) -> _Recorder:
        from distill.data import load_seed_tasks

        recipe = self.recipe
        real = recipe.data.real
        loaders: dict[str, Callable[[], list[Any]]] = {
            "seed_tasks": lambda: load_seed_tasks(recipe.data.seed_tasks_path())}
        if real is not None:
            from distill.flywheel.real import draw_real

            loaders["real_records"] = lambda: list(
                draw_real(real, recipe.seed, round_index, fresh=False).train)
        return _Recorder(backend=None, checkpoint_dir=Path("/nonexistent"),
                         teacher_name=recipe.teacher.model, round=round_index,
                         seed=recipe.seed, chunk_size=recipe.teacher.checkpoint_every,
                         **loaders)

    def _asked(self, recorder: _Recorder) -> list[_Asked]:
        by_family: dict[str, list[GenerationRequest]] = defaultdict(list)
        for key, requests in recorder.recorded.items():
            by_family[key_family(key)] += requests
        return [_Asked(family, len(requests),
                       statistics.fmean(self.count(r) for r in requests) if requests else 0.0,
                       max((r.sampling.max_tokens * r.sampling.n for r in requests),
                           default=0))
                for family, requests in by_family.items()]

    def _generation(self, round_index: int) -> list[_Asked]:
        method = self.recipe.generate
        planner = METHOD_PLANNERS.get(method.kind)
        if planner is not None:
            return planner(self, round_index)
        recorder = self._recorder(round_index)
        try:
            method.run(recorder)
        except Exception as error:  # noqa: BLE001 - a method that needs answers to go on
            self.assumptions.append(f"generate.kind {method.kind}: stopped planning at "
                                    f"{type(error).__name__}: {error}")
        self.assumptions.append(
            f"generate.kind {method.kind} has no planner: counted are the requests it makes "
            "before it reads any answer; later steps that depend on answers are not counted "
            "(a lower bound)")
        return self._asked(recorder)

    def _yield_ratio(self, measured: float | None, assumed: float, what: str) -> float:
        if measured is not None:
            self.assumptions.append(f"{what}: {measured:.3g}, measured by {self.measured.run}")
            return measured
        self.assumptions.append(f"{what}: {assumed:.3g} (assumed: --fill {self.fill:g})")
        return assumed

    # -- judge filters ----------------------------------------------------------------

    def _judge_filters(self, generated: list[_Asked]) -> list[_Asked]:
        """One request per candidate for each LLM judge filter (all candidates reach it)."""
        from distill.data import load_seed_tasks
        from distill.judge import LLMJudge
        from distill.records import Example

        judges = [(i, f) for i, f in enumerate(self.recipe.filters) if f.kind == "judge"]
        if not judges:
            return []
        candidates = self._candidates(generated)
        seeds = load_seed_tasks(self.recipe.data.seed_tasks_path())
        seeds = [Example(id=f"plan-{i}", instruction=s.instruction, input=s.input,
                         output=s.output) for i, s in enumerate(seeds[:64])]
        asked = []
        for index, settings in judges:
            recorder = self._recorder()
            LLMJudge(settings, recorder, "judge").rate(seeds, key="judge")
            prompt = self._asked(recorder)[0].prompt_mean if seeds else 0.0
            asked.append(_Asked("judge", candidates, prompt, settings.max_tokens, "filter",
                                _price_field(self.recipe, f"filters.{index}.model.price")))
            self.assumptions.append(
                f"filters.{index} (judge): one request per candidate ({candidates}, none "
                "dropped by earlier filters); prompts rendered on the seed tasks (their "
                "outputs standing in for the teacher's answers)")
        return asked

    def _candidates(self, generated: list[_Asked]) -> int:
        """Records the generation writes: its answering family's requests."""
        families = {a.family: a.requests for a in generated}
        for family in ("responses", "responses-m0"):
            if family in families:
                return families[family]
        return max(families.values(), default=0)


# -- the methods' planners ------------------------------------------------------------------

def _plan_self_instruct(planner: Planner, round_index: int) -> list[_Asked]:
    """Steps of task lists until `num_instructions` parse, then one answer each."""
    from distill.data import load_seed_tasks
    from distill.generate.responses import generate_responses
    from distill.records import Example

    config = planner.recipe.generate
    recorder = planner._recorder(round_index)
    config.model_copy(update={"max_steps": 1, "responses": "keep_generated"}).run(recorder)
    step = planner._asked(recorder)[0]
    asked_for = config.tasks_per_prompt - config.in_context_per_prompt
    measured = planner.measured and planner.measured.ratio("parsed", "prompts")
    per_prompt = planner._yield_ratio(measured, asked_for * planner.fill,
                                      f"self_instruct: tasks parsed per prompt (of "
                                      f"{asked_for} asked for)")
    steps = min(config.resolved_max_steps(),
                math.ceil(config.num_instructions / (config.prompts_per_step * per_prompt)))
    step.requests = steps * config.prompts_per_step
    planner.assumptions.append(
        f"self_instruct: {steps} step(s) of {config.prompts_per_step} prompts; machine tasks "
        "in later prompts are as long as the seed tasks")
    instructions = min(config.num_instructions,
                       math.floor(steps * config.prompts_per_step * per_prompt))
    if config.responses != "regenerate":
        return [step]
    seeds = load_seed_tasks(planner.recipe.data.seed_tasks_path())
    examples = [Example(id=f"plan-{i}", instruction=s.instruction, input=s.input)
                for i, s in enumerate(seeds)]
    answers = planner._recorder(round_index)
    generate_responses(examples, config.response_sampling, answers, key="responses",
                       system_prompt=config.response_system_prompt,
                       template=config.response_template)
    response = planner._asked(answers)[0]
    response.requests = instructions
    planner.assumptions.append("self_instruct: one answer per instruction; the teacher's "
                               "instructions are as long as the seed tasks")
    return [step, response]


def _plan_evol_instruct(planner: Planner, round_index: int) -> list[_Asked]:
    """Evolutions of every chain each round; answers (and judges) of those that survive."""
    config = planner.recipe.generate
    recorder = planner._recorder(round_index)
    config.run(recorder)  # every evolution fails here: the parents are evolved each round
    asked = {a.family: a for a in planner._asked(recorder)}
    evolve = asked["evolve"]
    measured = None
    if planner.measured is not None and planner.measured.requests.get("evolve"):
        answered = sum(n for key, n in planner.measured.keys.items()
                       if key.startswith("responses-round") and key != "responses-round00")
        measured = answered / planner.measured.requests["evolve"]
    survive = planner._yield_ratio(measured, 1.0, "evol_instruct: share of evolutions that "
                                   "pass the elimination checks and are answered")
    initial = asked.get("responses")
    answer_prompt = initial.prompt_mean if initial else evolve.prompt_mean / 2
    evolved = round(evolve.requests * survive)
    plan = [evolve]
    if initial is not None:
        initial.requests += evolved  # the initial answers and every round's
        plan.append(initial)
    else:
        plan.append(_Asked("responses", evolved, answer_prompt,
                           config.response_sampling.max_tokens))
    judged = {"equality": config.equality_check == "teacher",
              "difficulty": config.difficulty_judge}
    for family in (family for family, on in judged.items() if on):
        plan.append(_Asked(family, evolved, evolve.prompt_mean, config.judge_sampling.max_tokens))
        planner.assumptions.append(f"evol_instruct: {family} judge prompts as long as the "
                                   "evolution prompts")
    planner.assumptions.append("evol_instruct: evolved instructions are as long as the "
                               "initial ones (real evolutions grow)")
    return plan


def _plan_preference(planner: Planner, round_index: int) -> list[_Asked]:
    """Every prompt answered by every model at every setting; an LLM judge rates each."""
    config = planner.recipe.generate
    # no model loads: the teacher stands in for other answer models and the judge, whose
    # requests the recorder never sees (they follow the answers, which it does not give)
    teacher_only = config.model_copy(update={"models": ["teacher"] * len(config.models),
                                             "judge": config.judge.model_copy(
                                                 update={"model": None})})
    recorder = planner._recorder(round_index)
    with contextlib.suppress(ValueError):  # no answers to pair: the requests are recorded
        teacher_only.run(recorder)
    asked = planner._asked(recorder)
    for item in asked:  # "responses-m1": what generate.models[1] answers
        index = item.family.rpartition("-m")[2]
        if index.isdigit():
            item.priced_by = _price_field(planner.recipe, f"generate.models.{index}.price")
    if any(model != "teacher" for model in config.models):
        planner.assumptions.append("preference: other answer models' prompts counted with "
                                   "the teacher's tokenizer, priced at their own price")
    if config.judge.kind == "llm":
        answers = sum(a.requests for a in asked)
        calls = answers if config.judge.mode == "rubric" else answers * (
            config.responses_per_prompt - 1)
        prompt = statistics.fmean(a.prompt_mean for a in asked) if asked else 0.0
        asked.append(_Asked("judge", calls, prompt + config.sampling.max_tokens * planner.fill,
                            config.judge.max_tokens,
                            priced_by=_price_field(planner.recipe,
                                                   "generate.judge.model.price")))
        planner.assumptions.append("preference: the LLM judge's prompt is the task and "
                                   "answer(s) without the rubric's own text (rough)")
    return asked


def _price_field(recipe: Recipe, field: str) -> str:
    """`field` when the recipe names a model of its own there, else the teacher's price."""
    return field if field in recipe.priced_models() else "teacher.price"


METHOD_PLANNERS: dict[str, Callable[[Planner, int], list[_Asked]]] = {
    "self_instruct": _plan_self_instruct,
    "evol_instruct": _plan_evol_instruct,
    "preference": _plan_preference,
}


def print_plan(plan: Plan, console: Any) -> None:
    """The plan as a rich table, its totals and its assumptions."""
    from rich.table import Table

    table = Table(title=f"distill plan: {plan.recipe}")
    for column in ("round", "stage", "key", "requests", "prompt tokens", "completion tokens",
                   "completion per request"):
        table.add_column(column, justify="right" if "tokens" in column or column in (
            "round", "requests") else "left")
    for line in plan.lines:
        table.add_row(str(line.round), line.stage, line.key, f"{line.requests:,}",
                      f"{line.prompt_tokens:,}", f"{line.completion_tokens:,}",
                      line.completion_basis)
    console.print(table)
    totals = plan.totals()
    summary = (f"total: {totals['requests']:,} requests, {totals['prompt_tokens']:,} prompt + "
               f"{totals['completion_tokens']:,} completion = {totals['tokens']:,} tokens")
    if totals["wall_time_s"] is not None:
        summary += f", about {totals['wall_time_s'] / 60:.1f} min of teacher time"
    if totals["cost"] is not None:
        summary += f", cost {totals['cost']:.4g} (the prices' currency)"
    console.print(summary)
    console.print("assumptions:")
    for assumption in plan.assumptions:
        console.print(f"  - {assumption}", highlight=False, soft_wrap=True)
