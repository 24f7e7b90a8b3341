"""Quick in-process checks of a microworld model: greedy accuracy and task-list writing.

The project's real benchmark runs through lm-eval (eval/tasks/microworld); these helpers
are for the build report and for tuning, and prompt the model exactly as the hf backend
does (chat template, then greedy decoding until `<|end|>`).
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from distill.microworld.tasks import Task


def load(model_dir: str | Path):
    """(model, tokenizer) on the CPU, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    return model, tokenizer


def complete(model, tokenizer, prompts: list[str], *, max_new_tokens: int,
             batch_size: int = 64, temperature: float = 0.0, seed: int = 0) -> list[str]:
    """Continue each raw prompt (greedy unless `temperature` > 0), stopping at `<|end|>`."""
    import torch

    torch.manual_seed(seed)
    tokenizer.padding_side = "left"
    texts: list[str] = []
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: dict[int, str] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        batch = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True,
                          add_special_tokens=False)
        sampling = ({"do_sample": True, "temperature": temperature, "top_p": 1.0}
                    if temperature > 0 else {"do_sample": False})
        with torch.no_grad():
            output = model.generate(**batch, max_new_tokens=max_new_tokens,
                                    eos_token_id=tokenizer.eos_token_id,
                                    pad_token_id=tokenizer.pad_token_id, **sampling)
        new = output[:, batch["input_ids"].shape[1]:]
        for index, row in zip(chunk, new, strict=True):
            results[index] = tokenizer.decode(row, skip_special_tokens=True)
    texts = [results[i] for i in range(len(prompts))]
    return texts


def chat_prompt(tokenizer, task: Task, system_prompt: str | None = None) -> str:
    """The user turn (after a system prompt, if given) rendered as the backends render it."""
    messages = task.to_example().messages()[:1]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def reasoning(model, tokenizer, tasks: list[Task], *, system_prompt: str | None = None,
              batch_size: int = 64, temperature: float = 0.0, seed: int = 0
              ) -> dict[str, Any]:
    """How the model thinks under the reasoning prompt (default: the reasoning method's).

    Shares of replies that hold a closed trace, whose steps all compute right
    (`families.steps.check_trace`), whose trace is the task's worked solution exactly,
    whose answer is right, and whose answer is right after steps that all check; and
    the share of all steps written that compute right.
    """
    from distill.microworld.families.steps import check_trace, trace_text
    from distill.microworld.tasks import worked_solution
    from distill.records import split_trace

    if system_prompt is None:
        from distill.generate.reasoning import SYSTEM_PROMPT

        system_prompt = SYSTEM_PROMPT
    replies = complete(model, tokenizer, [chat_prompt(tokenizer, t, system_prompt)
                                          for t in tasks],
                       max_new_tokens=160, batch_size=batch_size, temperature=temperature,
                       seed=seed)
    counts: Counter[str] = Counter()
    steps = correct_steps = 0
    samples: list[dict[str, str]] = []
    for task, reply in zip(tasks, replies, strict=True):
        trace, _ = split_trace(reply)
        check = check_trace(trace)
        right = task.answer.matches(reply)
        reference = worked_solution(task.instruction, task.input) or []
        steps += check.steps
        correct_steps += check.correct_steps
        counts.update(traced=bool(trace.strip()), steps_check=check.all_correct,
                      worked_exactly=trace == trace_text(reference), right=right,
                      right_with_checked_steps=right and check.all_correct)
        if len(samples) < 5:
            samples.append({"task": f"{task.instruction} | {task.input}", "reply": reply})
    shares = {key: round(counts[key] / max(1, len(tasks)), 4)
              for key in ("traced", "steps_check", "worked_exactly", "right",
                          "right_with_checked_steps")}
    return {"n": len(tasks), **shares,
            "step_accuracy": round(correct_steps / max(1, steps), 4), "samples": samples}


def accuracy(model, tokenizer, tasks: list[Task], *, batch_size: int = 64
             ) -> dict[str, Any]:
    """Greedy accuracy overall, per family and per difficulty, with a few mistakes."""
    replies = complete(model, tokenizer, [chat_prompt(tokenizer, t) for t in tasks],
                       max_new_tokens=32, batch_size=batch_size)
    by_family: dict[str, list[bool]] = defaultdict(list)
    by_difficulty: dict[int, list[bool]] = defaultdict(list)
    mistakes: list[dict[str, str]] = []
    for task, reply in zip(tasks, replies, strict=True):
        ok = task.answer.matches(reply)
        by_family[task.family].append(ok)
        by_difficulty[task.difficulty].append(ok)
        if not ok and len(mistakes) < 20:
            mistakes.append({"family": task.family, "task": f"{task.instruction} | {task.input}",
                             "expected": task.output, "reply": reply})
    everything = [ok for oks in by_family.values() for ok in oks]
    return {
        "overall": round(sum(everything) / max(1, len(everything)), 4),
        "n": len(everything),
        "per_family": {f: round(sum(v) / len(v), 4) for f, v in by_family.items()},
        "per_difficulty": {d: round(sum(v) / len(v), 4) for d, v in sorted(by_difficulty.items())},
        "mistakes": mistakes,
    }


def task_writing(model, tokenizer, *, prompts: int = 32, shown: int = 3, total: int = 8,
                 temperature: float = 1.0, seed: int = 0, max_new_tokens: int = 400
                 ) -> dict[str, Any]:
    """Prompt Self-Instruct style and count well-formed, verifiable and correct new tasks."""
    from distill.generate.parsing import parse_task_list
    from distill.microworld.corpus import TEMPLATE
    from distill.microworld.tasks import check, generate_task
    from distill.prompts import render
    from distill.records import Example

    rng = random.Random(seed)
    texts = []
    for _ in range(prompts):
        tasks = [generate_task(rng) for _ in range(shown)]
        texts.append(render(TEMPLATE, num_tasks=total, tasks=[
            {"instruction": t.instruction, "input": t.input, "output": t.output} for t in tasks]))
    completions = complete(model, tokenizer, texts, max_new_tokens=max_new_tokens,
                           temperature=temperature, seed=seed, batch_size=16)
    status: Counter[str] = Counter()
    families: Counter[str] = Counter()
    parsed_tasks = 0
    failures = 0
    new_tasks = []
    for completion in completions:
        result = parse_task_list(completion, first_number=shown + 1)
        failures += len(result.failures)
        for parsed in result.tasks:
            parsed_tasks += 1
            example = Example(id="x", instruction=parsed.instruction, input=parsed.input,
                              output=parsed.output)
            verdict = check(example)
            status[verdict.status] += 1
            if verdict.family:
                families[verdict.family] += 1
            new_tasks.append(example)
    expected = prompts * (total - shown)
    return {"prompts": prompts, "expected_tasks": expected, "parsed_tasks": parsed_tasks,
            "parse_failures": failures, "status": dict(status), "families": dict(families),
            "samples": completions[:2], "tasks": new_tasks}
