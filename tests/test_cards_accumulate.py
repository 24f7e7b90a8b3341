"""A round trained on every round's data (`accumulate`): its card describes all of it.

A real two-round run (test_cards.py's tiny recipe: the fake hub's teacher and student,
the hf backend, TRL under accelerate, lm-eval) under `data_policy: accumulate`, then
`distill export --round 1`: the Parquet holds rounds 0 and 1, and so must the card: the
policy, each round's rows in it and each round's funnel.
"""

from __future__ import annotations

import json
from collections import Counter

import yaml
from test_cards import recipe
from typer.testing import CliRunner

from distill.cli import app
from distill.recipe import load_recipe
from distill.records import read_json
from distill.runner import Runner, RunOptions


def test_an_accumulated_export_card_has_every_rounds_rows_and_funnel(fake_hub, tmp_path):
    import pyarrow.parquet as pq

    settings = recipe(tmp_path / "runs")
    settings["rounds"] = {"count": 2, "data_policy": "accumulate"}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(settings))
    run_dir = Runner(load_recipe(path), RunOptions(quiet=True)).run()

    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--round", "1", "--to", str(out)])
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "data" / "train-00000-of-00001.parquet").to_pylist()
    by_round = Counter(f"round_{json.loads(row['lineage'])['round']}" for row in rows)
    assert set(by_round) == {"round_0", "round_1"}  # what accumulate exported

    card = (out / "README.md").read_text()
    assert "data policy `accumulate`" in card
    funnel = card.split("## Funnel", 1)[1].split("\n## ", 1)[0]
    for key in ("round_0", "round_1"):
        section = funnel.split(f"### {key}\n", 1)[1].split("\n### ", 1)[0]
        candidates = read_json(run_dir / key / "generate" / "manifest.json")["counts"]
        assert f"| generate | | {candidates['candidates']} |" in section
        assert f"In this data: {by_round[key]} of {key}'s records." in section
    # the round's own card (written by the run) says the same
    assert funnel in (run_dir / "round_1" / "cards" / "dataset_card.md").read_text()
    # a round trained on its own data alone keeps the one table, no round headings
    first = (run_dir / "round_0" / "cards" / "dataset_card.md").read_text()
    assert "### round_0" not in first and "| generate | |" in first
