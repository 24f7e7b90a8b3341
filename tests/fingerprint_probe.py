"""Generic probes behind tests/test_fingerprints.py; nothing here names a component.

- `examples(cls, res)`: settings of any registered class, derived from its fields: defaults,
  plus a value for each required field chosen by its type (a `ModelSpec` is a tiny model
  directory, a path field a JSONL file of generic records, a string with an `enum` in the
  JSON schema each of its choices, numbers inside their bounds, nested models recursively).
  A class that cannot be built this way lists examples in its model_config:
  `json_schema_extra={"examples": [{...}]}`.
- `fingerprint_problems(settings, res, label)`: changes each input of a component alone (a
  model's weights at the same path, a file's bytes, a template's source, a run input's
  identity, each setting) and reports where the stage fingerprint did not follow: every
  declared or named input must move it, operational settings must not.
- `undeclared_reads(...)`: runs a filter or generation method under an audit hook that
  records every file opened, and reports each one its `dependencies()` does not account for.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import os
import shutil
import sys
import sysconfig
import types
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from unittest import mock

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

import distill
import distill.identity
import distill.prompts
from distill.component import RUN_INPUTS, Dependencies, Dependent, fingerprint_inputs
from distill.data import load_seed_tasks
from distill.engine_options import engine_parameters
from distill.identity import WEIGHT_SUFFIXES
from distill.models import ModelSpec, ServedModel, model_path
from distill.records import Example

NoneType = type(None)
MAX_TOKENS = 4  # every (nested) `max_tokens` setting is cut to this: real models stay fast
PROBE_SUFFIX = "\n{# fingerprint probe: the template changed #}\n"

# A handful of generic records: one duplicate, one with an input, one with a checkable
# answer; `text` for methods that continue raw text.
RECORDS: list[dict[str, Any]] = [
    {"id": "rec-0", "instruction": "Write a short poem about the sea and the wind.",
     "output": "The sea is wide and the wind is free; they sing together over the water.",
     "text": "The quick brown fox jumps over the lazy dog. The sea is wide and blue."},
    {"id": "rec-1", "instruction": "List three colours that appear in a rainbow.",
     "output": "Red, green and blue.",
     "text": "List three colours: red, green and blue. Hello! How can I help you today?"},
    {"id": "rec-2", "instruction": "Summarise the following paragraph in one sentence.",
     "input": "The cat sat on the mat. It was warm there and it did not want to move.",
     "output": "A warm cat stayed on the mat.",
     "text": "Input: The cat sat on the mat. Output: A cat sat down and stayed there."},
    {"id": "rec-3", "instruction": "What is 12 plus 30? Explain your answer briefly.",
     "output": "Adding 12 and 30 gives 42. The answer is 42.", "answer": "42",
     "text": "What is 12 plus 30? The answer is 42. Sort these numbers: 9, 3, 7, 1."},
    {"id": "rec-4", "instruction": "Write a short poem about the sea and the wind.",
     "output": "Wind on the water, salt in the air.",
     "text": "Question: Why is the sky blue? Answer: Because of Rayleigh scattering."},
    {"id": "rec-5", "instruction": "Give me a list of five animals that live in the forest.",
     "output": "Deer, fox, owl, badger and squirrel.",
     "text": "Give me a list of five animals that live in the forest: deer, fox and owl."},
]


def generic_records() -> list[Example]:
    """Fresh `Example`s of `RECORDS` (filters write scores into them)."""
    return [Example.model_validate({"input": "", **row}) for row in RECORDS]


@dataclass
class Resources:
    """The files and models generic examples point at; the probes own and may change them."""

    root: Path  # base_dir of validation: relative paths in settings resolve here
    records_file: Path  # JSONL of RECORDS: the value of any data-file setting
    seed_file: Path  # the run's seed tasks (RECORDS again)
    model_dir: Path  # a copy of tiny model A: the value of any model setting
    teacher_dir: Path  # a copy of tiny model A: the recipe's teacher
    model_a: Path  # tiny model A as built (to restore from)
    model_b: Path  # another tiny model: what a changed model becomes

    @classmethod
    def create(cls, root: Path, model_a: Path, model_b: Path) -> Resources:
        """Write the records and copy the models under `root`."""
        root = root.resolve()
        root.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps({"input": "", **row}) + "\n" for row in RECORDS)
        (root / "records.jsonl").write_text(lines, encoding="utf-8")
        (root / "seed_tasks.jsonl").write_text(lines, encoding="utf-8")
        for name in ("model", "teacher"):
            shutil.copytree(model_a, root / "models" / name)
        return cls(root=root, records_file=root / "records.jsonl",
                   seed_file=root / "seed_tasks.jsonl", model_dir=root / "models" / "model",
                   teacher_dir=root / "models" / "teacher", model_a=Path(model_a).resolve(),
                   model_b=Path(model_b).resolve())

    @property
    def context(self) -> dict[str, Any]:
        """Validation context: relative paths are relative to `root`."""
        return {"base_dir": str(self.root)}

    def teacher(self) -> ServedModel:
        """The recipe's teacher, served by the hf backend."""
        return ServedModel(model=str(self.teacher_dir), backend="hf")

    def location(self, spec: ModelSpec | str) -> str:
        """Where a declared model's files are ("teacher": the recipe's teacher)."""
        return str(self.teacher_dir) if spec == "teacher" else model_path(spec.model)

    def identity(self, spec: ModelSpec | str) -> str:
        """A declared model's identity fingerprint, as the runner computes it."""
        from distill.identity import model_identity

        if spec == "teacher":
            return model_identity(str(self.teacher_dir))["fingerprint"]
        return model_identity(model_path(spec.model), chat_template=spec.chat_template,
                              revision=spec.revision)["fingerprint"]


# -- types and values -----------------------------------------------------------------------


def _constraints(metadata: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in metadata:
        if isinstance(item, FieldInfo):
            out.update(_constraints(item.metadata))
            continue
        for key in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            value = getattr(item, key, None)
            if value is not None:
                out[key] = value
    return out


def _unwrap(tp: Any, cons: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    while get_origin(tp) is Annotated:
        base, *meta = get_args(tp)
        tp, cons = base, {**cons, **_constraints(meta)}
    return tp, cons


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _is_model(tp: Any, base: type = BaseModel) -> bool:
    return isinstance(tp, type) and issubclass(tp, base)


def _spec_arm(tp: Any) -> type[ModelSpec] | None:
    """The `ModelSpec` type of `tp`, `X | None` and `Annotated[...]` unwrapped."""
    tp, _ = _unwrap(tp, {})
    arms = get_args(tp) if _is_union(tp) else (tp,)
    return next((arm for arm in arms if _is_model(arm, ModelSpec)), None)


def _int_range(cons: dict[str, Any]) -> tuple[int, int | None]:
    low = cons["ge"] if "ge" in cons else cons["gt"] + 1 if "gt" in cons else 1
    high = cons["le"] if "le" in cons else cons["lt"] - 1 if "lt" in cons else None
    return int(low), None if high is None else int(high)


def _float_samples(cons: dict[str, Any]) -> list[float]:
    low = cons.get("ge", cons.get("gt"))
    high = cons.get("le", cons.get("lt"))
    if low is not None and high is not None:
        return [(low + high) / 2]
    if low is not None:
        return [low + 0.5]
    return [high - 0.5] if high is not None else [0.5]


def _model_value(res: Resources) -> dict[str, Any]:
    return {"model": str(res.model_dir)}


def samples(tp: Any, cons: dict[str, Any], res: Resources, name: str = "") -> list[Any]:
    """Plausible values of a type, most ordinary first."""
    tp, cons = _unwrap(tp, cons)
    origin, args = get_origin(tp), get_args(tp)
    if tp is NoneType:
        return [None]
    if _is_union(tp):
        return [v for arm in args if arm is not NoneType for v in samples(arm, cons, res, name)]
    if origin is Literal:
        return list(args)
    if tp is bool:
        return [False, True]
    if tp is int:
        low, high = _int_range(cons)
        return [v for v in (low, low + 1) if high is None or v <= high]
    if tp is float:
        return _float_samples(cons)
    if tp is str:  # a path field takes a file; one named like a model, the model
        paths = [str(res.records_file), str(res.model_dir)]
        return ["example", *(paths[::-1] if "model" in name else paths)]
    if _is_model(tp, ModelSpec):
        return [_model_value(res)]
    if _is_model(tp):
        try:
            return [minimal_data(tp, res)]
        except CannotBuild:
            return []
    if origin in (list, set, frozenset) or (origin is tuple and args[-1:] == (Ellipsis,)):
        element = args[0] if args else str
        return [[value] for value in samples(element, {}, res, name)[:3]]
    if origin is tuple:
        firsts = [samples(arg, {}, res, name)[:1] for arg in args]
        return [tuple(v[0] for v in firsts)] if all(firsts) else []
    if origin is dict:
        keys, values = samples(args[0], {}, res)[:2], samples(args[1], {}, res)[:1]
        return [{key: value} for key in keys for value in values]
    return []


class CannotBuild(Exception):  # noqa: N818 - a verdict, not a failure of the probe
    """No generic settings validate for a class."""


@functools.cache
def _schema_enums(cls: type[BaseModel]) -> dict[str, list[Any]]:
    try:
        properties = cls.model_json_schema().get("properties", {})
    except Exception:  # noqa: BLE001 - a schema is a hint, never required
        return {}
    return {name: list(prop["enum"]) for name, prop in properties.items() if "enum" in prop}


def _required(cls: type[BaseModel]) -> dict[str, FieldInfo]:
    return {name: info for name, info in cls.model_fields.items() if info.is_required()}


def _field_samples(cls: type[BaseModel], name: str, info: FieldInfo, res: Resources) -> list[Any]:
    values = _schema_enums(cls).get(name, []) + samples(
        info.annotation, _constraints(info.metadata), res, name)
    unique: dict[str, Any] = {}
    for value in values:
        unique.setdefault(json.dumps(value, sort_keys=True, default=str), value)
    return list(unique.values())


def validate(cls: type[BaseModel], data: Any, res: Resources) -> BaseModel | None:
    """`cls` validated from data (paths relative to the resources), or None."""
    try:
        return cls.model_validate(data, context=res.context)
    except (ValidationError, ValueError, TypeError):
        return None


def minimal_data(cls: type[BaseModel], res: Resources) -> dict[str, Any]:
    """Defaults plus one generic value per required field (the first combination that works)."""
    required = _required(cls)
    choices = [_field_samples(cls, name, info, res)[:5] for name, info in required.items()]
    last: str = "no values"
    for combination in itertools.islice(itertools.product(*choices), 200):
        data = dict(zip(required, combination, strict=True))
        try:
            cls.model_validate(data, context=res.context)
            return data
        except (ValidationError, ValueError, TypeError) as error:
            last = str(error).splitlines()[0]
    raise CannotBuild(f"{cls.__module__}.{cls.__qualname__}: no generic value fits its "
                      f"required fields {sorted(required)} ({last}); give the class "
                      "model_config json_schema_extra={'examples': [{...}]}")


def _is_path_field(cls: type[BaseModel], data: dict[str, Any], name: str,
                   res: Resources) -> bool:
    """Whether validation resolves a relative name in this field against the base_dir."""
    settings = validate(cls, {**data, name: res.records_file.name}, res)
    value = getattr(settings, name, None) if settings is not None else None
    return isinstance(value, str) and Path(value).resolve() == res.records_file


def filled_data(cls: type[BaseModel], data: dict[str, Any], res: Resources) -> dict[str, Any]:
    """`data` with each optional model (at any depth) and top-level path field given a value."""
    out = dict(data)
    for name, info in cls.model_fields.items():
        if info.is_required():
            continue
        default = info.get_default(call_default_factory=True)
        current = out.get(name, default)
        spec = _spec_arm(info.annotation)
        if current is None and spec is not None:
            value: Any = _model_value(res)
        elif current is None and _is_path_field(cls, out, name, res):
            value = str(res.model_dir if "model" in name else res.records_file)
        elif isinstance(default, BaseModel) and not isinstance(default, ModelSpec):
            dumped = current.model_dump() if isinstance(current, BaseModel) else current
            if not isinstance(dumped, dict):
                continue
            value = filled_data(type(default), dumped, res)
            if value == dumped:
                continue
        else:
            continue
        if validate(cls, {**out, name: value}, res) is not None:
            out[name] = value
    return out


def _shrunk(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: min(item, MAX_TOKENS) if key == "max_tokens" and type(item) is int
                else _shrunk(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shrunk(item) for item in value]
    return value


def _listed_examples(cls: type[BaseModel]) -> list[dict[str, Any]]:
    extra = cls.model_config.get("json_schema_extra")
    return list(extra.get("examples") or []) if isinstance(extra, dict) else []


def examples(cls: type[BaseModel], res: Resources) -> list[tuple[str, Any]]:
    """(label, settings) variants of a class: defaults, every optional model and path filled
    in, one per choice of a required enumerated field, and the class's listed examples.

    Raises:
        CannotBuild: no variant could be derived and the class lists no examples.
    """
    listed = _listed_examples(cls)
    candidates: list[tuple[str, Any]] = []
    try:
        base = minimal_data(cls, res)
    except CannotBuild:
        if not listed:
            raise
    else:
        candidates.append(("defaults", base))
        candidates.append(("filled", filled_data(cls, base, res)))
        enums = _schema_enums(cls)
        for name in _required(cls):
            for choice in enums.get(name, [])[1:]:
                candidates.append((f"{name}={choice}", {**base, name: choice}))
    candidates += [(f"examples[{i}]", data) for i, data in enumerate(listed)]
    found: dict[str, tuple[str, Any]] = {}
    for label, data in candidates:
        settings = validate(cls, data, res)
        if settings is None:
            continue
        small = validate(cls, _shrunk(settings.model_dump()), res)
        settings = small if small is not None else settings
        found.setdefault(settings.model_dump_json(), (label, settings))
    if not found:
        raise CannotBuild(f"{cls.__qualname__}: none of its listed examples validates")
    return list(found.values())


# -- alternative values of a setting ----------------------------------------------------------


def _strings(res: Resources) -> list[str]:
    # template names let a template-name setting change; the paths, a path setting
    templates = sorted(p.name.removesuffix(".jinja") for p in
                       resources.files("distill.prompts").iterdir() if p.name.endswith(".jinja"))
    return ["example", *templates, str(res.records_file), str(res.model_b)]


def alternatives(tp: Any, cons: dict[str, Any], current: Any, res: Resources) -> Iterator[Any]:
    """Values a setting could change to (some invalid: the caller validates)."""
    tp, cons = _unwrap(tp, cons)
    origin, args = get_origin(tp), get_args(tp)
    if _is_union(tp):
        if NoneType in args and current is not None:
            yield None
        for arm in args:
            if arm is not NoneType:
                yield from alternatives(arm, cons, current, res)
        return
    if current is None or tp is Any:
        yield from samples(tp, cons, res)
        if tp is str:
            yield from _strings(res)
        return
    if origin is Literal:
        yield from (choice for choice in args if choice != current)
    elif tp is bool:
        yield not current
    elif tp in (int, float):
        if isinstance(current, int | float) and not isinstance(current, bool):
            steps = (1, -1) if tp is int else (0.1, -0.1, 1)
            yield from (current + step for step in steps)
            yield current * 2 if tp is int else current / 2
        yield from samples(tp, cons, res)
    elif tp is str:
        if isinstance(current, str):
            yield current + " (changed)"
        yield from (s for s in _strings(res) if s != current)
    elif _is_model(tp) and isinstance(current, BaseModel):
        dumped = current.model_dump()
        for name, info in type(current).model_fields.items():
            for value in itertools.islice(alternatives(info.annotation,
                                                       _constraints(info.metadata),
                                                       getattr(current, name), res), 20):
                yield {**dumped, name: value}
    elif origin in (list, tuple, set, frozenset) and isinstance(current, list | tuple | set):
        items = list(current)
        fixed = origin is tuple and args[-1:] != (Ellipsis,)
        element = args[0] if args else Any
        again = tuple if origin is tuple else list
        if items:
            if not fixed:
                yield again(items[:-1])
                yield again(items[1:])
            yield again(items[::-1])
            for value in itertools.islice(alternatives(element, {}, items[0], res), 20):
                yield again([value, *items[1:]])
            if not fixed:
                yield again(items + items[:1])
        else:
            for value in samples(element, {}, res)[:3]:
                yield again([value])
    elif origin is dict and isinstance(current, dict):
        keys = list(current)
        if keys:
            yield {key: current[key] for key in keys[1:]}
            for value in itertools.islice(alternatives(args[1], {}, current[keys[0]], res), 10):
                yield {**current, keys[0]: value}
        for key in samples(args[0], {}, res):
            if key not in current:
                for value in samples(args[1], {}, res)[:1]:
                    yield {**current, key: value}


def changed_setting(settings: BaseModel, name: str, res: Resources,
                    tries: int = 300) -> BaseModel | None:
    """The settings with `name` changed to another valid value (others as they are)."""
    cls = type(settings)
    info = cls.model_fields[name]
    # .get: a field left out of dumps while unset (a model's license) dumps as absent
    before = json.dumps(settings.model_dump(mode="json").get(name), sort_keys=True)
    data = settings.model_dump()
    values = itertools.chain(_schema_enums(cls).get(name, []),
                             alternatives(info.annotation, _constraints(info.metadata),
                                          getattr(settings, name), res))
    for value in itertools.islice(values, tries):
        changed = validate(cls, {**data, name: value}, res)
        if changed is not None and json.dumps(changed.model_dump(mode="json").get(name),
                                              sort_keys=True) != before:
            return changed
    return None


# -- Part A: the fingerprint follows every input, and only those ----------------------------

_mtime_tick = itertools.count(1)


def _touch(path: Path) -> None:
    """A new mtime of our own, so that no (path, size, mtime) hash cache answers stale."""
    stat = path.stat()
    stamp = stat.st_mtime_ns + next(_mtime_tick) * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _is_checkpoint(directory: Path) -> bool:
    return (directory / "config.json").is_file()


@contextmanager
def _changed_content(path: Path, res: Resources) -> Iterator[str | None]:
    """Change what is at `path` (a model, a file, a directory); yields how, None if it cannot.

    What the probes own (under res.root) is changed for real and restored; anything else
    (an installed package's files) is changed in the eyes of the file hasher only.
    """
    path = path.resolve()
    if not path.exists():
        yield None  # a hub id: identified by name and revision, which are settings
        return
    if _under(path, res.root):
        if path.is_dir() and _is_checkpoint(path):
            swapped = [p for p in sorted(res.model_b.iterdir()) if p.is_file()]
            for source in swapped:
                shutil.copyfile(source, path / source.name)
                _touch(path / source.name)
            try:
                yield "swapping another model's files into"
            finally:
                for source in swapped:
                    shutil.copyfile(res.model_a / source.name, path / source.name)
                    _touch(path / source.name)
        elif path.is_dir():
            extra = path / "fingerprint-probe.txt"
            extra.write_text("probe\n", encoding="utf-8")
            try:
                yield "adding a file to"
            finally:
                extra.unlink()
        else:
            original = path.read_bytes()
            path.write_bytes(original + b"\n")
            _touch(path)
            try:
                yield "editing"
            finally:
                path.write_bytes(original)
                _touch(path)
        return
    real_hash = distill.identity.cached_file_sha256

    def changed_hash(file: str | Path) -> str:
        digest = real_hash(file)
        if _under(Path(os.path.realpath(file)), path):
            return hashlib.sha256(f"{digest}|changed".encode()).hexdigest()
        return digest

    with mock.patch.object(distill.identity, "cached_file_sha256", changed_hash):
        yield "changing (as the file hasher sees it)"


@contextmanager
def _changed_template(name: str) -> Iterator[None]:
    real = distill.prompts.template_source

    def source(template: str) -> str:
        return real(template) + (PROBE_SUFFIX if template == name else "")

    clear_caches()
    try:
        with mock.patch.object(distill.prompts, "template_source", source):
            yield
    finally:
        clear_caches()


def _mentions(settings: BaseModel, path: Path) -> bool:
    return str(path) in settings.model_dump_json()


Where = tuple[Any, ...]  # field names, list indices and dict keys down to a value


def _models_below(value: Any, path: Where = ()) -> Iterator[tuple[Where, BaseModel]]:
    """(path, settings model) for every settings model nested in `value`, itself excluded."""
    if isinstance(value, BaseModel):
        if path:
            yield path, value
        for name in type(value).model_fields:
            yield from _models_below(getattr(value, name), (*path, name))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _models_below(item, (*path, index))
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _models_below(item, (*path, key))


def _replaced(data: Any, path: Where, value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(data, dict):
        return {**data, head: _replaced(data[head], rest, value)}
    items = list(data)
    items[head] = _replaced(items[head], rest, value)
    return items


def nested_changes(settings: BaseModel, res: Resources
                   ) -> Iterator[tuple[str, BaseModel | None, bool]]:
    """(what changed, the changed settings or None, whether the fingerprint must move) for the
    settings below the top level that a fingerprint treats specially: the OPERATIONAL fields
    of nested settings, and the engine options of served models (a judge, answer models),
    speed-only where their backend names them so."""
    from distill.registry import BACKENDS

    cls, data = type(settings), settings.model_dump()
    for path, model in _models_below(settings):
        where = ".".join(str(part) for part in path)
        for name in sorted(type(model).OPERATIONAL):
            changed = changed_setting(model, name, res)
            if changed is not None:
                yield (f"operational setting {where}.{name}",
                       validate(cls, _replaced(data, path, changed.model_dump()), res), False)
        if isinstance(model, ServedModel):
            # every option the backend declares, to another value it takes
            backend = BACKENDS.get(model.backend)
            operational = backend.OPERATIONAL
            for key, info in sorted(engine_parameters(backend).items()):
                changed = _changed_engine(cls, data, (*path, "engine"), model.engine, key,
                                          info, res)
                if changed is not None or key in operational:
                    yield (f"{where}.engine.{key} " + (
                        f"(speed-only for backend {model.backend})" if key in operational
                        else "(not speed-only)"), changed, key not in operational)


def _changed_engine(cls: type[BaseModel], data: dict[str, Any], engine_path: tuple,
                    engine: dict[str, Any], key: str, info: FieldInfo, res: Resources
                    ) -> BaseModel | None:
    """The settings with engine option `key` set to a value its backend takes, or None."""
    current = engine.get(key, info.default)
    for value in itertools.islice(alternatives(info.annotation, _constraints(info.metadata),
                                               current, res), 300):
        if json.dumps(value, sort_keys=True, default=str) == json.dumps(current, sort_keys=True,
                                                                        default=str):
            continue
        changed = validate(cls, _replaced(data, engine_path, {**engine, key: value}), res)
        if changed is not None:
            return changed
    return None


def fingerprint_problems(settings: Dependent, res: Resources,
                         label: str) -> tuple[list[str], list[str]]:
    """Where a component's fingerprint does not follow its inputs.

    Returns:
        (problems, fields no other value could be derived for).
    """
    cls = type(settings)
    problems: list[str] = []
    unvaried: list[str] = []
    inputs = {name: f"{name}@1" for name in RUN_INPUTS}

    def fingerprint(component: Dependent = settings, run_inputs: dict[str, Any] = inputs) -> str:
        return json.dumps(fingerprint_inputs(component, res.identity, run_inputs),
                          sort_keys=True, default=str)

    base = fingerprint()
    if fingerprint() != base:
        problems.append(f"{label}: the fingerprint differs between two computations")
    needs: Dependencies = settings.dependencies()
    stray = sorted(set(cls.OPERATIONAL) - set(cls.model_fields))
    if stray:
        problems.append(f"{label}: OPERATIONAL names {stray}, which are not its settings")

    # models and files: those it declares, and those our examples point it at
    targets: dict[Path, list[str]] = {}
    for owned in (res.model_dir, res.records_file):
        if _mentions(settings, owned):
            targets.setdefault(owned, []).append("named in its settings")
    for role, spec in sorted(needs.models.items()):
        targets.setdefault(Path(res.location(spec)).resolve(), []).append(
            f"declared model {role!r}")
    for role, file in sorted(needs.files.items()):
        targets.setdefault(Path(file).resolve(), []).append(f"declared file {role!r}")
    for path, why in targets.items():
        with _changed_content(path, res) as how:
            if how is not None and fingerprint() == base:
                problems.append(f"{label}: {how} {path} ({', '.join(why)}) left the "
                                "fingerprint unchanged: declare it in dependencies()")
        if fingerprint() != base:
            problems.append(f"{label}: restoring {path} did not restore the fingerprint")

    for name in sorted(set(needs.templates)):
        with _changed_template(name):
            if fingerprint() == base:
                problems.append(f"{label}: editing template {name!r} left the fingerprint "
                                "unchanged")

    for name in RUN_INPUTS:
        moved = fingerprint(run_inputs={**inputs, name: f"{name}@2"}) != base
        if name in needs.inputs and not moved:
            problems.append(f"{label}: changing the run's {name} left the fingerprint unchanged")
        if name not in needs.inputs and moved:
            problems.append(f"{label}: changing the run's {name}, which it does not declare, "
                            "changed the fingerprint")

    for what, changed, must_move in nested_changes(settings, res):
        if changed is None:
            problems.append(f"{label}: {what}: the changed settings do not validate")
        elif (fingerprint(changed) != base) != must_move:
            problems.append(f"{label}: changing {what} " + (
                "left the fingerprint unchanged" if must_move else "changed the fingerprint"))

    for name in cls.model_fields:
        changed = changed_setting(settings, name, res)
        if changed is None:
            unvaried.append(name)
            continue
        moved = fingerprint(changed) != base
        old, new = getattr(settings, name), getattr(changed, name)
        if name in cls.OPERATIONAL and moved:
            problems.append(f"{label}: operational setting {name} ({old!r} -> {new!r}) "
                            "changed the fingerprint")
        elif name not in cls.OPERATIONAL and not moved:
            problems.append(f"{label}: setting {name} ({old!r} -> {new!r}) left the "
                            "fingerprint unchanged")
    return problems, unvaried


# -- Part B: every file a component opens is declared ------------------------------------------

_sink: list[str] | None = None  # where the audit hook records, while a run is recorded
_hooked = False
_WRITING = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open" or _sink is None or isinstance(args[0], int):
        return
    path, mode, flags = (*args, None, None)[:3]
    # Outputs are not inputs: opens that write (temporary files, checkpoints) are left out.
    if isinstance(mode, str):
        if any(c in mode for c in "wax+"):
            return
    elif isinstance(flags, int) and flags & _WRITING:  # os.open: mode is the permissions
        return
    with suppress(TypeError):  # neither a str, bytes nor a path
        _sink.append(os.path.abspath(os.fsdecode(path)))


@contextmanager
def recording() -> Iterator[list[str]]:
    """Every path opened (the "open" audit event) in this process while inside."""
    global _sink, _hooked
    if not _hooked:
        sys.addaudithook(_audit)  # hooks cannot be removed: it idles when _sink is None
        _hooked = True
    opened: list[str] = []
    _sink = opened
    try:
        yield opened
    finally:
        _sink = None


def clear_caches() -> None:
    """Empty every functools cache of distill's modules (templates, loaded embedders, ...),
    so the run reads what it reads afresh."""
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "distill" or module_name.startswith("distill.")):
            continue
        for value in list(vars(module).values()):
            if callable(getattr(value, "cache_clear", None)) and \
                    getattr(value, "__module__", None) == module_name:
                value.cache_clear()


def _roots(*paths: str | None) -> list[Path]:
    return sorted({Path(os.path.realpath(p)) for p in paths if p})


LIBRARY_ROOTS = _roots(sys.prefix, sys.base_prefix, sys.exec_prefix,
                       *sysconfig.get_paths().values())
SYSTEM_ROOTS = [Path(p) for p in ("/proc", "/dev", "/sys", "/etc", "/usr")]
CODE_SUFFIXES = (".py", ".pyc", ".pyi", ".so", ".pth")


@functools.cache
def _checkpoint_root(directory: Path) -> Path | None:
    """The model checkpoint directory (config.json beside weights) holding `directory`."""
    for candidate in (directory, *directory.parents):
        if candidate == candidate.parent:
            return None
        if (candidate / "config.json").is_file() and any(
                child.suffix in WEIGHT_SUFFIXES for child in candidate.iterdir()):
            return candidate
    return None


def _is_library(path: Path) -> bool:
    """Interpreter, libraries, installed packages' metadata (entry points), the OS."""
    return (any(_under(path, root) for root in LIBRARY_ROOTS + SYSTEM_ROOTS)
            or "site-packages" in path.parts or "dist-packages" in path.parts
            or any(part.endswith((".egg-info", ".dist-info")) for part in path.parts))


def account(opened: list[str], needs: Dependencies, res: Resources, work: Path, *,
            teacher: bool) -> list[str]:
    """Each opened path its declarations do not cover, as a sentence.

    Args:
        opened: paths opened during the run.
        needs: the component's declarations.
        res: the resources its settings point at.
        work: the work (checkpoint) directory it was given.
        teacher: the stage itself depends on the teacher (generation methods).
    """
    templates = Path(str(resources.files("distill.prompts"))).resolve()
    package = Path(distill.__file__).resolve().parent
    models = [Path(res.location(spec)).resolve() for spec in needs.models.values()]
    if teacher:
        models.append(res.teacher_dir)  # the generate stage's fingerprint holds its identity
    files = [Path(file).resolve() for file in needs.files.values()]
    found: dict[Path, str] = {}
    read: dict[Path, list[str]] = {}  # model directory -> its files opened
    for raw in dict.fromkeys(opened):
        path = Path(os.path.realpath(raw))
        if _under(path, work.resolve()) or not path.exists():
            continue  # its own work, and files made and removed during the run
        if "seed_tasks" in needs.inputs and path == res.seed_file:
            continue
        if path.parent == templates and path.suffix == ".jinja":
            if path.stem not in needs.templates:
                found[path] = (f"read prompt template {path.stem!r} ({path}) without declaring "
                               "it in dependencies().templates")
            continue
        if any(_under(path, root) for root in [*models, *files]):
            continue
        if path.suffix in CODE_SUFFIXES:
            continue  # imports, the project's own modules included
        model = _checkpoint_root(path.parent)
        if model is not None:
            read.setdefault(model, []).append(path.relative_to(model).as_posix())
            found[model] = (f"read the model at {model} ({', '.join(read[model])}) without "
                            "declaring it in dependencies().models")
        elif _under(path, package) or _under(path, res.root) or not _is_library(path):
            found[path] = f"opened {path} without declaring it in dependencies().files"
    return [found[key] for key in sorted(found)]


def _undeclared_input(error: RuntimeError) -> bool:
    return "without declaring it" in str(error)


def undeclared_reads(component: str, settings: Any, res: Resources, work: Path, label: str,
                     backend: Any = None) -> list[str]:
    """Run a filter ("filter") or generation method ("generator") and report undeclared reads.

    Filters run on `generic_records()` with the resources' teacher in their context;
    methods run against `backend` (a scripted teacher) with the teacher's directory as
    its name. Each gets only the run inputs it declared.
    """
    from distill.filters.base import FilterContext
    from distill.generate.context import GenerationContext

    needs = settings.dependencies()
    loaders: dict[str, Any] = {}
    if "seed_tasks" in needs.inputs:
        loaders["seed_tasks"] = lambda: load_seed_tasks(res.seed_file)
    problems: list[str] = []
    with recording() as opened:
        clear_caches()
        try:
            if component == "filter":
                context = FilterContext(seed=0, work_dir=work, teacher=res.teacher(), **loaders)
                records = generic_records()
                verdicts = settings.build(context)(records)
                assert len(verdicts) == len(records), f"{label}: one verdict per record"
            else:
                if "real" in needs.inputs:
                    loaders["real_records"] = generic_records
                ctx = GenerationContext(backend=backend, checkpoint_dir=work / "checkpoints",
                                        teacher_name=str(res.teacher_dir), chunk_size=8,
                                        **loaders)
                settings.run(ctx)
        except RuntimeError as error:
            if not _undeclared_input(error):
                raise
            problems.append(f"{label}: {error}")
    problems += [f"{label}: {problem}" for problem in
                 account(opened, needs, res, work, teacher=component == "generator")]
    return problems
