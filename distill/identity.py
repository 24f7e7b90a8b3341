"""Model identity: what makes a model's outputs what they are, as a small dict.

`model_identity(model, chat_template, revision)` describes a local checkpoint directory
by the sha256 of its contents (weights and adapter files, config, tokenizer files and the
effective chat template) and a hub id by the id, the revision and, when the local hub
cache knows it, the commit the revision points to. Its `fingerprint` covers only what
changes outputs (contents, not the directory's path), so a copied or moved checkpoint
keeps its fingerprint and a retrained one gets a new one. The run store folds it into
stage fingerprints; the backends return it from `identity()`.

File hashes are cached by (real path, size, mtime): in memory for every file, and on disk
(`$DISTILL_HASH_CACHE`, default `~/.cache/distill/file-hashes.json`) for files of 64 MiB
and more, so a 70B teacher is hashed once per machine rather than once per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

# Top-level files of a checkpoint directory that shape its outputs.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CONFIG_FILES = ("config.json", "generation_config.json", "adapter_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
DISK_CACHE_MIN_BYTES = 64 << 20

_memory_cache: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _disk_cache_path() -> Path:
    configured = os.environ.get("DISTILL_HASH_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "distill" / "file-hashes.json"


def _read_disk_cache() -> dict[str, str]:
    try:
        data = json.loads(_disk_cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_disk_cache(key: str, digest: str) -> None:
    """Add one entry; best effort (a read-only home or a race only costs a re-hash)."""
    path = _disk_cache_path()
    try:
        data = _read_disk_cache()
        data[key] = digest
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=0, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass


def cached_file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, cached by (real path, size, mtime_ns)."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _memory_cache:
            return _memory_cache[key]
    disk_key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    big = stat.st_size >= DISK_CACHE_MIN_BYTES
    if big:
        digest = _read_disk_cache().get(disk_key)
        if digest:
            with _lock:
                _memory_cache[key] = digest
            return digest
    hasher = hashlib.sha256()
    with open(real, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            hasher.update(block)
    digest = hasher.hexdigest()
    with _lock:
        _memory_cache[key] = digest
    if big:
        _write_disk_cache(disk_key, digest)
    return digest


def resolve_chat_template(chat_template: str | None) -> str | None:
    """A recipe's `chat_template` as template text: a path to a file, or the Jinja itself.

    A value without `{` is taken as a path and must exist.
    """
    if chat_template is None:
        return None
    if "{" not in chat_template:
        path = Path(chat_template).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"chat template file not found: {chat_template}")
        return path.read_text(encoding="utf-8")
    return chat_template


def _directory_chat_template(directory: Path) -> Any:
    """The chat template a checkpoint directory ships, wherever transformers keeps it."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = directory / name
        if path.is_file():
            try:
                template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
            except (ValueError, AttributeError):
                template = None
            if template:
                return template
    return None


def _files_digest(directory: Path, names: list[str]) -> tuple[str, dict[str, str]]:
    per_file = {name: cached_file_sha256(directory / name) for name in sorted(names)}
    joined = "".join(f"{name}\0{digest}\n" for name, digest in per_file.items())
    return _sha256_text(joined), per_file


def _hub_commit(model: str, revision: str | None) -> str | None:
    """The commit a revision points to in the local hub cache, if it is there."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    revision = revision or "main"
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    ref = Path(HF_HUB_CACHE) / f"models--{model.replace('/', '--')}" / "refs" / revision
    try:
        return ref.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def model_identity(
    model: str, chat_template: str | None = None, revision: str | None = None
) -> dict[str, Any]:
    """Describe a local checkpoint directory or a hub id, with a content `fingerprint`.

    Args:
        model: a local directory (full checkpoint or PEFT adapter) or a hub id.
        chat_template: a template override (text or path) as given to the backend; it
            replaces the checkpoint's own template in the identity.
        revision: the hub revision (ignored for local directories).

    Returns:
        A JSON-ready dict: `model`, `source` ("local" or "hub"), content hashes
        (`weights_sha256`, `tokenizer_sha256`, `chat_template_sha256`), `base` (the base
        model's identity, for an adapter) and `fingerprint`.
    """
    template_text = resolve_chat_template(chat_template)
    directory = Path(model).expanduser()
    if directory.is_dir():
        identity = _local_identity(directory.resolve(), template_text)
    else:
        identity = {
            "model": model,
            "source": "hub",
            "revision": revision or "main",
            "commit": _hub_commit(model, revision),
            "chat_template_sha256": _sha256_text(template_text) if template_text else None,
            "chat_template_override": template_text is not None,
        }
    content = {k: v for k, v in identity.items()
               if k not in ("model", "files", "chat_template_override")}
    if identity["source"] == "hub":
        content["model"] = model
    identity["fingerprint"] = _sha256_text(json.dumps(content, sort_keys=True, default=str))
    return identity


def _local_identity(directory: Path, template_text: str | None) -> dict[str, Any]:
    names = sorted(p.name for p in directory.iterdir() if p.is_file())
    weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES) or n in CONFIG_FILES]
    tokenizer = [n for n in names if n in TOKENIZER_FILES]
    if not weights:
        raise FileNotFoundError(f"{directory}: no weights or config files to identify")
    weights_sha, weight_files = _files_digest(directory, weights)
    tokenizer_sha, tokenizer_files = _files_digest(directory, tokenizer)
    override = template_text is not None
    template = template_text if override else _directory_chat_template(directory)
    if template is None:
        template_sha = None
    elif isinstance(template, str):
        template_sha = _sha256_text(template)
    else:
        template_sha = _sha256_text(json.dumps(template, sort_keys=True))
    identity: dict[str, Any] = {
        "model": str(directory),
        "source": "local",
        "weights_sha256": weights_sha,
        "tokenizer_sha256": tokenizer_sha,
        "chat_template_sha256": template_sha,
        "chat_template_override": override,
        "files": {**weight_files, **tokenizer_files},
    }
    adapter_config = directory / "adapter_config.json"
    if adapter_config.is_file():
        try:
            adapter = json.loads(adapter_config.read_text(encoding="utf-8"))
        except ValueError:
            adapter = {}
        base = adapter.get("base_model_name_or_path")
        if base:
            base_identity = model_identity(base, revision=adapter.get("revision"))
            identity["base"] = {k: v for k, v in base_identity.items() if k != "files"}
    return identity
