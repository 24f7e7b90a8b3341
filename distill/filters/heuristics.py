"""Rule-based quality filters of Self-Instruct and Alpaca.

The instruction rules are Self-Instruct's (`bootstrap_instructions.py`) with Alpaca's
additions (`generate_instruction.py`): drop instructions of <= 3 or > 150 words, with a
blacklisted word (matched as a whole word, case-insensitively, as Alpaca's
`find_word_in_string` does), starting with "Write a program", or starting with
punctuation or a non-ASCII character. The instance rules are Self-Instruct's: drop empty
outputs and outputs that repeat the input. Generations cut off by the token limit
(`finish_reason == "length"`, of the instruction or of the response) are dropped too,
as both papers do.

Every rule can be changed or switched off in the recipe. A record is judged by the rules
in the order of `RULES` below, and the first that fails names the reason, e.g.
`too_short`, `blacklist:image`, `prefix:write a program`.

    filters:
      - kind: heuristics
        blacklist: [image, images]     # replaces the default list
        max_output_words: 1000
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import Field

from distill.component import Dependencies
from distill.filters.base import FilterContext, FilterSettings, Verdict
from distill.records import Example
from distill.registry import FILTERS

# Self-Instruct's list, then what Alpaca added.
SELF_INSTRUCT_BLACKLIST = ["image", "images", "graph", "graphs", "picture", "pictures", "file",
                           "files", "map", "maps", "draw", "plot", "go to"]
ALPACA_BLACKLIST = SELF_INSTRUCT_BLACKLIST + ["video", "audio", "music", "flowchart", "diagram"]

# The order in which rules are checked; the first failing rule names the drop reason.
RULES = ("empty_instruction", "truncated_instruction", "truncated_output", "too_short",
         "too_long", "blacklist:<word>", "prefix:<prefix>", "starts_with_punctuation",
         "starts_with_non_ascii", "empty_output", "input_equals_output", "output_too_short",
         "output_too_long")

NonEmpty = Annotated[str, Field(min_length=1)]


@FILTERS.register
class Config(FilterSettings):
    """Self-Instruct / Alpaca rule filters; each rule can be changed or switched off."""

    kind: Literal["heuristics"] = "heuristics"
    min_instruction_words: int | None = Field(
        4, ge=1, description="Instructions with fewer whitespace-separated words are dropped "
        "(`too_short`); Self-Instruct drops <= 3 words. null disables.")
    max_instruction_words: int | None = Field(
        150, ge=1, description="Instructions with more words are dropped (`too_long`); "
        "Self-Instruct drops > 150 words. null disables.")
    blacklist: list[NonEmpty] = Field(
        default_factory=lambda: list(ALPACA_BLACKLIST),
        description="Words or phrases that drop an instruction when they occur as whole words "
        "(regex word boundaries, any case): `blacklist:<word>`. Default: Self-Instruct's "
        "list plus Alpaca's additions. [] disables.")
    banned_prefixes: list[NonEmpty] = Field(
        default_factory=lambda: ["Write a program"],
        description="Instructions starting with one of these (any case) are dropped: "
        "`prefix:<prefix in lower case>`. [] disables.")
    drop_punctuation_start: bool = Field(
        True, description="Drop instructions whose first character is ASCII punctuation "
        "(`starts_with_punctuation`).")
    drop_non_ascii_start: bool = Field(
        True, description="Drop instructions whose first character is not ASCII "
        "(`starts_with_non_ascii`).")
    truncation_finish_reasons: list[str] = Field(
        default_factory=lambda: ["length"],
        description="Finish reasons that mean a generation was cut off: a record whose "
        "`lineage.instruction_finish_reason` or `lineage.finish_reason` (the response's) is "
        "one of these is dropped (`truncated_instruction`, `truncated_output`). [] disables.")
    drop_empty_output: bool = Field(
        True, description="Drop records whose output is empty or whitespace (`empty_output`).")
    drop_input_equals_output: bool = Field(
        True, description="Drop records whose non-empty input equals the output, ignoring "
        "surrounding whitespace (`input_equals_output`).")
    min_output_words: int | None = Field(
        None, ge=1, description="Outputs with fewer words are dropped (`output_too_short`). "
        "null (the default) disables.")
    max_output_words: int | None = Field(
        None, ge=1, description="Outputs with more words are dropped (`output_too_long`). "
        "null (the default) disables.")

    def dependencies(self) -> Dependencies:
        """None: the rules read only the records."""
        return Dependencies()

    def build(self, context: FilterContext) -> HeuristicFilter:
        """The rule filter."""
        return HeuristicFilter(self, context)


class HeuristicFilter:
    """Drops records that break one of the configured rules."""

    name = "heuristics"

    def __init__(self, config: Config, context: FilterContext) -> None:
        self.config = config
        # As Alpaca's find_word_in_string: r"\b(word)\b", case-insensitive. Kept in list order
        # so the reason names the first listed word that matches.
        self._blacklist = [(word, re.compile(rf"\b({re.escape(word)})\b", re.IGNORECASE))
                           for word in config.blacklist]
        self._prefixes = [prefix.lower() for prefix in config.banned_prefixes]
        self._truncated = set(config.truncation_finish_reasons)

    def __call__(self, records: list[Example]) -> list[Verdict]:
        """Judge each record on its own."""
        return [self.judge(record) for record in records]

    def judge(self, record: Example) -> Verdict:
        """The first rule the record breaks, or keep."""
        instruction = record.instruction.strip()
        words = len(instruction.split())
        output_words = len(record.output.split())
        scores = {"instruction_words": words, "output_words": output_words}
        reason = self._reason(record, instruction, words, output_words)
        return Verdict(keep=reason is None, reason=reason or "", scores=scores)

    def _reason(self, record: Example, instruction: str, words: int,
                output_words: int) -> str | None:
        cfg = self.config
        if not instruction:
            return "empty_instruction"
        lineage = record.lineage
        if getattr(lineage, "instruction_finish_reason", None) in self._truncated:
            return "truncated_instruction"
        if getattr(lineage, "finish_reason", None) in self._truncated:
            return "truncated_output"
        if cfg.min_instruction_words is not None and words < cfg.min_instruction_words:
            return "too_short"
        if cfg.max_instruction_words is not None and words > cfg.max_instruction_words:
            return "too_long"
        for word, pattern in self._blacklist:
            if pattern.search(instruction):
                return f"blacklist:{word}"
        lowered = instruction.lower()
        for prefix in self._prefixes:
            if lowered.startswith(prefix):
                return f"prefix:{prefix}"
        if cfg.drop_punctuation_start and instruction[0] in string.punctuation:
            return "starts_with_punctuation"
        if cfg.drop_non_ascii_start and not instruction[0].isascii():
            return "starts_with_non_ascii"
        output = record.output.strip()
        if cfg.drop_empty_output and not output:
            return "empty_output"
        source = record.input.strip()
        if cfg.drop_input_equals_output and source and source == output:
            return "input_equals_output"
        if cfg.min_output_words is not None and output_words < cfg.min_output_words:
            return "output_too_short"
        if cfg.max_output_words is not None and output_words > cfg.max_output_words:
            return "output_too_long"
        return None
