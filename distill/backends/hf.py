"""Generation with plain transformers: batched, left-padded, seeded per request.

`HFBackend` loads a causal LM (or a PEFT adapter directory, whose base model comes from
its `adapter_config.json`) and decodes batches of requests with its own sampling loop over
the model's KV cache, so that every sampling parameter keeps the OpenAI / vLLM meaning:

* chat `messages` are rendered with the tokenizer's chat template (or the `chat_template`
  override: Jinja text or a path) with `add_generation_prompt=True` and tokenised without
  adding special tokens, as `apply_chat_template(tokenize=True)` and vLLM do; a raw
  `prompt` is tokenised as is (with the tokenizer's own special tokens, as vLLM does);
* `temperature` (0 = greedy), `top_p`, `max_tokens` (capped by the model's context),
  `n`, `presence_penalty` and `frequency_penalty` (exactly: subtracted from the logits of
  tokens already generated, before temperature, as vLLM does), `stop` (the text is cut
  before the earliest stop string, which is not included; generation of that sample ends
  as soon as one appears), `logprobs` (log-probability of each chosen token under the raw
  model distribution, vLLM's default `raw_logprobs`; one per completion token),
  `top_logprobs` (k: the k most likely tokens of that same raw distribution and their
  log-probabilities at every generated position, most likely first, as
  `Generation.tokens` with the generated token ids; ties in torch.topk's order);
* `finish_reason` is "stop" after an EOS token or a stop string, "length" when
  `max_tokens` (or the model's context) ran out; `completion_tokens` counts generated
  tokens including a final EOS, as vLLM does.

`dtype: auto` (the default) loads the checkpoint's own dtype (its config's, else its
weights'), as transformers does; the vLLM backend also takes `auto` to mean the config's
dtype. The dtype that ran is in `identity()["dtype"]`.

Determinism: each sample draws its random numbers from its own `random.Random`, seeded
from `Sampling.seed` (or from the backend seed and the request id) plus the sample index,
and sampling is inverse-CDF on those draws, so a request's text does not depend on which
other requests share its batch, nor on their order. Batches are formed deterministically
(longest prompts first), so the same chunk of requests always runs the same computation:
in float32 a resumed run reproduces an uninterrupted one bit for bit. Across *different*
batch compositions the logits can differ in the last floating-point bits (padding and
matrix shapes); in float32 (CPU, and CUDA on an H100) that has not changed a token. In
bfloat16 on CUDA it can, and there even an identical batch, rerun after batches of other
shapes, did not always repeat bit for bit (seen on an H100); samples stay valid
draws but need not equal those of an uninterrupted run. vLLM has the same limitation.
"""

from __future__ import annotations

import inspect
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from distill.backends.base import (
    Generation,
    GenerationRequest,
    ProgressFn,
    request_seed,
    sample_seed,
)
from distill.identity import model_identity, resolve_chat_template
from distill.registry import BACKENDS
from distill.teacher_tokens import TeacherTokens

logger = logging.getLogger(__name__)

# Options that go to the tokenizer as well as to the model.
_SHARED_LOAD_OPTIONS = ("revision", "trust_remote_code", "token", "cache_dir")
# Extra tokens decoded around the tail when looking for a stop string mid-generation.
_STOP_TAIL_SLACK = 8


def encode_request(tokenizer: Any, request: GenerationRequest,
                   chat_template: str | None = None) -> list[int]:
    """Prompt token ids of a request, rendered exactly as HF and vLLM backends send them."""
    return encode_requests(tokenizer, [request], chat_template)[0]


def encode_requests(tokenizer: Any, requests: list[GenerationRequest],
                    chat_template: str | None = None) -> list[list[int]]:
    """Prompt token ids of each request (see `encode_request`), in request order.

    One chat-template call renders every conversation and one tokenizer call encodes
    them (another the raw prompts), in about half the time of a call per request
    (scripts/bench_generation.py, 1a): next to a fast engine on a small model that time
    is what the vllm backend adds to raw `LLM.generate`. Without padding or truncation
    a batch gives each text the ids it gets alone.
    """
    chats = [i for i, r in enumerate(requests) if r.messages is not None]
    raws = [i for i, r in enumerate(requests) if r.messages is None]
    if chats and chat_template is None and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"request {requests[chats[0]].id}: chat messages given but the tokenizer has "
            "no chat template; set the backend's chat_template"
        )
    empty = next((requests[i].id for i in chats if not requests[i].messages), None)
    if empty is not None:
        raise ValueError(f"request {empty}: messages is empty")
    ids: list[list[int]] = [[] for _ in requests]
    if chats:
        texts = tokenizer.apply_chat_template(
            [requests[i].messages for i in chats], chat_template=chat_template,
            add_generation_prompt=True, tokenize=False,
        )
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
        for i, row in zip(chats, encoded, strict=True):
            ids[i] = list(row)
    if raws:
        encoded = tokenizer([requests[i].prompt for i in raws])["input_ids"]
        for i, row in zip(raws, encoded, strict=True):
            ids[i] = list(row)
    return ids


def truncate_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Cut `text` before the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def eos_token_ids(tokenizer: Any, generation_config: Any = None) -> set[int]:
    """Every token id that ends a generation: the tokenizer's EOS and the model's."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(int(i) for i in configured)
    return ids


@dataclass
class _Row:
    """One sample being decoded."""

    request_index: int
    index: int
    prompt_ids: list[int]
    max_new: int
    rng: random.Random
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_k: int = 0  # top-k log-probabilities to keep per position (0: none)
    top_ids: list[Any] = field(default_factory=list)  # per position: int32 [k]
    top_logprobs: list[Any] = field(default_factory=list)  # per position: float32 [k]
    finish_reason: str | None = None


@BACKENDS.register("hf")
class HFBackend:
    """transformers generation behind the backend protocol (see the module docstring)."""

    name = "hf"
    # batching is exact here (left padding, per-request seeds): only speed changes
    LOADS_WEIGHTS: ClassVar[bool] = True  # does `model` name weights to load here?
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    def __init__(self, model: str, chat_template: str | None = None,
                 dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
                 batch_size: Annotated[int, Field(ge=1)] = 16, device: str | None = None,
                 seed: int = 0, revision: str | None = None, tokenizer: str | None = None,
                 trust_remote_code: bool = False, attn_implementation: str | None = None,
                 device_map: str | dict[str, Any] | None = None, cache_dir: str | None = None,
                 model_kwargs: dict[str, Any] | None = None) -> None:
        """Load the model and its tokenizer.

        The signature is the declaration of the `hf` backend's engine options, checked when
        a recipe is loaded (`distill.engine_options`).

        Args:
            model: checkpoint directory, hub id, or PEFT adapter directory.
            chat_template: Jinja text or path replacing the tokenizer's template.
            dtype: `auto` is the checkpoint's own.
            batch_size: requests decoded together (speed only).
            device: default cuda when there is one, else cpu; ignored with `device_map`.
            seed: seeds requests that carry no seed of their own.
            revision: hub revision (the runner pins the resolved commit).
            tokenizer: where the tokenizer is, when not beside the weights.
            trust_remote_code: run a checkpoint's own modelling code.
            attn_implementation: transformers' attention kernel (eager, sdpa, ...).
            device_map: transformers' placement ("auto" spreads over the GPUs).
            cache_dir: hub cache directory.
            model_kwargs: any other `from_pretrained` keyword, passed as it is.
        """
        import torch
        from transformers import AutoTokenizer

        self.model_name = str(model)
        self.chat_template_source = chat_template
        self.chat_template = resolve_chat_template(chat_template)
        self.batch_size = batch_size
        self.seed = int(seed)
        self.revision = revision
        named = {"revision": revision, "trust_remote_code": trust_remote_code or None,
                 "attn_implementation": attn_implementation, "device_map": device_map,
                 "cache_dir": cache_dir}
        engine = {**(model_kwargs or {}), **{k: v for k, v in named.items() if v is not None}}
        shared = {k: engine[k] for k in _SHARED_LOAD_OPTIONS if k in engine}
        tokenizer_source = tokenizer
        adapter_base = self._adapter_base(self.model_name)
        if tokenizer_source is None:
            has_tokenizer = adapter_base is None or any(
                (Path(self.model_name) / name).exists()
                for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
            )
            tokenizer_source = self.model_name if has_tokenizer else adapter_base
        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, **shared)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

        if dtype in (None, "auto"):
            torch_dtype: Any = "auto"
        else:
            torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        engine.setdefault("dtype", torch_dtype)
        if adapter_base is not None:
            from peft import AutoPeftModelForCausalLM

            self.model = AutoPeftModelForCausalLM.from_pretrained(self.model_name, **engine)
        else:
            from transformers import AutoModelForCausalLM

            self.model = AutoModelForCausalLM.from_pretrained(self.model_name, **engine)
        if "device_map" not in engine:
            self.model.to(self.device)
        else:
            self.device = next(self.model.parameters()).device
        self.model.eval()
        self.dtype = str(self.model.dtype).removeprefix("torch.")  # what "auto" resolved to
        self.eos_ids = eos_token_ids(self.tokenizer, getattr(self.model, "generation_config", None))
        config = getattr(self.model, "config", None)
        self.max_positions = getattr(config, "max_position_embeddings", None)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._forward_options = (
            {"logits_to_keep": 1}
            if "logits_to_keep" in inspect.signature(base.forward).parameters else {}
        )
        self._identity: dict[str, Any] | None = None

    @staticmethod
    def _adapter_base(model: str) -> str | None:
        """The base model of a PEFT adapter directory, or None for a full checkpoint."""
        config = Path(model) / "adapter_config.json"
        if not config.is_file():
            return None
        import json

        return json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")

    def __repr__(self) -> str:
        return f"HFBackend(model={self.model_name!r}, device={str(self.device)!r})"

    def identity(self) -> dict[str, Any]:
        """Model id or path, content hashes, the chat template's hash and the dtype that ran."""
        if self._identity is None:
            self._identity = {
                "backend": "hf", "dtype": self.dtype,
                **model_identity(self.model_name, self.chat_template_source, self.revision),
            }
        return dict(self._identity)

    # ------------------------------------------------------------------ generation
    def encode(self, request: GenerationRequest) -> list[int]:
        """The prompt token ids this backend feeds the model for `request`."""
        return encode_request(self.tokenizer, request, self.chat_template)

    def generate(self, requests: list[GenerationRequest],
                 progress: ProgressFn | None = None) -> list[Generation]:
        """Complete every request; `n` generations per request, in request order."""
        rows: list[_Row] = []
        prompt_lengths: list[int] = []
        remaining: list[int] = []
        encoded = encode_requests(self.tokenizer, requests, self.chat_template)
        for position, (request, prompt_ids) in enumerate(zip(requests, encoded, strict=True)):
            prompt_lengths.append(len(prompt_ids))
            max_new = int(request.sampling.max_tokens)
            if self.max_positions:
                room = int(self.max_positions) - len(prompt_ids)
                if room <= 0:
                    raise ValueError(
                        f"request {request.id}: prompt of {len(prompt_ids)} tokens does not "
                        f"fit the model's context of {self.max_positions}"
                    )
                max_new = min(max_new, room)
            seed = request_seed(request, self.seed)
            n = max(1, int(request.sampling.n))
            remaining.append(n)
            for index in range(n):
                rows.append(_Row(position, index, prompt_ids, max(0, max_new),
                                 random.Random(sample_seed(seed, index)),
                                 top_k=int(request.sampling.top_logprobs)))
        # Deterministic batches: longest prompts (then longest budgets) first, stable.
        order = sorted(range(len(rows)),
                       key=lambda i: (-len(rows[i].prompt_ids), -rows[i].max_new, i))
        finished = 0
        for start in range(0, len(order), self.batch_size):
            batch = [rows[i] for i in order[start:start + self.batch_size]]
            self._decode_batch(batch, requests)
            for row in batch:
                remaining[row.request_index] -= 1
                if remaining[row.request_index] == 0:
                    finished += 1
            if progress is not None:
                progress(finished)

        generations = []
        for row in rows:
            request = requests[row.request_index]
            generations.append(self._to_generation(request, row,
                                                   prompt_lengths[row.request_index]))
        return generations

    def _to_generation(self, request: GenerationRequest, row: _Row,
                       prompt_tokens: int) -> Generation:
        tokens = row.tokens
        body = tokens[:-1] if tokens and tokens[-1] in self.eos_ids else tokens
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, request.sampling.stop)
        finish = "stop" if stopped else (row.finish_reason or "length")
        return Generation(
            request_id=request.id,
            index=row.index,
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=len(tokens),
            logprobs=list(row.logprobs) if request.sampling.logprobs else None,
            tokens=_teacher_tokens(row) if row.top_k else None,
        )

    def _stop_hit(self, row: _Row, stop: tuple[str, ...]) -> bool:
        """Whether the tail of a row's text now holds one of its stop strings."""
        tail = max(len(s) for s in stop) + _STOP_TAIL_SLACK
        text = self.tokenizer.decode(row.tokens[-tail:], skip_special_tokens=True)
        return any(s and s in text for s in stop)

    def _decode_batch(self, batch: list[_Row], requests: list[GenerationRequest]) -> None:
        import torch

        device = self.device
        size = len(batch)
        sampling = [requests[row.request_index].sampling for row in batch]
        width = max(len(row.prompt_ids) for row in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((size, width), pad, dtype=torch.long)
        attention = torch.zeros((size, width), dtype=torch.long)
        for i, row in enumerate(batch):
            length = len(row.prompt_ids)
            if length:
                input_ids[i, width - length:] = torch.tensor(row.prompt_ids, dtype=torch.long)
                attention[i, width - length:] = 1
        input_ids = input_ids.to(device)
        attention = attention.to(device)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)

        temperature = torch.tensor([float(s.temperature) for s in sampling], device=device)
        top_p = torch.tensor([float(s.top_p) for s in sampling], device=device)
        presence = torch.tensor([float(s.presence_penalty) for s in sampling], device=device)
        frequency = torch.tensor([float(s.frequency_penalty) for s in sampling], device=device)
        greedy = temperature <= 0
        use_top_p = bool((top_p < 1).any())
        all_greedy = bool(greedy.all())
        use_penalties = bool((presence != 0).any() or (frequency != 0).any())
        counts = None

        steps = max(row.max_new for row in batch)
        active = [row.max_new > 0 for row in batch]
        for row in batch:
            if row.max_new <= 0:
                row.finish_reason = "length"
        if not any(active):
            return
        top_k = max(row.top_k for row in batch)
        with torch.inference_mode():
            out = self.model(input_ids=input_ids, attention_mask=attention,
                             position_ids=positions, use_cache=True, **self._forward_options)
            past = out.past_key_values
            for _step in range(steps):
                logits = out.logits[:, -1, :].float()
                vocab = logits.shape[-1]
                raw_logprobs = torch.log_softmax(logits, dim=-1)
                if top_k:  # the raw distribution's top k, before penalties and temperature
                    if top_k > vocab:
                        raise ValueError(f"top_logprobs {top_k} exceeds the model's "
                                         f"vocabulary of {vocab} tokens")
                    top = raw_logprobs.topk(top_k, dim=-1)
                    top_values = top.values.cpu().numpy()
                    top_indices = top.indices.cpu().numpy().astype("int32")
                if use_penalties:
                    if counts is None:
                        counts = torch.zeros_like(logits)
                    logits = (logits - frequency[:, None] * counts
                              - presence[:, None] * (counts > 0).float())
                chosen = logits.argmax(dim=-1)
                if not all_greedy:  # a greedy row's draws are never used: skip them all
                    chosen = torch.where(greedy, chosen, self._sample(
                        logits, batch, greedy, temperature, top_p if use_top_p else None))
                chosen_logprobs = raw_logprobs.gather(-1, chosen[:, None]).squeeze(-1)
                chosen_list = chosen.tolist()
                logprob_list = chosen_logprobs.tolist()
                for i, row in enumerate(batch):
                    if not active[i]:
                        continue
                    token = chosen_list[i]
                    row.tokens.append(token)
                    row.logprobs.append(logprob_list[i])
                    if row.top_k:
                        row.top_ids.append(top_indices[i, :row.top_k])
                        row.top_logprobs.append(top_values[i, :row.top_k])
                    stop = sampling[i].stop
                    if token in self.eos_ids or (stop and self._stop_hit(row, stop)):
                        row.finish_reason = "stop"
                        active[i] = False
                    elif len(row.tokens) >= row.max_new:
                        row.finish_reason = "length"
                        active[i] = False
                if not any(active):
                    break
                feed = torch.tensor([token if active[i] else pad
                                     for i, token in enumerate(chosen_list)],
                                    dtype=torch.long, device=device)
                if counts is not None:
                    counts.scatter_add_(-1, feed[:, None],
                                        torch.ones((size, 1), device=device))
                attention = torch.cat(
                    [attention, torch.ones((size, 1), dtype=attention.dtype, device=device)],
                    dim=-1,
                )
                positions = positions[:, -1:] + 1
                out = self.model(input_ids=feed[:, None], attention_mask=attention,
                                 position_ids=positions, past_key_values=past, use_cache=True,
                                 **self._forward_options)
                past = out.past_key_values

    @staticmethod
    def _sample(logits: Any, batch: list[_Row], greedy: Any, temperature: Any,
                top_p: Any | None) -> Any:
        """One token per row, inverse-CDF on each row's own next draw (module docstring)."""
        import torch

        scaled = logits / torch.where(greedy, 1.0, temperature)[:, None]
        probs = torch.softmax(scaled, dim=-1)
        if top_p is not None:
            sorted_probs, sorted_index = probs.sort(dim=-1)
            cumulative = sorted_probs.cumsum(dim=-1)
            drop = cumulative <= (1 - top_p)[:, None]
            drop[:, -1] = False
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, sorted_index, sorted_probs)
        cdf = probs.double().cumsum(dim=-1)
        draws = torch.tensor([row.rng.random() for row in batch],
                             dtype=torch.float64, device=logits.device)
        target = (draws * cdf[:, -1])[:, None]
        sampled = torch.searchsorted(cdf, target, right=True).squeeze(-1)
        return sampled.clamp(max=logits.shape[-1] - 1)

    def close(self) -> None:
        """Drop the model and free accelerator memory."""
        import gc

        import torch

        self.model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _teacher_tokens(row: _Row) -> TeacherTokens:
    """A decoded row's tokens with the top-k log-probabilities kept at each position."""
    import numpy

    if not row.tokens:
        empty = (0, row.top_k)
        return TeacherTokens(numpy.zeros(0, numpy.int32), numpy.zeros(empty, numpy.int32),
                             numpy.zeros(empty, numpy.float32))
    return TeacherTokens(numpy.array(row.tokens, dtype=numpy.int32),
                         numpy.stack(row.top_ids).astype(numpy.int32),
                         numpy.stack(row.top_logprobs).astype(numpy.float32))
