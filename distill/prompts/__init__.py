"""Prompt templates: Jinja files shipped as package data, rendered by name.

A template's hash goes into every record's lineage and every stage fingerprint, so
editing a prompt invalidates exactly what it produced.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any


@cache
def template_source(name: str) -> str:
    """The raw text of `distill/prompts/<name>.jinja`."""
    path = resources.files("distill.prompts").joinpath(f"{name}.jinja")
    if not path.is_file():
        available = sorted(p.name.removesuffix(".jinja") for p in
                           resources.files("distill.prompts").iterdir()
                           if p.name.endswith(".jinja"))
        raise ValueError(f"unknown prompt template {name!r}; available: {available}")
    return path.read_text(encoding="utf-8")


def template_hash(name: str) -> str:
    """Short sha256 of a template's source."""
    return hashlib.sha256(template_source(name).encode()).hexdigest()[:16]


@cache
def _compiled(name: str):
    from jinja2 import Environment, StrictUndefined

    # keep_trailing_newline: a prompt that ends in "Instruction:" must not gain or lose
    # whitespace, because the teacher continues it byte for byte.
    env = Environment(undefined=StrictUndefined, keep_trailing_newline=True,
                      trim_blocks=True, lstrip_blocks=True, autoescape=False)
    return env.from_string(template_source(name))


def render(name: str, **variables: Any) -> str:
    """Render a template; a missing variable is an error, never an empty string."""
    return _compiled(name).render(**variables)
