"""Preference pairs: responses, the judge (rubric and pairwise in both orders), pairing rules."""

from __future__ import annotations

import re

import pytest
from scripted_teacher import ScriptedTeacher

from distill.generate import preference
from distill.generate.preference import SELF_JUDGE_WARNING, Config, load_prompts
from distill.records import Example, PreferencePair, read_records, write_jsonl

TASKS = [Example(id=f"seed-{i}", instruction=f"Describe thing number {i}.", input="")
         for i in range(4)]
# Each temperature writes answers of one quality, which the scripted judge reads back.
QUALITY = {0.2: 5, 0.7: 3, 1.0: 1, 1.3: 3}


def rubric_block(score: int | str) -> str:
    return "\n".join(f"{title}: {score}\nRationale: because {score}." for title in
                     ("Instruction following", "Truthfulness", "Honesty", "Helpfulness"))


def quality(text: str) -> int:
    return int(re.search(r"quality (\d)", text).group(1))


def scripted(judge_rubric=None, judge_pairwise=None):
    """A teacher whose answers carry a quality, and a judge that reads it back."""

    def script(request):
        content = request.messages[-1]["content"]
        if "### Your rating" in content:
            response = content.split("### Response\n", 1)[1].split("\n\n### Your rating")[0]
            if judge_rubric is not None:
                return judge_rubric(response), "stop"
            return rubric_block(quality(response)), "stop"
        if "### Your verdict" in content:
            a = content.split("### Response A\n", 1)[1].split("\n\n### Response B")[0]
            b = content.split("### Response B\n", 1)[1].split("\n\n### Your verdict")[0]
            if judge_pairwise is not None:
                return judge_pairwise(a, b), "stop"
            qa, qb = quality(a), quality(b)
            winner = "A" if qa > qb else "B" if qb > qa else "tie"
            return f"Rationale: quality {qa} vs {qb}.\nWinner: {winner}", "stop"
        temperature = request.sampling.temperature
        return f"{content} Answer with quality {QUALITY[temperature]} at {temperature}.", "stop"

    return ScriptedTeacher(script)


@pytest.fixture
def ctx_of(make_ctx):
    """`ctx_of(teacher)`: a context whose teacher is "t" and whose seed tasks are TASKS."""

    def make(teacher, name="run", teacher_name="t", tasks=TASKS):
        return make_ctx(teacher, name, teacher_name=teacher_name, seed_tasks=lambda: tasks)

    return make


def config(**fields) -> Config:
    fields.setdefault("temperatures", [0.2, 0.7, 1.0])
    return Config.model_validate(fields)


def test_rubric_pairs_take_the_best_answer_as_chosen(ctx_of):
    teacher = scripted()
    result = config().run(ctx_of(teacher, teacher_name="teacher-x"))
    pairs = result.examples
    assert len(pairs) == 4 and all(isinstance(p, PreferencePair) for p in pairs)
    for pair, task in zip(pairs, TASKS, strict=True):
        assert pair.prompt == [{"role": "user", "content": task.instruction}]
        assert quality(pair.output) == 5 and pair.score_chosen == 5.0
        assert quality(pair.rejected_output) in (1, 3)  # a random other answer
        assert pair.score_rejected == quality(pair.rejected_output)
        assert pair.lineage.method == "preference" and pair.lineage.prompt_id == task.id
        assert pair.lineage.chosen_source["temperature"] == 0.2
        judged = pair.scores["judge"]
        assert judged["chosen"] == dict.fromkeys(
            ["instruction_following", "truthfulness", "honesty", "helpfulness"], 5.0)
        assert judged["chosen_rationale"]["honesty"] == "because 5."
    # best vs random: over the prompts both worse answers are drawn, deterministically
    assert {quality(p.rejected_output) for p in pairs} == {1, 3}
    again = config().run(ctx_of(scripted(), name="again", teacher_name="teacher-x"))
    assert [p.rejected_output for p in again.examples] == [p.rejected_output for p in pairs]
    stats = result.stats
    assert stats["prompts"] == 4 and stats["responses"] == 12 and stats["pairs"] == 4
    assert stats["judge"]["judged"] == 12 and stats["judge"]["mode"] == "rubric"
    # 12 answers and 12 judgements, all greedy for the judge
    judge_requests = [r for r in teacher.requests if r.sampling.temperature == 0.0]
    assert len(teacher.requests) == 24 and len(judge_requests) == 12


def test_best_vs_worst_and_ties_dropped(ctx_of):
    result = config(pairing="best_vs_worst").run(ctx_of(scripted()))
    assert {quality(p.rejected_output) for p in result.examples} == {1}
    # two answers of equal quality: a tie, dropped (UltraFeedback binarized drops ties)
    tied = config(temperatures=[0.7, 1.3]).run(ctx_of(scripted(), name="tied"))
    assert tied.examples == []
    assert tied.stats["parse_rejected"] == {"tie": 4}
    assert {r.stage for r in tied.rejected} == {"pairs"}
    assert len(tied.rejected[0].record["responses"]) == 2  # what the judge saw is kept


def test_min_margin_drops_close_pairs(ctx_of):
    result = config(temperatures=[0.2, 0.7], min_margin=2.5).run(ctx_of(scripted()))
    assert result.examples == [] and result.stats["parse_rejected"] == {"below_min_margin": 4}
    kept = config(temperatures=[0.2, 0.7], min_margin=2.0).run(ctx_of(scripted(), name="kept"))
    assert len(kept.examples) == 4


def test_malformed_judge_output_is_counted_and_kept_out(ctx_of):
    def judge(response):
        q = quality(response)
        if q == 5:
            return "I cannot rate this."  # no scores at all
        if q == 3:
            return rubric_block(q).replace("Honesty: 3", "Honesty: 9")  # out of range
        return rubric_block(q)

    result = config().run(ctx_of(scripted(judge_rubric=judge)))
    # only the quality-1 answer was judged: no prompt has two judged answers
    assert result.examples == []
    stats = result.stats
    assert stats["judge"]["judged"] == 4
    assert stats["judge"]["malformed"] == {"missing": 4, "out_of_range": 4}
    reasons = stats["parse_rejected"]
    assert reasons == {"judge_missing": 4, "judge_out_of_range": 4, "too_few_judged": 4}
    raw = [r.record["raw"] for r in result.rejected if r.reason == "judge_missing"]
    assert raw == ["I cannot rate this."] * 4


def test_empty_judge_output_and_empty_answers(ctx_of):
    def script(request):
        content = request.messages[-1]["content"]
        if "### Your rating" in content:
            return "", "stop"
        return ("" if request.sampling.temperature == 1.0 else "some answer"), "stop"

    result = config().run(ctx_of(ScriptedTeacher(script)))
    assert result.examples == []
    assert result.stats["judge"]["malformed"] == {"empty": 8}
    assert result.stats["parse_rejected"]["empty_response"] == 4


def test_pairwise_asks_both_orders_and_agreement_is_reported(ctx_of):
    teacher = scripted()
    result = config(judge={"kind": "llm", "mode": "pairwise"}).run(ctx_of(teacher))
    verdicts = [r for r in teacher.requests if "### Your verdict" in r.messages[-1]["content"]]
    assert len(verdicts) == 4 * 3 * 2  # three comparisons per prompt, each in both orders
    assert len(result.examples) == 4
    for pair in result.examples:
        assert quality(pair.output) == 5 and pair.score_chosen == 1.0  # won every comparison
    judge = result.stats["judge"]
    assert judge["comparisons"] == 12 and judge["order_agreement"] == 1.0
    assert judge["first_position_win_rate"] == 0.5


def test_position_bias_cancels_out(ctx_of):
    # A judge that always prefers the first response: the two orders never agree, every
    # comparison averages to a tie, and no pair is made from position alone.
    def biased(a, b):
        return "Rationale: the first one.\nWinner: A"

    pairwise = config(judge={"kind": "llm", "mode": "pairwise"})
    result = pairwise.run(ctx_of(scripted(judge_pairwise=biased)))
    assert result.examples == []
    judge = result.stats["judge"]
    assert judge["order_agreement"] == 0.0 and judge["first_position_win_rate"] == 1.0
    assert result.stats["parse_rejected"] == {"tie": 4}


def test_pairwise_without_a_verdict_leaves_answers_unjudged(ctx_of):
    pairwise = config(judge={"kind": "llm", "mode": "pairwise"})
    result = pairwise.run(ctx_of(scripted(judge_pairwise=lambda a, b: "They are both fine.")))
    assert result.examples == []
    assert result.stats["judge"]["malformed"] == {"no_verdict": 12}
    assert result.stats["judge"].get("comparisons") is None


def test_self_judging_is_warned_about(ctx_of, monkeypatch):
    result = config().run(ctx_of(scripted(), teacher_name="teacher-x"))
    assert result.stats["judge"]["is_generator"] is True
    assert result.stats["warnings"] == [SELF_JUDGE_WARNING]

    # Another judge model: its own backend answers the judge requests, and no warning.
    judge_backend = scripted()
    monkeypatch.setattr(preference, "open_judge_backend", lambda model, seed: judge_backend)
    teacher = scripted()
    other_judge = config(judge={"kind": "llm", "model": {"model": "org/judge-model"}})
    other = other_judge.run(ctx_of(teacher, name="other", teacher_name="teacher-x"))
    assert other.stats["judge"]["is_generator"] is False and other.stats["warnings"] == []
    assert other.stats["judge"]["model"] == "org/judge-model"
    assert all(r.sampling.temperature == 0.0 for r in judge_backend.requests)
    assert len(judge_backend.requests) == 12 and len(teacher.requests) == 12
    assert other.examples[0].lineage.judge == {"kind": "llm", "model": "org/judge-model",
                                               "mode": "rubric"}


def test_verifier_judge_pairs_correct_against_wrong(ctx_of):
    tasks = [Example(id="add", instruction="What is the sum of the numbers?", input="34 + 31")]

    def script(request):
        return ("65" if request.sampling.temperature == 0.2 else "66"), "stop"

    verifier = config(temperatures=[0.2, 0.7], judge={"kind": "verifier", "checker": "microworld"})
    result = verifier.run(ctx_of(ScriptedTeacher(script), tasks=tasks))
    (pair,) = result.examples
    assert (pair.output, pair.rejected_output) == ("65", "66")
    assert (pair.score_chosen, pair.score_rejected) == (5.0, 1.0)
    question = "What is the sum of the numbers?\n\n34 + 31"
    assert pair.prompt == [{"role": "user", "content": question}]
    assert (pair.instruction, pair.input) == ("What is the sum of the numbers?", "34 + 31")
    assert result.stats["warnings"] == []  # an exact checker has no self-preference


def test_resumed_run_asks_nothing_again(ctx_of):
    first = config().run(ctx_of(scripted(), name="same"))
    teacher = scripted()
    second = config().run(ctx_of(teacher, name="same"))
    assert teacher.calls == 0
    assert [p.model_dump() for p in second.examples] == [p.model_dump() for p in first.examples]


def test_system_prompts_steer_answers_but_stay_out_of_the_pair(ctx_of):
    teacher = scripted()
    steered = config(temperatures=[0.2, 1.0], system_prompts=[None, "Be brief."])
    result = steered.run(ctx_of(teacher, tasks=TASKS[:1]))
    answers = [r for r in teacher.requests if r.sampling.temperature > 0]
    assert len(answers) == 4
    assert sum(r.messages[0]["role"] == "system" for r in answers) == 2
    (pair,) = result.examples
    assert [m["role"] for m in pair.prompt] == ["user"]


def test_dependencies_name_other_models_the_judge_template_and_the_prompts(tmp_path):
    cfg = config(models=["teacher", {"model": "org/other", "backend": "vllm"}],
                 judge={"kind": "llm", "mode": "pairwise", "model": {"model": "org/judge"}})
    needs = cfg.dependencies()
    assert {role: getattr(spec, "model", spec) for role, spec in needs.models.items()} == {
        "answers:0": "teacher", "answers:1": "org/other", "judge": "org/judge"}
    assert needs.templates == ("judge_pairwise",) and needs.inputs == ("seed_tasks",)
    assert Config.OUTPUT == "pairs"
    # the recipe's teacher answers and judges
    assert config().dependencies().models == {"answers:0": "teacher", "judge": "teacher"}
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n')
    from_file = config(prompts=str(prompts),
                       judge={"kind": "verifier", "checker": "microworld"}).dependencies()
    assert from_file.files == {"prompts": str(prompts)}
    assert from_file.inputs == () and from_file.templates == ()
    assert from_file.models == {"answers:0": "teacher"}  # an exact checker loads no model


def test_config_and_prompt_file_errors(tmp_path):
    with pytest.raises(ValueError, match="at least two responses per prompt"):
        Config(temperatures=[0.7])
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n{"instruction": "Add.", "input": "1 + 2"}\n')
    loaded = load_prompts(str(prompts))
    assert [(t.instruction, t.input) for t in loaded] == [("Say hi.", ""), ("Add.", "1 + 2")]
    prompts.write_text('{"prompt": "Say hi."}\n{"text": "no prompt here"}\n')
    with pytest.raises(ValueError, match=r"prompts.jsonl:2: a prompt row needs"):
        load_prompts(str(prompts))


def test_pairs_load_with_datasets_and_train_with_a_plain_dpo_trainer(ctx_of, tmp_path,
                                                                      tiny_model_dir):
    """The file distill writes is TRL's format: no distill code between it and DPOTrainer."""
    result = config().run(ctx_of(scripted()))
    path = tmp_path / "pairs.jsonl"
    write_jsonl(path, result.examples)
    assert [p.model_dump() for p in read_records(path)] == \
        [p.model_dump() for p in result.examples]

    from datasets import load_dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    dataset = load_dataset("json", data_files=str(path), split="train")
    assert {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} <= set(
        dataset.column_names)
    assert dataset[0]["chosen"][0]["role"] == "assistant"
    trainer = DPOTrainer(
        model=str(tiny_model_dir),
        args=DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=2,
                       per_device_train_batch_size=2, gradient_checkpointing=False,
                       bf16=False, report_to="none", save_strategy="no", max_length=64,
                       dataloader_pin_memory=False, disable_tqdm=True),
        train_dataset=dataset,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                               task_type="CAUSAL_LM"))
    output = trainer.train()
    assert trainer.state.global_step == 2 and output.training_loss > 0
    assert any("rewards/margins" in entry for entry in trainer.state.log_history)


@pytest.mark.slow
def test_small_recipe_runs_end_to_end_through_the_cli(tmp_path):
    """`distill run recipes/small/ultrafeedback_dpo.yaml`, shrunk, on the microworld models."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from distill.microworld.build import build_models
    from distill.records import read_json

    build_models(quiet=True)  # cached after the first build on a machine
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(root)}
    command = [sys.executable, "-m", "distill", "run",
               str(root / "recipes" / "small" / "ultrafeedback_dpo.yaml"),
               f"output_dir={tmp_path}", "generate.num_prompts=96", "eval.limit=2",
               "train.sft_args.num_train_epochs=1", "train.args.num_train_epochs=2", "--quiet"]
    result = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run_dir = tmp_path / "ultrafeedback_dpo_small"
    generate = read_json(run_dir / "round_0" / "generate" / "manifest.json")
    stats = generate["stats"]
    assert stats["method"] == "preference" and stats["responses"] == 96 * 4
    assert stats["pairs"] == generate["counts"]["candidates"] > 0
    assert stats["parse_rejected"].get("tie", 0) > 0  # all-right or all-wrong prompts
    pairs = read_records(run_dir / "round_0" / "decontaminate" / "clean.jsonl")
    assert pairs and all(isinstance(p, PreferencePair) for p in pairs)
    assert all((p.score_chosen, p.score_rejected) == (5.0, 1.0) for p in pairs)
    train = read_json(run_dir / "round_0" / "train" / "manifest.json")["train"]
    assert train["method"] == "sft_then_dpo" and train["num_examples"] == len(pairs)
    assert train["sft_step"]["num_examples"] == len(pairs)
    assert train["reward_margin_start"] == pytest.approx(0.0, abs=1e-4)
    assert train["reward_margin_end"] > train["reward_margin_start"]
    assert (run_dir / "round_0" / "train" / "merged" / "config.json").is_file()
    assert (run_dir / "round_0" / "train" / "sft" / "merged" / "config.json").is_file()
    report = (run_dir / "report.md").read_text()
    assert "### Preference pairs" in report and "DPO reward margin" in report
