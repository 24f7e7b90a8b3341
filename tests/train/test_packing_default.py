"""SFT packs by default under flash attention, pads otherwise, and says which it did.

The default is `packing: true` (TRL's bfd, trained padding-free) when the recipe names a
flash attention kernel and leaves packing unset; the train stage's fingerprint sees it,
since packing makes other batches; the training log and the train manifest record how the
examples were batched.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from train_data import MINIMAL

from distill.recipe import load_recipe
from distill.train.config import TrainResult, packing_mode, with_packing_default

FLASH = {"model_init_kwargs": {"attn_implementation": "flash_attention_2"}}


@pytest.mark.parametrize(("args", "packs"), [
    (FLASH, True),
    ({"model_init_kwargs": '{"attn_implementation": "kernels-community/flash-attn2"}'}, True),
    ({**FLASH, "packing_strategy": "bfd_split"}, True),
    ({}, False),  # sdpa: exact padding-free too, but not faster: TRL's padded default
    ({"model_init_kwargs": {"attn_implementation": "eager"}}, False),
    ({**FLASH, "packing": False}, False),  # the recipe's word stands
    ({**FLASH, "padding_free": True, "max_length": None}, False),
    ({**FLASH, "packing_strategy": "wrapped"}, False),  # would be refused if turned on
])
def test_packing_default(args, packs):
    resolved = with_packing_default(args)
    assert resolved.get("packing", False) is packs or "packing" in args
    assert (resolved == args) is (not packs)
    if packs:
        assert packing_mode(resolved).startswith("packed (bfd")


def train_settings(tmp_path: Path, train: dict, **top) -> dict:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "output_dir": str(tmp_path / "runs"),
                                    "train": train, **top}))
    return load_recipe(path).train.fingerprint_settings()


def test_the_fingerprint_sees_the_default(tmp_path):
    by_default = train_settings(tmp_path, {"args": FLASH})
    asked = train_settings(tmp_path, {"args": {**FLASH, "packing": True}})
    padded = train_settings(tmp_path, {"args": {**FLASH, "packing": False}})
    # the default trains exactly what `packing: true` trains, and not the padded batches
    assert by_default == asked != padded
    # a recipe the default leaves padded keeps the fingerprint settings it always had
    plain = train_settings(tmp_path, {"args": {"learning_rate": 1e-4}})
    assert plain["args"] == {"learning_rate": 1e-4}


def test_the_fingerprint_of_a_two_step_method_sees_its_sft_step(tmp_path):
    preference = {"generate": {"kind": "preference"}}
    by_default = train_settings(tmp_path, {"method": "sft_then_dpo", "sft_args": FLASH},
                                **preference)
    assert by_default["sft_args"] == {**FLASH, "packing": True}
    # DPO's own args are not SFT's: TRL 1.16's DPOTrainer has no packing
    dpo = train_settings(tmp_path, {"method": "sft_then_dpo", "args": FLASH}, **preference)
    assert dpo["args"] == FLASH


@pytest.mark.parametrize(("args", "mode", "why"), [
    ({}, "padded", "TRL's default"),
    ({"packing": True}, "packed (bfd, padding-free)", "the recipe's setting"),
])
def test_training_records_how_it_batched(make_spec, caplog, args, mode, why):
    from distill.train.sft import train_sft

    with caplog.at_level(logging.INFO, logger="distill.train"):
        result = train_sft(make_spec(args={**args, "num_train_epochs": 1}))
    assert result.packing == mode
    saved = TrainResult.load(Path(result.output_dir) / "train_log.json")
    assert saved.packing == mode and saved.summary()["packing"] == mode  # the manifest's
    assert f"batches: {mode}, {why}; attention: sdpa" in caplog.text
    # 60 chats in batches of 8 are 8 steps; packed, batches of 8 rows of up to max_length
    # tokens hold more of the short chats each: fewer steps
    assert (result.steps == 8) is (mode == "padded") and 0 < result.steps <= 8


@pytest.mark.parametrize("method", ["dpo", "sft_then_dpo"])
def test_dpo_refuses_padding_free_that_trl_would_drop(tmp_path, method):
    from distill.recipe import RecipeError

    with pytest.raises(RecipeError, match=r"train\.args.*padding_free: TRL's DPOTrainer"):
        train_settings(tmp_path, {"method": method, "args": {"padding_free": True}},
                       generate={"kind": "preference"})
