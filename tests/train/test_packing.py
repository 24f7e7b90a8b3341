"""Packing settings under which training examples attend to one another are refused.

TRL 1.16's `packing_strategy: wrapped` joins examples into rows under one attention mask:
shown here to change the loss on the very same trained tokens. Padding-free batches (and
bfd packing, which trains padding-free) keep examples apart under flash attention and under
transformers' own sdpa / eager masks: shown here to give the unpacked loss, so they pass.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_data import CHATS, MINIMAL

from distill.recipe import RecipeError, load_recipe
from distill.train.config import check_examples_apart

ROOT = Path(__file__).resolve().parents[2]

def recipe_file(tmp_path: Path, train: dict) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "output_dir": str(tmp_path / "runs"),
                                    "train": train}))
    return path


@pytest.mark.parametrize(("args", "expected"), [
    ({"packing": True, "packing_strategy": "wrapped"}, "packing_strategy wrapped"),
    # wrapped mixes examples whatever the kernel
    ({"packing": True, "packing_strategy": "wrapped",
      "model_init_kwargs": {"attn_implementation": "flash_attention_2"}},
     "packing_strategy wrapped"),
    ({"padding_free": True, "max_length": None,
      "model_init_kwargs": {"attn_implementation": "paged|sdpa"}},
     "padding_free puts a batch's examples into one row"),
    ({"packing": True, "model_init_kwargs": {"attn_implementation": "my_kernel"}},
     "packing (strategy bfd, which TRL trains padding-free)"),
    ({"packing": True, "model_init_kwargs": {"trust_remote_code": True}},
     "a model with trust_remote_code may build its own"),
])
def test_recipe_refuses_packing_that_mixes_examples(tmp_path, args, expected):
    with pytest.raises(RecipeError) as caught:
        load_recipe(recipe_file(tmp_path, {"args": args}))
    message = str(caught.value)
    assert "train.args" in message and expected in message


def test_sft_then_dpo_checks_its_sft_step(tmp_path):
    train = {"method": "sft_then_dpo",
             "sft_args": {"packing": True, "packing_strategy": "wrapped"}}
    path = recipe_file(tmp_path, train)
    text = yaml.safe_load(path.read_text())
    text["generate"] = {"kind": "preference"}
    path.write_text(yaml.safe_dump(text))
    with pytest.raises(RecipeError, match=r"train\.sft_args.*packing_strategy wrapped"):
        load_recipe(path)


@pytest.mark.parametrize("args", [
    {"packing": True},  # bfd, padding-free, under the default attention (sdpa)
    {"packing": True, "packing_strategy": "bfd_split",
     "model_init_kwargs": {"attn_implementation": "eager"}},
    {"padding_free": True, "max_length": None,
     "model_init_kwargs": {"attn_implementation": "flash_attention_2"}},
    {"packing": True, "model_init_kwargs": '{"attn_implementation": '
                                           '"kernels-community/flash-attn2", '
                                           '"trust_remote_code": true}'},
    {"packing": False, "packing_strategy": "wrapped"},  # no packing: the strategy is unused
])
def test_recipe_keeps_packing_that_keeps_examples_apart(tmp_path, args):
    assert load_recipe(recipe_file(tmp_path, {"args": args})).train.args == args


def test_the_cli_exits_2_naming_the_field(tmp_path):
    path = recipe_file(tmp_path, {"args": {"packing": True, "packing_strategy": "wrapped"}})
    result = subprocess.run([sys.executable, "-m", "distill", "validate", str(path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2
    assert "train.args" in result.stderr + result.stdout
    assert "packing_strategy wrapped" in result.stderr + result.stdout


def test_the_training_process_refuses_a_spec_written_by_hand(make_spec):
    from distill.train.sft import prepare_sft

    with pytest.raises(ValueError, match="packing_strategy wrapped"):
        prepare_sft(make_spec(args={"packing": True, "packing_strategy": "wrapped"}))


def sft_loss(model_dir: Path, tmp_path: Path, **packing) -> tuple[float, int]:
    """TRL's own loss on 16 chats in one batch, and the number of tokens it trains."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    messages = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                for q, a in CHATS[:16]]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # every chat fits one row of 1024 tokens: packing cuts nothing, so the packed and the
    # unpacked runs train the very same tokens and differ only in what each one attends to
    config = SFTConfig(output_dir=str(tmp_path / "trainer"), max_length=1024,
                       assistant_only_loss=True, per_device_train_batch_size=16,
                       report_to="none", use_cpu=True, bf16=False, **packing)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=config,
                         train_dataset=Dataset.from_list([{"messages": m} for m in messages]),
                         processing_class=tokenizer)
    batch = trainer.data_collator([trainer.train_dataset[i]
                                   for i in range(len(trainer.train_dataset))])
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
    return float(loss), int((batch["labels"] != -100).sum())


def test_wrapped_packing_leaks_and_padding_free_does_not(tiny_model_dir, tmp_path):
    unpacked, tokens = sft_loss(tiny_model_dir, tmp_path)
    wrapped, wrapped_tokens = sft_loss(tiny_model_dir, tmp_path, packing=True,
                                       packing_strategy="wrapped")
    bfd, bfd_tokens = sft_loss(tiny_model_dir, tmp_path, packing=True)
    assert wrapped_tokens == bfd_tokens == tokens > 100
    # the same tokens, seen with the other examples before them in the row
    assert abs(wrapped - unpacked) > 1e-3
    # padding-free under sdpa: each example sees only itself
    assert bfd == pytest.approx(unpacked, abs=1e-5)
    with pytest.raises(ValueError):
        check_examples_apart({"packing": True, "packing_strategy": "wrapped"})
    check_examples_apart({"packing": True})
