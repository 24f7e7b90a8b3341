"""Merge a LoRA adapter into its base model and save a plain checkpoint.

    python -m distill.train.merge BASE_MODEL ADAPTER_DIR OUT_DIR

The merged checkpoint loads with `AutoModelForCausalLM.from_pretrained` and with vLLM,
carries the tokenizer and its chat template, stops generating at the tokenizer's EOS
(`stop_at_eos`) and has no trace of PEFT: it is what the next round's teacher and the
evaluation load. The base is read again from disk (in its
own dtype, on the CPU) rather than taken from the trainer, so that the same code works
after DDP, FSDP and DeepSpeed ZeRO-3 runs, whose in-memory weights are sharded.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterable
from pathlib import Path


def merge_adapter(base_model: str, adapter_dir: str | Path, out_dir: str | Path, *,
                  tokenizer=None, dtype: str = "auto") -> Path:
    """Write base + adapter as one checkpoint into `out_dir` (replacing it atomically).

    Args:
        base_model: The model the adapter was trained on (directory or hub id).
        adapter_dir: The saved PEFT adapter.
        out_dir: Where the merged checkpoint goes.
        tokenizer: Saved beside the weights; default: the one saved with the adapter.
        dtype: Weight dtype of the merged model; "auto" keeps the base checkpoint's.

    Returns:
        `out_dir`.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    merged.config.use_cache = True  # the trainer turns it off for gradient checkpointing
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
    stop_at_eos(merged.config, merged.generation_config, tokenizer)

    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def stop_at_eos(config, generation_config, tokenizer, also: Iterable[int] = ()) -> None:
    """Make a model's config and generation config end sequences at the tokenizer's EOS.

    Training may have made the chat template's turn end the EOS (`<|im_end|>` for a
    Qwen2.5 base student, distill.train.common.use_turn_end_as_eos), while the base
    checkpoint's configs name the old one (`<|endoftext|>`). The model config names the
    new EOS; the generation config lists it first, then the ids it had and `also` (the
    base's, where the trainer already replaced them), so that any of them stops
    generation (transformers, vLLM and lm-eval read these files).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        return
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    if isinstance(text_config.eos_token_id, list):
        text_config.eos_token_id = _eos_list(eos, text_config.eos_token_id)
    else:
        text_config.eos_token_id = eos
    generation_config.eos_token_id = _eos_list(eos, generation_config.eos_token_id, *also)


def _eos_list(eos: int, *known: int | list[int] | None) -> int | list[int]:
    """`eos`, then the other known ids once each; a single id stays an int."""
    ids = [eos]
    for item in known:
        for token_id in [] if item is None else [item] if isinstance(item, int) else item:
            if token_id not in ids:
                ids.append(token_id)
    return ids if len(ids) > 1 else eos


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m distill.train.merge BASE_MODEL ADAPTER_DIR OUT_DIR`."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print("usage: python -m distill.train.merge BASE_MODEL ADAPTER_DIR OUT_DIR",
              file=sys.stderr)
        return 2
    print(merge_adapter(*argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
