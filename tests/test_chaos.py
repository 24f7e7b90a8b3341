"""Generation through a faulty OpenAI-compatible server loses no request and asks none twice.

The quickstart's Self-Instruct generation runs with an `openai` teacher against
`ChaosServer` (tests/chaos_server.py): the microworld teacher behind 429s with
Retry-After, 500/503, dropped connections, cut-off and choice-less 200 bodies and replies
slower than the client's timeout, at a few percent each. With one retry per request some
requests run out of retries: the run still finishes generation, every request is a
candidate's source or a `request_failed` rejection (none twice), and a second run with
the faults gone asks those again and ends with exactly the candidates of a run that never
met a fault.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chaos_server import FAULTS, REALISTIC, ChaosServer

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher_dir():
    from distill.models import model_path

    return model_path("microworld:teacher")  # built once per machine, then cached


def run_generation(output_dir: Path, url: str) -> subprocess.CompletedProcess:
    engine = (f"{{base_url: '{url}', api_key_env: null, max_retries: 1, timeout: 10.0, "
              "backoff_base: 0.05, backoff_max: 0.2, max_concurrency: 4}")
    overrides = [f"output_dir={output_dir}", "name=chaos", "teacher.backend=openai",
                 "teacher.model=microworld-teacher", f"teacher.engine={engine}",
                 "teacher.checkpoint_every=8", "generate.num_instructions=40",
                 "generate.prompts_per_step=8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "distill", "run", "recipes/quickstart.yaml", *overrides,
         "--stop-after", "generate", "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def shard_rows(stage: Path) -> dict[str, list[dict]]:
    """Every checkpoint row of a generation stage, by key (the method's call)."""
    rows: dict[str, list[dict]] = {}
    for shard in sorted((stage / "checkpoints").glob("*/chunk*.jsonl")):
        rows.setdefault(shard.parent.name, []).extend(
            json.loads(line) for line in shard.read_text().splitlines())
    return rows


def test_faults_lose_nothing_and_a_second_run_fills_in(tmp_path, teacher_dir):
    clean_server = ChaosServer(teacher_dir, faults={})
    try:
        done = run_generation(tmp_path / "clean", clean_server.url)
        assert done.returncode == 0, done.stderr
    finally:
        clean_server.close()
    reference = tmp_path / "clean" / "chaos" / "round_0" / "generate"

    server = ChaosServer(teacher_dir, faults=REALISTIC, slow_s=12.0)
    try:
        faulty = run_generation(tmp_path / "faulty", server.url)
        assert faulty.returncode == 0, faulty.stderr
        assert set(server.injected) == set(FAULTS), server.injected  # met every fault
        stage = tmp_path / "faulty" / "chaos" / "round_0" / "generate"
        manifest = json.loads((stage / "manifest.json").read_text())
        rejected = [json.loads(line) for line in (stage / "rejected.jsonl").open()]
        failed = [r for r in rejected if r["reason"] == "request_failed"]
        assert failed and manifest["failed_requests"] == len(failed), server.injected
        assert len({r["id"] for r in failed}) == len(failed)  # none twice
        assert all(" after 2 attempts" in r["record"]["error"] for r in failed)
        assert not any(r["reason"] == "empty_response" for r in rejected)
        report = (stage.parents[1] / "report.md").read_text()
        assert f"{len(failed)} request(s) to the teacher failed" in report
        # every request of every call is in its shards exactly once: answered, or failed
        # and rejected; nothing answered is filed as failed
        failed_ids = {r["id"] for r in failed}
        for key, rows in shard_rows(stage).items():
            ids = [(row["request_id"], row["index"]) for row in rows]
            assert len(ids) == len(set(ids)), key
            errors = {row["request_id"] for row in rows if row["finish_reason"] == "error"}
            assert errors <= failed_ids
        assert {r["id"] for r in failed} == {
            row["request_id"] for rows in shard_rows(stage).values() for row in rows
            if row["finish_reason"] == "error"}

        server.faults = {}  # the outage is over
        asked_before = sum(server.sent.values())
        again = run_generation(tmp_path / "faulty", server.url)
        assert again.returncode == 0, again.stderr
        assert sum(server.sent.values()) - asked_before >= len(failed)
    finally:
        server.close()
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["failed_requests"] == 0
    assert "request_failed" not in (stage / "rejected.jsonl").read_text()
    assert (stage / "candidates.jsonl").read_text() == (
        reference / "candidates.jsonl").read_text()
    assert (stage / "rejected.jsonl").read_text() == (reference / "rejected.jsonl").read_text()
    assert not (stage.parent / ".stale").exists()  # the failed commit was reopened, not moved
