"""Record types that flow between stages, and atomic JSONL I/O.

An `Example` is one instruction-following record in Alpaca form (instruction, input,
output) that also carries chat `messages`, so the same file trains with TRL's
`SFTTrainer` and reads like Alpaca's data. Every record keeps its lineage (where it came
from) and the scores filters gave it. A `PreferencePair` (a prompt, a chosen and a
rejected answer) is one row of DPO data, in the form TRL's `DPOTrainer` reads.

A record of a reasoning teacher keeps its trace apart from its answer (`Example.reasoning`
and `Example.output`), so the same record trains a student with or without the trace. The
trace format is declared once, here: `join_trace` writes the assistant turn a reasoning
teacher writes, `<think>trace</think>answer`, and `split_trace` reads one back.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

# The reasoning trace's delimiters, as DeepSeek-R1, QwQ and Qwen3 write them.
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def join_trace(reasoning: str, answer: str) -> str:
    """The assistant turn of a teacher that thinks: `<think>reasoning</think>answer`.

    Nothing is added or stripped, so `join_trace(*split_trace(text)) == text` for every
    text that opens with `<think>` and closes it (and for text without a trace). No
    reasoning gives the answer alone.
    """
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{answer}" if reasoning else answer


def split_trace(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a completion; ("", text) when it closes no trace.

    The trace is the text up to the first `</think>`, after an opening `<think>` when there
    is one: templates of reasoning models (DeepSeek-R1's) put `<think>` in the prompt, so
    their completions hold only the closing tag. Both parts are kept verbatim, whitespace
    included; `has_open_trace` tells a trace cut off before `</think>` from no trace.
    """
    head, closed, answer = text.partition(THINK_CLOSE)
    if not closed:
        return "", text
    _, opened, inside = head.partition(THINK_OPEN)
    return (inside if opened else head), answer


def has_open_trace(text: str) -> bool:
    """Whether `text` opens a trace it never closes (a completion cut off while thinking)."""
    return THINK_OPEN in text and THINK_CLOSE not in text


class Lineage(BaseModel):
    """Where a record came from: enough to reproduce or audit it."""

    model_config = ConfigDict(extra="allow")

    round: int = 0
    method: str = ""
    teacher: str = ""
    template_hash: str = ""
    sampling: dict[str, Any] = Field(default_factory=dict)


class Example(BaseModel):
    """An instruction / input / output record with its chat form and lineage."""

    model_config = ConfigDict(extra="allow")

    id: str
    instruction: str
    input: str = ""
    output: str = ""
    # A reasoning teacher's trace (without its tags); `output` is then the final answer.
    reasoning: str = ""
    lineage: Lineage = Field(default_factory=Lineage)
    scores: dict[str, Any] = Field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        """The user turn: the instruction, followed by its input when there is one."""
        return f"{self.instruction}\n\n{self.input}" if self.input.strip() else self.instruction

    def messages(self) -> list[dict[str, str]]:
        """The record as a user / assistant chat; the assistant turn holds the trace if any."""
        return [
            {"role": "user", "content": self.prompt_text},
            {"role": "assistant", "content": join_trace(self.reasoning, self.output)},
        ]

    def to_json(self) -> dict[str, Any]:
        """The on-disk form: model fields plus `messages`, which TRL trains on directly.

        `reasoning` is written only when there is a trace, so records without one keep
        the form (and the bytes) they had before traces existed.
        """
        data = self.model_dump(mode="json")
        if not self.reasoning:
            del data["reasoning"]
        data["messages"] = self.messages()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Example:
        """Read the on-disk form back (the derived `messages` field is dropped)."""
        data = {k: v for k, v in data.items() if k != "messages"}
        return cls.model_validate(data)


class PreferencePair(BaseModel):
    """A prompt with a preferred (`chosen`) and a dispreferred (`rejected`) answer.

    The on-disk form is TRL's conversational preference format with an explicit prompt,
    so `trl.DPOTrainer` and `datasets.load_dataset("json", ...)` read the file as it is:
    `prompt` holds the system (optional) and user turns, `chosen` and `rejected` one
    assistant turn each. `score_chosen` / `score_rejected` are the judge's scores (as in
    UltraFeedback binarized). `instruction` and `input` keep the task the prompt came
    from, so the filters and the decontamination gate read a pair like an `Example`,
    whose `output` is the chosen answer.
    """

    model_config = ConfigDict(extra="allow")

    id: str
    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    score_chosen: float | None = None
    score_rejected: float | None = None
    instruction: str = ""
    input: str = ""
    lineage: Lineage = Field(default_factory=Lineage)
    scores: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _instruction_from_prompt(self) -> PreferencePair:
        # Pairs written elsewhere carry no task fields: the last user turn is the task.
        if not self.instruction:
            users = [m["content"] for m in self.prompt if m.get("role") == "user"]
            self.instruction = users[-1] if users else ""
        return self

    @classmethod
    def build(cls, id: str, task: Example, chosen: str, rejected: str,
              system_prompt: str | None = None, **fields: Any) -> PreferencePair:
        """A pair for `task`'s user turn (after an optional system prompt)."""
        prompt = [{"role": "user", "content": task.prompt_text}]
        if system_prompt:
            prompt.insert(0, {"role": "system", "content": system_prompt})
        return cls(id=id, prompt=prompt, chosen=[{"role": "assistant", "content": chosen}],
                   rejected=[{"role": "assistant", "content": rejected}],
                   instruction=task.instruction, input=task.input, **fields)

    @property
    def prompt_text(self) -> str:
        """The user turn: the instruction, followed by its input when there is one."""
        return f"{self.instruction}\n\n{self.input}" if self.input.strip() else self.instruction

    @property
    def output(self) -> str:
        """The chosen answer: what filters judge and what SFT on a pair learns."""
        return self.chosen[-1]["content"] if self.chosen else ""

    @property
    def rejected_output(self) -> str:
        """The rejected answer."""
        return self.rejected[-1]["content"] if self.rejected else ""

    def messages(self) -> list[dict[str, str]]:
        """The prompt followed by the chosen answer (the conversation SFT trains on)."""
        return [*self.prompt, *self.chosen]

    def to_json(self) -> dict[str, Any]:
        """The on-disk form (TRL's preference columns plus distill's own)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PreferencePair:
        """Read the on-disk form back."""
        return cls.model_validate(data)


def record_from_json(data: dict[str, Any]) -> Example | PreferencePair:
    """An `Example`, or a `PreferencePair` when the row has `chosen` and `rejected`."""
    if "chosen" in data and "rejected" in data:
        return PreferencePair.from_json(data)
    return Example.from_json(data)


class Rejected(BaseModel):
    """A record some step refused, kept on disk with the reason: nothing is silently lost."""

    model_config = ConfigDict(extra="allow")

    id: str
    stage: str
    reason: str
    record: dict[str, Any] = Field(default_factory=dict)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file; a malformed line raises ValueError naming the file and line."""
    return list(iter_jsonl(path))


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Iterate a JSONL file's records; blank lines are skipped."""
    with Path(path).open("rb") as handle:  # decoded line by line: see numbered_json_objects
        for _, row in numbered_json_objects(handle, path):
            yield row


def numbered_json_objects(lines: Iterable[str | bytes], path: str | Path
                          ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank JSONL line of `path`.

    `lines` may be bytes (a file opened "rb"), decoded here as UTF-8 one line at a time:
    a text-mode file decodes in blocks, so its UnicodeDecodeError names neither the file
    nor the line.

    Raises:
        ValueError: "<path>:<line>: ..." for a line that is not UTF-8 or not a JSON object.
    """
    for number, line in enumerate(lines, start=1):
        if isinstance(line, bytes):
            try:
                line = line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{path}:{number}: not UTF-8 (byte 0x{line[error.start]:02x} "
                                 f"at column {error.start + 1})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got "
                             f"{type(row).__name__}")
        yield number, row


# atomic_write_text's temporary files are `.<name>.<random><PARTIAL_SUFFIX>`
PARTIAL_SUFFIX = ".tmp"


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_partial_writes(directory: str | Path) -> None:
    """Delete the temporary files of `atomic_write_text` calls a kill interrupted."""
    for leftover in Path(directory).rglob(f".*{PARTIAL_SUFFIX}"):
        leftover.unlink()


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any] | BaseModel]) -> int:
    """Atomically write records as JSONL; returns how many were written."""
    lines = []
    for record in records:
        if isinstance(record, Example):
            record = record.to_json()
        elif isinstance(record, BaseModel):
            record = record.model_dump(mode="json")
        lines.append(json.dumps(record, ensure_ascii=False))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return len(lines)


def write_json(path: str | Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_utf8(path: str | Path) -> str:
    """A text file's content; bytes that are not UTF-8 raise ValueError naming the line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{raw[error.start]:02x})") from None


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_examples(path: str | Path) -> list[Example]:
    """Read a JSONL file of examples; a line that is not one raises ValueError naming it."""
    examples = []
    with Path(path).open("rb") as handle:
        for number, row in numbered_json_objects(handle, path):
            try:
                examples.append(Example.from_json(row))
            except ValidationError as error:
                problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}"
                                     for item in error.errors())
                raise ValueError(f"{path}:{number}: not an example ({problems})") from None
    return examples


def read_records(path: str | Path) -> list[Example | PreferencePair]:
    """Read a JSONL file of examples and / or preference pairs."""
    return [record_from_json(row) for row in iter_jsonl(path)]
