"""`distill export`: a round's training data as a Hugging Face dataset directory.

    distill export runs/<name> --round 0 --to out/<name>-round0 [--overwrite]

Writes `data/train-00000-of-00001.parquet` (the records the round's student trained on,
its train stage's `train.jsonl`) and `README.md`, the round's dataset card, whose
`configs:` front matter names the Parquet file as the train split: the layout
`datasets.load_dataset(DIR)` reads and the hub shows. Nothing is pushed; upload the
directory yourself (`huggingface-cli upload ORG/NAME DIR --repo-type dataset`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from distill.cards import PARQUET_PATH, dataset_card
from distill.records import iter_jsonl

# free-form dicts, whose keys differ from record to record: one JSON text column each
JSON_COLUMNS = ("lineage", "scores")


class ExportError(ValueError):
    """An export that cannot be made as asked (one line, naming what to change)."""


def export_round(run_dir: str | Path, round_index: int, to: str | Path,
                 overwrite: bool = False) -> int:
    """Write round `round_index`'s training data and card under `to`; the number of rows.

    Raises:
        ExportError: no such run, a round whose train stage has not committed, or a
            non-empty `to` without `overwrite` (which replaces `data/` and `README.md`
            only).
    """
    run_dir, to = Path(run_dir), Path(to)
    if not (run_dir / "recipe.resolved.json").is_file():
        raise ExportError(f"{run_dir}: not a run directory (no recipe.resolved.json)")
    label = f"round_{round_index}"
    train = run_dir / label / "train"
    if not (train / "manifest.json").is_file():
        raise ExportError(f"{run_dir}: {label} is not finished (its train stage has not "
                          "committed the data it trains on); run `distill run` to finish it")
    if to.exists() and not to.is_dir():
        raise ExportError(f"--to {to}: exists and is not a directory")
    if to.is_dir() and any(to.iterdir()) and not overwrite:
        raise ExportError(f"--to {to}: not empty; choose an empty directory or pass "
                          "--overwrite (replaces its data/ and README.md)")
    rows = [_row(record) for record in iter_jsonl(train / "train.jsonl")]
    card = dataset_card(run_dir, label, configs=True)
    shutil.rmtree(to / "data", ignore_errors=True)
    _write_parquet(rows, to / PARQUET_PATH)
    card.save(to / "README.md")
    return len(rows)


def _row(record: dict[str, Any]) -> dict[str, Any]:
    return {key: json.dumps(value, sort_keys=True) if key in JSON_COLUMNS else value
            for key, value in record.items()}


def _write_parquet(rows: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # every key of every row (from_pylist would take the first row's keys only): a
    # `reasoning` only some records have is a column, null where absent
    columns = dict.fromkeys(key for row in rows for key in row)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({key: [row.get(key) for row in rows] for key in columns}), path)
