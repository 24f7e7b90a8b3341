"""KD training data from the microworld teacher (imported by name: conftest modules are not).

The teacher answers microworld tasks through distill's `hf` backend with
`Sampling.top_logprobs`, as the generate stage asks it for method kd: the records hold
its answers, and the teacher-tokens file its tokens and top-k log-probabilities.
"""

from __future__ import annotations

from pathlib import Path

from distill.records import Example, write_jsonl
from distill.teacher_tokens import TeacherTokens, save_teacher_tokens


def teacher_records(teacher_dir: Path, out: Path, *, count: int, seed: int, top_k: int
                    ) -> tuple[Path, Path, dict[str, TeacherTokens]]:
    """Sample the teacher's answers to `count` tasks; write train.jsonl and its tokens.

    Returns (records path, teacher-tokens path, tokens by record id). Answers the teacher
    did not finish (max_tokens) are left out, as a length filter would.
    """
    from distill.backends.base import GenerationRequest, Sampling
    from distill.backends.hf import HFBackend
    from distill.microworld.tasks import generate_tasks

    tasks = generate_tasks(count, seed=seed)
    sampling = Sampling(temperature=1.0, max_tokens=64, top_logprobs=top_k)
    requests = [GenerationRequest(id=f"kd-{seed}-{i}", sampling=sampling,
                                  messages=task.to_example().messages()[:-1])
                for i, task in enumerate(tasks)]
    backend = HFBackend(str(teacher_dir), batch_size=32, seed=seed)
    try:
        generations = backend.generate(requests)
    finally:
        backend.close()
    examples, tokens = [], {}
    for request, task, generation in zip(requests, tasks, generations, strict=True):
        if generation.finish_reason != "stop":
            continue
        examples.append(Example(id=request.id, instruction=task.instruction, input=task.input,
                                output=generation.text))
        tokens[request.id] = generation.tokens
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", examples)
    save_teacher_tokens(out / "teacher_tokens.safetensors", tokens)
    return out / "train.jsonl", out / "teacher_tokens.safetensors", tokens
