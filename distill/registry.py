"""One registry per kind of component: a lazy map from a recipe name to the class.

A component registers itself next to its class, once (the pattern of lm-eval's
`register_model`):

    @FILTERS.register
    class NoveltyConfig(FilterSettings):
        kind: Literal["novelty"] = "novelty"

A settings class is registered under its `kind`; a plain class or function names itself
(`@BACKENDS.register("vllm")`). The recipe's unions, its `Literal`s of names and the
reference docs are read from these registries, never written a second time.

The registries fill on first use: each imports every module of its own package, then the
modules that installed plugins name under the `distill.plugins` entry-point group (the
microworld is one, see pyproject.toml). Component modules import their heavy libraries
inside functions, so filling a registry never imports vLLM, torch or lm-eval.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Annotated, Any, Generic, TypeVar

T = TypeVar("T")
PLUGIN_GROUP = "distill.plugins"


class RegistryError(ValueError):
    """A duplicate or unknown component name."""


_plugins_loaded = False


def load_plugins() -> None:
    """Import every module named under the `distill.plugins` entry-point group, once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for entry in entry_points(group=PLUGIN_GROUP):
        importlib.import_module(entry.value)


class Registry(Generic[T]):
    """Names of one kind of component, each bound to one class (or function)."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind  # "filter", "generation method", ... (for messages)
        self.package = package  # the package (or module) whose modules register here
        self._entries: dict[str, T] = {}
        self._loaded = False

    def register(self, target: Any = None, *names: str) -> Any:
        """Register a class under its `kind` (bare decorator), or under the given names."""
        if isinstance(target, str):
            return lambda obj: self._add(obj, (target, *names))
        if target is None:
            return lambda obj: self._add(obj, names)
        return self._add(target, names)

    def _add(self, obj: T, names: tuple[str, ...]) -> T:
        if inspect.isabstract(obj):
            missing = sorted(getattr(obj, "__abstractmethods__", ()))
            raise RegistryError(f"{_where(obj)}: a {self.kind} must implement {missing}")
        if not names:
            names = (_kind_of(obj, self.kind),)
        for name in names:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                raise RegistryError(f"{self.kind} {name!r} is registered twice: by "
                                    f"{_where(existing)} and by {_where(obj)}")
            self._entries[name] = obj
        return obj

    def unregister(self, name: str) -> None:
        """Remove a name (tests that register a throwaway component clean up with it)."""
        self._entries.pop(name, None)

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        # a package: every module in it registers; a module: it registers itself
        for module in pkgutil.iter_modules(getattr(package, "__path__", []),
                                           prefix=f"{self.package}."):
            importlib.import_module(module.name)
        load_plugins()

    def get(self, name: str) -> T:
        """The component registered as `name`; an unknown name lists the known ones."""
        self._load()
        if name not in self._entries:
            raise RegistryError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load()
        return sorted(self._entries)

    def items(self) -> Iterator[tuple[str, T]]:
        """(name, component) pairs, sorted by name."""
        self._load()
        return iter(sorted(self._entries.items()))

    def classes(self) -> list[T]:
        """Each registered component once, in name order (aliases collapse)."""
        seen: list[T] = []
        for _, obj in self.items():
            if all(obj is not other for other in seen):
                seen.append(obj)
        return seen

    def name_type(self) -> Any:
        """A settings field's type that holds one of this registry's names.

        Checked against the registry when validated, and listed as an enum in the JSON
        schema (so in the reference docs) when the schema is made.
        """
        from pydantic import AfterValidator, Field

        def check(value: str) -> str:
            self.get(value)  # raises, naming the known names
            return value

        return Annotated[str, AfterValidator(check), Field(
            json_schema_extra=lambda schema: schema.update(enum=self.names()))]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries


def _kind_of(obj: Any, kind: str) -> str:
    fields = getattr(obj, "model_fields", None)
    field = fields.get("kind") if fields else None
    if field is None or not isinstance(field.default, str):
        raise RegistryError(f"{_where(obj)}: a {kind} registered without a name needs a "
                            "`kind: Literal[...]` field with that name as its default")
    return field.default


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


# -- the registries ------------------------------------------------------------------------

GENERATORS: Registry[type] = Registry("generation method", "distill.generate")
FILTERS: Registry[type] = Registry("filter", "distill.filters")
BACKENDS: Registry[type] = Registry("backend", "distill.backends")
TRAINERS: Registry[Callable[..., Any]] = Registry("training method", "distill.train")
POLICIES: Registry[type] = Registry("data policy", "distill.flywheel.policies")
# `scheme:` prefixes of model references (`microworld:teacher`) -> resolver(name) -> path
MODEL_SCHEMES: Registry[Callable[[str], str]] = Registry("model scheme", "distill.models")
# `data.real.kind` -> settings class of a source of real data
REAL_SOURCES: Registry[type] = Registry("real-data source", "distill.flywheel.real")
CHECKERS: Registry[Callable[..., Any]] = Registry("answer checker", "distill.filters.checkers")
# `generate.problems.generator` -> (count, seed) -> list of reasoning problems (a plugin's)
PROBLEM_SOURCES: Registry[Callable[..., Any]] = Registry("problem generator",
                                                          "distill.generate.reasoning")
# `executor.kind` -> settings class of where the teacher's generation engines run
EXECUTORS: Registry[type] = Registry("executor", "distill.executors")
# `tracking.report_to` names -> tracker class (TensorBoard, MLflow, W&B; distill.tracking)
TRACKERS: Registry[type] = Registry("tracker", "distill.tracking")
