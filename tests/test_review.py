"""Expert review: export a sample, import decisions, error rate, report, and the e2e loop."""

import csv
import json
import math
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from distill.cli import app
from distill.recipe import recipe_model
from distill.records import Example, read_jsonl, write_json, write_jsonl
from distill.report import write_report
from distill.review import (
    ReviewError,
    apply_decisions,
    export_sample,
    import_decisions,
    summarize,
    wilson_interval,
)

ROOT = Path(__file__).resolve().parents[1]


def make_run(tmp_path, n=30, fingerprint="f" * 64, review=None):
    """A run directory with one round of decontaminated data (what review reads)."""
    run = tmp_path / "run"
    stage = run / "round_0" / "decontaminate"
    stage.mkdir(parents=True)
    records = [Example(id=f"r0-{i}", instruction=f"Question {i}?", output=f"Answer {i}.",
                       lineage={"method": "doc_qa", "chunk": f"Chunk {i // 3}.",
                                "document": "/docs/a.md", "chunk_heading": "A > B"})
               for i in range(n)]
    write_jsonl(stage / "clean.jsonl", records)
    write_json(stage / "manifest.json", {"stage": "decontaminate", "round": "round_0",
                                         "fingerprint": fingerprint, "counts": {"clean": n}})
    recipe = recipe_model().model_validate({
        "name": "run", "teacher": {"model": "org/teacher"}, "student": {"model": "org/student"},
        "generate": {"kind": "self_instruct", "num_instructions": 1},
        "eval": {"tasks": ["microworld"]}, "review": review or {"size": 10, "seed": 3}})
    write_json(run / "recipe.resolved.json", recipe.model_dump(mode="json"))
    return run


def fill(rows, decisions):
    for row, decision in zip(rows, decisions, strict=False):
        row["decision"] = decision
        if decision == "fix":
            row["fixed_output"] = f"Better answer for {row['id']}."
    return rows


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_export_is_a_deterministic_sample_with_empty_decisions(tmp_path):
    run = make_run(tmp_path)
    jsonl, table, count = export_sample(run)  # size 10, seed 3 from the recipe section
    assert count == 10 and jsonl == run / "review" / "round_0" / "sample-n10-seed3.jsonl"
    rows = read_jsonl(jsonl)
    again = read_jsonl(export_sample(run, out=tmp_path / "again.jsonl")[0])
    other = read_jsonl(export_sample(run, seed=4, out=tmp_path / "other.jsonl")[0])
    assert [r["id"] for r in rows] == [r["id"] for r in again]
    assert [r["id"] for r in rows] != [r["id"] for r in other]
    assert len({r["id"] for r in rows}) == 10
    row = rows[0]
    assert (row["decision"], row["fixed_output"], row["note"]) == ("", "", "")
    assert row["source"].startswith("Chunk") and row["document"] == "/docs/a.md > A > B"
    with table.open(newline="") as handle:
        table_rows = list(csv.DictReader(handle))
    assert [r["id"] for r in table_rows] == [r["id"] for r in rows]
    assert export_sample(run, size=100, out=tmp_path / "all.jsonl")[2] == 30  # all there is


def test_import_stores_decisions_and_the_error_rate_is_right(tmp_path):
    run = make_run(tmp_path)
    rows = read_jsonl(export_sample(run, size=20)[0])
    decisions = ["accept"] * 12 + ["reject"] * 3 + ["fix"] * 4 + [""]  # one not reviewed
    counts = import_decisions(run, write_rows(tmp_path / "done.jsonl", fill(rows, decisions)))
    assert counts["round_0"] == {"imported": 19, "stored": 19}
    summary = summarize(run, "round_0")
    assert (summary.reviewed, summary.accepted, summary.rejected, summary.fixed) == (19, 12, 3, 4)
    assert summary.error_rate == pytest.approx(7 / 19)
    low, high = summary.interval
    # Wilson score interval by its formula, z = 1.96
    p, n, z = 7 / 19, 19, 1.96
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((centre - half, centre + half))
    # the interval's ends are where the score test is just significant
    for end in (low, high):
        assert (p - end) ** 2 == pytest.approx(z * z * end * (1 - end) / n)
    assert (low, high) == pytest.approx((0.1915, 0.5896), abs=1e-4)
    assert summary.examples[0]["decision"] == "reject"  # rejected ones come first
    report = write_report(run).read_text()
    assert "### Expert review" in report and "36.8%" in report and "19.1% to 59.0%" in report
    assert "reject `" in report


def test_wilson_interval_edges():
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 50)
    assert low == 0.0 and 0.05 < high < 0.08  # never the useless [0, 0] of the plain rate
    assert wilson_interval(50, 50)[1] == 1.0


def test_csv_import_and_later_imports_merge(tmp_path):
    run = make_run(tmp_path)
    _, table, _ = export_sample(run, size=4)
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fill(rows, ["accept", "fix", "", ""])
    rows[1]["fixed_output"] = "Line one,\nline two."  # a quoted cell over two lines
    done = tmp_path / "done.csv"
    with done.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    import_decisions(run, done)
    rows[2]["decision"] = "reject"
    with done.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert import_decisions(run, done)["round_0"] == {"imported": 3, "stored": 3}
    stored = {d["id"]: d for d in read_jsonl(run / "review" / "round_0" / "decisions.jsonl")}
    assert stored[rows[1]["id"]]["fixed_output"] == "Line one,\nline two."


@pytest.mark.parametrize(("change", "message"), [
    ({"decision": "maybe"}, ":3: decision 'maybe' is not one of accept, reject, fix"),
    ({"decision": "fix", "fixed_output": ""}, ":3: decision 'fix' needs a fixed_output"),
    ({"decision": "reject", "id": "nope"}, ":3: id 'nope' is not in round_0's current data"),
    ({"decision": "reject", "round": "round_7"}, ":3: round 'round_7'"),
])
def test_bad_decisions_name_the_line_and_store_nothing(tmp_path, change, message):
    run = make_run(tmp_path)
    rows = fill(read_jsonl(export_sample(run, size=5)[0]), ["accept"] * 5)
    rows[2].update(change)
    with pytest.raises(ReviewError, match=message.replace("(", r"\(")):
        import_decisions(run, write_rows(tmp_path / "bad.jsonl", rows))
    assert not (run / "review" / "round_0" / "decisions.jsonl").exists()


def test_cli_exits_2_on_a_bad_file_and_imports_a_good_one(tmp_path):
    run = make_run(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["review", "export", str(run), "--size", "3"])
    assert result.exit_code == 0, result.output
    rows = read_jsonl(run / "review" / "round_0" / "sample-n3-seed3.jsonl")
    bad = write_rows(tmp_path / "bad.jsonl", fill([dict(r) for r in rows], ["ok"] * 3))
    result = runner.invoke(app, ["review", "import", str(run), str(bad)])
    assert result.exit_code == 2 and "bad.jsonl:1: decision 'ok'" in result.output
    good = write_rows(tmp_path / "good.jsonl", fill(rows, ["accept", "reject", "fix"]))
    result = runner.invoke(app, ["review", "import", str(run), str(good)])
    assert result.exit_code == 0 and "error rate 66.7%" in result.output
    missing = runner.invoke(app, ["review", "export", str(tmp_path / "nope")])
    assert missing.exit_code == 2


def test_stale_decisions_are_reported_not_counted_nor_applied(tmp_path):
    run = make_run(tmp_path)
    rows = read_jsonl(export_sample(run, size=3)[0])
    import_decisions(run, write_rows(tmp_path / "d.jsonl", fill(rows, ["reject", "fix", "fix"])))
    records = [Example.from_json(r) for r in
               read_jsonl(run / "round_0" / "decontaminate" / "clean.jsonl")]
    kept, counts = apply_decisions(run, "round_0", records)
    assert counts == {"rejected": 1, "fixed": 2, "stale": 0} and len(kept) == 29
    fixed = next(r for r in kept if r.id == rows[1]["id"])
    assert fixed.output == rows[1]["fixed_output"]
    assert fixed.lineage.model_extra["original_output"] != fixed.output
    assert fixed.messages()[1]["content"] == fixed.output
    # the round is regenerated: the data's fingerprint changes
    write_json(run / "round_0" / "decontaminate" / "manifest.json",
               {"stage": "decontaminate", "round": "round_0", "fingerprint": "g" * 64})
    summary = summarize(run, "round_0")
    assert summary.reviewed == 0 and summary.stale == 3
    assert apply_decisions(run, "round_0", records)[0] == records
    assert "3 decision(s) judged an older version" in write_report(run).read_text()


# ---------------------------------------------------------------------------- end to end


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def extractive_teacher():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from extractive_teacher import serve
    finally:
        sys.path.pop(0)
    server = serve(free_port(), malformed_every=4)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


@pytest.mark.slow
def test_small_domain_qa_recipe_end_to_end_then_review(tmp_path, extractive_teacher):
    from datasets import load_dataset

    from distill.microworld.build import build_models

    build_models(quiet=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT)}

    def distill(*args):
        result = subprocess.run([sys.executable, "-m", "distill", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    distill("run", "recipes/small/domain_qa.yaml", f"output_dir={tmp_path}",
            f"teacher.engine.base_url={extractive_teacher}", "--quiet")
    run = tmp_path / "domain_qa_small"
    generate = json.loads((run / "round_0" / "generate" / "manifest.json").read_text())
    stats = generate["stats"]
    assert stats["method"] == "doc_qa" and stats["documents"] == 3
    assert generate["counts"]["candidates"] > 10
    assert stats["parse_rejected"].get("no_pairs", 0) > 0  # the stand-in's junk replies
    clean = run / "round_0" / "decontaminate" / "clean.jsonl"
    dataset = load_dataset("json", data_files=str(clean), split="train")
    assert len(dataset) > 10 and {"instruction", "output", "messages"} <= set(dataset.features)
    lineage = dataset[0]["lineage"]
    assert lineage["chunk"][:20] in Path(lineage["document"]).read_text()
    assert (run / "round_0" / "train" / "manifest.json").exists()
    assert (run / "round_0" / "evaluate" / "manifest.json").exists()

    distill("review", "export", str(run))  # size 20, seed 0 from the recipe
    sample = run / "review" / "round_0" / "sample-n20-seed0.jsonl"
    rows = fill(read_jsonl(sample), ["accept", "accept", "accept", "reject"] * 5)
    reviewed = distill("review", "import", str(run), str(write_rows(tmp_path / "r.jsonl", rows)))
    rate = 5 / min(20, len(dataset))
    assert f"error rate {rate:.1%}" in reviewed.stdout
    assert "### Expert review" in (run / "report.md").read_text()
