"""`distill decontaminate`: check any JSONL dataset against any lm-eval tasks.

    distill decontaminate data.jsonl --tasks microworld
    distill decontaminate data.jsonl --tasks gsm8k,mmlu --ngram 8 --method coverage \
        --paraphrase --out reports/data

Each line of DATA is a JSON object. The checked text is `--fields` joined (a string
field as it is, a list of chat messages as their contents), by default the Alpaca fields
instruction / input / output when a record has any of them, else its `messages`, else its
`text`. The paraphrase detector compares the question part (instruction and input, or
the user turns) with the benchmark questions.

Writes into --out (default: DATA's folder / <stem>.decontamination/): contamination.json
(the full report), contamination.md (each flagged item beside its benchmark match),
clean.jsonl (the input lines not flagged, byte for byte) and flagged.jsonl (the flagged
records with their matches). Prints a table of the flagged items.

Exit codes: 0 nothing flagged, 3 something flagged (0 with --exit-zero), 2 bad input (a
missing file, a line that is not a JSON object, a record with no text, an unknown task),
1 anything else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

EXIT_FOUND = 3
ALPACA = ("instruction", "input", "output")


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


@dataclass
class Record:
    """One dataset line: the gate's item and the line as read."""

    line: int
    id: str
    text: str
    question: str
    raw: str


def decontaminate(
    data: Annotated[Path, typer.Argument(help="A JSONL dataset, one JSON object per line.")],
    tasks: Annotated[str, typer.Option(help="lm-eval tasks, groups or tags, comma-separated.")],
    include_path: Annotated[Path | None, typer.Option(
        help="Folder of local task YAMLs; default: distill's eval/tasks (the microworld).")
    ] = None,
    ngram: Annotated[int | None, typer.Option(
        help="Word n-gram length; default 13 (GPT-3), or the preset's.")] = None,
    method: Annotated[str | None, typer.Option(
        help="ngram: any shared n-gram flags; coverage: only coverage above --dirty-above.")
    ] = None,
    preset: Annotated[str | None, typer.Option(help="gpt3, tulu3 or llama2.")] = None,
    coverage_of: Annotated[str | None, typer.Option(
        help="Coverage counts the benchmark item's words (default) or the example's.")
    ] = None,
    clean_below: Annotated[float | None, typer.Option(help="Coverage below: clean.")] = None,
    dirty_above: Annotated[float | None, typer.Option(help="Coverage above: dirty.")] = None,
    paraphrase: Annotated[bool, typer.Option(
        help="Also look for rephrased benchmark questions (sentence embeddings).")] = False,
    paraphrase_threshold: Annotated[float | None, typer.Option(
        help="Top-1 cosine at or above which a record is a paraphrase candidate, flagged "
        "once its numbers and words agree with the item (or the judge confirms it); "
        "default 0.7.")
    ] = None,
    judge_model: Annotated[str | None, typer.Option(
        help="LLM that confirms paraphrase candidates (implies --paraphrase).")] = None,
    judge_backend: Annotated[str, typer.Option(
        help="hf, vllm or openai (an OpenAI-compatible server).")] = "hf",
    judge_base_url: Annotated[str | None, typer.Option(
        help="The judge server's URL (openai backend); its key is read from "
        "$OPENAI_API_KEY.")] = None,
    fields: Annotated[str | None, typer.Option(
        help="Comma-separated record fields to check; default instruction,input,output, "
        "else messages, else text.")] = None,
    id_field: Annotated[str, typer.Option(help="Record field holding its id.")] = "id",
    out: Annotated[Path | None, typer.Option(help="Folder for the reports.")] = None,
    show: Annotated[int, typer.Option(help="Flagged items printed in the table.")] = 20,
    exit_zero: Annotated[bool, typer.Option(
        help="Exit 0 even when something is flagged.")] = False,
) -> None:
    """Check a JSONL dataset against lm-eval tasks; write JSON and Markdown reports."""
    from pydantic import ValidationError

    from distill.cli import _fail, console
    from distill.evaluate.contamination import Config

    settings: dict[str, Any] = {key: value for key, value in {
        "ngram": ngram, "method": method, "preset": preset, "coverage_of": coverage_of,
        "clean_below": clean_below, "dirty_above": dirty_above}.items() if value is not None}
    if paraphrase or judge_model or paraphrase_threshold is not None:
        settings["paraphrase"] = {}
        if paraphrase_threshold is not None:
            settings["paraphrase"]["threshold"] = paraphrase_threshold
        if judge_model:
            settings["paraphrase"]["judge"] = {
                "backend": judge_backend, "model": judge_model,
                "engine": {"base_url": judge_base_url} if judge_base_url else {}}
    try:
        config = Config(**settings)
    except ValidationError as error:
        problems = "; ".join(f"{_option(e['loc'])}: {e['msg']}" for e in error.errors())
        raise _fail(problems) from None
    names = [name.strip() for name in tasks.split(",") if name.strip()]
    if not names:
        raise _fail("--tasks: give at least one lm-eval task")
    if include_path is not None and not include_path.is_dir():
        raise _fail(f"--include-path: {include_path}: no such directory")
    try:
        records = read_records(data, _split(fields), id_field)
    except DataError as error:
        raise _fail(str(error)) from None
    documents = _load_tasks(names, include_path, _fail)
    report = _check(records, config, documents, _fail)
    out = out or data.parent / f"{data.stem}.decontamination"
    write_outputs(report, records, data, out)
    _print_table(report, show, console)
    console.print(f"[green]wrote:[/] {out}/contamination.md, contamination.json, clean.jsonl "
                  f"({len(records) - len(report.contaminated)} records), flagged.jsonl",
                  soft_wrap=True)
    if report.contaminated and not exit_zero:
        raise typer.Exit(EXIT_FOUND)


def read_records(path: Path, fields: list[str] | None, id_field: str = "id") -> list[Record]:
    """Every non-blank line of a JSONL file as a `Record`; `DataError` names a bad line."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    records: list[Record] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as error:
                raise DataError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(value, dict):
                raise DataError(f"{path}:{number}: expected a JSON object, got "
                                f"{type(value).__name__}")
            text, question = record_texts(value, fields)
            if text is None:
                wanted = (", ".join(fields) if fields
                          else "instruction, input, output, messages or text")
                raise DataError(f"{path}:{number}: no text to check: the record has none of "
                                f"{wanted} (its fields: {', '.join(sorted(value)[:8])}; "
                                "choose with --fields)")
            record_id = value.get(id_field)
            record_id = str(record_id) if isinstance(record_id, (str, int)) else f"line-{number}"
            if record_id in seen:  # ids name rows in the report: keep them unique
                record_id = f"{record_id}@line-{number}"
            seen.add(record_id)
            records.append(Record(number, record_id, text, question, raw.rstrip("\n")))
    if not records:
        raise DataError(f"{path}: no records (the file is empty)")
    return records


def record_texts(value: dict[str, Any], fields: list[str] | None) -> tuple[str | None, str]:
    """(checked text, question text) of one record; None when it has none of the fields."""
    if fields:
        present = [name for name in fields if name in value]
        if not present:
            return None, ""
        text = "\n".join(_text(value[name]) for name in present)
        return text, text
    if any(name in value for name in ALPACA):
        text = "\n".join(_text(value.get(name, "")) for name in ALPACA)
        question = "\n".join(_text(value.get(name, "")) for name in ALPACA[:2])
        return text, question
    if isinstance(value.get("messages"), list):
        messages = [m for m in value["messages"] if isinstance(m, dict)]
        text = "\n".join(_text(m.get("content", "")) for m in messages)
        question = "\n".join(_text(m.get("content", "")) for m in messages
                             if m.get("role") in ("user", "system"))
        return text, question
    if "text" in value:
        return _text(value["text"]), _text(value["text"])
    return None, ""


def write_outputs(report: Any, records: list[Record], data: Path, out: Path) -> None:
    """contamination.json, contamination.md, clean.jsonl and flagged.jsonl, atomically."""
    from distill.evaluate.contamination_report import markdown
    from distill.records import atomic_write_text, write_json

    out.mkdir(parents=True, exist_ok=True)
    flagged = {entry.id: entry for entry in report.contaminated}
    write_json(out / "contamination.json", report.model_dump(mode="json"))
    atomic_write_text(out / "contamination.md", markdown(report, str(data)))
    atomic_write_text(out / "clean.jsonl", "".join(
        f"{r.raw}\n" for r in records if r.id not in flagged))
    atomic_write_text(out / "flagged.jsonl", "".join(
        json.dumps({"line": r.line, "id": r.id, "record": json.loads(r.raw),
                    "kind": flagged[r.id].kind, "score": flagged[r.id].score,
                    "matches": [m.model_dump() for m in flagged[r.id].matches]},
                   ensure_ascii=False) + "\n"
        for r in records if r.id in flagged))


def _load_tasks(names: list[str], include_path: Path | None, fail: Any) -> Any:
    from distill.evaluate.contamination import load_benchmark_docs

    # distill's own tasks (as distill.recipe.BUILTIN_TASKS), without importing the recipe.
    builtin = Path(__file__).resolve().parents[2] / "eval" / "tasks"
    include = include_path or (builtin if builtin.is_dir() else None)
    try:
        return load_benchmark_docs(names, include)
    except KeyError as error:
        raise fail(f"--tasks: {error.args[0] if error.args else error}") from None


def _check(records: list[Record], config: Any, documents: Any, fail: Any) -> Any:
    from distill.evaluate.contamination import TextItem, check_items

    items = [TextItem(r.id, r.text, r.question) for r in records]
    try:
        return check_items(items, config, documents=documents)
    except ImportError as error:  # the paraphrase detector's optional extra
        raise fail(str(error)) from None
    except ValueError as error:  # e.g. the judge's API key variable is not set
        raise fail(f"{type(error).__name__}: {error}") from None


def _print_table(report: Any, show: int, console: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from distill.evaluate.contamination_report import evidence, settings_line

    console.print(f"{report.checked} records, {len(report.tasks)} task(s); "
                  f"{settings_line(report)}", soft_wrap=True, highlight=False)
    console.print(f"[bold]{len(report.contaminated)} flagged[/], {len(report.suspect)} "
                  "suspect (kept)", highlight=False)
    if not report.contaminated:
        return
    table = Table(title=f"flagged (first {min(show, len(report.contaminated))})")
    for column in ("item", "kind", "score", "task", "doc", "training text", "benchmark text",
                   "evidence"):
        table.add_column(column, overflow="fold")
    for entry in report.contaminated[:show]:
        match = entry.matches[0]
        table.add_row(entry.id, entry.kind, "" if entry.score is None else f"{entry.score:.2f}",
                      match.task, str(match.doc_index), _clip(entry.excerpt, 80),
                      _clip(match.doc_text, 80), _clip(evidence(entry), 80))
    out = Console()
    if not out.is_terminal:
        out.width = 200  # piped or captured: do not squeeze the table to 80 columns
    out.print(table)


def _option(loc: tuple[Any, ...]) -> str:
    """The command-line option behind a config field's error location."""
    if loc[:1] == ("paraphrase",):
        return "--judge-" + str(loc[-1]) if "judge" in loc else "--paraphrase-threshold"
    return "--" + str(loc[0]).replace("_", "-") if loc else "options"


def _split(value: str | None) -> list[str] | None:
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # chat messages, or a list of strings
        return "\n".join(_text(v.get("content", "") if isinstance(v, dict) else v)
                         for v in value)
    return "" if value is None else json.dumps(value, ensure_ascii=False)


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
