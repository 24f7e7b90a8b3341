"""Models as a recipe names them, and as a stage loads them.

- `ModelSpec`: a model to load. A hub id (`org/name`, at a `revision`), a local
  checkpoint directory, or `scheme:name` for models a plugin provides
  (`microworld:teacher`); and the chat template it is used with. Recipes may write a bare
  string for it.
- `ServedModel`: a model to load and the backend that serves it (teacher, judges,
  answer models).
- `Terms`: a model's terms of use beside its licence (`license`, `terms` on every spec:
  what the data and model cards carry, `distill.licences`; never in a fingerprint).
- `ModelRef`: a resolved model: the path or hub id the libraries load, and its identity
  (`distill.identity`), which every fingerprint that depends on the model folds in. A
  hub id is downloaded (offline: found in the cache) and pinned to its commit when it is
  resolved, before any stage runs.

Schemes are registered in `distill.registry.MODEL_SCHEMES` by the plugins that own them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from distill.budget import Price
from distill.engine_options import check_engine_options, relocated
from distill.registry import BACKENDS, MODEL_SCHEMES
from distill.settings import Strict, base_dir, resolve_path

log = logging.getLogger("distill")

BackendName = BACKENDS.name_type()
_SCHEME = re.compile(r"^([a-z][a-z0-9_]*):(.+)$")


@dataclass(frozen=True)
class ModelScheme:
    """Models a plugin provides: their names, and how to get one's checkpoint directory."""

    names: tuple[str, ...]
    resolve: Callable[[str], str]  # name -> checkpoint directory (built on first use)
    license: str | None = None  # the licence of the plugin's models, for the cards


class Terms(Strict):
    """A model's terms of use, beside its licence (API terms, a use policy)."""

    text: str = Field(description="The terms: free text or a URL.")
    restricts_training: bool = Field(False, description="The terms restrict using the "
                                     "model's outputs to train other models: `distill "
                                     "validate` warns, and the cards say so.")

    @model_validator(mode="before")
    @classmethod
    def _bare_string(cls, value: Any) -> Any:
        return {"text": value} if isinstance(value, str) else value


# Descriptive fields: left out of dumps while unset (the resolved recipe and the judge's
# checkpoint key stay as they were) and out of fingerprints (OPERATIONAL): a licence
# never changes what a model writes.
LICENCE_FIELDS = frozenset({"license", "terms"})


class ModelSpec(Strict):
    """A model to load, and the chat template it is used with."""

    model: str = Field(description="Hub id (org/name), local checkpoint directory, or "
                       "scheme:name of a plugin's model (microworld:teacher).")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) "
                                 "of a hub id; null: main.")
    chat_template: str | None = Field(None, description="Path to a Jinja chat template that "
                                      "replaces the tokenizer's own.")
    license: str | None = Field(
        None, exclude_if=lambda value: value is None,
        description="The model's licence, as a hub card names it (apache-2.0, mit, llama3.1, "
        "gemma, other, ...); null: read from the model's card (a hub id's README.md in the "
        "local cache, a checkpoint directory's README.md, a plugin's declaration). The data "
        "and model cards carry it (docs/cards.md).")
    terms: Terms | None = Field(
        None, exclude_if=lambda value: value is None,
        description="The model's terms of use: free text or a URL, or {text, "
        "restricts_training}; `distill validate` warns when they restrict training other "
        "models on its outputs.")

    OPERATIONAL: ClassVar[frozenset[str]] = LICENCE_FIELDS

    @model_validator(mode="before")
    @classmethod
    def _bare_string(cls, value: Any) -> Any:
        return {"model": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _model(self, info: ValidationInfo) -> ModelSpec:
        if self.loads_weights():
            try:
                self.model = check_model_reference(self.model, base_dir(info))
            except ValueError as error:
                # checked once the backend is known, but the error is `model`'s: name it
                detail = InitErrorDetails(type=PydanticCustomError("value_error", "{error}",
                                                                   {"error": str(error)}),
                                          loc=("model",), input=self.model)
                raise ValidationError.from_exception_data(type(self).__name__,
                                                          [detail]) from None
        return self

    def loads_weights(self) -> bool:
        """Whether `model` names weights to load here (not a model an API server names)."""
        return True

    @field_validator("chat_template")
    @classmethod
    def _template(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_path(value, info)


class ServedModel(ModelSpec):
    """A model to load and the backend that serves it."""

    backend: BackendName = Field("hf", description="Which backend serves the model.")
    engine: dict[str, Any] = Field(default_factory=dict, description="Options of the "
                                   "backend, checked against its own declaration when the "
                                   "recipe is loaded (see Engine options below): hf "
                                   "batch_size, dtype, device, ...; vllm "
                                   "gpu_memory_utilization, max_model_len, "
                                   "tensor_parallel_size and vLLM's engine arguments; openai "
                                   "base_url, max_concurrency, ... and the SDK's extra_body, "
                                   "extra_headers.")
    max_failed_fraction: float = Field(
        0.1, ge=0.0, le=1.0, description="Requests to this model that run out of retries "
        "are rejected and asked again on the next run; when more than this share of a "
        "stage's requests (and at least 10) fail, the server is taken for down and the "
        "stage stops, its finished chunks saved.")
    price: Price | None = Field(None, description="What the model costs per million tokens "
                                "(API backends): budget.max_cost counts its requests at it "
                                "(`distill plan` prices every request at teacher.price). Not "
                                "part of any fingerprint.")

    # how patiently a server is asked and what it costs, not what it answers
    OPERATIONAL: ClassVar[frozenset[str]] = LICENCE_FIELDS | {"max_failed_fraction", "price"}

    def loads_weights(self) -> bool:
        """False for a backend that sends the name to a server (`openai`)."""
        return BACKENDS.get(self.backend).LOADS_WEIGHTS

    @model_validator(mode="after")
    def _engine(self) -> ServedModel:
        # the backend's constructor declares its options; errors are located under engine
        try:
            self.engine = check_engine_options(BACKENDS.get(self.backend), self.backend,
                                               self.engine)
        except ValidationError as error:
            raise ValidationError.from_exception_data(type(self).__name__,
                                                      relocated(error, "engine")) from None
        return self


def semantic_engine_options(backend: str, engine: dict[str, Any]) -> dict[str, Any]:
    """A backend's engine options as they enter a fingerprint: all but the speed-only."""
    operational = BACKENDS.get(backend).OPERATIONAL
    return {key: value for key, value in sorted(engine.items()) if key not in operational}


def check_model_reference(value: str, base: Path) -> str:
    """Keep hub ids and known `scheme:name`s; resolve and check local directories."""
    match = _SCHEME.match(value)
    if match:
        scheme, name = match.groups()
        provider: ModelScheme = MODEL_SCHEMES.get(scheme)
        if name not in provider.names:
            raise ValueError(f"unknown {scheme} model {name!r}; choose one of "
                             f"{list(provider.names)}")
        return value
    candidate = (base / Path(value).expanduser())
    looks_local = value.startswith((".", "/", "~")) or value.count("/") != 1
    if looks_local or candidate.exists():
        path = candidate.resolve()
        if not path.exists():
            raise ValueError(f"file or directory not found: {value} (looked at {path})")
        return str(path)
    return value  # "org/name" on a model hub, loaded by the backend


def model_path(model: str) -> str:
    """What the libraries load for a reference: a plugin's checkpoint, or `model` itself."""
    match = _SCHEME.match(model)
    if not match:
        return model
    scheme, name = match.groups()
    log.info("%s: using the cached build, or building it now (a few minutes, once)", model)
    return MODEL_SCHEMES.get(scheme).resolve(name)


@dataclass
class ModelRef:
    """A model some stage loads, and what makes it that model (for fingerprints).

    `path` is what the libraries load: a checkpoint directory, or a hub id. A hub id at a
    pinned `revision` becomes its snapshot directory in the local cache, because the
    stages load `path` and take no revision: by id they would load the default branch.
    """

    path: str
    identity: dict[str, Any]
    chat_template: str | None = None
    revision: str | None = None

    def pinned(self) -> tuple[str, str | None]:
        """(model, revision) that load exactly the fingerprinted model on any machine.

        A hub model is its id at the resolved commit, which a machine without this one's
        cache (a Ray replica on another node) downloads; anything else is its path.
        """
        if self.identity.get("source") == "hub":
            return self.identity["model"], self.identity["commit"]
        return self.path, None

    @classmethod
    def resolve(cls, spec: ModelSpec) -> ModelRef:
        """Find (download, or build) the model's files and hash what makes it that model.

        A hub id is resolved to a commit here, before any fingerprint uses it: its files
        are downloaded at the spec's revision, or, offline, found in the local cache
        (`distill.identity.hub_snapshot`); one that is neither raises
        `distill.identity.ModelUnavailable`. A model a server serves (backend `openai`)
        is only named: nothing is downloaded.
        """
        from distill.identity import hub_snapshot, model_identity, served_identity

        if not spec.loads_weights():
            return cls(path=spec.model, chat_template=spec.chat_template,
                       revision=spec.revision,
                       identity=served_identity(spec.model, chat_template=spec.chat_template,
                                                revision=spec.revision))
        path = model_path(spec.model)
        identity = model_identity(path, chat_template=spec.chat_template,
                                  revision=spec.revision)
        if identity["source"] == "hub" and spec.revision not in (None, "main"):
            path = str(hub_snapshot(path, spec.revision).path)  # resolved just now: cached
        return cls(path=path, identity=identity, chat_template=spec.chat_template,
                   revision=spec.revision)
