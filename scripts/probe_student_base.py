"""How much a microworld student base knows, and how much fine-tuning unlocks.

    python scripts/probe_student_base.py                    # the build's student base
    python scripts/probe_student_base.py --pre-steps 1000 --pre-lr 5e-4   # build 3's

Pretrains a student-sized model on the world's facts as plain sentences, exactly as
`distill microworld build` does (same tokenizer, corpus and seed; the schedule defaults
to the build's), then measures:

- statement accuracy: the base completes each benchmark fact's sentence up to its answer
  ("The sum of 6 and 9 is") and is right when it writes the answer;
- SFT accuracy: the base fine-tuned on `--sft-chats` ground-truth chats (the best data a
  teacher could give), answering either with the short answer or with the fact's sentence
  (the form it was pretrained on), scored on the 420-item benchmark like the build report.

The student-base figures in docs/results.md ("How the quickstart got here") come from
this script. Models go to a temporary folder; nothing is cached.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from collections import defaultdict
from pathlib import Path

from distill.microworld.benchmark import benchmark_keys, benchmark_tasks
from distill.microworld.build import BuildConfig
from distill.microworld.corpus import (
    END,
    Document,
    TaskSource,
    chat_document,
    student_documents,
    tokenizer_texts,
)
from distill.microworld.evaluate import accuracy, complete, load
from distill.microworld.train import ModelSpec, train_model, train_tokenizer


def statement_accuracy(model, tokenizer) -> float:
    """Share of benchmark facts whose sentence the model completes with the answer."""
    items = []
    for tasks in benchmark_tasks().values():
        for task in tasks:
            sentence = task.statement.rstrip(".")
            if sentence.endswith(task.output):  # the answer closes the sentence
                items.append((task, sentence[: -len(task.output)]))
    bos = tokenizer.bos_token or ""
    replies = complete(model, tokenizer, [bos + prefix for _, prefix in items],
                       max_new_tokens=12)
    right = defaultdict(list)
    for (task, _), reply in zip(items, replies, strict=True):
        right[task.family].append(reply.split("\n")[0].rstrip(".").strip() == task.output)
    return sum(sum(v) for v in right.values()) / sum(len(v) for v in right.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    build = BuildConfig()
    parser.add_argument("--pre-steps", type=int, default=build.student.steps)
    parser.add_argument("--pre-lr", type=float, default=build.student.lr)
    parser.add_argument("--documents", type=int, default=build.student_documents)
    parser.add_argument("--sft-chats", type=int, default=1000)
    parser.add_argument("--sft-steps", type=int, default=300)
    parser.add_argument("--answers", choices=["short", "sentence"], default="short")
    args = parser.parse_args()

    tokenizer = train_tokenizer(tokenizer_texts(random.Random(build.seed), build.tokenizer_tasks),
                                build.vocab_size)
    held_out = benchmark_keys()
    student = build.student
    size = dict(hidden_size=student.hidden_size, layers=student.layers, heads=student.heads,
                intermediate_size=student.intermediate_size)
    work = Path(tempfile.mkdtemp(prefix="probe-student-"))
    documents = student_documents(args.documents, random.Random(build.seed + 2), held_out,
                                  family_exponent=build.family_exponent)
    pretrained = train_model(documents, tokenizer, ModelSpec(
        **size, steps=args.pre_steps, batch_tokens=student.batch_tokens, lr=args.pre_lr),
        work / "base", seed=0, mask_prompts=set())
    base, base_tokenizer = load(work / "base")

    source = TaskSource(random.Random(5), held_out, 1.0)
    chats = []
    for _ in range(args.sft_chats):
        task = source.zipf()
        chat = chat_document(task, tokenizer)
        if args.answers == "sentence":
            chat = Document(chat.prompt, task.statement + END, "chat")
        chats.append(chat)
    tuned = train_model(chats, tokenizer, ModelSpec(
        **size, steps=args.sft_steps, batch_tokens=512, lr=1e-3, warmup=0.1),
        work / "sft", seed=0, mask_prompts={"chat"}, init_dir=work / "base")
    model, tuned_tokenizer = load(work / "sft")
    bench = [task for tasks in benchmark_tasks().values() for task in tasks]
    scores = accuracy(model, tuned_tokenizer, bench)
    print(json.dumps({
        "args": vars(args), "pretraining_seconds": pretrained["seconds"],
        "statement_accuracy": round(statement_accuracy(base, base_tokenizer), 3),
        "base_accuracy": accuracy(base, base_tokenizer, bench)["overall"],
        "sft_accuracy": scores["overall"], "sft_per_family": scores["per_family"],
        "sft_seconds": tuned["seconds"], "models": str(work)}, indent=1))


if __name__ == "__main__":
    main()
