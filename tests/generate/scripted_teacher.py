"""A scripted teacher for the generation tests: canned completions, no model.

`ScriptedTeacher(script)` implements the Backend protocol; `script(request)` returns
(text, finish_reason), the answer of each of the request's n samples, or a list of n
such pairs, one per sample. Its default script writes well-formed task lists whose content
depends only on the request's seed and id, so it is deterministic the way a seeded model
is, and answers chat requests with a line naming the instruction.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from distill.backends.base import Generation, GenerationRequest

Script = Callable[[GenerationRequest], tuple[str, str] | list[tuple[str, str]]]


def first_number(prompt: str) -> int:
    """The number the prompt's trailing "N. Instruction:" asks the teacher to write."""
    match = re.search(r"(\d+)\. Instruction:$", prompt)
    assert match, prompt[-80:]
    return int(match.group(1))


def task_block(number: int, instruction: str, task_input: str, output: str,
               newline: str = "\n") -> str:
    """One block of the numbered format, without the leading "###" line."""
    return newline.join([f"{number}. Instruction: {instruction}", f"{number}. Input:",
                         task_input or "<noinput>", f"{number}. Output:", output]) + newline


def well_formed(request: GenerationRequest, count: int = 4) -> str:
    """`count` tasks continuing the prompt, content keyed by the request's seed."""
    start = first_number(request.prompt)
    parts = []
    for j in range(count):
        number = start + j
        text = task_block(number, f"Describe item {request.sampling.seed}-{j} in detail",
                          "" if j % 2 else f"item {request.sampling.seed}-{j}",
                          f"Item {request.sampling.seed}-{j} is fine.")
        # The prompt ends with "N. Instruction:", so the first block starts mid-line.
        parts.append(text.removeprefix(f"{number}. Instruction:") if j == 0 else text)
    return "###\n".join(parts)


def default_script(request: GenerationRequest) -> tuple[str, str]:
    if request.prompt is not None:
        return well_formed(request), "stop"
    return f"Answer to: {request.messages[-1]['content']}", "stop"


class ScriptedTeacher:
    """Backend protocol over a script; records every request it was asked for."""

    def __init__(self, script: Script = default_script, fail_after: int | None = None):
        self.script = script
        self.requests: list[GenerationRequest] = []
        self.calls = 0
        self.fail_after = fail_after  # raise on the call after this many (a "kill")

    def identity(self) -> dict:
        return {"model": "scripted"}

    def generate(self, requests, progress=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("scripted teacher killed")
        self.calls += 1
        out = []
        for request in requests:
            self.requests.append(request)
            answer = self.script(request)
            # one (text, finish) for all n samples, or a list of n, one per sample
            samples = answer if isinstance(answer, list) else [answer] * request.sampling.n
            assert len(samples) == request.sampling.n, (request.id, len(samples))
            out += [Generation(request_id=request.id, index=index, text=text,
                               finish_reason=finish, prompt_tokens=10,
                               completion_tokens=len(text.split()))
                    for index, (text, finish) in enumerate(samples)]
        return out

    def close(self) -> None:
        pass


class AlternatingReplicas:
    """An executor over two engines: chunks alternate between them, and come back last first.

    What a generation method gets from the Ray executor, minus Ray: chunks finished by
    different engines, in another order than they were asked for.
    """

    backend = None

    def __init__(self, first, second):
        self.engines = (first, second)

    def run(self, chunks):
        done = [(index, self.engines[n % 2].generate(requests))
                for n, (index, requests) in enumerate(chunks)]
        yield from reversed(done)

    def summary(self):
        return {"kind": "alternating"}

    def close(self):
        pass
