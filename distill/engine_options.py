"""A backend's engine options, checked against the backend's own constructor.

A served model's `engine` (the teacher's, a judge's, answer models', a decontamination
judge's) is passed to its backend as keyword arguments. The constructor's signature is
the one declaration of what it takes: each parameter's annotation is its type, and
`Annotated[int, Field(ge=1)]` its bounds. `check_engine_options` builds a pydantic model
from that signature when a recipe is validated, so a misspelt option or a value the
backend cannot take is refused before any work, naming the field path
(`teacher.engine.batch_size: Input should be greater than or equal to 1`).

A backend that hands further options to a library marks its `**options` with
`PassedOn`, naming the keys that library takes (vLLM's engine arguments); unmarked
`**options` take any key (the OpenAI SDK's `extra_body`, `extra_headers`, ...).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import InitErrorDetails, PydanticCustomError

# Constructor arguments the recipe sets from the model's own fields, never from `engine`.
SET_ELSEWHERE = {"model": "the model's `model`", "chat_template": "the model's `chat_template`",
                 "revision": "the model's `revision`", "seed": "the recipe's `seed`"}


@dataclass(frozen=True)
class PassedOn:
    """Marks a backend's `**options` as handed to a library that takes only some keys.

    `**engine: Annotated[Any, PassedOn("vLLM's engine arguments", names)]`, where
    `names()` lists the keys the library takes, or is None where it is not installed
    (then they are checked where the run starts, which validates the recipe again).
    """

    what: str
    names: Callable[[], frozenset[str] | None]


@dataclass(frozen=True)
class _Declaration:
    model: type[BaseModel]  # the named parameters, typed
    open_rest: bool  # whether **options exist
    passed_on: PassedOn | None  # what checks their keys, if anything


def check_engine_options(backend_class: type, backend: str,
                         engine: dict[str, Any]) -> dict[str, Any]:
    """`engine` checked against `backend_class`'s constructor, values as it declares them.

    Returns:
        The options the user gave (no defaults added), converted to the declared types.

    Raises:
        ValidationError: every problem, located at its key (`("batch_size",)`).
    """
    declared = _declaration(backend_class)
    problems: list[InitErrorDetails] = []
    for key in engine:
        if key in SET_ELSEWHERE:
            problems.append(_problem(key, engine[key], f"set by {SET_ELSEWHERE[key]}, not "
                                     "in engine"))
    extra = [key for key in engine
             if key not in declared.model.model_fields and key not in SET_ELSEWHERE]
    if extra and not declared.open_rest:
        options = ", ".join(sorted(declared.model.model_fields))
        problems += [_problem(key, engine[key], f"not an option of backend {backend}; its "
                              f"options are {options}") for key in extra]
    elif extra and declared.passed_on is not None:
        taken = declared.passed_on.names()
        if taken is not None:
            problems += [_problem(key, engine[key], f"not an option of backend {backend} nor "
                                  f"one of {declared.passed_on.what}")
                         for key in extra if key not in taken]
    named = {key: value for key, value in engine.items() if key in declared.model.model_fields}
    try:
        checked = declared.model.model_validate(named).model_dump(exclude_unset=True)
    except ValidationError as error:
        checked = named
        problems += relocated(error)
    if problems:
        raise ValidationError.from_exception_data(f"{backend} engine", problems)
    return {key: checked.get(key, value) for key, value in engine.items()}


def engine_parameters(backend_class: type) -> dict[str, Any]:
    """The options a backend declares: name -> pydantic FieldInfo (type, default, bounds)."""
    return dict(_declaration(backend_class).model.model_fields)


def passed_on(backend_class: type) -> str | None:
    """What a backend does with keys it does not name (None: they are errors), in words."""
    declared = _declaration(backend_class)
    if not declared.open_rest:
        return None
    if declared.passed_on is None:
        return "any key, passed on as it is"
    return f"{declared.passed_on.what}, checked against the installed library"


def relocated(error: ValidationError, *prefix: str | int) -> list[InitErrorDetails]:
    """`error`'s problems, each with its message as it is and `prefix` before its location."""
    return [InitErrorDetails(type=PydanticCustomError(item["type"], "{message}",
                                                      {"message": item["msg"]}),
                             loc=(*prefix, *item["loc"]), input=item["input"])
            for item in error.errors()]


def _problem(key: str, value: Any, message: str) -> InitErrorDetails:
    return InitErrorDetails(type=PydanticCustomError("value_error", "{message}",
                                                     {"message": message}),
                            loc=(key,), input=value)


@cache
def _declaration(backend_class: type) -> _Declaration:
    """The pydantic model of a backend's named options, and what takes the rest."""
    signature = inspect.signature(backend_class.__init__, eval_str=True)
    fields: dict[str, Any] = {}
    open_rest, passed_on = False, None
    for name, parameter in list(signature.parameters.items())[1:]:  # after self
        if parameter.kind is parameter.VAR_KEYWORD:
            open_rest = True
            passed_on = next((mark for mark in typing.get_args(parameter.annotation)[1:]
                              if isinstance(mark, PassedOn)), None)
        elif parameter.kind is not parameter.VAR_POSITIONAL and name not in SET_ELSEWHERE:
            annotation = Any if parameter.annotation is parameter.empty else parameter.annotation
            default = ... if parameter.default is parameter.empty else parameter.default
            fields[name] = (annotation, default)
    model = create_model(f"{backend_class.__name__}Options",
                         __config__=ConfigDict(extra="forbid"), **fields)
    return _Declaration(model=model, open_rest=open_rest, passed_on=passed_on)
