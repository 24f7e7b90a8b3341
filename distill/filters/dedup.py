"""Exact deduplication after normalisation, keeping the first occurrence.

Two records are duplicates when their chosen fields (default: instruction and input) are
equal after `normalize`: Unicode NFKC, case folding, every Unicode punctuation character
(category P*) replaced by a space, whitespace runs collapsed to one space, ends stripped.
So "Name three fruits." and "name  three fruits" are duplicates, while "2+2" and "2-2"
are not ("+" is a symbol, "-" punctuation: "2 2" vs "2+2").

Dropped records get the reason `exact_duplicate` and `scores.duplicate_of` = the id of
the record that was kept.

    filters:
      - kind: dedup
        fields: [instruction, input, output]
"""

from __future__ import annotations

import unicodedata
from typing import Literal

from pydantic import Field

from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings, Verdict
from distill.records import Example
from distill.registry import FILTERS


@FILTERS.register
class Config(FilterSettings):
    """Exact duplicates after normalisation."""

    kind: Literal["dedup"] = "dedup"
    fields: list[Literal["instruction", "input", "output"]] = Field(
        default_factory=lambda: ["instruction", "input"], min_length=1,
        description="Record fields that together form the duplicate key; the first record "
        "with a given key is kept, later ones are dropped.")

    def dependencies(self) -> Dependencies:
        """None: the keys come from the records alone."""
        return Dependencies()

    def build(self, context: FilterContext) -> ExactDedupFilter:
        """The exact-duplicate filter."""
        return ExactDedupFilter(self, context)


class _PunctuationToSpace(dict):
    """A `str.translate` table mapping every Unicode punctuation character to a space.

    Filled lazily, one code point at a time, as texts are translated.
    """

    def __missing__(self, code_point: int) -> str:
        char = chr(code_point)
        value = " " if unicodedata.category(char).startswith("P") else char  # None deletes
        self[code_point] = value
        return value


_PUNCTUATION = _PunctuationToSpace()


def normalize(text: str) -> str:
    """NFKC, case-fold, punctuation to spaces, whitespace collapsed and stripped."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.translate(_PUNCTUATION).split())


class ExactDedupFilter:
    """Keeps the first record of each normalised key."""

    name = "dedup"

    def __init__(self, config: Config, context: FilterContext) -> None:
        self.config = config

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """Drop every record whose key an earlier record already had."""
        first: dict[tuple[str, ...], str] = {}
        verdicts = []
        for record in records:
            key = tuple(normalize(getattr(record, name)) for name in self.config.fields)
            kept_id = first.get(key)
            if kept_id is None:
                first[key] = record.id
                verdicts.append(Verdict(keep=True))
            else:
                verdicts.append(Verdict(keep=False, reason="exact_duplicate",
                                        scores={"duplicate_of": kept_id}))
        return verdicts
