"""Generation through any OpenAI-compatible HTTP endpoint (OpenAI, a vLLM server, ...).

Chat `messages` go to `/chat/completions` (the server applies its own chat template, so a
`chat_template` given here is ignored, with a warning); a raw `prompt` goes to
`/completions`. Each request is one API call with `n`, `temperature`, `top_p`,
`max_tokens`, `presence_penalty`, `frequency_penalty`, `stop`, `seed` (from
`Sampling.seed`, else derived from the backend seed and the request id, as the other
backends do; whether the server honours it is the server's business) and `logprobs`
(the chosen tokens' log-probabilities). `max_tokens_param="max_completion_tokens"` sends
the chat limit under OpenAI's newer name (its reasoning models refuse `max_tokens`).
Further options (`**extra`: `extra_body`, `extra_headers`, `user`, ...) are passed to
every create call unchanged.

`top_logprobs` (k, for logit distillation) needs token ids, which only a vLLM server
gives (`return_tokens_as_token_ids`, sent in `extra_body`: tokens come back as
"token_id:123"); a reply with plain token strings (OpenAI's own API, other servers)
raises `TokenIdsMissing`, since text tokens cannot be mapped back to ids faithfully. The
server is asked for k + 1 alternatives and the k most likely are kept: vLLM builds each
position's list from a dict that starts with the sampled token, so when that token is not
among the top k, its first k entries miss the k-th most likely token. A vLLM server's
`--max-logprobs` (default 20) must therefore be at least k + 1. Alternatives come back
as the server computed them (vLLM: raw log-probabilities, -inf clamped to -9999).

Calls run on the official SDK's `AsyncOpenAI`, at most `max_concurrency` at a time. The
SDK's own retries are off; this module retries HTTP 408 / 409 / 429 / 5xx, timeouts and
connection errors up to `max_retries` times with exponential backoff and jitter
(honouring `Retry-After`), logging each retry on the `distill.backends.openai` logger.

`completion_tokens` is exact when logprobs were asked for (one per token) or `n` is 1;
otherwise the response's total is split evenly across the `n` choices and
`extra["completion_tokens_estimated"]` is set. `finish_reason` "length" is kept, every
other reason ("stop", "content_filter", ...) reads "stop".

The API key is read from the environment variable named by `api_key_env` (None: no key,
for local servers) when the backend is built; it is kept in memory only and never
appears in `repr`, logs or `identity()`, which is the base URL and the model name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import hashlib
import json
import logging
import os
import random
import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from distill.backends.base import (
    FAILED,
    Generation,
    GenerationRequest,
    ProgressFn,
    request_seed,
)
from distill.registry import BACKENDS
from distill.teacher_tokens import TeacherTokens

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 429})
# the run's own configuration is wrong (key, model name, base URL): no request can succeed
FATAL_STATUS = frozenset({401, 403, 404})
NO_KEY = "EMPTY"  # what OpenAI-compatible servers without authentication accept


class _Secret:
    """Holds the API key so that `repr`, `vars()` and logging never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        """The key itself, for the client only."""
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def _run_sync(coroutine: Any) -> Any:
    """Run a coroutine to completion, also from code already inside an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _retry_after(headers: Any) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, if the server sent one."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


@BACKENDS.register("openai")
class OpenAIBackend:
    """An OpenAI-compatible endpoint behind the backend protocol (see the module docstring)."""

    name = "openai"
    # where the server is and how patiently it is asked: the model name is the identity
    LOADS_WEIGHTS: ClassVar[bool] = False  # does `model` name weights to load here?
    OPERATIONAL: ClassVar[frozenset[str]] = frozenset({
        "base_url", "api_key_env", "max_concurrency", "max_retries", "timeout", "backoff_base",
        "backoff_max"})

    def __init__(self, model: str, base_url: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY",
                 max_concurrency: Annotated[int, Field(ge=1)] = 8,
                 max_retries: Annotated[int, Field(ge=0)] = 5,
                 timeout: Annotated[float, Field(gt=0)] = 60.0, chat_template: str | None = None,
                 seed: int = 0, backoff_base: Annotated[float, Field(ge=0)] = 0.5,
                 backoff_max: Annotated[float, Field(ge=0)] = 30.0,
                 max_tokens_param: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
                 **extra: Any) -> None:
        # The signature declares the engine options (distill.engine_options); `**extra`
        # takes any key on purpose: the SDK's extra_body, extra_headers, user, ...
        import openai

        self.model = str(model)
        self.api_key_env = api_key_env
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ValueError(
                    f"the API key variable {api_key_env} is not set; set it, or set "
                    "api_key_env to null for a server without authentication"
                )
        else:
            key = NO_KEY
        self._api_key = _Secret(key)
        self.base_url = str(base_url or os.environ.get("OPENAI_BASE_URL")
                            or "https://api.openai.com/v1").rstrip("/")
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.timeout = float(timeout)
        self.seed = int(seed)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.max_tokens_param = max_tokens_param
        self.extra = dict(extra)
        self.attempts = 0  # API calls made, retries included (for tests and reports)
        self.retries = 0
        self._openai = openai
        if chat_template is not None:
            logger.warning("openai backend: chat_template is ignored; the server at %s "
                           "applies its own chat template", self.base_url)

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model!r}, base_url={self.base_url!r})"

    def identity(self) -> dict[str, Any]:
        """The endpoint and the model name (never the key)."""
        identity = {"backend": "openai", "source": "api", "base_url": self.base_url,
                    "model": self.model}
        payload = json.dumps(identity, sort_keys=True)
        identity["fingerprint"] = hashlib.sha256(payload.encode()).hexdigest()
        return identity

    # ------------------------------------------------------------------ generation
    def generate(self, requests: list[GenerationRequest],
                 progress: ProgressFn | None = None) -> list[Generation]:
        """Complete every request; `n` generations per request, in request order."""
        if not requests:
            return []
        results = _run_sync(self._generate_all(requests, progress))
        return [generation for batch in results for generation in batch]

    async def _generate_all(self, requests: list[GenerationRequest],
                            progress: ProgressFn | None) -> list[list[Generation]]:
        client = self._openai.AsyncOpenAI(api_key=self._api_key.get(), base_url=self.base_url,
                                          max_retries=0, timeout=self.timeout)
        semaphore = asyncio.Semaphore(self.max_concurrency)
        finished = 0

        async def one(request: GenerationRequest) -> list[Generation]:
            nonlocal finished
            async with semaphore:
                result = await self._with_retries(request, client)
            finished += 1
            if progress is not None:
                progress(finished)
            return result

        try:
            return await asyncio.gather(*(one(r) for r in requests))
        finally:
            await client.close()

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        ceiling = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # exponential, jittered
        if retry_after is not None:
            delay = max(delay, min(retry_after, max(self.backoff_max, 60.0)))
        return delay

    async def _with_retries(self, request: GenerationRequest, client: Any) -> list[Generation]:
        """The request's generations, or one FAILED generation saying why there are none.

        A server that refuses the whole run (bad key, unknown model or path) raises.
        """
        openai = self._openai
        for attempt in range(self.max_retries + 1):
            retry_after = None
            self.attempts += 1
            try:
                return await self._call(request, client)
            except openai.APIConnectionError as error:  # timeouts included
                reason = type(error).__name__
            except MalformedReply as error:
                reason = f"malformed reply ({error})"
            except openai.APIStatusError as error:
                status = error.status_code
                if status in FATAL_STATUS:
                    raise
                if status not in RETRY_STATUS and status < 500:
                    # this request's own fault (too long, a value the model refuses): no
                    # retry changes the answer, and the stage goes on without it
                    return [_failed(request, f"HTTP {status} from {self.base_url}: "
                                             f"{_message(error)}", retry=False)]
                reason = f"HTTP {status}"
                retry_after = _retry_after(getattr(error.response, "headers", None))
            if attempt == self.max_retries:
                logger.warning("request %s: %s; giving up after %d attempts",
                               request.id, reason, attempt + 1)
                return [_failed(request, f"{reason} from {self.base_url} after "
                                         f"{attempt + 1} attempts", retry=True)]
            delay = self._backoff(attempt, retry_after)
            self.retries += 1
            logger.warning("request %s: %s (attempt %d of %d); retrying in %.2fs",
                           request.id, reason, attempt + 1, self.max_retries + 1, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _common_options(self, request: GenerationRequest) -> dict[str, Any]:
        s = request.sampling
        options: dict[str, Any] = {
            "model": self.model,
            "n": max(1, int(s.n)),
            "temperature": float(s.temperature),
            "top_p": float(s.top_p),
            "max_tokens": int(s.max_tokens),
            "presence_penalty": float(s.presence_penalty),
            "frequency_penalty": float(s.frequency_penalty),
            "seed": request_seed(request, self.seed),
        }
        if s.stop:
            options["stop"] = list(s.stop)
        return options

    async def _call(self, request: GenerationRequest, client: Any) -> list[Generation]:
        s = request.sampling
        options = self._common_options(request)
        extra = dict(self.extra)
        chat = request.messages is not None
        top_k = int(s.top_logprobs)
        if chat:
            options[self.max_tokens_param] = options.pop("max_tokens")
            if s.logprobs or top_k:
                options["logprobs"] = True
            if top_k:  # one more than kept: see the module docstring
                options["top_logprobs"] = top_k + 1
        elif s.logprobs or top_k:
            options["logprobs"] = top_k + 1 if top_k else 0
        if top_k:
            extra["extra_body"] = {**(extra.get("extra_body") or {}),
                                   "return_tokens_as_token_ids": True}
        try:
            if chat:
                response = await client.chat.completions.create(
                    messages=request.messages, **options, **extra)
            else:
                response = await client.completions.create(
                    prompt=request.prompt, **options, **extra)
        except (json.JSONDecodeError, AttributeError) as error:
            # a 200 whose body is cut off, or JSON that is not an object: the SDK's parser
            raise MalformedReply(f"{type(error).__name__}: {error}") from None
        choices = _choices(response, chat, s.logprobs, options["n"], top_k, self.base_url)
        usage = response.usage
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        total = int(getattr(usage, "completion_tokens", 0) or 0)
        choices.sort(key=lambda c: c[0])
        generations = []
        for position, (index, text, finish, logprobs, tokens) in enumerate(choices):
            extra_fields: dict[str, Any] = {}
            if tokens is not None:
                completion_tokens = len(tokens)
            elif logprobs is not None:
                completion_tokens = len(logprobs)
            elif len(choices) == 1:
                completion_tokens = total
            else:
                share, rest = divmod(total, len(choices))
                completion_tokens = share + (1 if position < rest else 0)
                extra_fields["completion_tokens_estimated"] = True
            generations.append(Generation(
                request_id=request.id,
                index=int(index),
                text=text,
                finish_reason="length" if finish == "length" else "stop",
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                logprobs=[float(x) for x in logprobs] if logprobs is not None else None,
                extra=extra_fields,
                tokens=tokens,
            ))
        return generations

    def close(self) -> None:
        """Nothing to free: clients live only for the duration of one `generate` call."""


class MalformedReply(Exception):
    """A 200 reply that is not a completion (cut-off JSON, no choices): retried."""


class TokenIdsMissing(ValueError):
    """Top-k log-probabilities were asked for and the server named tokens by their text.

    Not retried: the server does not honour `return_tokens_as_token_ids`, so no request
    to it can succeed.
    """


def _choices(response: Any, chat: bool, logprobs: bool, n: int, top_k: int = 0,
             server: str = "the server"
             ) -> list[tuple[int, str, str | None, list[float] | None, TeacherTokens | None]]:
    """(index, text, finish reason, logprobs, teacher tokens) per choice of a parsed reply.

    Raises:
        MalformedReply: the reply lacks `choices`, has other than `n`, a choice lacks
            its message, or lacks the top-k log-probabilities asked for.
        TokenIdsMissing: top-k log-probabilities came with token strings, not ids.
    """
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or len(choices) != n:
        found = "no choices" if not choices else f"{len(choices)} choices"
        raise MalformedReply(f"{found}, expected {n}")
    parsed = []
    for c in choices:
        tokens = None
        if chat:
            if c.message is None:
                raise MalformedReply(f"choice {c.index} has no message")
            text = c.message.content
            content = c.logprobs.content if c.logprobs is not None else None
            chosen = [t.logprob for t in content] if logprobs and content is not None else None
            if top_k:
                if content is None:
                    raise MalformedReply(f"choice {c.index} has no logprobs")
                tokens = _teacher_tokens(
                    [t.token for t in content],
                    [[(a.token, a.logprob) for a in t.top_logprobs or ()] for t in content],
                    top_k, server)
        else:
            text = c.text
            given = c.logprobs
            chosen = (list(given.token_logprobs)
                      if logprobs and given is not None
                      and given.token_logprobs is not None else None)
            if top_k:
                if given is None or given.tokens is None or given.top_logprobs is None:
                    raise MalformedReply(f"choice {c.index} has no logprobs")
                tokens = _teacher_tokens(
                    list(given.tokens),
                    [list((step or {}).items()) for step in given.top_logprobs], top_k, server)
        parsed.append((c.index, text or "", c.finish_reason, chosen, tokens))
    return parsed


def _teacher_tokens(sampled: list[str], alternatives: list[list[tuple[str, float]]],
                    top_k: int, server: str) -> TeacherTokens:
    """A completion's tokens and the k most likely alternatives at each, from a reply.

    Raises:
        MalformedReply: a position has fewer than k alternatives.
        TokenIdsMissing: a token is named by its text rather than "token_id:<id>".
    """
    import numpy

    top_ids = numpy.zeros((len(sampled), top_k), dtype=numpy.int32)
    top_logprobs = numpy.zeros((len(sampled), top_k), dtype=numpy.float32)
    for position, step in enumerate(alternatives):
        if len(step) < top_k:
            raise MalformedReply(f"{len(step)} top logprobs at token {position}, "
                                 f"expected at least {top_k}")
        # most likely first; the extra entry (see the module docstring) falls off the end
        ranked = sorted(step, key=lambda alternative: -alternative[1])[:top_k]
        top_ids[position] = [_token_id(token, server) for token, _ in ranked]
        top_logprobs[position] = [logprob for _, logprob in ranked]
    token_ids = numpy.array([_token_id(token, server) for token in sampled], dtype=numpy.int32)
    return TeacherTokens(token_ids, top_ids, top_logprobs)


_TOKEN_ID_PREFIX = "token_id:"


def _token_id(token: str, server: str) -> int:
    """The id in vLLM's "token_id:<id>" form of a token."""
    if not token.startswith(_TOKEN_ID_PREFIX):
        raise TokenIdsMissing(
            f"top_logprobs needs token ids, and {server} named a token by its text "
            f"({token!r}): logit distillation through the openai backend needs a vLLM server, "
            "which honours return_tokens_as_token_ids")
    return int(token[len(_TOKEN_ID_PREFIX):])


def _failed(request: GenerationRequest, error: str, retry: bool) -> Generation:
    """The generation standing for a request with no answer (see `FAILED`)."""
    return Generation(request_id=request.id, index=0, text="", finish_reason=FAILED,
                      extra={"error": error, "retry": retry})


def _message(error: Any) -> str:
    """The server's own message from an error reply, on one line."""
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else None
        if message:
            return " ".join(str(message).split())
    return " ".join(str(error).split())
