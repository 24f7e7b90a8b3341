"""Fixtures for the training tests: a learnable chat set and a spec builder."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_data import CHATS, FAST_ARGS

from distill.records import Example, write_jsonl
from distill.train.config import LoraSettings, TrainSpec


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory) -> Path:
    """JSONL of the twenty chats, three times over (60 records), as distill.records writes."""
    path = tmp_path_factory.mktemp("train-data") / "train.jsonl"
    examples = [Example(id=f"ex{i}", instruction=q, output=a)
                for i, (q, a) in enumerate(CHATS * 3)]
    write_jsonl(path, examples)
    return path


@pytest.fixture
def make_spec(tiny_model_dir, chat_data, tmp_path):
    """`make_spec(name, **fields)`: a quiet TrainSpec on the tiny model and the chats."""

    def make(name: str = "out", **fields) -> TrainSpec:
        fields["args"] = {**FAST_ARGS, **fields.get("args", {})}
        fields.setdefault("lora", LoraSettings())
        fields.setdefault("data_path", chat_data)
        return TrainSpec(model=str(tiny_model_dir), data_path=str(fields.pop("data_path")),
                         output_dir=str(tmp_path / name), seed=0, quiet=True, **fields)

    return make
