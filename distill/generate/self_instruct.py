r"""Self-Instruct / Alpaca instruction generation: a seed pool grows into many tasks.

Follows Self-Instruct (Wang et al. 2023, github.com/yizhongw/self-instruct) as Alpaca
simplified it (Taori et al. 2023, tatsu-lab/stanford_alpaca `generate_instruction.py`):

1. Each prompt shows k tasks sampled from the seed pool (Alpaca: 3 seeds; Self-Instruct:
   6 human + 2 machine-generated, i.e. `seed_examples_per_prompt: 6,
   machine_examples_per_prompt: 2`) in the numbered "###\nN. Instruction/Input/Output"
   format, after a preamble that asks for `tasks_per_prompt` diverse tasks, and ends
   with "{k+1}. Instruction:" for the teacher to continue (a raw completion).
2. Prompts run `prompts_per_step` at a time; tasks parsed in earlier steps form the
   machine pool that later prompts may draw in-context examples from.
3. Completions are parsed by `distill.generate.parsing`: malformed or truncated blocks
   become `Rejected` records with a reason, never an exception.
4. Once `num_instructions` well-formed tasks are parsed (or after `max_steps`), the
   stream is cut to exactly `num_instructions` in (step, prompt, block) order.
5. Responses: "regenerate" (default) asks the teacher to answer each instruction + input
   through its chat template, as Self-Instruct's separate instance step and later
   distillation work do; "keep_generated" keeps the output the generator wrote next to
   the instruction, which is what Alpaca's 52K data trained on.

Quality filters (length, keyword blacklist, ROUGE-L novelty > 0.7, dedup) are the filter
stage's job, not this loop's: Alpaca and Self-Instruct filter inside the loop and count
kept instructions, here `num_instructions` counts well-formed candidates and the machine
pool holds candidates. Per-request seeds (`ctx.request_seed`) and checkpointed steps make
a resumed run equal an uninterrupted one.

    from distill.generate.self_instruct import Config
    ctx = GenerationContext(backend, checkpoint_dir, teacher_name="Qwen/Qwen2.5-7B-Instruct",
                            seed_tasks=load_seed_tasks)
    result = Config(num_instructions=1000).run(ctx)
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from distill.backends.base import GenerationRequest
from distill.component import Dependencies
from distill.data import load_seed_tasks as load_seed_tasks  # the runner reads seeds with it
from distill.data import seed_tasks_path
from distill.generate.base import GeneratorSettings
from distill.generate.context import GenerationContext, GenerationResult
from distill.generate.parsing import parse_task_list
from distill.generate.responses import ResponseSampling, SamplingConfig, generate_responses
from distill.records import Example, Lineage, Rejected
from distill.registry import GENERATORS

METHOD = "self_instruct"

# The seed pool shipped with distill (see distill/data); a recipe's data.seed_tasks overrides it.
DEFAULT_SEED_TASKS = str(seed_tasks_path())


class InstructionSampling(SamplingConfig):
    """Sampling for writing task lists; defaults are Alpaca's (text-davinci-003)."""

    temperature: float = Field(
        1.0, ge=0.0,
        description="Alpaca: 1.0. Self-Instruct (GPT-3 davinci): 0.7.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Alpaca: 1.0. Self-Instruct: 0.5.")
    max_tokens: int = Field(
        3072, ge=1,
        description="Alpaca: 3072 (whole tasks with inputs and outputs). "
                    "Self-Instruct: 1024 (its prompt lists instructions only).")
    presence_penalty: float = Field(
        0.0, ge=-2.0, le=2.0, description="Alpaca: 0. Self-Instruct: 2.")
    stop: list[str] | None = Field(
        None,
        description='Null: stop before task tasks_per_prompt + 1 ("21. Instruction:" for '
                    '20). Alpaca used ["\\n20", "20.", "20."], which ends its list at 19.')


@GENERATORS.register
class Config(GeneratorSettings):
    """`generate:` settings of the Self-Instruct / Alpaca method."""

    # No setting is speed-only: prompts_per_step sets when the machine pool grows, so it
    # changes which tasks later prompts show; max_steps can cut the stream short.
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset()

    kind: Literal["self_instruct"] = "self_instruct"
    strict_numbering: bool = Field(
        True, description="Drop a task whose field numbers disagree or skip (Alpaca's "
        "parser); false ignores the numbers, which small teachers miscopy.")
    template: str = Field(
        "self_instruct_alpaca",
        description="Prompt template in distill/prompts (variables num_tasks, tasks): "
                    "self_instruct_alpaca (Alpaca's preamble and requirements) or "
                    "self_instruct_compact (one-line preamble, for small teachers).")
    num_instructions: int = Field(
        ge=1, description="Stop once this many well-formed tasks were parsed; the result "
                          "holds exactly this many instructions (fewer if max_steps hits).")
    seed_examples_per_prompt: int = Field(
        3, ge=1, description="Seed tasks per prompt. Alpaca: 3. Self-Instruct: 6.")
    machine_examples_per_prompt: int = Field(
        0, ge=0,
        description="Tasks from earlier steps per prompt (seeds fill in while the machine "
                    "pool is smaller). Alpaca: 0. Self-Instruct: 2.")
    tasks_per_prompt: int = Field(
        20, ge=2, description="Length of the list the prompt asks for, in-context tasks "
                              "included; the teacher writes the rest. Alpaca: 20.")
    prompts_per_step: int = Field(
        8, ge=1,
        description="Prompts generated together; the machine pool grows between steps. "
                    "With several replicas (executor ray), use a multiple of chunk size x "
                    "replicas.")
    max_steps: int | None = Field(
        None, ge=1,
        description="Guard against a teacher that writes no usable task; null: 4x the "
                    "steps a teacher filling every list would need, at least 5.")
    sampling: InstructionSampling = Field(default_factory=InstructionSampling)
    responses: Literal["regenerate", "keep_generated"] = Field(
        "regenerate",
        description="regenerate: the teacher answers each instruction (+ input) through its "
                    "chat template; the generator's output stays in "
                    "lineage.proposed_output. keep_generated: keep the output written with "
                    "the instruction, as Alpaca's data did.")
    response_sampling: ResponseSampling = Field(default_factory=ResponseSampling)
    response_system_prompt: str | None = Field(
        None, description="Optional system message for the response step.")
    response_template: str | None = Field(
        None, description="Optional template (variables instruction, input) rendering the "
                          "user message of the response step; null sends the instruction, "
                          "a blank line and the input.")

    @field_validator("template", "response_template")
    @classmethod
    def _template_exists(cls, name: str | None) -> str | None:
        from distill.prompts import template_source

        if name is not None:
            template_source(name)  # ValueError listing the available templates
        return name

    @model_validator(mode="after")
    def _room_for_new_tasks(self) -> Config:
        shown = self.seed_examples_per_prompt + self.machine_examples_per_prompt
        if self.tasks_per_prompt <= shown:
            raise ValueError(f"tasks_per_prompt ({self.tasks_per_prompt}) must exceed the "
                             f"in-context tasks per prompt ({shown})")
        return self

    @property
    def in_context_per_prompt(self) -> int:
        """Tasks shown in each prompt (seeds fill in for missing machine tasks)."""
        return self.seed_examples_per_prompt + self.machine_examples_per_prompt

    def resolved_max_steps(self) -> int:
        """`max_steps`, or the default guard when it is null."""
        if self.max_steps is not None:
            return self.max_steps
        per_step = self.prompts_per_step * (self.tasks_per_prompt - self.in_context_per_prompt)
        return max(5, 4 * math.ceil(self.num_instructions / per_step))

    def default_stop(self) -> tuple[str, ...]:
        """Stop before the task after the last one the prompt asked for."""
        return (f"{self.tasks_per_prompt + 1}. Instruction:",)

    def dependencies(self) -> Dependencies:
        """The instruction template, the response template if any, and the seed pool."""
        templates = [self.template]
        if self.responses == "regenerate" and self.response_template is not None:
            templates.append(self.response_template)
        return Dependencies(templates=tuple(templates), inputs=("seed_tasks",))

    def keeps_teacher_tokens(self) -> bool:
        """The teacher answers every kept instruction (responses: regenerate)."""
        return self.responses == "regenerate"

    def run(self, ctx: GenerationContext) -> GenerationResult:
        """Grow the run's seed tasks into `num_instructions` answered instructions.

        Instruction steps are checkpointed under "instructions-step0000", ..., the response
        step under "responses".

        Returns:
            Examples (ids "r{round}-s{step}-p{prompt}-t{block}"), parse and response
            rejects, and stats (counts per step and per reject reason).
        """
        from distill.prompts import template_hash

        seed_tasks = ctx.seed_tasks()
        if not seed_tasks:
            raise ValueError("self_instruct needs at least one seed task")
        ids = [task.id for task in seed_tasks]
        if len(set(ids)) != len(ids):
            raise ValueError("seed task ids are not unique")
        base_lineage = {"round": ctx.round, "method": METHOD, "teacher": ctx.teacher_name,
                        "template": self.template,
                        "template_hash": template_hash(self.template)}
        max_steps = self.resolved_max_steps()
        pool: list[Example] = []  # well-formed tasks in stream order: the machine pool
        rejected: list[Rejected] = []
        reasons: Counter[str] = Counter()
        per_step: list[dict[str, Any]] = []
        truncated_completions = 0
        step = 0
        while len(pool) < self.num_instructions and step < max_steps:
            prompts = [_build_prompt(self, seed_tasks, pool, ctx, step, p)
                       for p in range(self.prompts_per_step)]
            generations = ctx.generate(f"instructions-step{step:04d}",
                                       [prompt.request for prompt in prompts])
            by_id = {g.request_id: g for g in generations if g.index == 0}
            new_tasks: list[Example] = []
            step_rejects = 0
            for prompt in prompts:
                generation = by_id.get(prompt.request.id)
                if generation is None:
                    continue  # failed: the context filed it as rejected
                text, finish = generation.text, generation.finish_reason
                truncated_completions += finish == "length"
                parsed = parse_task_list(text, prompt.first_number, finish,
                                         strict_numbering=self.strict_numbering)
                lineage = {
                    **base_lineage,
                    "sampling": prompt.request.sampling.as_dict(),
                    "instruction_sampling": prompt.request.sampling.as_dict(),
                    # A parsed task is a complete block (the parser rejects a cut-off last
                    # block), so it was not truncated even when its completion hit
                    # max_tokens later on.
                    "instruction_finish_reason": "stop",
                    "completion_finish_reason": finish,
                    "step": step,
                    "prompt_id": prompt.request.id,
                    "in_context_ids": [task.id for task in prompt.in_context],
                }
                record_id = f"r{ctx.round}-s{step}-p{prompt.index}-t{{}}"
                for task in parsed.tasks:
                    new_tasks.append(Example(
                        id=record_id.format(task.block), instruction=task.instruction,
                        input=task.input, output=task.output,
                        lineage=Lineage(**lineage, task_number=task.number,
                                        finish_reason="stop")))
                for failure in parsed.failures:
                    reasons[failure.reason] += 1
                    step_rejects += 1
                    rejected.append(Rejected(
                        id=record_id.format(failure.block), stage="parse",
                        reason=failure.reason,
                        record={"raw": failure.raw, "task_number": failure.number,
                                "lineage": lineage}))
            pool.extend(new_tasks)  # visible to in-context sampling from the next step on
            per_step.append({"step": step, "prompts": len(prompts), "parsed": len(new_tasks),
                             "rejected": step_rejects})
            step += 1

        kept = pool[:self.num_instructions]
        response_rejected: list[Rejected] = []
        if self.responses == "regenerate":
            examples, response_rejected = generate_responses(
                kept, self.response_sampling, ctx, key="responses",
                system_prompt=self.response_system_prompt, template=self.response_template)
        else:
            examples = kept
        stats = {
            "method": METHOD,
            "template": self.template,
            "steps": step,
            "max_steps": max_steps,
            "stopped_by": "num_instructions" if len(pool) >= self.num_instructions
            else "max_steps",
            "prompts": step * self.prompts_per_step,
            "truncated_completions": truncated_completions,
            "parsed": len(pool),
            "parse_rejected": dict(sorted(reasons.items())),
            "instructions": len(kept),
            "surplus": len(pool) - len(kept),
            "responses": self.responses,
            "response_rejected": dict(Counter(r.reason for r in response_rejected)),
            "responses_truncated": sum(e.lineage.model_extra.get("finish_reason") == "length"
                                       for e in examples) if self.responses == "regenerate"
            else 0,
            "examples": len(examples),
            "with_input": sum(bool(e.input.strip()) for e in examples),
            "per_step": per_step,
        }
        return GenerationResult(examples=examples, rejected=rejected + response_rejected,
                                stats=stats)


@dataclass
class _Prompt:
    step: int
    index: int
    request: GenerationRequest
    in_context: list[Example]

    @property
    def first_number(self) -> int:
        return len(self.in_context) + 1


def _build_prompt(config: Config, seed_tasks: list[Example], pool: list[Example],
                  ctx: GenerationContext, step: int, index: int) -> _Prompt:
    """Sample in-context tasks for prompt `index` of `step` and render the template."""
    from distill.prompts import render

    rng = random.Random(ctx.request_seed("step", step, index))
    machine = rng.sample(pool, min(config.machine_examples_per_prompt, len(pool)))
    # Like Self-Instruct, seeds fill the places the machine pool cannot fill yet.
    wanted = config.in_context_per_prompt - len(machine)
    shown = machine + rng.sample(seed_tasks, min(wanted, len(seed_tasks)))
    if machine:
        rng.shuffle(shown)
    prompt = render(config.template, num_tasks=config.tasks_per_prompt,
                    tasks=[_as_prompt_task(task) for task in shown])
    sampling = config.sampling.to_sampling(seed=ctx.request_seed("instructions", step, index),
                                           default_stop=config.default_stop())
    request = GenerationRequest(id=f"si-{step}-{index}", prompt=prompt, sampling=sampling)
    return _Prompt(step=step, index=index, request=request, in_context=shown)


def _as_prompt_task(task: Example) -> dict[str, str]:
    # Alpaca's encode_prompt: one-line instruction without a trailing colon.
    instruction = re.sub(r"\s+", " ", task.instruction).strip().rstrip(":")
    return {"instruction": instruction, "input": task.input.strip(),
            "output": task.output.strip()}
