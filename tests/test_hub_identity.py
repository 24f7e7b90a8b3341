"""Hub models by id: the fake hub loads offline, and a hub id's identity always has a commit.

The first run on a fresh machine used to fingerprint a hub model without a commit (the
cache did not have it yet) and its restart with one, so a restart redid finished stages.
Now a hub id is downloaded, or found in the cache offline, when it is resolved; one that
is neither is a one-line error naming it, and `distill run` exits 2 before any work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from fakehub import STUDENT, TEACHER, FakeHub, activate, publish, repo_folder

from distill.identity import ModelUnavailable, model_identity
from distill.models import ModelRef, ModelSpec, ServedModel

ROOT = Path(__file__).resolve().parents[1]


def test_fake_hub_models_load_offline_by_hub_id(fake_hub):
    from huggingface_hub import constants
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    assert constants.HF_HUB_OFFLINE and os.environ["HF_HUB_OFFLINE"] == "1"
    snapshot = fake_hub.snapshot(STUDENT)
    weights = snapshot / "model.safetensors"
    assert weights.is_symlink() and weights.resolve().parent.name == "blobs"
    assert (repo_folder(fake_hub.cache, STUDENT) / "refs" / "main").read_text() == \
        fake_hub.commit(STUDENT)

    student = AutoModelForCausalLM.from_pretrained(STUDENT)
    assert type(student).__name__ == "Qwen2ForCausalLM"
    tokenizer = AutoTokenizer.from_pretrained(STUDENT)
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    # a Qwen2.5 *base* model: ChatML turns, but <|endoftext|> ends sequences
    assert tokenizer.eos_token == tokenizer.pad_token == "<|endoftext|>"
    assert GenerationConfig.from_pretrained(STUDENT).eos_token_id == endoftext
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"},
                                          {"role": "assistant", "content": "Hello"}],
                                         tokenize=False)
    assert chat.endswith("<|im_start|>user\nHi<|im_end|>\n"
                         "<|im_start|>assistant\nHello<|im_end|>\n")

    teacher = AutoModelForCausalLM.from_pretrained(TEACHER)
    assert type(teacher).__name__ == "LlamaForCausalLM"
    assert "<|assistant|>" in AutoTokenizer.from_pretrained(TEACHER).chat_template


def test_a_hub_models_identity_has_its_commit(fake_hub):
    identity = model_identity(STUDENT)
    assert identity["source"] == "hub" and identity["commit"] == fake_hub.commit(STUDENT)
    resolved = ModelRef.resolve(ModelSpec(model=STUDENT))
    assert resolved.path == STUDENT  # the default branch still loads by id
    assert resolved.identity["commit"] == fake_hub.commit(STUDENT)
    assert resolved.identity["fingerprint"] == identity["fingerprint"]
    assert model_identity(TEACHER)["fingerprint"] != identity["fingerprint"]


def test_an_uncached_hub_model_offline_is_a_one_line_error(tmp_path, monkeypatch):
    activate(monkeypatch, tmp_path / "empty-cache")
    with pytest.raises(ModelUnavailable) as raised:
        ModelRef.resolve(ModelSpec(model="org/absent"))
    message = str(raised.value)
    assert "\n" not in message
    assert "org/absent" in message and "HF_HUB_OFFLINE" in message
    with pytest.raises(ModelUnavailable, match="org/absent"):
        model_identity("org/absent")  # before: an identity with "commit": None


def test_a_pinned_revision_resolves_to_its_commit(fake_hub_cache, tmp_path, monkeypatch):
    # A repository of our own, in a cache of our own: two commits, main on the newer one.
    hub = FakeHub(cache=tmp_path / "hub")
    source = fake_hub_cache.snapshot(STUDENT)
    old = publish(hub, "org/pinned", source, refs=("main",))
    changed = tmp_path / "changed"
    changed.mkdir()
    for path in source.iterdir():
        (changed / path.name).write_bytes(path.read_bytes())
    config = (changed / "generation_config.json")
    config.write_text(config.read_text().replace('"do_sample": false', '"do_sample": true'))
    new = publish(hub, "org/pinned", changed, refs=("main", "v2"))
    assert old != new
    activate(monkeypatch, hub.cache)

    pinned = ModelRef.resolve(ModelSpec(model="org/pinned", revision=old))
    assert pinned.identity["commit"] == old
    # the stages load `path` without a revision: it is the pinned snapshot, not main
    assert Path(pinned.path) == hub.snapshot("org/pinned").parent / old
    assert '"do_sample": false' in (Path(pinned.path) / "generation_config.json").read_text()
    tagged = ModelRef.resolve(ModelSpec(model="org/pinned", revision="v2"))
    main = ModelRef.resolve(ModelSpec(model="org/pinned"))
    assert tagged.identity["commit"] == main.identity["commit"] == new
    # the commit is the content; the branch or tag that named it is not
    assert tagged.identity["fingerprint"] == main.identity["fingerprint"]
    assert pinned.identity["fingerprint"] != main.identity["fingerprint"]


def test_a_served_model_is_named_not_downloaded(tmp_path, monkeypatch):
    activate(monkeypatch, tmp_path / "empty-cache")
    spec = ServedModel(model="org/served", backend="openai",
                       engine={"base_url": "http://127.0.0.1:9/v1"})
    resolved = ModelRef.resolve(spec)
    assert resolved.path == "org/served"
    assert resolved.identity["source"] == "served" and "commit" not in resolved.identity
    assert not list((tmp_path / "empty-cache").glob("models--*"))


def test_run_stops_before_any_work_when_a_declared_model_is_missing(fake_hub, tmp_path):
    recipe = {
        "name": "hubrun",
        "output_dir": str(tmp_path / "runs"),
        "teacher": {"model": TEACHER},
        "student": {"model": STUDENT},
        "data": {"seed_tasks": str(ROOT / "recipes" / "data" / "microworld_seed_tasks.jsonl")},
        "generate": {"kind": "self_instruct", "num_instructions": 4},
        # a filter's model that is not cached: found before generation, not after it
        "filters": [{"kind": "perplexity", "model": "org/absent-reference"}],
        "eval": {"tasks": ["microworld"]},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = subprocess.run([sys.executable, "-m", "distill", "run", str(path), "--quiet"],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    error = next(line for line in result.stderr.splitlines() if "error:" in line)
    assert "org/absent-reference" in error and "HF_HUB_OFFLINE" in error
    run_dir = tmp_path / "runs" / "hubrun"
    assert not [p for p in run_dir.iterdir() if p.is_dir()]  # no stage began


def test_a_missing_local_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        model_identity(str(tmp_path / "no-such-model"))
    single = tmp_path / "model.gguf"  # a single-file model is hashed like a checkpoint
    single.write_bytes(b"weights")
    before = model_identity(str(single))
    single.write_bytes(b"other weights")
    assert before["source"] == "local"
    assert model_identity(str(single))["fingerprint"] != before["fingerprint"]


def test_a_hub_teacher_loads_at_the_commit_resolved_first_even_when_main_moves(
        fake_hub, tmp_path, monkeypatch):
    """Ray replicas and later stages load (id, commit), not whatever `main` is by then."""
    import shutil

    from distill.backends.base import load_backend

    cache = tmp_path / "hub"
    shutil.copytree(fake_hub.cache, cache, symlinks=True)
    activate(monkeypatch, cache)
    hub = FakeHub(cache=cache, commits={r: dict(c) for r, c in fake_hub.commits.items()})
    teacher = ModelRef.resolve(ServedModel(model=TEACHER, backend="hf"))
    first = hub.commit(TEACHER)
    # main moves on: the student's files become the teacher repository's new commit
    moved = publish(hub, TEACHER, fake_hub.snapshot(STUDENT))
    assert moved != first
    model, revision = teacher.pinned()
    assert (model, revision) == (TEACHER, first)
    backend = load_backend("hf", model=model, revision=revision, dtype="float32")
    try:
        assert type(backend.model).__name__ == "LlamaForCausalLM"  # the first commit's
        assert backend.identity()["commit"] == first
    finally:
        backend.close()
    # a local checkpoint is its own path, with no revision
    local = ModelRef.resolve(ModelSpec(model=str(fake_hub.snapshot(STUDENT))))
    assert local.pinned() == (local.path, None)


def test_a_judge_with_a_pinned_revision_loads_that_revision(fake_hub, tmp_path, monkeypatch):
    import shutil

    from distill.judge import open_judge_backend

    cache = tmp_path / "hub"
    shutil.copytree(fake_hub.cache, cache, symlinks=True)
    activate(monkeypatch, cache)
    hub = FakeHub(cache=cache, commits={r: dict(c) for r, c in fake_hub.commits.items()})
    pinned = hub.commit(TEACHER)
    publish(hub, TEACHER, fake_hub.snapshot(STUDENT))  # main is now another model
    judge = ServedModel(model=TEACHER, backend="hf", revision=pinned,
                        engine={"dtype": "float32"})
    backend = open_judge_backend(judge, seed=0)
    try:
        assert type(backend.model).__name__ == "LlamaForCausalLM"
    finally:
        backend.close()
