r"""Parse the numbered task lists a teacher writes for Self-Instruct / Alpaca prompts.

The prompt ends with `"###\n{k+1}. Instruction:"`, so the teacher's completion continues
a list of blocks like

    ###
    5. Instruction: Rewrite the sentence in the passive voice.
    5. Input:
    The committee approved the plan.
    5. Output:
    The plan was approved by the committee.

Alpaca's parser (`post_process_gpt3_response`) splits on every "###" and keeps a block
only when `re.split(f"{idx}\.\s+(Instruction|Input|Output):")` gives exactly three
fields numbered by position. This one keeps those rules but is sturdier and says why
it refused a block:

- blocks are separated by lines holding only "###" (a markdown heading such as
  "### Step 1" inside an output does not split a task), and a new "N. Instruction:"
  marker also starts a block when the teacher forgot the separator;
- "\r\n" and "\r" are read as newlines; "<noinput>" (any case, or "<no input>") means
  an empty input;
- a block must have exactly one Instruction, Input and Output, all with the same number,
  and that number must follow the previous block's (a skipped or repeated number rejects
  that block only, not every block after it as position-based numbering would);
- when the completion stopped for length (`finish_reason == "length"`), the block it
  ended in is rejected as "truncated" (Alpaca drops it too), unless the text ended on a
  separator line, i.e. after a complete block;
- nothing the teacher returns raises: every non-blank block is either a task or a
  failure with one of `REASONS`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Why a block was refused, in the order they are checked.
REASONS = (
    "empty",                # the whole completion was blank
    "truncated",            # the completion hit max_tokens inside this block
    "no_fields",            # text without any "N. Instruction/Input/Output:" marker
    "duplicate_field",      # e.g. two "N. Output:" markers in one block
    "missing_instruction",
    "missing_input",
    "missing_output",
    "bad_numbering",        # fields disagree, or the number does not follow the last one
    "empty_instruction",
    "empty_output",
)

NO_INPUT = {"<noinput>", "<no input>", "<no_input>"}

_SEPARATOR = re.compile(r"^[ \t]*#{3,}[ \t]*$", re.MULTILINE)
_MARKER = re.compile(
    r"^[ \t]*(?:#{3,}[ \t]*)?(\d+)[ \t]*[.)][ \t]*(instruction|input|output)[ \t]*:[ \t]*",
    re.MULTILINE | re.IGNORECASE,
)


@dataclass
class ParsedTask:
    """One well-formed task from a completion."""

    block: int  # position of the block in the completion (0-based), stable id material
    number: int  # the number the teacher gave it
    instruction: str
    input: str
    output: str
    raw: str


@dataclass
class ParseFailure:
    """One refused block, with the reason and the raw text."""

    block: int
    reason: str
    raw: str
    number: int | None = None


@dataclass
class ParseResult:
    """Everything one completion yielded."""

    tasks: list[ParsedTask] = field(default_factory=list)
    failures: list[ParseFailure] = field(default_factory=list)


def normalize_newlines(text: str) -> str:
    """Windows and old-Mac line ends as newlines."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def parse_task_list(completion: str, first_number: int,
                    finish_reason: str = "stop", strict_numbering: bool = True) -> ParseResult:
    """Parse a completion that continues the prompt's `"{first_number}. Instruction:"`.

    Args:
        completion: the teacher's text, exactly as returned.
        first_number: the number of the first task the teacher writes (in-context tasks
            + 1): the prompt ended with its "Instruction:" marker, so it is prepended.
        finish_reason: "length" marks the last block as truncated.
        strict_numbering: reject a block whose fields' numbers disagree or do not follow
            the previous task's (Alpaca's parser); false ignores the numbers, which small
            teachers miscopy while writing otherwise well-formed tasks.

    Returns:
        Tasks and failures, each in the order they appear; a blank completion gives a
        single "empty" failure.
    """
    if not isinstance(completion, str) or not completion.strip():
        return ParseResult(failures=[ParseFailure(0, "empty", completion or "")])
    text = normalize_newlines(f"{first_number}. Instruction:{completion}")
    truncated = finish_reason == "length"
    result = ParseResult()
    expected = first_number
    for index, (raw, unterminated) in enumerate(_split_blocks(text)):
        if truncated and unterminated:
            result.failures.append(ParseFailure(index, "truncated", raw, _first_number(raw)))
            break
        outcome = _parse_block(index, raw, expected, strict_numbering)
        if isinstance(outcome, ParsedTask):
            result.tasks.append(outcome)
        else:
            result.failures.append(outcome)
        number = _instruction_number(raw)
        expected = (number if number is not None else expected) + 1
    return result


def _split_blocks(text: str) -> list[tuple[str, bool]]:
    """Non-blank blocks as (text, is_last_and_unterminated)."""
    chunks = _SEPARATOR.split(text)
    ends_on_separator = not chunks[-1].strip()
    blocks: list[str] = []
    for chunk in chunks:
        markers = list(_MARKER.finditer(chunk))
        cuts = [m.start() for m in markers[1:] if m.group(2).lower() == "instruction"]
        starts = [0, *cuts]
        ends = [*cuts, len(chunk)]
        blocks.extend(chunk[a:b] for a, b in zip(starts, ends, strict=True))
    blocks = [b for b in blocks if b.strip()]
    return [(b, i == len(blocks) - 1 and not ends_on_separator) for i, b in enumerate(blocks)]


def _instruction_number(raw: str) -> int | None:
    for marker in _MARKER.finditer(raw):
        if marker.group(2).lower() == "instruction":
            return int(marker.group(1))
    return None


def _first_number(raw: str) -> int | None:
    marker = _MARKER.search(raw)
    return int(marker.group(1)) if marker else None


def _parse_block(index: int, raw: str, expected: int,
                 strict_numbering: bool = True) -> ParsedTask | ParseFailure:
    markers = list(_MARKER.finditer(raw))
    if not markers:
        return ParseFailure(index, "no_fields", raw)
    fields: dict[str, list[tuple[int, str]]] = {}
    for i, marker in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(raw)
        fields.setdefault(marker.group(2).lower(), []).append(
            (int(marker.group(1)), raw[marker.end():end].strip()))
    number = int(markers[0].group(1))

    def fail(reason: str) -> ParseFailure:
        return ParseFailure(index, reason, raw, number)

    if any(len(values) > 1 for values in fields.values()):
        return fail("duplicate_field")
    for name in ("instruction", "input", "output"):
        if name not in fields:
            return fail(f"missing_{name}")
    numbers = {values[0][0] for values in fields.values()}
    if strict_numbering and (len(numbers) != 1 or numbers != {expected}):
        return fail("bad_numbering")
    instruction = fields["instruction"][0][1]
    task_input = fields["input"][0][1]
    output = fields["output"][0][1]
    if not instruction:
        return fail("empty_instruction")
    if not output:
        return fail("empty_output")
    if task_input.lower() in NO_INPUT:
        task_input = ""
    return ParsedTask(index, expected, instruction, task_input, output, raw)
