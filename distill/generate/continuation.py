"""Continuation: real texts cut to a prompt, and the teacher continues them.

    generate: {kind: continuation, mode: text, prompt_tokens: 64,
               sampling: {temperature: 0.0, max_tokens: 64}}

The model-collapse setting of Shumailov et al. (Nature 2024): every real block of text
(the round's real data, `data.real`) is cut to its first `prompt_tokens` tokens, the
teacher continues it, and the continuations are the next student's training data, so
that the synthetic set has as many blocks as the real one.

- mode `text`: records with a `text` field (e.g. wikitext blocks). A record's
  `instruction` is the prompt and its `output` the continuation; train on it with a
  template that concatenates the turns (recipes/templates/continuation.jinja), which puts
  the loss on the continuation.
- mode `chat`: records are tasks (instruction, input, output), as in the microworld. The
  teacher continues the chat's user header followed by the first `prompt_tokens` tokens of
  a real task's user turn, i.e. it writes a task of its own (with `prompt_tokens: 0`, from
  nothing but the header, so task families are drawn from the model's own distribution),
  and then answers it through its chat template (`responses.generate_responses`). The
  user turn is split into instruction and input at its first blank line.

Every refused completion is kept as a `Rejected` record: `empty_continuation`, or
`empty_response` from the response step.
"""

from __future__ import annotations

import random
from typing import Any, Literal

from pydantic import Field

from distill.backends.base import GenerationRequest
from distill.component import Dependencies
from distill.generate.base import GeneratorSettings
from distill.generate.context import GenerationContext, GenerationResult
from distill.generate.responses import ResponseSampling, SamplingConfig, generate_responses
from distill.records import Example, Lineage, Rejected
from distill.registry import GENERATORS


class ContinuationSampling(SamplingConfig):
    """Sampling of continuations: greedy, 64 new tokens (Shumailov's block length)."""

    temperature: float = Field(0.0, ge=0.0, description="Softmax temperature; 0 is greedy.")
    max_tokens: int = Field(64, ge=1, description="New tokens per continuation.")


@GENERATORS.register
class Config(GeneratorSettings):
    """`generate:` settings of the continuation method."""

    kind: Literal["continuation"] = "continuation"
    mode: Literal["text", "chat"] = Field(
        "text", description="text: continue each real record's `text`; chat: continue a real "
        "task's user turn inside the chat template, then answer it.")
    prompt_tokens: int = Field(64, ge=0, description="Leading tokens of each real text kept as "
                               "the prompt (Shumailov: 64). In chat mode, tokens of the user "
                               "turn after the header; 0 leaves only the header.")
    num_prompts: int | None = Field(None, ge=1, description="Continuations per round; null: "
                                    "one per real record (a synthetic set as large as the "
                                    "real one). More cycles through the real records.")
    sampling: ContinuationSampling = Field(default_factory=ContinuationSampling)
    response_sampling: ResponseSampling = Field(
        default_factory=lambda: ResponseSampling(temperature=0.0, max_tokens=32),
        description="chat mode: sampling of the answer to each written task.")

    def dependencies(self) -> Dependencies:
        """The round's real records; the teacher's own tokenizer cuts them."""
        return Dependencies(inputs=("real",))

    def keeps_teacher_tokens(self) -> bool:
        """Chat mode ends with the teacher's answer; text mode keeps a continuation."""
        return self.mode == "chat"

    def run(self, ctx: GenerationContext) -> GenerationResult:
        """Continue the round's real records (`ctx.real_records()`) with the teacher."""
        real = ctx.real_records()
        if not real:
            raise ValueError("continuation: no real records to prompt with (data.real is empty)")
        tokenizer = getattr(ctx.backend, "tokenizer", None) or _load_tokenizer(ctx.teacher_name)
        count = self.num_prompts or len(real)
        order = list(range(len(real)))
        random.Random(ctx.request_seed("continuation-order")).shuffle(order)
        sources = [real[order[i % len(order)]] for i in range(count)]
        header = _user_header(tokenizer) if self.mode == "chat" else ""
        requests, prompts = [], []
        for index, source in enumerate(sources):
            text = _source_text(source, self.mode)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:self.prompt_tokens]
            prompt = header + (tokenizer.decode(ids) if ids else "")
            request_id = f"r{ctx.round}-cont-{index:06d}-{source.id}"
            sampling = self.sampling.to_sampling(seed=ctx.request_seed("continuation", request_id))
            requests.append(GenerationRequest(id=request_id, prompt=prompt, sampling=sampling))
            prompts.append(prompt[len(header):])
        generations = {g.request_id: g for g in ctx.generate("continuations", requests)
                       if g.index == 0}
        examples: list[Example] = []
        rejected: list[Rejected] = []
        for request, prompt, source in zip(requests, prompts, sources, strict=True):
            generation = generations.get(request.id)
            if generation is None:
                continue  # failed: the context filed it as rejected
            continuation = generation.text
            lineage = Lineage(round=ctx.round, method="continuation", teacher=ctx.teacher_name,
                              sampling=request.sampling.as_dict(), source_id=source.id,
                              prompt_tokens=self.prompt_tokens,
                              instruction_finish_reason=generation.finish_reason)
            if not continuation.strip():
                rejected.append(Rejected(id=request.id, stage="continuation",
                                         reason="empty_continuation",
                                         record={"prompt": prompt, "raw": continuation}))
                continue
            if self.mode == "text":
                examples.append(Example(id=request.id, instruction=prompt, output=continuation,
                                        text=prompt + continuation, lineage=lineage))
            else:
                instruction, _, input_text = (prompt + continuation).strip().partition("\n\n")
                examples.append(Example(id=request.id, instruction=instruction.strip(),
                                        input=input_text.strip(), lineage=lineage))
        stats: dict[str, Any] = {"method": "continuation", "mode": self.mode,
                                 "prompts": len(requests),
                                 "rejected": {"empty_continuation": len(rejected)}}
        if self.mode == "chat":
            examples, refused = generate_responses(examples, self.response_sampling, ctx)
            rejected += refused
            stats["rejected"]["empty_response"] = len(refused)
        return GenerationResult(examples=examples, rejected=rejected, stats=stats)

    @classmethod
    def reject_counts(cls, stats: dict[str, Any]) -> dict[str, int]:
        """Empty continuations (and, in chat mode, empty answers)."""
        return {reason: n for reason, n in stats.get("rejected", {}).items() if n}


def _source_text(record: Example, mode: str) -> str:
    if mode == "chat":
        return record.prompt_text
    text = getattr(record, "text", None)
    if not isinstance(text, str):
        raise ValueError(f"continuation (mode text): real record {record.id} has no `text` "
                         "field; use mode chat for instruction / output records")
    return text


def _user_header(tokenizer: Any) -> str:
    """What the chat template writes before a user turn's content (BOS left out)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("continuation (mode chat): the teacher's tokenizer has no chat "
                         "template; set teacher.chat_template or use mode text")
    marker = "\u0000MARK\u0000"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": marker}],
                                             tokenize=False)
    header = rendered.split(marker)[0]
    bos = tokenizer.bos_token
    # the backend tokenizes raw prompts with special tokens, which adds BOS itself
    return header[len(bos):] if bos and header.startswith(bos) else header


def _load_tokenizer(model: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)
