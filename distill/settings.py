"""The base of every recipe section, and paths as recipes write them.

Every settings class derives from `Strict`: an unknown key is an error naming the key,
never silently ignored. Paths in a recipe are relative to the recipe's own directory,
which validation receives as `context={"base_dir": ...}`.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo


class Strict(BaseModel):
    """Base of recipe sections: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid")

    # Settings that change only speed (batch sizes): left out of fingerprints.
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset()


def resolve_path(value: str | None, info: ValidationInfo, *, must_exist: bool = True) -> str | None:
    """Resolve a path relative to the recipe's directory and check that it exists."""
    if value is None:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir(info) / path
    path = path.resolve()
    if must_exist and not path.exists():
        raise ValueError(f"file or directory not found: {value} (looked at {path})")
    return str(path)


def base_dir(info: ValidationInfo) -> Path:
    """The directory relative paths are resolved against (the recipe's, or the cwd)."""
    return Path((info.context or {}).get("base_dir", "."))
