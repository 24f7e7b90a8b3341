"""Print the recipe reference (every section, key, default and description) as Markdown.

    python scripts/recipe_reference.py > /tmp/reference.md

The README's "Recipe reference" section is this script's output; `distill schema` gives
the same information as JSON Schema for editors.
"""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from distill.recipe import Recipe


def models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        found += models_in(arg)
    return found


def default_text(field) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return ""
        if isinstance(value, BaseModel):
            return "(section)"
    else:
        return "**required**"
    return f"`{value!r}`" if not isinstance(value, BaseModel) else "(section)"


def section(prefix: str, model: type[BaseModel], seen: set) -> list[str]:
    lines = [f"### `{prefix}`" + (f" ({model.__name__})" if "." in prefix else ""), "",
             "| key | default | meaning |", "|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{name}` | {default_text(field)} | {description} |")
        for sub in models_in(field.annotation):
            if sub not in seen:
                seen.add(sub)
                label = f"{prefix}.{name}" if prefix != "recipe" else name
                if typing.get_origin(field.annotation) is list or "Literal" in str(
                        sub.model_fields.get("kind", "")):
                    kind = sub.model_fields.get("kind")
                    if kind is not None and kind.default is not PydanticUndefined:
                        label = f"{label}[kind={kind.default}]"
                nested.append((label, sub))
    lines.append("")
    for label, sub in nested:
        lines += section(label, sub, seen)
    return lines


if __name__ == "__main__":
    print("\n".join(section("recipe", Recipe, {Recipe})))
