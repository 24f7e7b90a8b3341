"""The continuation method against the real microworld teacher through the HF backend."""

from dataclasses import replace

import pytest

from distill.generate.context import GenerationContext
from distill.generate.continuation import Config
from distill.records import Example


@pytest.fixture(scope="module")
def teacher():
    from distill.microworld.build import resolve_model_ref

    return str(resolve_model_ref("microworld:teacher"))


def context(teacher, tmp_path, real):
    from distill.backends.hf import HFBackend

    backend = HFBackend(teacher, batch_size=8, seed=0, dtype="float32")
    return GenerationContext(backend=backend, checkpoint_dir=tmp_path / "ckpt", chunk_size=8,
                             teacher_name=teacher, real_records=lambda: real)


class TaskWriter:
    """A scripted teacher: continues the user header with a task, answers chats with "7"."""

    def __init__(self):
        self.prompts = []

    def generate(self, requests, progress=None):
        from distill.backends.base import Generation

        out = []
        for request in requests:
            if request.prompt is not None:
                self.prompts.append(request.prompt)
                seed = request.sampling.seed % 3
                text = ["", "Add the two numbers.\n\n3 + 4", "Sort the list."][seed]
            else:
                text = "7"
            out.append(Generation(request_id=request.id, index=0, text=text,
                                  finish_reason="stop"))
        return out

    def close(self):
        pass


def test_chat_mode_writes_tasks_from_the_user_header_then_answers(teacher, tmp_path):
    from distill.microworld.tasks import generate_tasks

    real = [t.to_example() for t in generate_tasks(4, seed=0)]
    backend = TaskWriter()
    ctx = GenerationContext(backend=backend, checkpoint_dir=tmp_path / "ckpt", chunk_size=4,
                            teacher_name=teacher, real_records=lambda: real)
    config = Config(mode="chat", prompt_tokens=0, num_prompts=9)
    result = config.run(ctx)
    # the prompt is the microworld chat template's user header alone
    assert set(backend.prompts) == {"<|user|>\n"}
    assert len(result.examples) + len(result.rejected) == 9
    assert {r.reason for r in result.rejected} == {"empty_continuation"}
    for example in result.examples:
        assert example.output == "7" and example.lineage.method == "continuation"
        assert (example.instruction, example.input) in {
            ("Add the two numbers.", "3 + 4"), ("Sort the list.", "")}
    # with prompt tokens, the prompt carries the start of a real user turn
    backend.prompts.clear()
    ctx = GenerationContext(backend=backend, checkpoint_dir=tmp_path / "ckpt2", chunk_size=4,
                            teacher_name=teacher, real_records=lambda: real[:1])
    Config(mode="chat", prompt_tokens=2, num_prompts=2).run(ctx)
    first_word = real[0].instruction.split()[0]
    assert len(backend.prompts) == 2
    assert all(p.startswith("<|user|>\n" + first_word) for p in backend.prompts)


def test_text_mode_keeps_the_prompt_and_continues_it(teacher, tmp_path):
    real = [Example(id=f"t{i}", instruction="", text=f"The sum of {i} and 4 is {i + 4}. "
                    f"{i} times 2 is {2 * i}.") for i in range(3)]
    config = Config(mode="text", prompt_tokens=5, sampling={"max_tokens": 8})
    ctx = context(teacher, tmp_path, real)
    try:
        result = config.run(ctx)
    finally:
        ctx.backend.close()
    assert len(result.examples) + len(result.rejected) == 3
    for example in result.examples:
        assert example.text == example.instruction + example.output
        assert "The sum of" in example.instruction and example.output
    with pytest.raises(ValueError, match="has no `text` field"):
        config.run(replace(ctx, real_records=lambda: [Example(id="x", instruction="q")]))
