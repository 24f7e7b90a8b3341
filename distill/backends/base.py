"""The backend protocol: requests in, generations out.

A request holds chat messages (rendered with the model's chat template) or a raw prompt
(sent as is: the Self-Instruct numbered-list prompt is a raw completion), sampling
parameters and `n`. A backend returns one `Generation` per sample, tagged with the
request id and the sample index, in request order.

Backends register in `distill.registry.BACKENDS` under the name recipes use (`hf`,
`vllm`, `openai`) and import their libraries only when built, so `import distill` never
imports vLLM. Each names the engine options that change only speed in `OPERATIONAL`; the
others (dtype, max_model_len, ...) enter generation fingerprints.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

from distill.registry import BACKENDS
from distill.teacher_tokens import TeacherTokens


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters shared by every backend (OpenAI / vLLM names and meanings)."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    # k: keep the k most likely tokens and their raw log-probabilities at every generated
    # position (`Generation.tokens`), for logit distillation; 0: none
    top_logprobs: int = 0

    def __post_init__(self) -> None:
        # vLLM reads a negative k as "the whole vocabulary"; here it is a mistake
        if self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be 0 (none) or a k >= 1, not "
                             f"{self.top_logprobs}")

    def as_dict(self) -> dict[str, Any]:
        """Plain-dict form, for lineage and fingerprints.

        `top_logprobs` appears only when it is set: a k changes the request (its digest,
        hence its checkpoint) and the lineage, while requests without one keep the form
        they had before the field existed, so their checkpoints stay valid.
        """
        data = asdict(self)
        data["stop"] = list(self.stop)
        if not self.top_logprobs:
            del data["top_logprobs"]
        return data


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to complete: chat `messages` or a raw `prompt`, never both."""

    id: str
    sampling: Sampling
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError(f"request {self.id}: give exactly one of messages or prompt")


# The finish reason of a request the backend could not get answered (a server that kept
# failing or sent no completion): text is empty, `extra["error"]` says why. The generation
# context records it as a failed request and asks again on the next run
# (distill.generate.failures); methods never see it.
FAILED = "error"


@dataclass
class Generation:
    """One sampled completion of one request."""

    request_id: str
    index: int
    text: str
    # "stop" or "length" (truncated), as OpenAI and vLLM report it; FAILED: no answer
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    logprobs: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # the completion's tokens with the top-k log-probabilities at each, when the request
    # asked for `sampling.top_logprobs`; kept beside the shard, never in its JSONL
    tokens: TeacherTokens | None = None


def request_seed(request: GenerationRequest, default_seed: int = 0) -> int:
    """The seed a request samples with.

    `sampling.seed` when set, else one derived from the backend's seed and the request id,
    so it never depends on the batch a request runs in, nor on its position there.
    """
    if request.sampling.seed is not None:
        return int(request.sampling.seed)
    digest = hashlib.sha256(f"{default_seed}\0{request.id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample `index` of a request seeded with `seed` (vLLM's rule: seed + i)."""
    return seed + index


# Called with the number of finished requests so far; drives progress bars.
ProgressFn = Callable[[int], None]


class Backend(Protocol):
    """What the generation stages need from a model server."""

    # engine options that change only speed (batch sizes, memory, parallelism, endpoints)
    OPERATIONAL: ClassVar[frozenset[str]]
    # whether the model reference names weights loaded here (else a server's model name)
    LOADS_WEIGHTS: ClassVar[bool]

    def identity(self) -> dict[str, Any]:
        """What makes this model's outputs what they are (model, weights hash, template)."""
        ...

    def generate(
        self, requests: list[GenerationRequest], progress: ProgressFn | None = None
    ) -> list[Generation]:
        """Complete every request; return `n` generations per request, in request order."""
        ...

    def close(self) -> None:
        """Free the model (GPU memory above all) before the next stage needs it."""
        ...


def load_backend(name: str, **options: Any) -> Backend:
    """Instantiate a backend by its recipe name."""
    return BACKENDS.get(name)(**options)

