"""Building the microworld's models: a shortened build here, the real one under `slow`."""

from __future__ import annotations

import json
import random

import pytest

from distill.microworld.build import (
    MODEL_NAMES,
    BuildConfig,
    build_models,
    resolve_model_ref,
)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory):
    cache = tmp_path_factory.mktemp("microworld-cache")
    return cache, build_models(cache, config=BuildConfig.tiny(), quiet=True, models=MODEL_NAMES)


def test_build_writes_loadable_models_with_chat_template(tiny_build) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, paths = tiny_build
    assert set(paths) == set(MODEL_NAMES)
    for path in paths.values():
        model = AutoModelForCausalLM.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
        assert model.config.hidden_size // model.config.num_attention_heads == 64
        assert tokenizer.chat_template and "<|assistant|>" in tokenizer.chat_template
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Add the two "
                                                 "numbers.\n\n1 + 2"}],
                                               add_generation_prompt=True, tokenize=False)
        assert prompt.endswith("<|assistant|>\n")
        # Numbers are read digit by digit.
        assert tokenizer.convert_ids_to_tokens(tokenizer("12345").input_ids) == list("12345")
        assert tokenizer.eos_token == "<|end|>"
    report = json.loads((paths["teacher"].parent / "microworld.json").read_text())
    assert report["fingerprint"] == paths["teacher"].parent.name
    assert report["stats"]["teacher"]["steps"] == BuildConfig.tiny().teacher.steps


def test_build_is_cached_and_atomic(tiny_build) -> None:
    cache, paths = tiny_build
    weights = paths["teacher"] / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_models(cache, config=BuildConfig.tiny(), quiet=True, models=MODEL_NAMES) == paths
    assert weights.stat().st_mtime_ns == stamp  # not rebuilt
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]
    other = build_models(cache, config=BuildConfig.tiny(seed=1), quiet=True)
    assert other["teacher"].parent != paths["teacher"].parent


def test_thinker_is_built_only_when_asked_for(tmp_path) -> None:
    config = BuildConfig.tiny()
    paths = build_models(tmp_path, config=config, quiet=True)
    assert set(paths) == {"teacher", "student"}
    base = paths["teacher"].parent
    assert not (base / "thinker").exists()
    stamp = (paths["teacher"] / "model.safetensors").stat().st_mtime_ns
    thinker = build_models(tmp_path, config=config, quiet=True, models=("thinker",))["thinker"]
    assert thinker == base / "thinker" and (thinker / "model.safetensors").is_file()
    stats = json.loads((thinker / "build.json").read_text())["stats"]
    assert stats["steps"] == config.thinker.steps
    assert (paths["teacher"] / "model.safetensors").stat().st_mtime_ns == stamp  # base kept
    with pytest.raises(ValueError, match="oracle"):
        build_models(tmp_path, config=config, quiet=True, models=("oracle",))


def test_fingerprint_follows_config() -> None:
    assert BuildConfig().fingerprint() == BuildConfig().fingerprint()
    assert BuildConfig().fingerprint() != BuildConfig(seed=1).fingerprint()
    assert BuildConfig().fingerprint() != BuildConfig.tiny().fingerprint()


def test_resolve_model_ref(tmp_path, monkeypatch) -> None:
    calls = []

    def fake_build(cache_dir=None, **_):
        calls.append(cache_dir)
        return {name: tmp_path / name for name in MODEL_NAMES}

    monkeypatch.setattr("distill.microworld.build.build_models", fake_build)
    assert resolve_model_ref("microworld:student") == tmp_path / "student"
    with pytest.raises(ValueError, match="microworld"):
        resolve_model_ref("microworld:oracle")
    with pytest.raises(ValueError):
        resolve_model_ref("gpt2")


def test_cache_root_follows_environment(tmp_path, monkeypatch) -> None:
    from distill.microworld.build import cache_root

    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path))
    assert cache_root() == tmp_path / "microworld"


def test_training_data_never_holds_benchmark_items() -> None:
    from distill.microworld.benchmark import benchmark_keys
    from distill.microworld.corpus import TaskSource

    held_out = benchmark_keys()
    source = TaskSource(random.Random(0), held_out, 0.3)
    drawn = {source.tempered().key for _ in range(3000)} | {source.zipf().key
                                                            for _ in range(3000)}
    assert not drawn & held_out


@pytest.mark.slow
def test_full_build_teacher_answers_and_writes_tasks_the_student_base_cannot(tmp_path) -> None:
    """The real build (about 3.5 minutes on 2 cores) and its headline numbers.

    Measured at BUILD_VERSION 7 (docs/results.md, "Quickstart"): teacher 0.264, 11
    families at 10 % or more, 212 of 240 tasks parsed and 201 verifiable in 14
    families; student base 0.021. The build is deterministic on one machine and core
    count; the margins leave room for other CPUs' arithmetic.
    """
    from distill.microworld.benchmark import benchmark_tasks
    from distill.microworld.evaluate import accuracy, load, task_writing

    paths = build_models(tmp_path, quiet=True)
    tasks = [t for family in benchmark_tasks().values() for t in family]
    teacher, tokenizer = load(paths["teacher"])
    student, student_tokenizer = load(paths["student"])
    teacher_scores = accuracy(teacher, tokenizer, tasks)
    student_score = accuracy(student, student_tokenizer, tasks)["overall"]
    assert student_score < 0.08  # it never saw an instruction
    assert teacher_scores["overall"] > 0.22
    # learned across the world, not one family: most families at 10 % or more
    assert sum(score >= 0.1 for score in teacher_scores["per_family"].values()) >= 9
    # Self-Instruct prompting makes it write whole tasks that the verifier can check
    written = task_writing(teacher, tokenizer, prompts=48, temperature=0.8)
    assert written["parsed_tasks"] >= 0.6 * written["expected_tasks"]
    verifiable = written["parsed_tasks"] - written["status"].get("unverifiable", 0)
    assert verifiable >= 0.8 * written["parsed_tasks"]
    assert len(written["families"]) >= 6
