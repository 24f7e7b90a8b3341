"""Fixtures for the generation tests (the scripted teacher lives in scripted_teacher.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted_teacher import ScriptedTeacher

from distill.generate.context import GenerationContext


@pytest.fixture
def teacher_cls():
    return ScriptedTeacher


@pytest.fixture
def make_ctx(tmp_path: Path):
    """`make_ctx(teacher, name="run", **fields)`: a context checkpointing under tmp_path."""

    def make(teacher, name: str = "run", **fields) -> GenerationContext:
        fields.setdefault("chunk_size", 3)
        return GenerationContext(backend=teacher, checkpoint_dir=tmp_path / name, **fields)

    return make
