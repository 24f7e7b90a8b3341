"""model_identity: content hashes of checkpoints, cached (hub ids: test_hub_identity.py)."""

import json
import shutil

import pytest

from distill import identity as identity_module
from distill.identity import cached_file_sha256, model_identity, resolve_chat_template


@pytest.fixture
def model_copy(tiny_model_dir, tmp_path):
    return shutil.copytree(tiny_model_dir, tmp_path / "copy")


def test_local_identity_fields(tiny_model_dir):
    identity = model_identity(str(tiny_model_dir))
    assert identity["source"] == "local"
    assert identity["model"] == str(tiny_model_dir.resolve())
    for key in ("weights_sha256", "tokenizer_sha256", "chat_template_sha256", "fingerprint"):
        assert len(identity[key]) == 64
    assert "model.safetensors" in identity["files"]
    assert "tokenizer.json" in identity["files"]
    json.dumps(identity)  # JSON-ready


def test_fingerprint_follows_content_not_path(tiny_model_dir, model_copy):
    original = model_identity(str(tiny_model_dir))
    copied = model_identity(str(model_copy))
    assert copied["model"] != original["model"]
    assert copied["fingerprint"] == original["fingerprint"]
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    changed = model_identity(str(model_copy))
    assert changed["weights_sha256"] != original["weights_sha256"]
    assert changed["tokenizer_sha256"] == original["tokenizer_sha256"]
    assert changed["fingerprint"] != original["fingerprint"]


def test_tokenizer_and_template_changes_show(tiny_model_dir, model_copy, tmp_path):
    original = model_identity(str(tiny_model_dir))
    template = model_copy / "chat_template.jinja"
    template.write_text(template.read_text() + " ")
    changed = model_identity(str(model_copy))
    assert changed["chat_template_sha256"] != original["chat_template_sha256"]
    assert changed["tokenizer_sha256"] != original["tokenizer_sha256"]
    assert changed["fingerprint"] != original["fingerprint"]
    text = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    path = tmp_path / "t.jinja"
    path.write_text(text)
    by_text = model_identity(str(tiny_model_dir), chat_template=text)
    by_path = model_identity(str(tiny_model_dir), chat_template=str(path))
    assert by_text["chat_template_sha256"] == by_path["chat_template_sha256"]
    assert by_text["chat_template_override"] is True
    assert by_text["fingerprint"] != original["fingerprint"]
    # An override equal to the shipped template changes nothing that matters.
    same = model_identity(str(tiny_model_dir),
                          chat_template=(tiny_model_dir / "chat_template.jinja").read_text())
    assert same["fingerprint"] == original["fingerprint"]


def test_missing_template_file_is_an_error():
    with pytest.raises(FileNotFoundError):
        resolve_chat_template("no/such/template.jinja")
    assert resolve_chat_template(None) is None


def test_hash_cache_by_path_size_mtime(model_copy, monkeypatch):
    path = model_copy / "config.json"
    first = cached_file_sha256(path)
    calls = []
    real_sha256 = identity_module.hashlib.sha256
    monkeypatch.setattr(identity_module.hashlib, "sha256",
                        lambda *a: calls.append(a) or real_sha256(*a))
    assert cached_file_sha256(path) == first
    assert calls == []  # served from the cache
    path.write_text(path.read_text() + "\n")
    assert cached_file_sha256(path) != first
    assert calls  # a new mtime and size: hashed again


def test_disk_cache_for_big_files(tmp_path, monkeypatch):
    cache = tmp_path / "hashes.json"
    monkeypatch.setenv("DISTILL_HASH_CACHE", str(cache))
    monkeypatch.setattr(identity_module, "DISK_CACHE_MIN_BYTES", 10)
    big = tmp_path / "big.bin"
    big.write_bytes(b"x" * 100)
    digest = cached_file_sha256(big)
    entries = json.loads(cache.read_text())
    assert list(entries.values()) == [digest]
    # A new process (empty memory cache) reads it back without hashing.
    monkeypatch.setattr(identity_module, "_memory_cache", {})
    monkeypatch.setattr(identity_module.hashlib, "sha256",
                        lambda *a: pytest.fail("hashed despite the disk cache"))
    assert cached_file_sha256(big) == digest
