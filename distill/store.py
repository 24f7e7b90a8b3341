"""The run directory: fingerprints, manifest-last commits, resume.

Layout: `runs/<name>/<round>/<stage>/` where `<round>` is `base` (the untrained student's
evaluation) or `round_<r>`. A stage works inside `<round>/.<stage>.work/` (generation
checkpoints live there, so a killed run resumes), writes `config.json` and finally
`manifest.json`, then renames the work directory into place. A stage whose manifest
exists with the expected fingerprint is done; one whose fingerprint changed is moved
aside to `<round>/.stale/` (never deleted) and redone. A stage committed with requests
that ran out of retries (`failed_requests` in its manifest) is not done: the next run
takes its directory back as the work directory and asks only those requests again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.records import read_json, remove_partial_writes, write_json

# Bump when a stage's outputs change meaning, so old runs are not silently reused.
# 2: vLLM's dtype auto is the checkpoint's (it ran bfloat16), chat students get their
# turn-closing EOS, and the train stage's launch shape is fingerprinted.
# 3: checkpoint shards name the request each row answers (older shards are not trusted);
# perplexity under an assistant-only student scores the response given its prompt; train
# records name no work-directory path.
CACHE_VERSION = "3"


def canonical_json(data: Any) -> str:
    """JSON with sorted keys and no whitespace: equal configs give equal strings."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(stage: str, config: Any, inputs: dict[str, Any]) -> str:
    """sha256 of a stage's semantic config, its inputs' fingerprints and the cache version."""
    payload = canonical_json({"stage": stage, "config": config, "inputs": inputs,
                              "cache_version": CACHE_VERSION})
    return hashlib.sha256(payload.encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (for data files that feed a stage)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Stage:
    """One stage of one round: where it works, whether it is done, how it commits."""

    round_dir: Path
    name: str
    fingerprint: str
    config: Any = None
    inputs: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @property
    def path(self) -> Path:
        """The committed stage directory."""
        return self.round_dir / self.name

    @property
    def work(self) -> Path:
        """The in-progress directory; renamed to `path` on commit."""
        return self.round_dir / f".{self.name}.work"

    def manifest(self) -> dict[str, Any] | None:
        """The committed manifest, or None when the stage has not finished."""
        manifest_path = self.path / "manifest.json"
        return read_json(manifest_path) if manifest_path.exists() else None

    def is_done(self) -> bool:
        """True when a manifest with this fingerprint exists and no request in it failed."""
        manifest = self.manifest()
        return (manifest is not None and manifest.get("fingerprint") == self.fingerprint
                and not manifest.get("failed_requests"))

    def failed_requests(self) -> int:
        """Requests this commit (of this fingerprint) left failed; 0 for any other."""
        manifest = self.manifest()
        if manifest is None or manifest.get("fingerprint") != self.fingerprint:
            return 0
        return int(manifest.get("failed_requests") or 0)

    def begin(self) -> Path:
        """Prepare the work directory, keeping generation checkpoints of this fingerprint.

        A commit of this fingerprint that left requests failed becomes the work directory
        (its checkpoints answer everything else); any other committed directory (stale,
        or done but being redone) is moved aside first.
        """
        if self.path.exists():
            if self.failed_requests() and not self.work.exists():
                # marker first: a kill at any step leaves a directory the next run resumes
                (self.path / "fingerprint").write_text(self.fingerprint)
                self.path.rename(self.work)
                (self.work / "manifest.json").unlink()
            else:
                self._move_aside(self.path)
        if self.work.exists():
            if self._work_is_ours():
                remove_partial_writes(self.work)  # a killed run's half-written files
            else:
                shutil.rmtree(self.work)  # checkpoints of another config: useless, and small
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / "fingerprint").write_text(self.fingerprint)
        self.started = time.time()
        return self.work

    def _work_is_ours(self) -> bool:
        """Whether the work directory holds this fingerprint's work (a killed run's)."""
        marker = self.work / "fingerprint"
        if marker.exists():
            return marker.read_text().strip() == self.fingerprint
        # killed inside `commit`, between the manifest and the rename: finished work
        manifest = self.work / "manifest.json"
        return manifest.exists() and read_json(manifest).get("fingerprint") == self.fingerprint

    def commit(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write config and manifest (last), then rename the work directory into place."""
        write_json(self.work / "config.json", self.config)
        manifest = {
            "stage": self.name,
            "round": self.round_dir.name,
            "fingerprint": self.fingerprint,
            "inputs": self.inputs,
            "cache_version": CACHE_VERSION,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "wall_time_s": round(time.time() - self.started, 3),
            **summary,
        }
        (self.work / "fingerprint").unlink(missing_ok=True)
        write_json(self.work / "manifest.json", manifest)
        if self.path.exists():
            self._move_aside(self.path)
        self.work.rename(self.path)
        return manifest

    def _move_aside(self, path: Path) -> None:
        stale = self.round_dir / ".stale"
        stale.mkdir(exist_ok=True)
        target = stale / f"{path.name}-{int(time.time() * 1000)}"
        path.rename(target)


@dataclass
class RunStore:
    """A run's directory tree."""

    root: Path

    def round_dir(self, round_label: str) -> Path:
        """`base` or `round_<r>` under the run root."""
        path = self.root / round_label
        path.mkdir(parents=True, exist_ok=True)
        return path

    def stage(self, round_label: str, name: str, config: Any,
              inputs: dict[str, Any]) -> Stage:
        """A stage handle whose fingerprint covers `config` and `inputs`."""
        return Stage(round_dir=self.round_dir(round_label), name=name,
                     fingerprint=fingerprint(name, config, inputs), config=config,
                     inputs=inputs)

    def manifests(self) -> list[dict[str, Any]]:
        """Every committed manifest, in round then stage-finish order."""
        found = [read_json(p) for p in sorted(self.root.glob("*/*/manifest.json"))
                 if not p.parent.name.startswith(".")]
        return sorted(found, key=lambda m: (_round_key(m["round"]), m.get("finished_at", "")))


def _round_key(label: str) -> tuple[int, int]:
    if label == "base":
        return (0, 0)
    return (1, int(label.removeprefix("round_")) if label.startswith("round_") else 0)
