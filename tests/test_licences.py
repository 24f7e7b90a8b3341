"""Licences and terms of the models that write data, and `distill validate`'s warnings.

A hub model's licence is read from its README.md in a local hub cache built here (the
layout huggingface_hub writes, tests/fakehub.py), offline; the recipe's own `license:` and
`terms:` win; validate warns, with exit code 0, about terms that restrict training other
models and about a data licence it cannot determine.

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/test_licences.py -q -p no:cacheprovider
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fakehub import FakeHub, activate, publish
from typer.testing import CliRunner

from distill.cards import licence_survey
from distill.cli import app
from distill.component import _semantic
from distill.filters.judge import Config as JudgeFilterConfig
from distill.licences import Licence, card_licence, data_licence, restriction, writer
from distill.models import ServedModel
from distill.recipe import load_recipe

TASKS = Path(__file__).resolve().parent / "assets" / "tasks"
LLAMA = "meta-llama/Llama-3.1-8B-Instruct"
QWEN = "Qwen/Qwen2.5-7B-Instruct"


def card(license_id: str, **extra: str) -> str:
    lines = [f"license: {license_id}", *(f"{key}: {value}" for key, value in extra.items())]
    return "---\n" + "\n".join(lines) + "\n---\n\n# A model\n"


@pytest.fixture
def hub(tmp_path, monkeypatch) -> FakeHub:
    """A hub cache holding only the README.md of a Llama 3.1 and a Qwen model, active."""
    hub = FakeHub(cache=tmp_path / "hub")
    for repo, text in ((LLAMA, card("llama3.1")), (QWEN, card("apache-2.0"))):
        source = tmp_path / "src" / repo
        source.mkdir(parents=True)
        (source / "README.md").write_text(text, encoding="utf-8")
        publish(hub, repo, source)
    activate(monkeypatch, hub.cache)
    return hub


def recipe_file(tmp_path: Path, teacher: dict | str, **changes) -> Path:
    data = {"name": "licences", "output_dir": str(tmp_path / "runs"), "teacher": teacher,
            "student": {"model": QWEN}, "generate": {"kind": "self_instruct",
                                                     "num_instructions": 4},
            "eval": {"tasks": ["distill_fixture_mc"], "include_path": str(TASKS)}, **changes}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def validate(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(path)])
    return result.exit_code, " ".join(result.output.split())


def test_a_hub_models_licence_is_read_from_its_cached_card(hub):
    licence = card_licence(LLAMA)
    assert licence.license == "llama3.1"
    assert licence.source == f"hub card {LLAMA}@{hub.commit(LLAMA)[:12]}"
    # at a pinned commit as well; a model the cache lacks is unknown, not an error
    assert card_licence(QWEN, hub.commit(QWEN)).license == "apache-2.0"
    assert card_licence("someone/not-cached") == Licence()


def test_other_with_a_name_and_link_is_kept(tmp_path):
    (tmp_path / "README.md").write_text(card("other", license_name="acme-research",
                                             license_link="https://acme.example/licence"))
    licence = card_licence(str(tmp_path))  # a checkpoint directory's own card
    assert (licence.license, licence.license_name) == ("other", "acme-research")
    assert licence.known and licence.label() == "other (acme-research)"


def test_a_plugins_models_carry_the_licence_it_declares():
    licence = card_licence("microworld:teacher")  # built here: no card, no build needed
    assert (licence.license, licence.source) == ("apache-2.0", "plugin microworld")


def test_the_recipes_licence_and_terms_win_over_the_card(hub):
    spec = ServedModel(model=LLAMA, license="mit",
                       terms={"text": "https://example.com/terms", "restricts_training": True})
    found = writer("teacher", spec)
    assert (found.licence.license, found.licence.source) == ("mit", "recipe")
    assert "restrict training other models" in found.restriction
    assert "https://example.com/terms" in found.restriction


@pytest.mark.parametrize(("license_id", "says"), [
    ("llama2", "Llama 2 licence forbids"), ("llama3", "Llama 3 licence forbids"),
    ("llama3.1", "named 'Llama...'"), ("llama3.3", "named 'Llama...'"),
    ("gemma", "Model Derivative"), ("apache-2.0", None), ("mit", None)])
def test_restrictive_licences_are_known(license_id, says):
    spec = ServedModel(model="org/model", license=license_id)
    found = restriction(spec, Licence(license=license_id))
    assert (found is None) if says is None else (says in found)


def test_api_terms_follow_the_host_requests_go_to(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    api = ServedModel(model="gpt-4o", backend="openai")  # the SDK's default host
    assert "compete with OpenAI" in restriction(api, Licence())
    local = ServedModel(model="my-model", backend="openai",
                        engine={"base_url": "http://127.0.0.1:8000/v1"})
    assert restriction(local, Licence()) is None
    claude = ServedModel(model="claude", backend="openai",
                         engine={"base_url": "https://api.anthropic.com/v1/"})
    assert "Anthropic" in restriction(claude, Licence())


def test_the_data_licence_is_the_shared_one_or_unknown():
    def named(role: str, license_id: str | None):
        return writer(role, ServedModel(model="org/m", license=license_id))

    apache = [named("teacher", "apache-2.0"), named("filters.0.judge", "apache-2.0")]
    assert data_licence(apache)[0].license == "apache-2.0"
    mixed, reason = data_licence([named("teacher", "apache-2.0"), named("judge", "mit")])
    assert mixed.license is None and "different licences" in reason
    unknown, reason = data_licence([writer("teacher", ServedModel(model="org/not-cached"))])
    assert unknown.license is None and "teacher is unknown" in reason
    stated = Licence(license="cc-by-4.0", source="recipe")
    assert data_licence([*apache, named("judge", "mit")], stated)[0] == stated


def test_licences_never_enter_a_fingerprint_nor_an_unset_dump():
    plain = JudgeFilterConfig(model={"model": "org/judge"})
    licensed = JudgeFilterConfig(model={"model": "org/judge", "license": "llama3.1",
                                        "terms": "https://example.com"})
    assert _semantic(plain) == _semantic(licensed)
    # a recipe that states no licence dumps as before (recipe.resolved.json, judge keys)
    assert "license" not in plain.model_dump(mode="json")["model"]
    assert "terms" not in plain.model_dump(mode="json")["model"]


def test_validate_warns_on_a_llama_licence_and_exits_0(hub, tmp_path):
    code, output = validate(recipe_file(tmp_path, {"model": LLAMA}))
    assert code == 0, output
    assert f"warning: teacher {LLAMA} (licence llama3.1, from hub card {LLAMA}@" in output
    assert "named 'Llama...'" in output
    assert "cannot be determined" not in output  # the teacher's licence is the data's
    assert output.endswith(f"teacher {LLAMA})")  # and the recipe is ok


def test_validate_warns_when_the_data_licence_cannot_be_determined(hub, tmp_path):
    code, output = validate(recipe_file(tmp_path, {"model": "someone/uncached-model"}))
    assert code == 0, output
    assert ("warning: the training data's licence cannot be determined: the licence of "
            "teacher is unknown") in output
    code, output = validate(recipe_file(tmp_path, {"model": "someone/uncached-model"},
                                        card={"license": "cc-by-4.0"}))
    assert code == 0 and "warning" not in output, output


def test_validate_names_a_judge_with_other_terms(hub, tmp_path):
    judge = {"kind": "judge", "model": {"model": QWEN, "terms": {
        "text": "research only", "restricts_training": True}}}
    path = recipe_file(tmp_path, {"model": QWEN}, filters=[judge])
    code, output = validate(path)
    assert code == 0, output
    assert "warning: filters.0.judge Qwen/Qwen2.5-7B-Instruct (licence apache-2.0" in output
    assert "(research only)" in output
    survey = licence_survey(load_recipe(path))
    assert [w.role for w in survey.writers] == ["teacher", "filters.0.judge"]
    assert survey.data.license == "apache-2.0"  # both share the licence; terms warned
