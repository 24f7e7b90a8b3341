"""The licences and terms of use of the models that write a run's data.

A model's licence is what its spec states (`license:`, `terms:` on any model a recipe
names), or else what its card says: a hub id's README.md in the local Hugging Face cache
(offline, at the pinned commit: `huggingface_hub.try_to_load_from_cache`), a checkpoint
directory's own README.md, or the licence a plugin declares for its `scheme:` models
(`ModelScheme.license`). Nothing is downloaded: a card not on disk leaves it unknown.

`RESTRICTIONS` (one table, here) says which licences and API terms restrict training other
models on a model's outputs; `distill validate` and `distill run` warn about them, and the
data and model cards carry them (distill.cards). This is a reminder to read the terms, not
legal advice: the table holds the well-known cases only.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from distill.models import ModelSpec
from distill.registry import MODEL_SCHEMES

log = logging.getLogger("distill")

_SCHEME = re.compile(r"^([a-z][a-z0-9_]*):(.+)$")
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")

_LLAMA_NO_OTHER_LLMS = ("forbids using the model's outputs to improve any large language "
                        "model other than Llama and its derivatives")
_LLAMA_NAMING = ("a model trained on its outputs and distributed must be named 'Llama...' "
                 "and credit 'Built with Llama', under Meta's acceptable use policy")
# Licence ids (as hub cards write them) whose terms reach models trained on the outputs.
RESTRICTIONS: dict[str, str] = {
    "llama2": f"the Llama 2 licence {_LLAMA_NO_OTHER_LLMS}",
    "llama3": f"the Llama 3 licence {_LLAMA_NO_OTHER_LLMS}",
    "llama3.1": f"under the Llama 3.1 licence {_LLAMA_NAMING}",
    "llama3.2": f"under the Llama 3.2 licence {_LLAMA_NAMING}",
    "llama3.3": f"under the Llama 3.3 licence {_LLAMA_NAMING}",
    "llama4": f"under the Llama 4 licence {_LLAMA_NAMING}",
    "gemma": ("under the Gemma Terms of Use a model trained on Gemma's outputs is a Model "
              "Derivative, bound by Gemma's use restrictions"),
}
# API hosts whose terms forbid using outputs to build competing models.
API_TERMS: dict[str, str] = {
    "api.openai.com": ("OpenAI's terms of use forbid using output to develop models that "
                       "compete with OpenAI (the Alpaca debate)"),
    "api.anthropic.com": ("Anthropic's commercial terms forbid using the services to build "
                          "a competing product or to train competing AI models"),
    "generativelanguage.googleapis.com": ("the Gemini API terms forbid using the services to "
                                          "develop models that compete with them"),
    "aiplatform.googleapis.com": ("Google Cloud's generative AI terms forbid using outputs "
                                  "to develop models that compete with Google's"),
}
# Where the openai backend sends requests when neither engine.base_url nor the variable is
# set (distill.backends.openai): the host whose terms then apply.
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Licence:
    """A model's (or a dataset's) licence, its terms, and where they were read."""

    license: str | None = None  # a hub card's id (apache-2.0, llama3.1, other); None: unknown
    license_name: str | None = None  # with `other`: which licence
    license_link: str | None = None
    terms: str | None = None  # free text or a URL
    restricts_training: bool = False  # as the recipe marks the terms
    source: str = ""  # where the licence was read; "" when it was not found

    @property
    def known(self) -> bool:
        """Whether the licence was stated or read (`other` counts when it is named)."""
        return bool(self.license) and (self.license != "other" or bool(
            self.license_name or self.license_link))

    def label(self) -> str:
        """`llama3.1`, `other (Acme licence)`, or `unknown`."""
        if not self.license:
            return "unknown"
        name = self.license_name or self.license_link
        return f"{self.license} ({name})" if self.license == "other" and name else self.license


@dataclass(frozen=True)
class Writer:
    """A model whose outputs make (or choose) the training data, and its licence."""

    role: str  # teacher, generate.answers:0, filters.1.judge, ...
    model: str
    revision: str | None
    commit: str | None
    backend: str | None
    licence: Licence
    restriction: str | None  # why training other models on its outputs is restricted

    def to_json(self) -> dict[str, Any]:
        """The JSON form (licences.json, the card's front matter)."""
        data = asdict(self)
        data.update(data.pop("licence"))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Writer:
        """Read `to_json`'s form back."""
        fields = set(Licence.__dataclass_fields__)
        licence = Licence(**{k: v for k, v in data.items() if k in fields})
        return cls(licence=licence, **{k: v for k, v in data.items() if k not in fields})


def model_licence(spec: ModelSpec, commit: str | None = None) -> Licence:
    """The spec's stated licence and terms; a licence not stated is read from the card."""
    terms = spec.terms.text if spec.terms else None
    restricts = bool(spec.terms and spec.terms.restricts_training)
    if spec.license:
        return Licence(license=spec.license, terms=terms, restricts_training=restricts,
                       source="recipe")
    found = card_licence(spec.model, commit or spec.revision)
    return Licence(license=found.license, license_name=found.license_name,
                   license_link=found.license_link, terms=terms,
                   restricts_training=restricts, source=found.source)


def card_licence(model: str, revision: str | None = None) -> Licence:
    """The licence a model's card declares, from disk only; `Licence()` when none does."""
    match = _SCHEME.match(model)
    if match:
        scheme = match.group(1)
        declared = MODEL_SCHEMES.get(scheme).license if scheme in MODEL_SCHEMES else None
        return Licence(license=declared, source=f"plugin {scheme}" if declared else "")
    local = Path(model).expanduser()
    if local.is_dir():
        readme = local / "README.md"
        return _read_card(readme, f"{readme}") if readme.is_file() else Licence()
    if not _HUB_ID.match(model):
        return Licence()  # a name an API server knows (gpt-4o): no card here
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "README.md", revision=revision or "main")
    if not isinstance(cached, str):  # None: not cached; a sentinel: the repo has none
        return Licence()
    commit = Path(cached).parent.name
    return _read_card(Path(cached), f"hub card {model}@{commit[:12]}")


def _read_card(path: Path, source: str) -> Licence:
    from huggingface_hub import ModelCard

    try:
        data = ModelCard.load(path, ignore_metadata_errors=True).data
    except (ValueError, OSError, UnicodeDecodeError) as error:
        log.warning("%s: cannot read its front matter (%s); licence unknown", path, error)
        return Licence()
    value = data.license
    if isinstance(value, list):  # a card may list several; the first is the model's
        value = value[0] if value else None
    if not value:
        return Licence()
    return Licence(license=str(value), license_name=getattr(data, "license_name", None),
                   license_link=getattr(data, "license_link", None), source=source)


def restriction(spec: ModelSpec, licence: Licence) -> str | None:
    """Why the terms restrict training other models on `spec`'s outputs, or None."""
    reasons = []
    if licence.restricts_training:
        reasons.append(f"its terms restrict training other models on its outputs "
                       f"({licence.terms})")
    for name in dict.fromkeys(n.lower() for n in (licence.license, licence.license_name) if n):
        if name in RESTRICTIONS:
            reasons.append(RESTRICTIONS[name])
        elif name.startswith("llama"):
            reasons.append(f"a Llama licence ({name}): read what it says about outputs")
    host = api_host(spec)
    if host in API_TERMS:
        reasons.append(API_TERMS[host])
    return "; ".join(reasons) or None


def api_host(spec: ModelSpec) -> str | None:
    """The host a served model's requests go to (backend openai), or None."""
    if spec.loads_weights():
        return None
    engine = getattr(spec, "engine", {}) or {}
    url = engine.get("base_url") or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_URL
    return urlparse(str(url)).hostname


def writer(role: str, spec: ModelSpec, commit: str | None = None) -> Writer:
    """One writer: its licence (read at `commit` when known) and any restriction."""
    licence = model_licence(spec, commit)
    return Writer(role=role, model=spec.model, revision=spec.revision, commit=commit,
                  backend=getattr(spec, "backend", None), licence=licence,
                  restriction=restriction(spec, licence))


def data_licence(writers: list[Writer], stated: Licence | None = None) -> tuple[Licence, str]:
    """The training data's licence, and how it was decided.

    The recipe's `card.license` wins; otherwise the one licence every writer shares; else
    unknown (a writer's unknown, or they differ), and the reason says which.
    """
    if stated is not None and stated.license:
        return stated, "stated in the recipe (card.license)"
    unknown = [w.role for w in writers if not w.licence.known]
    if unknown:
        return Licence(), (f"the licence of {', '.join(unknown)} is unknown: state it "
                           "(`license:` on the model) or set card.license")
    labels = {w.licence.label() for w in writers}
    if len(labels) > 1:
        return Licence(), (f"the models that wrote it have different licences "
                           f"({', '.join(sorted(labels))}): set card.license")
    first = writers[0].licence
    return (Licence(license=first.license, license_name=first.license_name,
                    license_link=first.license_link, source="the writers' licence"),
            f"the licence every model that wrote it shares ({first.label()})")


def warnings(writers: list[Writer], data: Licence, reason: str) -> list[str]:
    """One line per writer whose terms restrict training, and one for an unknown licence."""
    lines = [f"{w.role} {w.model} (licence {w.licence.label()}"
             + (f", from {w.licence.source}" if w.licence.source else "")
             + f"): {w.restriction}; the trained student may be bound by these terms"
             for w in writers if w.restriction]
    if not data.license:
        lines.append(f"the training data's licence cannot be determined: {reason}")
    return lines
