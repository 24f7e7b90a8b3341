"""The response step: the teacher answers each instruction through its chat template.

Any method that produces instructions (Self-Instruct, Evol-Instruct, ...) ends here:
each example's user turn (`instruction`, then `input` after a blank line) goes to the
teacher as a chat message, and the answer replaces `output`. What the example held
before (Self-Instruct's generator proposes an output with every task) is kept in
`lineage.proposed_output`. Empty answers are refused as "empty_response"; truncated
ones are kept with `lineage.finish_reason == "length"` for the heuristics filter to judge.
When the context asks for the teacher's top-k log-probabilities (`ctx.top_logprobs`, for
logit distillation), each answered record's tokens land in `ctx.teacher_tokens` under its
id.

Also home to `SamplingConfig`, the recipe-side sampling settings every method uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import Field

from distill.backends.base import GenerationRequest, Sampling
from distill.generate.context import GenerationContext
from distill.records import Example, Lineage, Rejected
from distill.settings import Strict


class SamplingConfig(Strict):
    """Sampling settings as a recipe writes them (OpenAI / vLLM names and meanings).

    The per-request seed is not a setting: each request gets `ctx.request_seed(...)`,
    so an answer never depends on batching, replicas or resumption.
    """

    temperature: float = Field(0.7, ge=0.0, description="Softmax temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(512, ge=1, description="Most new tokens per completion.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0,
                                    description="OpenAI-style penalty on tokens already present.")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0,
                                     description="OpenAI-style penalty by token frequency.")
    stop: list[str] | None = Field(
        None, description="Stop strings; null means the method's default (often none).")

    def to_sampling(self, seed: int | None = None, default_stop: tuple[str, ...] = (),
                    n: int = 1) -> Sampling:
        """The backend's frozen `Sampling` for one request."""
        stop = tuple(self.stop) if self.stop is not None else tuple(default_stop)
        return Sampling(temperature=self.temperature, top_p=self.top_p,
                        max_tokens=self.max_tokens, n=n,
                        presence_penalty=self.presence_penalty,
                        frequency_penalty=self.frequency_penalty, stop=stop, seed=seed)


class ResponseSampling(SamplingConfig):
    """Sampling for answering instructions: temperature 0.7, up to 512 new tokens."""


def generate_responses(
    examples: list[Example],
    sampling: SamplingConfig | Sampling,
    ctx: GenerationContext,
    key: str = "responses",
    system_prompt: str | None = None,
    template: str | None = None,
) -> tuple[list[Example], list[Rejected]]:
    """Answer every example's user turn with the teacher; returns (answered, refused).

    Args:
        examples: records with unique ids; their `output` (if any) becomes
            `lineage.proposed_output`.
        sampling: settings (a `SamplingConfig` or a backend `Sampling`); each request
            gets its own seed `ctx.request_seed("response", key, id)` and n = 1.
        ctx: the generation context (checkpoints under `key`, the executor); with
            `ctx.top_logprobs` set, requests ask for that many top log-probabilities and
            answered records' tokens are stored in `ctx.teacher_tokens`.
        key: checkpoint key; use a different one per call within a stage.
        system_prompt: optional system message before the user turn.
        template: optional prompt template (distill/prompts/<name>.jinja, variables
            `instruction`, `input`) that renders the user message sent to the teacher;
            the record itself keeps the plain instruction / input.

    Returns:
        Examples in input order with `output` replaced and lineage updated
        (`finish_reason`, `sampling`, `proposed_output`), and "empty_response" rejects.
    """
    from distill.prompts import render, template_hash

    requests = []
    for example in examples:
        if template is not None:
            content = render(template, instruction=example.instruction, input=example.input)
        else:
            content = example.messages()[0]["content"]
        messages = [{"role": "user", "content": content}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        requests.append(GenerationRequest(id=example.id, messages=messages,
                                          sampling=_request_sampling(sampling, ctx, key,
                                                                     example.id)))
    generations = ctx.generate(key, requests)
    by_id = {g.request_id: g for g in generations if g.index == 0}
    answered: list[Example] = []
    refused: list[Rejected] = []
    for example, request in zip(examples, requests, strict=True):
        generation = by_id.get(example.id)
        if generation is None:
            continue  # failed: the context filed it as rejected
        text = generation.text or ""
        update: dict[str, Any] = {
            "sampling": request.sampling.as_dict(),
            "finish_reason": generation.finish_reason,
        }
        if example.output.strip():
            update["proposed_output"] = example.output
        if system_prompt:
            update["system_prompt"] = system_prompt
        if template is not None:
            update["response_template"] = template
            update["response_template_hash"] = template_hash(template)
        record = with_lineage(example, output=text.strip(), **update)
        if not text.strip():
            refused.append(Rejected(id=example.id, stage="responses", reason="empty_response",
                                    record=record.to_json() | {"raw": text}))
        else:
            answered.append(record)
            if generation.tokens is not None:
                ctx.teacher_tokens[example.id] = generation.tokens
    return answered, refused


def with_lineage(example: Example, output: str | None = None, **lineage: Any) -> Example:
    """A copy of `example` with lineage fields added (and `output` replaced if given)."""
    merged = Lineage.model_validate({**example.lineage.model_dump(), **lineage})
    update: dict[str, Any] = {"lineage": merged}
    if output is not None:
        update["output"] = output
    return example.model_copy(update=update)


def _request_sampling(sampling: SamplingConfig | Sampling, ctx: GenerationContext, key: str,
                      example_id: str) -> Sampling:
    seed = ctx.request_seed("response", key, example_id)
    if isinstance(sampling, Sampling):
        return dataclasses.replace(sampling, seed=seed, n=1,
                                   top_logprobs=ctx.top_logprobs or sampling.top_logprobs)
    return dataclasses.replace(sampling.to_sampling(seed=seed), top_logprobs=ctx.top_logprobs)
