"""Cut wikitext-2 into 64-token blocks of OPT-125m tokens, as Shumailov et al. (2024) did.

    python scripts/wikitext_blocks.py recipes/collapse/data [--block 64]

Needs the Hugging Face hub (datasets `wikitext`/`wikitext-2-raw-v1`, tokenizer
`facebook/opt-125m`). Writes `wikitext2_train_blocks.jsonl` and
`wikitext2_test_blocks.jsonl`: one record per block, `{"id", "instruction": "",
"output": text, "text": text}`; `text` is what the continuation method prompts with and
what the measure stage scores, and the empty instruction makes a real block train as
plain text under recipes/templates/continuation.jinja.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.records import write_jsonl


def blocks(texts: list[str], tokenizer, size: int) -> list[str]:
    """The texts joined, tokenized and cut into `size`-token blocks (no partial last one)."""
    ids = tokenizer("".join(texts), add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[i:i + size]) for i in range(0, len(ids) - size + 1, size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--tokenizer", default="facebook/opt-125m")
    args = parser.parse_args()
    from datasets import load_dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    data = load_dataset("wikitext", "wikitext-2-raw-v1")
    for split in ("train", "test"):
        rows = [{"id": f"wikitext2-{split}-{i:06d}", "instruction": "", "output": text,
                 "text": text}
                for i, text in enumerate(blocks(data[split]["text"], tokenizer, args.block))]
        path = args.out / f"wikitext2_{split}_blocks.jsonl"
        print(f"{path}: {write_jsonl(path, rows)} blocks")


if __name__ == "__main__":
    main()
