"""Model identity: what makes a model's outputs what they are, as a small dict.

`model_identity(model, chat_template, revision)` describes a local checkpoint directory
by the sha256 of its contents (weights and adapter files, config, tokenizer files and the
effective chat template) and a hub id by the id and the commit its revision points to.
Its `fingerprint` covers only what changes outputs (contents, not the directory's path;
the commit, not the branch or tag that named it), so a copied or moved checkpoint keeps
its fingerprint and a retrained one gets a new one. The run store folds it into stage
fingerprints; the backends return it from `identity()`.

A hub id always has its commit: `hub_snapshot` downloads the model at its revision
(`huggingface_hub.snapshot_download`, weights included) or, offline, finds it in the
local cache, once per process; a model that is neither cached nor reachable raises
`ModelUnavailable`. Were the commit left out when the cache lacked it, a run's first
start on a fresh machine and its restart (the model cached by then) would fingerprint
every stage differently, and the restart would redo finished work.

File hashes are cached by (real path, size, mtime): in memory for every file, and on disk
(`$DISTILL_HASH_CACHE`, default `~/.cache/distill/file-hashes.json`) for files of 64 MiB
and more, so a 70B teacher is hashed once per machine rather than once per run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from dataclasses import dataclass
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
# Files of a hub repository that no loader here reads: other frameworks' weights, and the
# original (pre-conversion) checkpoints some repositories keep beside the transformers ones.
HUB_IGNORE_PATTERNS = ("*.h5", "*.msgpack", "*.ot", "*.tflite", "*.onnx", "*.onnx_data",
                       "onnx/*", "openvino/*", "original/*", "*.gguf")
_COMMIT = re.compile(r"[0-9a-f]{40}")

_memory_cache: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


class ModelUnavailable(RuntimeError):  # noqa: N818 - reads as what happened, like FileNotFound
    """A hub model that is neither in the local cache nor downloadable (one-line message)."""


class ModelsIncompatible(ValueError):  # noqa: N818 - reads as what happened
    """Models that cannot work together (teacher and student vocabularies, ...): one line."""


@dataclass(frozen=True)
class HubSnapshot:
    """A hub model's files at one commit, in the local Hugging Face cache."""

    model: str
    revision: str  # as asked: a branch, a tag or a commit
    commit: str
    path: Path  # the cache's snapshots/<commit> directory


_snapshots: dict[tuple[str, str, str], HubSnapshot] = {}


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


def hub_snapshot(model: str, revision: str | None = None) -> HubSnapshot:
    """Download a hub model at a revision (offline: find it in the cache); its commit.

    Every file a loader reads is downloaded (weights included, `HUB_IGNORE_PATTERNS` left
    out), so that the stages after this one load from the cache and a failed download
    stops a run before any work. Resolved once per process and cache directory: one run
    sees one commit of a branch, even if the branch moves while it runs.

    Raises:
        ModelUnavailable: the model (or the revision) is neither cached nor reachable.
    """
    from huggingface_hub import constants, snapshot_download

    revision = revision or "main"
    key = (str(constants.HF_HUB_CACHE), model, revision)
    with _lock:
        known = _snapshots.get(key)
    if known is not None:
        return known
    try:
        path = Path(snapshot_download(model, revision=revision,
                                      ignore_patterns=list(HUB_IGNORE_PATTERNS)))
    except Exception as error:  # whatever the cause, the model cannot be had: say which
        raise ModelUnavailable(_unavailable(model, revision, error)) from error
    if not _COMMIT.fullmatch(path.name):
        raise ModelUnavailable(f"{model} (revision {revision}): the hub cache gave {path}, "
                               "not a snapshots/<commit> directory")
    snapshot = HubSnapshot(model=model, revision=revision, commit=path.name, path=path)
    with _lock:
        _snapshots[key] = snapshot
    return snapshot


def _unavailable(model: str, revision: str, error: Exception) -> str:
    from huggingface_hub import constants

    at = "" if revision == "main" else f" at revision {revision}"
    if constants.HF_HUB_OFFLINE:
        return (f"hub model {model}{at} is not in the local cache ({constants.HF_HUB_CACHE}) "
                f"and HF_HUB_OFFLINE is set: download it once with network access "
                f"(hf download {model}"
                + ("" if revision == "main" else f" --revision {revision}") + ")")
    reason = (str(error).strip().splitlines() or [""])[0]
    return (f"hub model {model}{at} is neither in the local cache nor downloadable: "
            f"{type(error).__name__}: {reason}")


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
        model's identity, for an adapter), for a hub id its `revision` and `commit`, and
        `fingerprint`.

    Raises:
        ModelUnavailable: a hub id (or an adapter's hub base) that is neither cached nor
            downloadable (`hub_snapshot`).
    """
    template_text = resolve_chat_template(chat_template)
    local = Path(model).expanduser()
    if local.is_dir():
        identity = _local_identity(local.resolve(), template_text)
    elif local.is_file():  # a single-file model (GGUF), or whatever a setting names
        identity = _file_identity(local.resolve(), template_text)
    elif model.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model not found: {model}")
    else:
        identity = {
            "model": model,
            "source": "hub",
            "revision": revision or "main",
            "commit": hub_snapshot(model, revision).commit,
            "chat_template_sha256": _sha256_text(template_text) if template_text else None,
            "chat_template_override": template_text is not None,
        }
    return _with_fingerprint(identity)


def served_identity(model: str, chat_template: str | None = None,
                    revision: str | None = None) -> dict[str, Any]:
    """Describe a model a server serves (backend `openai`): by its name; nothing is loaded."""
    template_text = resolve_chat_template(chat_template)
    return _with_fingerprint({
        "model": model,
        "source": "served",
        "revision": revision,
        "chat_template_sha256": _sha256_text(template_text) if template_text else None,
        "chat_template_override": template_text is not None,
    })


def _with_fingerprint(identity: dict[str, Any]) -> dict[str, Any]:
    """Add the `fingerprint`: what changes outputs, not where the files are or what named them.

    A hub model's commit is its content; the branch or tag that named the commit is not.
    """
    left_out = {"model", "files", "chat_template_override"}
    if identity["source"] == "hub":
        left_out.add("revision")
    content = {k: v for k, v in identity.items() if k not in left_out}
    if identity["source"] != "local":
        content["model"] = identity["model"]
    identity["fingerprint"] = _sha256_text(json.dumps(content, sort_keys=True, default=str))
    return identity


def _file_identity(path: Path, template_text: str | None) -> dict[str, Any]:
    digest = cached_file_sha256(path)
    return {
        "model": str(path),
        "source": "local",
        "weights_sha256": digest,
        "tokenizer_sha256": None,
        "chat_template_sha256": _sha256_text(template_text) if template_text else None,
        "chat_template_override": template_text is not None,
        "files": {path.name: digest},
    }


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
