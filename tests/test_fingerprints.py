"""Stage fingerprints follow what components declare, and components declare all they read.

Every registered filter and generation method is probed, on settings derived from its
fields alone (tests/fingerprint_probe.py), so a new component is covered without editing
this file:

- Part A: each declared input changed alone moves the fingerprint (a model's files at the
  same path, a file's bytes, a template's source, a run input's identity), and so does each
  file or model its settings name; operational settings (top-level, nested, a served model's
  speed-only engine options) leave it alone; every other setting moves it.
- Part B: the component runs for real (filters on a few records, judges and scorers on tiny
  models; generation methods against a scripted teacher) under an audit hook, and every file
  it opens must be declared: templates, models, files, run inputs.
- Both probes catch a deliberately broken filter registered here, and pass its honest twin.
- Backends drop exactly their operational engine options; data policies train on exactly the
  rounds their `sources()` name.

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false \\
        .venv/bin/python -m pytest tests/test_fingerprints.py -q -p no:cacheprovider
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Literal

import pytest
from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings, Verdict
from distill.models import ModelSpec, model_path, semantic_engine_options
from distill.records import Example
from distill.registry import BACKENDS, FILTERS, GENERATORS, POLICIES
from distill.settings import resolve_path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent / "generate"))
from fingerprint_probe import (  # noqa: E402
    RECORDS,
    CannotBuild,
    Resources,
    examples,
    fingerprint_problems,
    undeclared_reads,
)
from scripted_teacher import ScriptedTeacher, default_script  # noqa: E402

REGISTRIES = {"filter": FILTERS, "generator": GENERATORS}
COMPONENTS = [pytest.param(kind, name, id=f"{kind}-{name}")
              for kind, registry in REGISTRIES.items() for name in registry.names()]


@pytest.fixture(scope="session")
def probe_models(tmp_path_factory) -> tuple[Path, Path]:
    """Two different tiny Llamas. 2048 positions: the judge's rubric prompt alone is ~600
    tokens, more than the 512 of the shared `tiny_model_dir`."""
    from distill.tinymodel import build_tiny_model

    corpus = [text for row in RECORDS for text in (row["instruction"], row["output"],
                                                   row["text"])] * 8
    root = tmp_path_factory.mktemp("fingerprint-models")
    return (build_tiny_model(root / "a", corpus, max_positions=2048),
            build_tiny_model(root / "b", corpus, seed=1, max_positions=2048))


@pytest.fixture
def resources(tmp_path: Path, probe_models: tuple[Path, Path]) -> Resources:
    """Records, seed tasks and model copies this test may change (tmp_path/res)."""
    return Resources.create(tmp_path / "res", *probe_models)


def _script(request) -> tuple[str, str]:
    # Raw prompts that are not a numbered task list (continuations) get a plain sentence.
    if request.prompt is not None and not re.search(r"\d+\. Instruction:$", request.prompt):
        return " and the wind is free.", "stop"
    return default_script(request)


def check_fingerprints(kind: str, name: str, res: Resources) -> list[str]:
    """Part A on every example of a registered component; raises AssertionError."""
    problems, unvaried = [], {}
    for label, settings in examples(REGISTRIES[kind].get(name), res):
        found, fields = fingerprint_problems(settings, res, f"{kind} {name} [{label}]")
        problems += found
        unvaried[label] = [field for field in fields if field != "kind"]
    print(f"{kind} {name}: no other valid value derived for {unvaried}")
    assert not problems, "the fingerprint does not follow the inputs:\n" + "\n".join(problems)
    return problems


def check_reads(kind: str, name: str, res: Resources, work: Path) -> list[str]:
    """Part B on every example of a registered component; raises AssertionError."""
    problems = []
    for index, (label, settings) in enumerate(examples(REGISTRIES[kind].get(name), res)):
        problems += undeclared_reads(kind, settings, res, work / f"work-{index}",
                                     f"{kind} {name} [{label}]",
                                     backend=ScriptedTeacher(_script))
    assert not problems, "undeclared reads:\n" + "\n".join(problems)
    return problems


# -- every registered component ----------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), COMPONENTS)
def test_the_fingerprint_follows_each_input_alone(kind: str, name: str,
                                                  resources: Resources) -> None:
    check_fingerprints(kind, name, resources)


@pytest.mark.parametrize(("kind", "name"), COMPONENTS)
def test_a_component_declares_every_file_it_opens(kind: str, name: str, resources: Resources,
                                                   tmp_path: Path) -> None:
    check_reads(kind, name, resources, tmp_path)


@pytest.mark.parametrize("name", BACKENDS.names())
def test_a_backend_drops_exactly_its_operational_engine_options(name: str) -> None:
    operational = BACKENDS.get(name).OPERATIONAL
    assert isinstance(operational, frozenset) and operational
    assert all(isinstance(key, str) for key in operational)
    semantic = {key: value for key, value in
                {"dtype": "float16", "max_model_len": 256, "fingerprint_probe": 1}.items()
                if key not in operational}
    engine = {**semantic, **{key: 3 for key in operational}}
    assert semantic_engine_options(name, engine) == dict(sorted(semantic.items()))
    for key in operational:
        assert semantic_engine_options(name, {**engine, key: 4}) == \
            semantic_engine_options(name, engine), key
    for key in semantic:
        assert semantic_engine_options(name, {**engine, key: "changed"}) != \
            semantic_engine_options(name, engine), key


def _pool(source: str, size: int = 6) -> list[Example]:
    return [Example(id=f"{source}-{i}", instruction=f"Task {i} of {source}.", output="Done.")
            for i in range(size)]


@pytest.mark.parametrize("name", POLICIES.names())
def test_a_data_policy_trains_on_exactly_the_rounds_it_names(name: str,
                                                             resources: Resources) -> None:
    """`sources()` names what the fingerprint and the loader use: `select()` must work from
    exactly those rounds, and each one it names must be able to change what it trains on."""
    for label, policy in examples(POLICIES.get(name), resources):
        for real_first in (False, True):
            for round_index in range(3):
                where = f"{name} [{label}] round {round_index} real_first={real_first}"
                sources = policy.sources(round_index, real_first=real_first)
                assert all(0 <= r <= round_index for r in sources.synthetic + sources.real), where
                synthetic = {r: _pool(f"synthetic{r}") for r in sources.synthetic}
                real = [_pool(f"real{r}") for r in sources.real]

                def ids(synthetic=synthetic, real=real, seed=0, policy=policy,
                        round_index=round_index) -> list[str]:
                    selection = policy.select(round_index, synthetic, real, seed=seed)
                    return [record.id for record in selection.records]

                chosen = ids()
                assert chosen, where
                named = {f"synthetic{r}" for r in sources.synthetic} | \
                    {f"real{r}" for r in sources.real}
                assert {i.rsplit("-", 1)[0] for i in chosen} <= named, where
                for r in sources.synthetic:  # each named round matters (for some seed)
                    other = {**synthetic, r: _pool(f"other{r}")}
                    assert any(ids(synthetic=other, seed=s) != ids(seed=s) for s in range(50)), \
                        f"{where}: synthetic round {r} is named but never used"
                for i, r in enumerate(sources.real):
                    other = [*real[:i], _pool(f"other{r}"), *real[i + 1:]]
                    assert any(ids(real=other, seed=s) != ids(seed=s) for s in range(50)), \
                        f"{where}: real draw {r} is named but never used"


# -- deliberately broken filters: the probes must catch them -------------------------------------


class UndeclaredReads(FilterSettings):
    """Reads a word list, a model's config and a prompt template, and declares none of them."""

    kind: Literal["fingerprint_probe_undeclared"] = "fingerprint_probe_undeclared"
    words: str = Field(description="A file of words that drop a record.")
    model: ModelSpec = Field(description="A model whose config the filter reads.")

    @field_validator("words")
    @classmethod
    def _words(cls, value: str, info: ValidationInfo) -> str:
        return resolve_path(value, info)

    def dependencies(self) -> Dependencies:
        """The bug: hard-coded, nothing declared."""
        return Dependencies()

    def build(self, context: FilterContext) -> WordFilter:
        """The filter."""
        return WordFilter(self)


class DeclaredReads(UndeclaredReads):
    """The same filter, declaring what it reads."""

    kind: Literal["fingerprint_probe_declared"] = "fingerprint_probe_declared"  # type: ignore

    def dependencies(self) -> Dependencies:
        """The word list, the model and the template."""
        return Dependencies(models={"config": self.model}, files={"words": self.words},
                            templates=("alpaca_prompt",))


class WordFilter:
    """Drops records whose instruction holds a listed word."""

    name = "fingerprint_probe"

    def __init__(self, settings: UndeclaredReads) -> None:
        self.settings = settings

    def __call__(self, records: list[Example]) -> list[Verdict]:
        from transformers import AutoConfig

        from distill.prompts import render

        words = set(Path(self.settings.words).read_text(encoding="utf-8").split())
        AutoConfig.from_pretrained(model_path(self.settings.model.model))
        for record in records:
            render("alpaca_prompt", instruction=record.instruction, input=record.input)
        return [Verdict(keep=not words & set(record.instruction.split())) for record in records]


class UndeclaredSeedTasks(FilterSettings):
    """Reads the run's seed tasks without declaring them."""

    kind: Literal["fingerprint_probe_seeds"] = "fingerprint_probe_seeds"

    def dependencies(self) -> Dependencies:
        """The bug: the seed tasks are missing from `inputs`."""
        return Dependencies()

    def build(self, context: FilterContext) -> SeedFilter:
        """A filter that drops records equal to a seed task."""
        return SeedFilter({task.instruction for task in context.seed_tasks()})


class SeedFilter:
    """Drops records whose instruction is a seed task's."""

    name = "fingerprint_probe_seeds"

    def __init__(self, seeds: set[str]) -> None:
        self.seeds = seeds

    def __call__(self, records: list[Example]) -> list[Verdict]:
        return [Verdict(keep=record.instruction not in self.seeds) for record in records]


THROWAWAY = (UndeclaredReads, DeclaredReads, UndeclaredSeedTasks)


@pytest.fixture
def throwaway_filters():
    """The broken filters above, registered for one test only."""
    for cls in THROWAWAY:
        FILTERS.register(cls)
    try:
        yield
    finally:
        for cls in THROWAWAY:
            FILTERS.unregister(cls.model_fields["kind"].default)


def test_the_throwaway_filters_stay_out_of_the_sweep() -> None:
    kinds = {cls.model_fields["kind"].default for cls in THROWAWAY}
    assert not kinds & {param.values[1] for param in COMPONENTS}
    assert not kinds & set(FILTERS.names())


def test_an_undeclared_file_model_and_template_fail_both_probes(
        throwaway_filters, resources: Resources, tmp_path: Path) -> None:
    name = "fingerprint_probe_undeclared"
    with pytest.raises(AssertionError) as reads:
        check_reads("filter", name, resources, tmp_path)
    message = str(reads.value)
    assert f"filter {name} [defaults]: read prompt template 'alpaca_prompt'" in message
    assert f"opened {resources.records_file} without declaring it" in message
    assert f"read the model at {resources.model_dir} (config.json) without declaring it in " \
           "dependencies().models" in message

    with pytest.raises(AssertionError) as fingerprints:
        check_fingerprints("filter", name, resources)
    message = str(fingerprints.value)
    assert f"editing {resources.records_file} (named in its settings) left the fingerprint " \
           "unchanged" in message
    assert f"swapping another model's files into {resources.model_dir} (named in its " \
           "settings) left the fingerprint unchanged" in message


def test_the_same_filter_declaring_what_it_reads_passes_both_probes(
        throwaway_filters, resources: Resources, tmp_path: Path) -> None:
    assert check_reads("filter", "fingerprint_probe_declared", resources, tmp_path) == []
    assert check_fingerprints("filter", "fingerprint_probe_declared", resources) == []


def test_reading_undeclared_seed_tasks_fails_the_reads_probe(
        throwaway_filters, resources: Resources, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"fingerprint_probe_seeds \[defaults\]: read the "
                                             r"run's seed_tasks without declaring it"):
        check_reads("filter", "fingerprint_probe_seeds", resources, tmp_path)



class Versioned(FilterSettings):
    """No generic value fits `version`: the class lists an example instead."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"version": "v2"}]})

    kind: Literal["fingerprint_probe_versioned"] = "fingerprint_probe_versioned"
    version: str = Field(pattern=r"^v[0-9]+$")

    def dependencies(self) -> Dependencies:
        """None."""
        return Dependencies()

    def build(self, context: FilterContext) -> SeedFilter:
        """Keeps everything."""
        return SeedFilter(set())


class Unversioned(Versioned):
    """The same without the example: the probe says what to add."""

    model_config = ConfigDict(json_schema_extra={})


def test_a_class_no_generic_value_fits_gives_examples(resources: Resources) -> None:
    assert [(label, settings.version) for label, settings in examples(Versioned, resources)] \
        == [("examples[0]", "v2")]
    with pytest.raises(CannotBuild, match=r"Unversioned: no generic value fits its required "
                                          r"fields \['version'\].*json_schema_extra"):
        examples(Unversioned, resources)


def test_eval_parallelism_and_batch_size_stay_out_of_the_evaluate_fingerprint():
    from distill.evaluate.harness import Config

    one_gpu = Config(tasks=["ifeval"], backend="vllm", model_args={"dtype": "bfloat16"})
    eight = Config(tasks=["ifeval"], backend="vllm", batch_size=64,
                   model_args={"dtype": "bfloat16", "data_parallel_size": 4,
                               "tensor_parallel_size": 2, "max_num_batched_tokens": 8192})
    assert one_gpu.fingerprint_settings() == eight.fingerprint_settings()
    float32 = Config(tasks=["ifeval"], backend="vllm", model_args={"dtype": "float32"})
    assert float32.fingerprint_settings() != one_gpu.fingerprint_settings()


def test_the_launch_enters_the_train_fingerprint_only_where_it_changes_the_model():
    from pathlib import Path

    from distill.train.config import TrainConfig
    from distill.train.launch import training_shape

    configs = Path(__file__).resolve().parents[1] / "recipes" / "accelerate"
    one, two = str(configs / "cpu.yaml"), str(configs / "cpu_2proc.yaml")
    # without a global batch, two processes double the effective batch: another model
    assert training_shape(TrainConfig(accelerate_config=one)) != \
        training_shape(TrainConfig(accelerate_config=two))
    # with one, they train alike
    fixed = {"global_batch_size": 16}
    assert training_shape(TrainConfig(accelerate_config=one, **fixed)) == \
        training_shape(TrainConfig(accelerate_config=two, **fixed))
    # the config's mixed precision reaches TRL when the args leave bf16 unset
    bf16 = str(configs / "single_gpu.yaml")
    assert training_shape(TrainConfig(accelerate_config=bf16, **fixed))["mixed_precision"] \
        == "bf16"
