"""Adding a filter is one new file: the registry, the recipe, the schema and the reference
docs all learn it from the file alone.

The worked example puts a toy filter module in a folder that is added to the
`distill.filters` package path, which is exactly what a new file in distill/filters/
is to Python; nothing else in the tree changes. It runs in a fresh interpreter so that
the registries fill with the toy filter in them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TOY_FILTER = '''
"""Drop outputs longer than a word budget (a toy: the worked example of a new filter)."""

from typing import Literal

from pydantic import Field

from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings, Verdict
from distill.registry import FILTERS


@FILTERS.register
class Config(FilterSettings):
    """Outputs of at most `max_words` words."""

    kind: Literal["toy_length"] = "toy_length"
    max_words: int = Field(3, ge=1, description="Longest output kept, in words.")

    def dependencies(self) -> Dependencies:
        return Dependencies()

    def build(self, context: FilterContext):
        return ToyLengthFilter(self.max_words)


class ToyLengthFilter:
    name = "toy_length"

    def __init__(self, max_words: int) -> None:
        self.max_words = max_words

    def __call__(self, records):
        return [Verdict(keep=len(r.output.split()) <= self.max_words,
                        reason="too_many_words") for r in records]
'''

DRIVER = '''
import json, sys
from pathlib import Path

import distill.filters
distill.filters.__path__.append(sys.argv[1])  # the new file's folder

import yaml

from distill.component import fingerprint_inputs
from distill.filters.base import FilterContext, run_funnel
from distill.recipe import RecipeError, load_recipe, recipe_json_schema
from distill.records import Example
from distill.registry import FILTERS

recipe_path = Path(sys.argv[2])
recipe = load_recipe(recipe_path)
settings = recipe.filters[0]
records = [Example(id="a", instruction="Say hi.", output="hi"),
           Example(id="b", instruction="Say more.", output="one two three four five")]
result = run_funnel([settings.create(FilterContext())], records)
try:
    load_recipe(recipe_path, ["filters.0.max_wordz=2"])
    error = ""
except RecipeError as caught:
    error = str(caught)
changed = load_recipe(recipe_path, ["filters.0.max_words=9"]).filters[0]
prints = [fingerprint_inputs(s, lambda spec: "", {}) for s in (settings, changed)]
sys.path.insert(0, sys.argv[3])
import recipe_reference
print(json.dumps({
    "registered": "toy_length" in FILTERS.names(),
    "kept": [r.id for r in result.kept],
    "funnel": result.funnel[0]["filter"],
    "error": error,
    "in_schema": "toy_length" in json.dumps(recipe_json_schema()),
    "in_reference": "toy_length" in recipe_reference.render(),
    "fingerprint_moves": prints[0] != prints[1],
}))
'''


def test_a_new_filter_is_one_file(tmp_path):
    package = tmp_path / "new_filters"
    package.mkdir()
    (package / "toy_length.py").write_text(TOY_FILTER, encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(textwrap.dedent("""
        name: toy
        teacher: {model: org/teacher}
        student: {model: org/student}
        generate: {kind: self_instruct, num_instructions: 4}
        filters:
          - kind: toy_length
            max_words: 3
        eval: {tasks: [microworld]}
    """), encoding="utf-8")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    result = subprocess.run([sys.executable, str(driver), str(package), str(recipe),
                             str(ROOT / "scripts")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["registered"]
    assert seen["kept"] == ["a"] and seen["funnel"] == "toy_length"
    assert "filters.0.toy_length.max_wordz" in seen["error"] or \
        "filters.0.max_wordz" in seen["error"], seen["error"]
    assert seen["in_schema"] and seen["in_reference"]
    assert seen["fingerprint_moves"]
