"""The recipe: one YAML file that describes a whole distillation experiment.

`load_recipe(path, overrides)` reads the YAML, applies dotted `key.sub=value` overrides,
resolves relative paths against the recipe's own directory and validates everything.
Any problem raises `RecipeError` with one line per problem naming the field path
(`filters.1.threshold: ...`); the CLI prints it and exits with code 2.

Component settings are defined once, next to the code that uses them (the generation
method, each filter, training, evaluation), and embedded here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from distill.evaluate.contamination import Config as DecontaminationConfig
from distill.evaluate.harness import Config as EvalConfig
from distill.filters.dedup import Config as DedupConfig
from distill.filters.heuristics import Config as HeuristicsConfig
from distill.filters.judge import Config as JudgeFilterConfig
from distill.filters.near_dedup import EmbeddingConfig as EmbeddingDedupConfig
from distill.filters.near_dedup import MinHashConfig as MinHashDedupConfig
from distill.filters.novelty import Config as NoveltyConfig
from distill.filters.perplexity import Config as PerplexityConfig
from distill.filters.verify import Config as VerifyConfig
from distill.flywheel.data import Policy, RealDataConfig
from distill.flywheel.measure import MeasureConfig
from distill.flywheel.stopping import StopRule
from distill.generate.continuation import Config as ContinuationConfig
from distill.generate.doc_qa import Config as DocQAConfig
from distill.generate.evol_instruct import Config as EvolInstructConfig
from distill.generate.preference import Config as PreferenceConfig
from distill.generate.self_instruct import Config as SelfInstructConfig
from distill.generate.textbook import Config as TextbookConfig
from distill.review import Config as ReviewConfig
from distill.train.config import LoraSettings, TrainConfig


class RecipeError(ValueError):
    """A recipe that cannot run; the message names every offending field."""


class Strict(BaseModel):
    """Base for recipe sections: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")


def resolve_path(value: str | None, info: ValidationInfo, *, must_exist: bool = True) -> str | None:
    """Resolve a path relative to the recipe's directory and check that it exists."""
    if value is None:
        return None
    base = Path((info.context or {}).get("base_dir", "."))
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base / path
    path = path.resolve()
    if must_exist and not path.exists():
        raise ValueError(f"file or directory not found: {value} (looked at {path})")
    return str(path)


def resolve_model(value: str, info: ValidationInfo) -> str:
    """Keep hub ids and `microworld:` references; resolve and check local directories."""
    if value.startswith("microworld:"):
        from distill.microworld.build import MODEL_NAMES

        name = value.split(":", 1)[1]
        if name not in MODEL_NAMES:
            raise ValueError(f"unknown microworld model {name!r}; choose one of {MODEL_NAMES}")
        return value
    looks_local = value.startswith((".", "/", "~")) or value.count("/") != 1
    base = Path((info.context or {}).get("base_dir", "."))
    candidate = (base / Path(value).expanduser())
    if looks_local or candidate.exists():
        return resolve_path(value, info)  # type: ignore[return-value]
    return value  # "org/name" on a model hub, loaded by the backend


# distill's own lm-eval tasks (the microworld benchmark), beside the package in a checkout.
BUILTIN_TASKS = Path(__file__).resolve().parent.parent / "eval" / "tasks"


def _include_path(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return str(BUILTIN_TASKS) if BUILTIN_TASKS.is_dir() else None
    try:
        return resolve_path(value, info)
    except ValueError as error:
        raise ValueError(f"include_path: {error}") from None


class ModelSpec(Strict):
    """A model named in a recipe, and the chat template it is used with."""

    model: str = Field(description="Hub id (org/name), local checkpoint directory, or "
                       "microworld:teacher / microworld:student.")
    chat_template: str | None = Field(None, description="Path to a Jinja chat template that "
                                      "replaces the tokenizer's own.")

    @field_validator("model")
    @classmethod
    def _model(cls, value: str, info: ValidationInfo) -> str:
        return resolve_model(value, info)

    @field_validator("chat_template")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)


class TeacherSpec(ModelSpec):
    """The model that writes the synthetic data."""

    backend: Literal["hf", "vllm", "openai"] = Field(
        "hf", description="hf: transformers on CPU/GPU; vllm: offline vLLM engine; openai: any "
        "OpenAI-compatible server (set engine.base_url and engine.api_key_env).")
    engine: dict[str, Any] = Field(default_factory=dict, description="Options passed to the "
                                   "backend as they are (batch_size, gpu_memory_utilization, "
                                   "tensor_parallel_size, base_url, max_concurrency, ...).")
    checkpoint_every: int = Field(64, ge=1, description="Requests per generation checkpoint "
                                  "chunk; chunks are also the unit split across ranks. Use "
                                  "hundreds with vLLM so its batches stay full.")


class StudentSpec(ModelSpec):
    """The model that is trained on the synthetic data."""

    lora: LoraSettings | None = Field(default_factory=LoraSettings,
                                      description="LoRA adapter settings; null trains all "
                                      "weights (full fine-tune).")


class DataSpec(Strict):
    """Human-written inputs: the seed tasks and optional real data to mix in."""

    seed_tasks: str | None = Field(None, description="JSONL of seed tasks (instruction, input, "
                                   "output); default: distill's own general-purpose seed file.")
    real_data: str | None = Field(None, description="JSONL of real examples that data policies "
                                  "mix into training (shorthand for real.path with "
                                  "held_out 0).")
    real: RealDataConfig | None = Field(None, description="Real data for the data policies, "
                                        "the measure stage and continuation prompts: a JSONL "
                                        "`path` or `microworld: {count: N}` ground-truth "
                                        "tasks, with `held_out` records kept for measuring.")

    @field_validator("seed_tasks", "real_data")
    @classmethod
    def _exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _one_real_source(self) -> DataSpec:
        if self.real_data is not None and self.real is not None:
            raise ValueError("give real data once: real_data (a path) or real, not both")
        if self.real_data is not None:
            self.real = RealDataConfig(path=self.real_data, held_out=0)
        return self


class RoundsSpec(Strict):
    """How many generate-train rounds, and how each round's data and teacher are chosen."""

    count: int = Field(1, ge=1, description="Number of rounds.")
    next_teacher: Literal["teacher", "student"] = Field(
        "teacher", description="student: the round's trained student generates the next "
        "round's data (the flywheel); teacher: the original teacher always does.")
    data_policy: Policy = Field(
        "replace", description="replace: train on this round's synthetic data only; "
        "accumulate: real data plus every round's synthetic data so far; "
        "accumulate_subsample: accumulate, then a seeded sample of `budget` records; mix: "
        "this round's synthetic data with a `real_fraction` share of real data, same size.")
    budget: int | None = Field(None, ge=1, description="accumulate_subsample: training "
                               "records per round.")
    real_fraction: float | None = Field(None, gt=0, lt=1, description="mix: share of real "
                                        "records in the training set (Shumailov: 0.1).")
    fresh_real: bool = Field(False, description="Draw a new real sample every round (seeded "
                             "by round) instead of reusing round 0's.")
    real_first: bool = Field(False, description="Round 0 trains on the real data instead of "
                             "teacher output (Shumailov's generation 0); later rounds generate "
                             "with next_teacher. Its data counts as the real data of "
                             "accumulate.")
    stop: list[StopRule] = Field(default_factory=list, description="Stopping rules checked "
                                 "after each round's measure stage: plateau (metric, mode, "
                                 "min_delta, patience), floor or ceiling (metric, value).")

    @model_validator(mode="after")
    def _policy_settings(self) -> RoundsSpec:
        if self.data_policy == "accumulate_subsample" and self.budget is None:
            raise ValueError("data_policy accumulate_subsample needs budget (records per round)")
        if self.budget is not None and self.data_policy != "accumulate_subsample":
            raise ValueError(f"budget is for accumulate_subsample, not {self.data_policy}")
        if self.data_policy == "mix" and self.real_fraction is None:
            raise ValueError("data_policy mix needs real_fraction (e.g. 0.1)")
        if self.real_fraction is not None and self.data_policy != "mix":
            raise ValueError(f"real_fraction is for mix, not {self.data_policy}")
        if self.real_first and self.fresh_real:
            raise ValueError("real_first and fresh_real do not combine (round 0's data is the "
                             "real data that accumulate keeps)")
        return self


Filter = Annotated[
    HeuristicsConfig | NoveltyConfig | DedupConfig | VerifyConfig | MinHashDedupConfig
    | EmbeddingDedupConfig | PerplexityConfig | JudgeFilterConfig,
    Field(discriminator="kind"),
]
GenerateConfig = Annotated[
    SelfInstructConfig | EvolInstructConfig | DocQAConfig | TextbookConfig | PreferenceConfig
    | ContinuationConfig,
    Field(discriminator="kind"),
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Recipe(Strict):
    """A whole experiment."""

    name: str = Field(description="Run name; outputs go to <output_dir>/<name>/.")
    seed: int = Field(0, description="Seeds sampling, data order and training.")
    output_dir: str = Field("runs", description="Parent directory of run directories "
                            "(relative to the current directory).")
    teacher: TeacherSpec = Field(description="The model that writes the data.")
    student: StudentSpec = Field(description="The model that is trained.")
    data: DataSpec = Field(default_factory=DataSpec, description="Seed tasks and real data.")
    generate: GenerateConfig = Field(description="The generation method, chosen by `kind`.")
    filters: list[Filter] = Field(default_factory=list, description="Quality filters, each "
                                  "chosen by `kind`, applied in order.")
    decontamination: DecontaminationConfig = Field(
        default_factory=DecontaminationConfig, description="The gate against benchmark "
        "leakage, run before training.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Fine-tuning.")
    eval: EvalConfig = Field(description="lm-eval tasks the student is scored on, before "
                             "training (base) and after each round.")
    rounds: RoundsSpec = Field(default_factory=RoundsSpec, description="Rounds and data "
                               "policy.")
    review: ReviewConfig = Field(default_factory=ReviewConfig, description="Expert review "
                                 "(`distill review export / import`): sample defaults, and "
                                 "whether decisions feed training.")
    measure: MeasureConfig = Field(default_factory=MeasureConfig, description="Per-round "
                                   "metrics (perplexity, diversity, coverage) after evaluation.")

    @model_validator(mode="after")
    def _needs_real_data(self) -> Recipe:
        needs = []
        if self.rounds.data_policy == "mix":
            needs.append("rounds.data_policy mix")
        if self.rounds.fresh_real:
            needs.append("rounds.fresh_real")
        if self.rounds.real_first:
            needs.append("rounds.real_first")
        if self.generate.kind == "continuation":
            needs.append("generate.kind continuation (its prompts are real texts)")
        if needs and self.data.real is None:
            raise ValueError(f"{', '.join(needs)} needs real data: set data.real")
        if self.rounds.stop and not self.measure.enabled:
            raise ValueError("rounds.stop reads the measure stage's metrics: set "
                             "measure.enabled true")
        return self

    @model_validator(mode="after")
    def _dpo_needs_pairs(self) -> Recipe:
        if self.train.method != "sft" and self.generate.kind != "preference":
            raise ValueError(f"train.method {self.train.method} trains on preference pairs: "
                             "use generate.kind preference")
        return self

    @field_validator("eval")
    @classmethod
    def _eval_paths(cls, value: EvalConfig, info: ValidationInfo) -> EvalConfig:
        include = _include_path(value.include_path, info)
        return value.model_copy(update={"include_path": include})

    @field_validator("decontamination")
    @classmethod
    def _decontamination_paths(cls, value: DecontaminationConfig,
                               info: ValidationInfo) -> DecontaminationConfig:
        if value.include_path is None:
            return value  # the eval section's include path is used
        return value.model_copy(update={"include_path": _include_path(value.include_path, info)})

    @field_validator("train")
    @classmethod
    def _train_paths(cls, value: TrainConfig, info: ValidationInfo) -> TrainConfig:
        return value.model_copy(
            update={"accelerate_config": resolve_path(value.accelerate_config, info)})

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError("use letters, digits, '.', '_' and '-' only (it names a directory)")
        return value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are YAML scalars, list items are indexed."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {override!r}: expected key.path=value")
        value = yaml.safe_load(raw) if raw.strip() else ""
        parts = key.split(".")
        node: Any = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(f"override {key}: {where} is not an index of a list "
                                      f"of {len(node)}")
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, {})
            else:
                raise RecipeError(f"override {key}: {'.'.join(parts[:depth])} is a value, "
                                  "not a section")
    return data


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: `field.path: message`."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]
                            if not (isinstance(part, str) and "[" in part)) or "(recipe)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; `distill schema` lists every key)"
        lines.append(f"{location}: {message}")
    return "\n".join(lines)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe; raises RecipeError naming every problem."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})"
                          ) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of sections")
    data = apply_overrides(data, overrides or [])
    try:
        return Recipe.model_validate(data, context={"base_dir": path.parent.resolve()})
    except ValidationError as error:
        raise RecipeError(f"{path}: invalid recipe\n{format_validation_error(error)}") from None


def recipe_model() -> type[Recipe]:
    """The recipe's pydantic model, with every registered component in its unions."""
    return Recipe


def recipe_json_schema() -> dict[str, Any]:
    """The recipe's JSON Schema, for editors."""
    return recipe_model().model_json_schema()
