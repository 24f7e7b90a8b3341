"""The documentation stays true: generated reference, a short README, no dead links."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "recipe_reference.py"
README_MAX_LINES = 350

# [text](target) and ![alt](target); the target ends at whitespace or the closing paren.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)


def load_reference_script():
    spec = importlib.util.spec_from_file_location("recipe_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    text = re.sub(r"`[^`\n]*`", "", text)  # `[x](y)` inside inline code is not a link
    links = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http:, mailto:, ... and anchors within the page
        links.append(target)
    return links


def test_reference_is_generated_from_the_schema():
    expected = load_reference_script().render()
    actual = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert actual == expected, (
        "docs/reference.md is out of date with the recipe schema; regenerate it with "
        "`python scripts/recipe_reference.py --write` and commit the result")


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, more than {README_MAX_LINES}: move detail into "
        "docs/ and link to it")


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(path):
    missing = []
    for target in relative_links(path):
        file = target.split("#", 1)[0]
        if not (path.parent / file).exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


def test_link_pattern_finds_links():
    assert LINK.findall("see [a](docs/a.md#x), ![p](collapse/p.png) and [w](https://x.y)") == [
        "docs/a.md#x", "collapse/p.png", "https://x.y"]
