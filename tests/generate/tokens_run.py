"""One generation of teacher responses with top-k log-probabilities, as its own process.

    python tests/generate/tokens_run.py CHECKPOINTS OUT [MARKER]

The microworld teacher (hf backend) answers `EXAMPLES` through `generate_responses` with
`ctx.top_logprobs = K`, checkpointing chunks of `CHUNK` under CHECKPOINTS; the records'
teacher tokens are saved to OUT at the end. With MARKER, the file MARKER is created once
the first chunk's shard is on disk (the kill test SIGKILLs the process then).
"""

from __future__ import annotations

import sys
from pathlib import Path

K = 4
CHUNK = 4
QUESTIONS = ["Explain step by step how to add {a} and {b}.", "What is {a} plus {b}?",
             "Come up with {a} new tasks.", "How many legs do {a} cats have?"]
EXAMPLES = [(f"q{i:03d}", QUESTIONS[i % 4].format(a=i + 3, b=2 * i + 5)) for i in range(20)]


def main(checkpoints: str, out: str, marker: str | None = None) -> None:
    from distill.backends.base import load_backend
    from distill.generate.context import GenerationContext
    from distill.generate.responses import ResponseSampling, generate_responses
    from distill.microworld.build import build_models
    from distill.records import Example
    from distill.teacher_tokens import save_teacher_tokens

    def progress(key: str, done: int, total: int) -> None:
        if marker is not None and not Path(marker).exists():
            Path(marker).touch()

    backend = load_backend("hf", model=str(build_models(quiet=True)["teacher"]),
                           batch_size=CHUNK, device="cpu")
    ctx = GenerationContext(backend=backend, checkpoint_dir=Path(checkpoints),
                            chunk_size=CHUNK, top_logprobs=K, progress=progress)
    examples = [Example(id=i, instruction=text) for i, text in EXAMPLES]
    answered, _ = generate_responses(examples, ResponseSampling(temperature=1.0, max_tokens=32),
                                     ctx)
    save_teacher_tokens(out, {e.id: ctx.teacher_tokens[e.id] for e in answered})


if __name__ == "__main__":
    main(*sys.argv[1:])
