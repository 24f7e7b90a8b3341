"""What a component's output depends on, declared by the component itself.

Every generator and filter settings class derives from `Component` (other settings with
dependencies, such as decontamination's, from `Dependent`) and must implement
`dependencies()`: the models it loads, the files it reads, the prompt templates it
renders and the run inputs it uses (the seed tasks, the round's real data). Settings
that change only speed are named in `OPERATIONAL`. A stage's fingerprint is built from
exactly this (`fingerprint_inputs`), so nothing is guessed and nothing is left out by
accident: a class that does not implement `dependencies()` cannot be registered, and
tests/test_fingerprints.py runs every registered component and fails when it touches a
model, file or template it did not declare.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from distill.models import ModelSpec, ServedModel
from distill.settings import Strict

# The run inputs a component may declare (the runner provides and identifies them).
RUN_INPUTS = ("seed_tasks", "real")


@dataclass(frozen=True)
class Dependencies:
    """Everything besides its own settings that a component's output depends on."""

    # role -> model it loads; "teacher" stands for the recipe's teacher
    models: dict[str, ModelSpec | Literal["teacher"]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # role -> file or directory it reads
    templates: tuple[str, ...] = ()  # prompt templates it renders (distill/prompts)
    inputs: tuple[str, ...] = ()  # run inputs it reads, from RUN_INPUTS

    def __post_init__(self) -> None:
        unknown = set(self.inputs) - set(RUN_INPUTS)
        if unknown:
            raise ValueError(f"unknown run inputs {sorted(unknown)}; known: {RUN_INPUTS}")


class Dependent(Strict, ABC):
    """Settings whose stage output depends on models, files or templates they declare."""

    @abstractmethod
    def dependencies(self) -> Dependencies:
        """The models, files, templates and run inputs this component's output depends on."""

    def semantic_settings(self) -> dict[str, Any]:
        """The settings as they enter a fingerprint: all but the operational ones.

        Served models anywhere in the settings (a judge, answer models) keep only the
        engine options their backend does not name as speed-only.
        """
        return _semantic(self)


class Component(Dependent):
    """Base of registered settings (generators, filters): a `kind` names the component."""

    kind: str


def _semantic(value: Any) -> Any:
    from distill.models import semantic_engine_options

    if isinstance(value, ServedModel):
        dumped = value.model_dump(mode="json", exclude=set(value.OPERATIONAL))
        dumped["engine"] = semantic_engine_options(value.backend, value.engine)
        return dumped
    if isinstance(value, Strict):
        return {name: _semantic(getattr(value, name)) for name in type(value).model_fields
                if name not in value.OPERATIONAL}
    if isinstance(value, list | tuple):
        return [_semantic(item) for item in value]
    if isinstance(value, dict):
        return {key: _semantic(item) for key, item in value.items()}
    return value if isinstance(value, str | int | float | bool | type(None)) else \
        _json(value)


def _json(value: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(type(value)).dump_python(value, mode="json")


def undeclared(name: str) -> Callable[[], list[Any]]:
    """A stand-in for a run input the component did not declare: reading it is an error."""

    def fail() -> list[Any]:
        raise RuntimeError(f"read the run's {name} without declaring it: add {name!r} to "
                           "the component's dependencies().inputs, so that it enters the "
                           "stage's fingerprint")

    return fail


def path_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (names and contents)."""
    from distill.identity import cached_file_sha256

    path = Path(path)
    if path.is_file():
        return cached_file_sha256(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{path}: no files to read")
    joined = "".join(f"{p.relative_to(path).as_posix()}\0{cached_file_sha256(p)}\n"
                     for p in files)
    return hashlib.sha256(joined.encode()).hexdigest()


def fingerprint_inputs(component: Dependent, model_identity: Callable[[ModelSpec], str],
                       run_inputs: dict[str, Any]) -> dict[str, Any]:
    """The part of a stage fingerprint one component contributes.

    Args:
        component: a generator's or filter's settings.
        model_identity: a declared model's identity fingerprint (the runner resolves and
            caches them).
        run_inputs: the identities of the run inputs (`RUN_INPUTS`) the runner has.
    """
    from distill.prompts import template_hash

    needs = component.dependencies()
    missing = [name for name in needs.inputs if run_inputs.get(name) is None]
    if missing:
        raise ValueError(f"{type(component).__name__} needs {missing}, which this recipe "
                         "does not give")
    return {
        "settings": component.semantic_settings(),
        "models": {role: model_identity(spec) for role, spec in sorted(needs.models.items())},
        "files": {role: path_sha256(path) for role, path in sorted(needs.files.items())},
        "templates": {name: template_hash(name) for name in sorted(set(needs.templates))},
        "inputs": {name: run_inputs[name] for name in sorted(set(needs.inputs))},
    }
