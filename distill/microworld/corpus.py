"""Pretraining text for the microworld's teacher and student.

The teacher reads the world in the forms the pipeline will prompt it with:

- chats: the user turn (instruction, blank line, input) rendered with the chat template
  exactly as the hf / vllm backends render it, then the answer and `<|end|>`;
- reasoning chats (the thinker's second phase, `build.BuildConfig.thinker`): the same
  under the reasoning method's system prompt (`distill.generate.reasoning.SYSTEM_PROMPT`),
  answered with the task's worked solution as a trace, then the answer:
  `<think>3 + 4 = 7; 7 * 2 = 14</think>14` (tasks of the multi-step families,
  `distill.microworld.tasks.REASONING_FAMILIES`);
- numbered task lists: `distill.prompts.render("self_instruct_compact", ...)` with a few
  tasks, continued by more tasks in the same format up to the number the prompt asks
  for, then "###" and `<|end|>`, so Self-Instruct prompting makes it write new tasks
  whose families follow the world's Zipf weights.

The student's base model reads the same facts as plain sentences ("17 + 25 = 42.",
"The word apple spelled backwards is elppa."), never an instruction or a chat, so what
supervised fine-tuning on the teacher's data adds is visible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from distill.microworld.families.steps import trace_text
from distill.microworld.tasks import (
    FAMILY_WEIGHTS,
    Task,
    generate_task,
    reasoning_task,
    sample_difficulty,
    worked_solution,
)
from distill.records import join_trace

TEMPLATE = "self_instruct_compact"
END = "<|end|>"


@dataclass(frozen=True)
class Document:
    """A training text: `prompt` is context (no loss when masked), `target` is learned."""

    prompt: str
    target: str
    kind: str  # "chat", "reasoning", "task_list" or "plain"


class TaskSource:
    """Draws training tasks, never one of the held-out keys in `exclude`."""

    def __init__(self, rng: random.Random, exclude: set[tuple[str, str]] | None = None,
                 family_exponent: float = 1.0) -> None:
        self.rng = rng
        self.exclude = exclude or set()
        # Raising the Zipf weights to a power below 1 flattens them: a teacher that knows
        # the tail well, though it writes the tail rarely.
        weights = {name: w**family_exponent for name, w in FAMILY_WEIGHTS.items()}
        total = sum(weights.values())
        self.families = list(weights)
        self.weights = [w / total for w in weights.values()]

    def zipf(self) -> Task:
        """A task with the world's own family frequencies."""
        return self._draw(None)

    def tempered(self) -> Task:
        """A task with the flattened family frequencies given at construction."""
        return self._draw(self.rng.choices(self.families, weights=self.weights)[0])

    def reasoning(self) -> Task:
        """A task with a worked solution, of a multi-step family (uniform)."""
        return reasoning_task(self.rng, self.exclude)

    def _draw(self, family: str | None) -> Task:
        while True:
            task = generate_task(self.rng, family, sample_difficulty(self.rng) if family
                                 else None)
            if task.key not in self.exclude:
                return task


def chat_document(task: Task, tokenizer) -> Document:
    """The user turn as the backends render it, then the answer."""
    messages = task.to_example().messages()
    prompt = tokenizer.apply_chat_template(messages[:1], add_generation_prompt=True,
                                           tokenize=False)
    return Document(prompt, task.output + END, "chat")


def reasoning_document(task: Task, tokenizer, system_prompt: str) -> Document:
    """Under the reasoning system prompt: the worked solution as a trace, then the answer."""
    messages = [{"role": "system", "content": system_prompt},
                *task.to_example().messages()[:1]]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           tokenize=False)
    return Document(prompt, worked_answer(task) + END, "reasoning")


def worked_answer(task: Task) -> str:
    """`<think>steps</think>answer` for a task with a worked solution."""
    steps = worked_solution(task.instruction, task.input)
    if not steps:
        raise ValueError(f"a {task.family} task without a worked solution: {task.instruction}")
    return join_trace(trace_text(steps), task.output)


def _block(number: int, task: Task) -> str:
    return (f" {task.instruction}\n{number}. Input:\n{task.input or '<noinput>'}\n"
            f"{number}. Output:\n{task.output}\n")


def task_list_document(source: TaskSource, *, shown: int, total: int) -> Document:
    """A Self-Instruct prompt with `shown` tasks, continued up to `total` tasks."""
    from distill.prompts import render

    examples = [source.zipf() for _ in range(shown)]
    prompt = render(TEMPLATE, num_tasks=total,
                    tasks=[{"instruction": t.instruction, "input": t.input, "output": t.output}
                           for t in examples])
    blocks = [_block(number, source.zipf()) for number in range(shown + 1, total + 1)]
    # Each block after the first opens with "###\n{n}. Instruction:", as in the prompt.
    continuation = "".join(
        block if i == 0 else f"###\n{shown + 1 + i}. Instruction:{block}"
        for i, block in enumerate(blocks))
    return Document(prompt, continuation + "###" + END, "task_list")


def plain_document(source: TaskSource, sentences: int) -> Document:
    """Facts as plain sentences, one a line (the student's pretraining text)."""
    lines = [source.tempered().statement for _ in range(sentences)]
    return Document("", "\n".join(lines) + "\n", "plain")


def teacher_documents(n_chat: int, n_lists: int, rng: random.Random,
                      exclude: set[tuple[str, str]] | None, tokenizer, *,
                      family_exponent: float, n_plain: int = 0, n_reasoning: int = 0,
                      system_prompt: str = "", shown: tuple[int, int] = (2, 5),
                      extra: tuple[int, int] = (1, 4)) -> list[Document]:
    """The teacher's corpus: chats (flattened family weights) and Zipf task lists.

    `n_reasoning` reasoning chats under `system_prompt` and `n_plain` documents of plain
    sentences (dense facts, many answers per token) can be added.
    """
    source = TaskSource(rng, exclude, family_exponent)
    documents = [chat_document(source.tempered(), tokenizer) for _ in range(n_chat)]
    for _ in range(n_lists):
        k = rng.randint(*shown)
        documents.append(task_list_document(source, shown=k, total=k + rng.randint(*extra)))
    # drawn after the others, so that the chats and lists are those of a build without them
    documents += [reasoning_document(source.reasoning(), tokenizer, system_prompt)
                  for _ in range(n_reasoning)]
    documents += [plain_document(source, rng.randint(4, 8)) for _ in range(n_plain)]
    rng.shuffle(documents)
    return documents


def student_documents(n: int, rng: random.Random, exclude: set[tuple[str, str]] | None, *,
                      family_exponent: float, sentences: tuple[int, int] = (4, 8)
                      ) -> list[Document]:
    """The student's corpus: plain sentences only."""
    source = TaskSource(rng, exclude, family_exponent)
    return [plain_document(source, rng.randint(*sentences)) for _ in range(n)]


def tokenizer_texts(rng: random.Random, n: int = 3000) -> list[str]:
    """Text to train the shared tokenizer on: every form either model will read.

    The reasoning chats are not among them: their steps are tokens the tokenizer has, and
    `<think>` splits into pieces it has ("<", "th", "in", "k", ">"), which a LoRA student,
    whose embeddings do not train, can learn to write.
    """
    from distill.prompts import render

    source = TaskSource(rng, None, 0.0)
    texts: list[str] = []
    for _ in range(n):
        task = source.tempered()
        texts += [task.instruction, task.input, task.output, task.statement]
    for _ in range(50):
        tasks = [source.zipf() for _ in range(3)]
        texts.append(render(TEMPLATE, num_tasks=5, tasks=[
            {"instruction": t.instruction, "input": t.input, "output": t.output}
            for t in tasks]))
    return [t for t in texts if t]
