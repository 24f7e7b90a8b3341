r"""Phi-style textbooks and exercises: diversity by specification, not by seed tasks.

Follows "Textbooks Are All You Need" (phi-1, Gunasekar et al. 2023) and Cosmopedia
(Ben Allal et al. 2024, github.com/huggingface/cosmopedia): instead of growing a seed
pool, the teacher is asked for many texts whose *specification* varies, so that the
data covers a space chosen in advance:

1. A topic taxonomy (inline in the recipe, or a YAML / JSON / txt file next to it;
   topics may have subtopics, and each leaf is a topic) is crossed with audiences
   (Cosmopedia's young children, high school students, college students, researchers),
   difficulty levels and styles (textbook, blog, wikiHow, story). Each product samples
   its specs from its cross product with a seeded RNG: all of it, or N of it.
2. Two products: textbook *sections* with worked explanations (instruction = the spec
   as a request, output = the section), and *exercises* with solutions. Code exercises
   (topics with `domain: code`) ask for a Python function with a random name (phi-1's
   trick for diverse CodeExercises) and a block of `assert` tests, stored in the
   record's `code_tests` and `entry_point` fields for the `verify` filter to run; math
   exercises store their final answer in `answer`. Code sections get random identifier
   names to use in their examples.
3. Every record carries its curriculum position: `lineage.level_rank`,
   `lineage.audience_rank`, `lineage.difficulty_rank` and the record's
   `curriculum_index`; candidates come out sorted simple to complex (level, then
   audience, then sections before exercises, then topic order).
4. Completions are parsed by `distill.generate.exercises`; every malformed, empty or
   too short one is a `Rejected` record with a reason, counted in the stats.

Requests are checkpointed under "sections" and "exercises" with per-spec seeds, so a
resumed run equals an uninterrupted one.

    generate:
      kind: textbook
      topics: topics.yaml          # or an inline list: [Fractions, {name: Python, domain: code,
      sections: 2000               #   subtopics: [Recursion, Dictionaries]}]
      exercises: all
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationInfo, field_validator

from distill.backends.base import GenerationRequest
from distill.component import Dependencies
from distill.generate.base import GeneratorSettings
from distill.generate.context import GenerationContext, GenerationResult
from distill.generate.exercises import Parsed, parse_exercise, parse_section
from distill.generate.responses import SamplingConfig
from distill.records import Example, Lineage, Rejected
from distill.registry import GENERATORS
from distill.settings import Strict

METHOD = "textbook"
Domain = Literal["general", "code", "math"]
Style = Literal["textbook", "blog", "wikihow", "story"]
Product = Literal["section", "exercise"]

# What each style asks for (after Cosmopedia's prompt families), and how the record's
# instruction names it.
STYLE_NAMES = {"textbook": "a textbook section", "blog": "a blog post",
               "wikihow": "a wikiHow-style tutorial", "story": "a story"}


class SectionSampling(SamplingConfig):
    """Sampling for sections and exercises; defaults are Cosmopedia's (Mixtral-8x7B)."""

    temperature: float = Field(0.6, ge=0.0, description="Cosmopedia: 0.6.")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Cosmopedia: 0.95.")
    max_tokens: int = Field(2500, ge=1, description="Cosmopedia: 2500 new tokens.")


class Topic(Strict):
    """One node of the topic taxonomy; a topic without subtopics is a leaf."""

    name: str = Field(min_length=1, description="The topic as the prompt names it.")
    domain: Domain | None = Field(
        None, description="code: exercises are Python functions with assert tests; math: "
        "exercises have a final answer; general: exercise and solution only. Null inherits "
        "the parent's (or generate.domain at the top).")
    subtopics: list[Topic] = Field(default_factory=list, description="Child topics.")


@GENERATORS.register
class Config(GeneratorSettings):
    """`generate:` settings of the textbook / exercise method."""

    kind: Literal["textbook"] = "textbook"
    topics: list[Topic] = Field(
        description="The topic taxonomy: a list of names or {name, domain, subtopics} "
        "mappings (a mapping {name: [subtopics]} works too), or the path of a YAML / JSON "
        "file holding such a list, or of a txt file with one topic per line (indented "
        "lines are subtopics of the line above). Paths are relative to the recipe.")
    domain: Domain = Field("general", description="Domain of topics that set none.")
    audiences: list[str] = Field(
        default_factory=lambda: ["young children", "high school students", "college students",
                                 "researchers"],
        min_length=1, description="Audiences, simplest first (Cosmopedia's four by default); "
        "the order is the curriculum order.")
    levels: list[str] = Field(
        default_factory=lambda: ["introductory", "intermediate", "advanced"], min_length=1,
        description="Difficulty levels, simplest first; the order is the curriculum order.")
    styles: list[Style] = Field(
        default_factory=lambda: ["textbook", "blog", "wikihow", "story"], min_length=1,
        description="Section styles (Cosmopedia's textbook, blog post, wikiHow, story).")
    sections: int | Literal["all"] = Field(
        "all", description="Section specs: 'all' = the whole cross product topic x audience "
        "x level x style; N = N specs sampled from it (seeded; repeats only once every spec "
        "is used); 0 = no sections.")
    exercises: int | Literal["all"] = Field(
        "all", description="Exercise specs, from topic x audience x level, as for sections.")
    min_section_words: int = Field(
        100, ge=1, description="Sections with fewer words are rejected (`too_short`); "
        "Cosmopedia drops completions under 150 tokens.")
    section_template: str = Field(
        "textbook_section", description="Prompt template of sections (distill/prompts).")
    exercise_template: str = Field(
        "textbook_exercise", description="Prompt template of exercises (distill/prompts).")
    system_prompt: str | None = Field(None, description="Optional system message.")
    sampling: SectionSampling = Field(default_factory=SectionSampling)

    @field_validator("topics", mode="before")
    @classmethod
    def _load_topics(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            value = load_topic_file(value, Path((info.context or {}).get("base_dir", ".")))
        return normalise_topics(value)

    @field_validator("topics")
    @classmethod
    def _leaves_unique(cls, topics: list[Topic]) -> list[Topic]:
        paths = [leaf.path for leaf in topic_leaves(topics, "general")]
        if not paths:
            raise ValueError("no topics")
        repeated = sorted({" > ".join(p) for p in paths if paths.count(p) > 1})
        if repeated:
            raise ValueError(f"topics repeated: {repeated}")
        return topics

    @field_validator("audiences", "levels")
    @classmethod
    def _distinct(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values) or not all(v.strip() for v in values):
            raise ValueError("entries must be distinct and non-blank")
        return values

    @field_validator("sections", "exercises")
    @classmethod
    def _count(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be 'all' or a count >= 0")
        return value

    @field_validator("section_template", "exercise_template")
    @classmethod
    def _template_exists(cls, name: str) -> str:
        from distill.prompts import template_source

        template_source(name)  # ValueError listing the available templates
        return name

    def dependencies(self) -> Dependencies:
        """The section and exercise templates, for the products it writes.

        A topics file is read while the recipe is validated and its taxonomy becomes
        `topics` itself, so the settings already hold what the file says.
        """
        templates = []
        if self.sections != 0:
            templates.append(self.section_template)
        if self.exercises != 0:
            templates.append(self.exercise_template)
        return Dependencies(templates=tuple(templates))

    def run(self, ctx: GenerationContext) -> GenerationResult:
        """Write the sections and exercises the settings specify, in curriculum order.

        Args:
            ctx: checkpointing and the executor ("sections" and "exercises" keys), and the
                teacher's name for lineage.

        Returns:
            Examples sorted simple to complex with `curriculum_index` 0..n-1, a `Rejected`
            record (stage "parse") for every refused completion, and stats.
        """
        from distill.prompts import template_hash

        spec_seed = ctx.request_seed("specs")
        results: list[tuple[Spec, Example]] = []
        rejected: list[Rejected] = []
        reasons: dict[str, Counter[str]] = {}
        truncated = 0
        for product, key, template in (("section", "sections", self.section_template),
                                       ("exercise", "exercises", self.exercise_template)):
            specs = sorted(sample_specs(self, product, spec_seed),
                           key=lambda spec: spec.curriculum_key())
            if not specs:
                continue
            built = [_build(self, spec, ctx) for spec in specs]
            generations = ctx.generate(key, [b.request for b in built])
            by_id = {g.request_id: g for g in generations if g.index == 0}
            counter = reasons.setdefault(product, Counter())
            for item in built:
                generation = by_id.get(item.spec.id)
                if generation is None:
                    continue  # failed: the context filed it as rejected
                text, finish = generation.text, generation.finish_reason
                truncated += finish == "length"
                lineage = _lineage(self, item, ctx, template, template_hash(template), finish)
                if product == "section":
                    parsed = parse_section(text, self.min_section_words)
                else:
                    parsed = parse_exercise(text, item.spec.leaf.domain, finish,
                                            item.function_name or None)
                if not parsed.ok:
                    counter[parsed.reason] += 1
                    rejected.append(Rejected(id=f"r{ctx.round}-{item.spec.id}", stage="parse",
                                             reason=parsed.reason,
                                             record={"raw": text, "lineage": lineage}))
                    continue
                results.append((item.spec, _example(item, parsed, lineage, ctx.round)))
        results.sort(key=lambda pair: pair[0].curriculum_key())
        examples = [example.model_copy(update={"curriculum_index": index})
                    for index, (_, example) in enumerate(results)]
        stats = _stats(self, examples, reasons, truncated)
        return GenerationResult(examples=examples, rejected=rejected, stats=stats)


# -- topics ------------------------------------------------------------------------------


def load_topic_file(value: str, base_dir: Path) -> Any:
    """Read a topic file (.yaml, .yml, .json or .txt) named relative to `base_dir`."""
    path = Path(value).expanduser()
    path = (path if path.is_absolute() else base_dir / path).resolve()
    if not path.is_file():
        raise ValueError(f"topic file not found: {value} (looked at {path})")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return _indented_topics(text, path)
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ValueError(f"{path}{where}: not valid YAML "
                         f"({getattr(error, 'problem', None) or error})") from None
    if isinstance(data, dict) and set(data) == {"topics"}:
        data = data["topics"]
    if data is None:
        raise ValueError(f"{path}: no topics")
    return data


def _indented_topics(text: str, path: Path) -> list[dict[str, Any]]:
    """One topic per line; a line indented deeper than the one above is its subtopic."""
    roots: list[dict[str, Any]] = []
    stack: list[tuple[int, dict[str, Any]]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw.expandtabs(4)) - len(raw.expandtabs(4).lstrip())
        node: dict[str, Any] = {"name": raw.strip().lstrip("-*").strip(), "subtopics": []}
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stack:
            stack[-1][1]["subtopics"].append(node)
        elif indent and roots:
            raise ValueError(f"{path}:{number}: indentation does not match any line above")
        else:
            roots.append(node)
        stack.append((indent, node))
    return roots


def normalise_topics(value: Any) -> Any:
    """Accept names, {name: ..} mappings and {topic: [subtopics]} shorthand alike."""
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [{"name": str(value)}]  # YAML reads a topic such as 1984 as a number
    if isinstance(value, dict):
        if "name" in value:
            return [{**value, "subtopics": normalise_topics(value.get("subtopics") or [])}]
        return [{"name": str(name), "subtopics": normalise_topics(children or [])}
                for name, children in value.items()]
    if isinstance(value, list):
        nodes = []
        for item in value:
            normal = normalise_topics(item)
            nodes += normal if isinstance(normal, list) else [normal]
        return nodes
    return value  # let pydantic name the wrong type


@dataclass(frozen=True)
class Leaf:
    """A topic a spec is about: its path from the root, its domain and its order."""

    path: tuple[str, ...]
    domain: str
    order: int

    @property
    def name(self) -> str:
        """The leaf's own name."""
        return self.path[-1]


def topic_leaves(topics: list[Topic], domain: str) -> list[Leaf]:
    """The taxonomy's leaves, depth first (the order the recipe lists them in)."""
    leaves: list[Leaf] = []

    def walk(nodes: list[Topic], parents: tuple[str, ...], inherited: str) -> None:
        for node in nodes:
            own = node.domain or inherited
            if node.subtopics:
                walk(node.subtopics, (*parents, node.name), own)
            else:
                leaves.append(Leaf((*parents, node.name), own, len(leaves)))

    walk(topics, (), domain)
    return leaves


# -- specs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What one request asks for."""

    product: str
    leaf: Leaf
    audience: str
    audience_rank: int
    level: str
    level_rank: int
    style: str | None
    repeat: int = 0

    @property
    def id(self) -> str:
        """A readable id unique within its product, stable across runs."""
        style = f"-{self.style}" if self.style else ""
        repeat = f"-x{self.repeat}" if self.repeat else ""
        return (f"{self.product[:3]}-t{self.leaf.order}-a{self.audience_rank}"
                f"-l{self.level_rank}{style}{repeat}")

    def curriculum_key(self) -> tuple[Any, ...]:
        """Simple to complex: level, audience, sections before exercises, topic, style."""
        return (self.level_rank, self.audience_rank, self.product != "section",
                self.leaf.order, self.style or "", self.repeat)


def cross_product(config: Config, product: str) -> list[Spec]:
    """Every spec of `product` in canonical order (exercises have no style axis)."""
    leaves = topic_leaves(config.topics, config.domain)
    styles: list[str | None] = list(config.styles) if product == "section" else [None]
    return [Spec(product, leaf, audience, a, level, lv, style)
            for leaf, (a, audience), (lv, level), style in itertools.product(
                leaves, enumerate(config.audiences), enumerate(config.levels), styles)]


def sample_specs(config: Config, product: str, seed: int) -> list[Spec]:
    """The specs of `product`: all of the cross product, or N drawn with a seeded RNG.

    N specs are drawn without replacement; beyond the cross product's size, further
    shuffled passes repeat it (each repeat gets its own id and sampling seed).
    """
    count = config.sections if product == "section" else config.exercises
    full = cross_product(config, product)
    if count == "all":
        return full
    rng = random.Random(f"{seed}-{product}")
    chosen: list[Spec] = []
    repeat = 0
    while len(chosen) < count and full:
        order = rng.sample(full, len(full))
        chosen += [_repeat(spec, repeat) for spec in order[:count - len(chosen)]]
        repeat += 1
    return chosen


def _repeat(spec: Spec, repeat: int) -> Spec:
    if not repeat:
        return spec
    return Spec(spec.product, spec.leaf, spec.audience, spec.audience_rank, spec.level,
                spec.level_rank, spec.style, repeat)


# -- random names (phi-1) ----------------------------------------------------------------

_VERBS = ("merge", "count", "find", "build", "split", "rank", "scan", "pack", "trim", "fold",
          "shift", "match", "group", "parse", "score", "sort", "filter", "map", "blend",
          "track", "align", "weigh", "label", "sum", "mirror", "rotate", "encode", "gather")
_ADJECTIVES = ("amber", "quiet", "rapid", "hidden", "golden", "crisp", "lunar", "silver",
               "tidy", "bright", "coastal", "dusty", "frozen", "gentle", "humble", "jagged",
               "mellow", "nimble", "polar", "rustic", "scarlet", "velvet", "woven", "zesty")
_NOUNS = ("orbit", "ledger", "pebble", "harbor", "lantern", "meadow", "signal", "glacier",
          "compass", "beacon", "canyon", "ember", "falcon", "garnet", "island", "kernel",
          "marble", "nectar", "quarry", "ripple", "summit", "thicket", "violet", "willow")


def random_names(rng: random.Random, count: int) -> tuple[str, list[str]]:
    """A random function name and `count` variable names, phi-1 style."""
    function = f"{rng.choice(_VERBS)}_{rng.choice(_ADJECTIVES)}_{rng.choice(_NOUNS)}"
    variables: list[str] = []
    while len(variables) < count:
        name = f"{rng.choice(_ADJECTIVES)}_{rng.choice(_NOUNS)}"
        if name not in variables:
            variables.append(name)
    return function, variables


# -- prompts -----------------------------------------------------------------------------


def request_text(spec: Spec) -> str:
    """The spec as a request: the instruction of a section record."""
    topic = spec.leaf.name
    within = f" (part of {' > '.join(spec.leaf.path[:-1])})" if len(spec.leaf.path) > 1 else ""
    what = STYLE_NAMES[spec.style or "textbook"]
    return (f"Write {what} for {spec.audience} about {topic}{within}, at the {spec.level} "
            "level, with worked explanations.")


def render_prompt(config: Config, spec: Spec, function_name: str,
                  variables: list[str]) -> str:
    """The teacher's user message for `spec`."""
    from distill.prompts import render

    template = config.section_template if spec.product == "section" else \
        config.exercise_template
    return render(template, topic=spec.leaf.name, context=list(spec.leaf.path[:-1]),
                  audience=spec.audience, level=spec.level, levels=config.levels,
                  style=spec.style or "", domain=spec.leaf.domain,
                  function_name=function_name, variables=variables)


@dataclass
class _Request:
    spec: Spec
    request: GenerationRequest
    function_name: str
    variables: list[str]


def _build(config: Config, spec: Spec, ctx: GenerationContext) -> _Request:
    function_name, variables = "", []
    if spec.leaf.domain == "code":
        rng = random.Random(ctx.request_seed("names", spec.id))
        function_name, variables = random_names(rng, 3)
    messages = [{"role": "user",
                 "content": render_prompt(config, spec, function_name, variables)}]
    if config.system_prompt:
        messages.insert(0, {"role": "system", "content": config.system_prompt})
    sampling = config.sampling.to_sampling(seed=ctx.request_seed(METHOD, spec.id))
    return _Request(spec, GenerationRequest(id=spec.id, messages=messages, sampling=sampling),
                    function_name, variables)


# -- the method --------------------------------------------------------------------------


def _lineage(config: Config, item: _Request, ctx: GenerationContext, template: str,
             template_sha: str, finish: str) -> dict[str, Any]:
    spec = item.spec
    return {
        "round": ctx.round, "method": METHOD, "teacher": ctx.teacher_name,
        "template": template, "template_hash": template_sha,
        "sampling": item.request.sampling.as_dict(),
        # Kept as the backend reported it: the heuristics filter drops "length" (cut off).
        "finish_reason": finish,
        "spec_id": spec.id, "product": spec.product, "topic": spec.leaf.name,
        "topic_path": list(spec.leaf.path), "topic_order": spec.leaf.order,
        "domain": spec.leaf.domain, "audience": spec.audience,
        "audience_rank": spec.audience_rank, "level": spec.level,
        "level_rank": spec.level_rank,
        # One number for "how hard": level first, audience within a level.
        "difficulty_rank": spec.level_rank * len(config.audiences) + spec.audience_rank,
        "style": spec.style, "function_name": item.function_name,
        "variable_names": item.variables,
    }


def _example(item: _Request, parsed: Parsed, lineage: dict[str, Any],
             round_index: int) -> Example:
    spec = item.spec
    code = spec.product == "exercise" and spec.leaf.domain == "code"
    if spec.product == "section":
        instruction = request_text(spec)
    else:
        instruction = parsed.exercise
        if code and parsed.entry_point not in instruction:
            # The tests call this name: the student must be told it.
            instruction += f"\n\nName the function `{parsed.entry_point}`."
    lineage = {**lineage, "solution_explanation": parsed.explanation}
    # Every record has the same fields (null where they do not apply), so the JSONL
    # loads as one table with datasets / pyarrow.
    return Example(id=f"r{round_index}-{spec.id}", instruction=instruction,
                   output=parsed.solution, lineage=Lineage(**lineage),
                   code_tests=parsed.tests if code else None,
                   entry_point=parsed.entry_point if code else None,
                   answer=parsed.answer or None, curriculum_index=-1)


def _stats(config: Config, examples: list[Example], reasons: dict[str, Counter[str]],
           truncated: int) -> dict[str, Any]:
    products = Counter(e.lineage.model_extra["product"] for e in examples)
    return {
        "method": METHOD,
        "topics": len(topic_leaves(config.topics, config.domain)),
        "cross_product": {p: len(cross_product(config, p)) for p in ("section", "exercise")},
        "requested": {p: sum(reasons.get(p, Counter()).values()) + products[p]
                      for p in ("section", "exercise")},
        "parsed": {p: products[p] for p in ("section", "exercise")},
        "parse_rejected": dict(sorted(sum(reasons.values(), Counter()).items())),
        "rejected_by_product": {p: dict(sorted(c.items())) for p, c in reasons.items()},
        "truncated_completions": truncated,
        "code_exercises": sum(e.model_extra.get("code_tests") is not None for e in examples),
        "math_answers": sum(e.model_extra.get("answer") is not None for e in examples),
        "per_level": dict(Counter(e.lineage.model_extra["level"] for e in examples)),
        "examples": len(examples),
    }
