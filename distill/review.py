"""Expert review of a round's training data: a random sample out, decisions in, error rate.

    distill review export runs/<name> [--round 0] [--size 100] [--seed 0] [--out FILE]
    distill review import runs/<name> FILE

`export` draws a seeded random sample of what a round trains on (the decontamination
stage's `clean.jsonl`, or the filter's `kept.jsonl` before that stage exists) and writes
it as JSONL and CSV with empty `decision` (accept / reject / fix), `fixed_output` and
`note` columns, plus the source chunk for document-grounded records. A reviewer fills
the decisions in (a spreadsheet is fine) and `import` validates them (a bad decision, a
fix without a fixed output or an id that is not in the round names its line), then
stores them under `runs/<name>/review/<round>/decisions.jsonl`, atomically, merged with
earlier imports. Each decision remembers the fingerprint of the data it judged: if the
round is regenerated, old decisions are reported as stale and never applied.

The report shows the reviewed error rate, (rejected + fixed) / reviewed, with a Wilson
95% interval, and a few rejected examples. With the recipe's `review.apply: true` the
train stage drops rejected examples and trains on the fixed outputs (the decisions'
hash joins the train fingerprint, so importing decisions retrains on the next `distill
run`); by default review only measures, so that a reviewed sample stays a fair estimate
of the error rate of the data as generated.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from distill.records import (
    Example,
    Lineage,
    atomic_write_text,
    iter_jsonl,
    numbered_json_objects,
    read_examples,
    read_json,
    write_jsonl,
)
from distill.settings import Strict

DECISIONS = ("accept", "reject", "fix")
# Reviewer columns first, so they are in view in a spreadsheet.
COLUMNS = ("id", "decision", "fixed_output", "note", "instruction", "input", "output",
           "source", "document", "round", "data_fingerprint")


class Config(Strict):
    """`review:` defaults of `distill review export`, and whether decisions feed training."""

    size: int = Field(100, ge=1, description="Examples per exported review sample.")
    seed: int = Field(0, description="Seed of the sample.")
    apply: bool = Field(
        False, description="true: the train stage drops examples reviewers rejected and "
        "trains on their fixed outputs (decisions made on the current data only); false: "
        "review only measures the error rate.")


class ReviewError(ValueError):
    """Bad review input; the message names the file and line."""


def round_data(run_dir: Path, label: str) -> tuple[Path, str]:
    """The data file a round trains on and the fingerprint of the stage that wrote it."""
    for stage, name in (("decontaminate", "clean.jsonl"), ("filter", "kept.jsonl")):
        manifest = run_dir / label / stage / "manifest.json"
        if manifest.exists():
            return run_dir / label / stage / name, read_json(manifest)["fingerprint"]
    raise ReviewError(f"{run_dir / label}: no filtered data yet (run the filter stage first)")


def latest_round(run_dir: Path) -> str:
    """The last round with filtered data."""
    labels = sorted({p.parent.parent.name for p in run_dir.glob("round_*/*/manifest.json")
                     if p.parent.name in ("filter", "decontaminate")},
                    key=lambda label: int(label.split("_")[1]))
    if not labels:
        raise ReviewError(f"{run_dir}: no round with filtered data")
    return labels[-1]


def _label(run_dir: Path, round_index: int | None) -> str:
    return latest_round(run_dir) if round_index is None else f"round_{round_index}"


def recipe_defaults(run_dir: Path) -> Config:
    """The run's `review:` section (defaults for runs made before it existed)."""
    path = run_dir / "recipe.resolved.json"
    section = read_json(path).get("review") if path.exists() else None
    return Config.model_validate(section or {})


def export_sample(run_dir: str | Path, round_index: int | None = None, size: int | None = None,
                  seed: int | None = None, out: str | Path | None = None) -> tuple[Path, Path, int]:
    """Write a review sample as JSONL and CSV; returns (jsonl path, csv path, rows)."""
    run_dir = Path(run_dir)
    defaults = recipe_defaults(run_dir)
    size = defaults.size if size is None else size
    seed = defaults.seed if seed is None else seed
    if size < 1:
        raise ReviewError(f"--size must be at least 1 (got {size})")
    label = _label(run_dir, round_index)
    data_path, fingerprint = round_data(run_dir, label)
    records = read_examples(data_path)
    sample = random.Random(seed).sample(records, min(size, len(records)))
    rows = [_row(record, label, fingerprint) for record in sample]
    jsonl = Path(out) if out is not None else (
        run_dir / "review" / label / f"sample-n{size}-seed{seed}.jsonl")
    if jsonl.suffix != ".jsonl":
        jsonl = jsonl.with_suffix(".jsonl")
    write_jsonl(jsonl, rows)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(jsonl.with_suffix(".csv"), table.getvalue())
    return jsonl, jsonl.with_suffix(".csv"), len(rows)


def _row(record: Example, label: str, fingerprint: str) -> dict[str, Any]:
    lineage = record.lineage.model_extra or {}
    document = lineage.get("document") or ""
    if document and lineage.get("chunk_heading"):
        document += f" > {lineage['chunk_heading']}"
    return {"id": record.id, "decision": "", "fixed_output": "", "note": "",
            "instruction": record.instruction, "input": record.input, "output": record.output,
            "source": lineage.get("chunk") or "", "document": document, "round": label,
            "data_fingerprint": fingerprint}


def read_review_file(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) pairs of a filled-in .jsonl or .csv review file."""
    path = Path(path)
    if not path.is_file():
        raise ReviewError(f"{path}: review file not found")
    if path.suffix.lower() == ".csv":
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            rows = []
            start = 2  # the header is line 1; a quoted cell may span lines
            for row in reader:
                rows.append((start, row))
                start = reader.line_num + 1
            return rows
    with path.open(encoding="utf-8") as handle:
        try:
            return list(numbered_json_objects(handle, path))
        except ValueError as error:
            raise ReviewError(str(error)) from None


def import_decisions(run_dir: str | Path, path: str | Path) -> dict[str, dict[str, int]]:
    """Validate a review file and store its decisions; returns counts per round.

    Blank decisions are rows not reviewed yet and are skipped. Raises ReviewError listing
    every bad line (nothing is stored then).
    """
    run_dir = Path(run_dir)
    path = Path(path)
    errors: list[str] = []
    data: dict[str, tuple[set[str], str]] = {}  # round -> (ids, fingerprint)
    new: dict[str, dict[str, dict[str, Any]]] = {}
    skipped = 0
    for number, row in read_review_file(path):
        where = f"{path}:{number}"
        decision = str(row.get("decision") or "").strip().lower()
        record_id = str(row.get("id") or "").strip()
        label = str(row.get("round") or "").strip()
        if not decision:
            skipped += 1
            continue
        if decision not in DECISIONS:
            errors.append(f"{where}: decision {row.get('decision')!r} is not one of "
                          f"{', '.join(DECISIONS)} (or blank for not reviewed)")
            continue
        fixed = str(row.get("fixed_output") or "").strip()
        if decision == "fix" and not fixed:
            errors.append(f"{where}: decision 'fix' needs a fixed_output")
            continue
        if not record_id or not label:
            errors.append(f"{where}: the id and round columns are required")
            continue
        if label not in data:
            try:
                data_path, fingerprint = round_data(run_dir, label)
            except ReviewError as error:
                errors.append(f"{where}: round {label!r}: {error}")
                continue
            data[label] = ({r["id"] for r in iter_jsonl(data_path)}, fingerprint)
        ids, fingerprint = data[label]
        if record_id not in ids:
            errors.append(f"{where}: id {record_id!r} is not in {label}'s current data "
                          "(regenerated since the export?)")
            continue
        new.setdefault(label, {})[record_id] = {
            "id": record_id, "decision": decision, "fixed_output": fixed if decision == "fix"
            else "", "note": str(row.get("note") or "").strip(),
            "data_fingerprint": fingerprint, "source_file": str(path),
            "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise ReviewError("\n".join(shown))
    counts: dict[str, dict[str, int]] = {}
    for label, decisions in new.items():
        merged = {d["id"]: d for d in load_decisions(run_dir, label)} | decisions
        write_jsonl(decisions_path(run_dir, label), list(merged.values()))
        counts[label] = {"imported": len(decisions), "stored": len(merged)}
    if skipped:
        counts.setdefault("(not reviewed)", {})["skipped"] = skipped
    return counts


def decisions_path(run_dir: Path, label: str) -> Path:
    """Where a round's decisions are stored."""
    return Path(run_dir) / "review" / label / "decisions.jsonl"


def load_decisions(run_dir: Path, label: str) -> list[dict[str, Any]]:
    """Every stored decision of a round (stale ones included)."""
    path = decisions_path(run_dir, label)
    return list(iter_jsonl(path)) if path.exists() else []


def current_decisions(run_dir: Path, label: str) -> tuple[list[dict[str, Any]], int]:
    """Decisions made on the round's current data, and how many are stale."""
    decisions = load_decisions(run_dir, label)
    if not decisions:
        return [], 0
    try:
        _, fingerprint = round_data(run_dir, label)
    except ReviewError:
        return [], len(decisions)
    current = [d for d in decisions if d.get("data_fingerprint") == fingerprint]
    return current, len(decisions) - len(current)


def wilson_interval(errors: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% for z = 1.96)."""
    if n <= 0:
        return 0.0, 1.0
    p = errors / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class ReviewSummary:
    """A round's review: counts, error rate and its interval."""

    reviewed: int = 0
    accepted: int = 0
    rejected: int = 0
    fixed: int = 0
    stale: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)  # rejected and fixed

    @property
    def error_rate(self) -> float:
        """(rejected + fixed) / reviewed."""
        return (self.rejected + self.fixed) / self.reviewed if self.reviewed else 0.0

    @property
    def interval(self) -> tuple[float, float]:
        """Wilson 95% interval of the error rate."""
        return wilson_interval(self.rejected + self.fixed, self.reviewed)


def summarize(run_dir: str | Path, label: str) -> ReviewSummary | None:
    """The round's review summary, or None when nobody reviewed it."""
    run_dir = Path(run_dir)
    current, stale = current_decisions(run_dir, label)
    if not current and not stale:
        return None
    summary = ReviewSummary(reviewed=len(current), stale=stale)
    for decision in current:
        kind = decision["decision"]
        summary.accepted += kind == "accept"
        summary.rejected += kind == "reject"
        summary.fixed += kind == "fix"
    # rejected first: they are what the report shows
    bad = sorted((d for d in current if d["decision"] != "accept"),
                 key=lambda d: d["decision"] != "reject")
    if bad:
        data_path, _ = round_data(run_dir, label)
        by_id = {r["id"]: r for r in iter_jsonl(data_path)}
        summary.examples = [{**by_id.get(d["id"], {}), **d} for d in bad]
    return summary


def report_section(run_dir: str | Path, label: str, examples: int = 3) -> list[str]:
    """The report's "Expert review" lines for one round (none when not reviewed)."""
    summary = summarize(run_dir, label)
    if summary is None:
        return []
    lines = ["### Expert review", ""]
    if summary.reviewed:
        low, high = summary.interval
        lines.append(f"{summary.reviewed} examples reviewed: {summary.accepted} accepted, "
                     f"{summary.rejected} rejected, {summary.fixed} fixed. Error rate "
                     f"(rejected + fixed) / reviewed = **{summary.error_rate:.1%}** "
                     f"(Wilson 95% interval {low:.1%} to {high:.1%}).")
    if summary.stale:
        lines.append(f"{summary.stale} decision(s) judged an older version of this round's "
                     "data and are not counted.")
    lines.append("")
    for item in summary.examples[:examples]:
        text = " ".join(str(item.get("instruction", "")).split())[:160]
        output = " ".join(str(item.get("output", "")).split())[:100]
        note = f" (note: {item['note']})" if item.get("note") else ""
        fixed = (f" (fixed: {' '.join(item['fixed_output'].split())[:100]})"
                 if item["decision"] == "fix" else "")
        lines.append(f"- {item['decision']} `{item['id']}`: {text} → {output}{fixed}{note}")
    return lines + ([""] if summary.examples else [])


def apply_decisions(run_dir: str | Path, label: str,
                    records: list[Any]) -> tuple[list[Any], dict[str, int]]:
    """Drop rejected records and put fixed outputs in; only current decisions count."""
    current, stale = current_decisions(Path(run_dir), label)
    by_id = {d["id"]: d for d in current}
    kept: list[Example] = []
    counts = {"rejected": 0, "fixed": 0, "stale": stale}
    for record in records:
        decision = by_id.get(record.id)
        if decision is None or decision["decision"] == "accept":
            kept.append(record)
        elif decision["decision"] == "fix" and not isinstance(record, Example):
            kept.append(record)  # a preference pair has no single output to replace
        elif decision["decision"] == "reject":
            counts["rejected"] += 1
        else:
            counts["fixed"] += 1
            lineage = Lineage.model_validate({**record.lineage.model_dump(), "review": "fixed",
                                              "original_output": record.output})
            kept.append(record.model_copy(update={"output": decision["fixed_output"],
                                                  "lineage": lineage}))
    return kept, counts


def decisions_hash(run_dir: str | Path, label: str) -> str | None:
    """sha256 of a round's stored decisions (None when there are none)."""
    path = decisions_path(Path(run_dir), label)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
