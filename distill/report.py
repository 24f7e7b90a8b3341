"""The run report: `runs/<name>/report.md` and `report.html`, rebuilt from the manifests.

Per round: the funnel (what each filter dropped, with examples), the contamination check,
training loss, benchmark scores before and after, and tokens and wall time per stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.records import atomic_write_text, read_json
from distill.store import RunStore


def write_report(run_dir: str | Path) -> Path:
    """Write report.md for a run directory and return its path."""
    run_dir = Path(run_dir)
    manifests = RunStore(run_dir).manifests()
    by_round: dict[str, dict[str, dict[str, Any]]] = {}
    for manifest in manifests:
        by_round.setdefault(manifest["round"], {})[manifest["stage"]] = manifest
    lines = [f"# distill run: {run_dir.name}", ""]
    recipe_path = run_dir / "recipe.resolved.json"
    if recipe_path.exists():
        recipe = read_json(recipe_path)
        lines += [f"Teacher `{recipe['teacher']['model']}` ({recipe['teacher']['backend']}), "
                  f"student `{recipe['student']['model']}`, {recipe['rounds']['count']} round(s), "
                  f"data policy `{recipe['rounds']['data_policy']}`, next teacher "
                  f"`{recipe['rounds']['next_teacher']}`, seed {recipe['seed']}.", ""]
    lines += _budget_section(run_dir)
    lines += _summary_table(by_round)
    from distill.flywheel.report import flywheel_section

    lines += flywheel_section(run_dir)
    from distill.report_plots import plot_run

    lines += plot_run(run_dir, by_round)
    for label, stages in by_round.items():
        if label == "base":
            continue
        lines += [f"## {label}", ""]
        lines += _funnel_section(run_dir / label, stages)
        lines += _method_section(stages)
        lines += _contamination_section(run_dir / label, stages)
        lines += _review_section(run_dir, label)
        lines += _training_section(stages)
        lines += _stage_costs(stages)
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    from distill.flywheel.plots import markdown_html

    atomic_write_text(run_dir / "report.html",
                      markdown_html("\n".join(lines) + "\n", f"distill run: {run_dir.name}"))
    from distill.cards import write_cards

    write_cards(run_dir)  # each round's data and model cards, from the same manifests
    return path


def main_scores(manifest: dict[str, Any] | None) -> dict[str, float]:
    """Flatten a stage's scores into `task/metric -> value` (no stderr entries)."""
    flat: dict[str, float] = {}
    for task, metrics in ((manifest or {}).get("scores") or {}).items():
        if isinstance(metrics, dict):
            for metric, value in metrics.items():
                if isinstance(value, int | float) and "stderr" not in metric:
                    flat[f"{task}/{metric}"] = value
    return flat


def _budget_section(run_dir: Path) -> list[str]:
    """Where a budget cap stopped the run (`budget.json`, written by the runner), if one did."""
    path = run_dir / "budget.json"
    if not path.exists():
        return []
    stop = read_json(path)
    spent = ", ".join(f"{key} {value:g}" for key, value in stop.get("spent", {}).items())
    return [f"**Stopped by the budget:** `budget.{stop['cap']}` ({stop['limit']:g}) was reached "
            f"at {stop['where']} (spent: {spent}). The stage is not committed; its finished "
            f"chunks are kept, and rerunning with a higher `budget.{stop['cap']}` resumes it.",
            ""]


def _summary_table(by_round: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Counts, loss and the headline score per round; every task's score per round below."""
    scores = {label: main_scores(stages.get("evaluate")) for label, stages in by_round.items()}
    columns = sorted({key for row in scores.values() for key in row})
    headline = [c for c in columns if "/" in c and c.split("/")[0] in _group_names(by_round)]
    headline = headline or columns[:1]
    lines = ["## Summary", "",
             "| round | generated | kept | clean | train loss | " + " | ".join(headline) + " |",
             "|---|---|---|---|---|" + "---|" * len(headline)]
    for label, stages in by_round.items():
        generated = stages.get("generate", {}).get("counts", {}).get("candidates", "")
        kept = stages.get("filter", {}).get("counts", {}).get("kept", "")
        clean = stages.get("decontaminate", {}).get("counts", {}).get("clean", "")
        loss = stages.get("train", {}).get("train", {}).get("final_loss")
        name = "base (before training)" if label == "base" else label
        cells = [name, str(generated), str(kept), str(clean),
                 f"{loss:.4f}" if isinstance(loss, float) else ""]
        cells += [_score(scores[label].get(c)) for c in headline]
        lines.append("| " + " | ".join(cells) + " |")
    labels = [label for label in by_round if scores[label]]
    if len(columns) > len(headline):
        lines += ["", "### Scores per task", "",
                  "| task / metric | " + " | ".join(labels) + " |",
                  "|---|" + "---|" * len(labels)]
        lines += [f"| {c} | " + " | ".join(_score(scores[label].get(c)) for label in labels)
                  + " |" for c in columns]
    return lines + [""]


def _group_names(by_round: dict[str, dict[str, dict[str, Any]]]) -> set[str]:
    """Tasks named in the recipe's eval section (groups such as `microworld`)."""
    for stages in by_round.values():
        evaluate = stages.get("evaluate")
        if evaluate is not None:
            return set(evaluate.get("tasks") or [])
    return set()


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _funnel_section(round_dir: Path, stages: dict[str, dict[str, Any]]) -> list[str]:
    funnel_path = round_dir / "filter" / "funnel.json"
    generate = stages.get("generate", {})
    lines = ["### Funnel", ""]
    counts = generate.get("counts", {})
    if counts:
        dtype = (generate.get("executor") or {}).get("dtype")
        ran = f" The teacher ran in {dtype}." if dtype else ""
        lines.append(f"Generation: {counts.get('candidates', 0)} candidates parsed, "
                     f"{counts.get('rejected', 0)} teacher outputs rejected while parsing "
                     f"({_reasons(_generate_rejects(generate.get('stats', {})))}).{ran}")
        failed = generate.get("failed_requests")
        if failed:
            lines.append(f"**{failed} request(s) to the teacher failed** after every retry "
                         "(rejected as `request_failed`): run `distill run` again to ask them "
                         "again; this round's data lacks their answers until then.")
        lines.append("")
        lines += _parse_rejects(round_dir / "generate" / "rejected.jsonl")
    if not funnel_path.exists():
        return lines + ["(no filter stage yet)", ""]
    lines += ["| filter | in | out | dropped by reason |", "|---|---|---|---|"]
    funnel = read_json(funnel_path)
    for step in funnel:
        lines.append(f"| {step['filter']} | {step['in']} | {step['out']} | "
                     f"{_reasons(step['dropped'])} |")
    decon = stages.get("decontaminate", {})
    if decon.get("counts"):  # the gate is the funnel's last step; its items are listed below
        dropped = {f"contaminated:{task}": n for task, n in (decon.get("per_task") or {}).items()
                   if n and decon.get("policy") == "drop"}
        lines.append(f"| decontaminate ({decon.get('policy', 'off')}) | "
                     f"{decon['counts'].get('in', 0)} | {decon['counts'].get('clean', 0)} | "
                     f"{_reasons(dropped)} |")
    lines.append("")
    for step in funnel:
        for reason, examples in step.get("examples", {}).items():
            lines.append(f"<details><summary>{step['filter']}: {reason} "
                         f"({step['dropped'].get(reason, len(examples))})</summary>")
            lines.append("")
            for example in examples:
                text = _one_line(example["instruction"], 160)
                if example.get("input"):
                    text += " — input: " + _one_line(example["input"], 80)
                output = _one_line(example.get("output", ""), 80)
                lines.append(f"- `{example['id']}`: {text} → {output}")
            lines += ["", "</details>"]
    return lines + [""]


def _parse_rejects(path: Path, per_reason: int = 3) -> list[str]:
    """A few teacher outputs per reason that generation could not parse."""
    if not path.exists():
        return []
    examples: dict[str, list[tuple[str, str]]] = {}
    totals: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            reason = str(item.get("reason", "rejected"))
            totals[reason] = totals.get(reason, 0) + 1
            shown = examples.setdefault(reason, [])
            if len(shown) < per_reason:
                record = item.get("record") or {}
                text = (record.get("raw") or record.get("instruction") or record.get("error")
                        or json.dumps(record))
                shown.append((str(item.get("id", "")), str(text)))
    lines = []
    for reason, shown in examples.items():
        lines += [f"<details><summary>generate: {reason} ({totals[reason]})</summary>", ""]
        lines += [f"- `{item_id}`: {_one_line(text, 200)}" for item_id, text in shown]
        lines += ["", "</details>"]
    return lines + [""] if lines else []


def _method(stats: dict[str, Any]) -> Any:
    """The generation method's settings class, or None (real data as round 0, old runs)."""
    from distill.registry import GENERATORS

    method = stats.get("method")
    return GENERATORS.get(method) if method and method in GENERATORS else None


def _generate_rejects(stats: dict[str, Any]) -> dict[str, int]:
    """Refused teacher outputs by reason, as the method counts them in its stats."""
    from distill.generate.base import GeneratorSettings

    return (_method(stats) or GeneratorSettings).reject_counts(stats)


def _method_section(stages: dict[str, dict[str, Any]]) -> list[str]:
    """The generation method's own section (Evol-Instruct's rounds, preference pairs)."""
    stats = stages.get("generate", {}).get("stats", {})
    method = _method(stats)
    return method.report_section(stats) if method is not None else []


def _review_section(run_dir: Path, label: str) -> list[str]:
    """Reviewers' decisions on a sample of the round's data (`distill review`)."""
    from distill.review import report_section

    return report_section(run_dir, label)


def _contamination_section(round_dir: Path, stages: dict[str, dict[str, Any]]) -> list[str]:
    manifest = stages.get("decontaminate")
    if manifest is None:
        return []
    counts = manifest.get("counts", {})
    lines = ["### Contamination", "",
             f"{counts.get('contaminated', 0)} of {counts.get('in', 0)} training examples "
             f"overlap an evaluation task (policy `{manifest.get('policy', 'off')}`); "
             f"{counts.get('clean', 0)} go to training.", ""]
    per_task = {task: n for task, n in (manifest.get("per_task") or {}).items() if n}
    if per_task:
        lines += ["| task | contaminated examples |", "|---|---|"]
        lines += [f"| {task} | {n} |" for task, n in per_task.items()]
        lines.append("")
    report_path = round_dir / "decontaminate" / "contamination.json"
    if report_path.exists():
        from distill.evaluate.contamination import ContaminationReport
        from distill.evaluate.contamination_report import item_rows, settings_line

        report = ContaminationReport.model_validate(read_json(report_path))
        lines += [f"Method: {settings_line(report)}.", ""]
        if report.contaminated:
            lines += ["Each flagged item beside its benchmark match:", ""]
            lines += item_rows(report.contaminated) + [""]
        if report.suspect:
            lines += [f"{len(report.suspect)} suspect item(s), listed and kept:", ""]
            lines += item_rows(report.suspect, limit=20) + [""]
    return lines


def _training_section(stages: dict[str, dict[str, Any]]) -> list[str]:
    train = stages.get("train", {}).get("train")
    if not train:
        return []
    losses = train.get("loss_history", [])
    first = losses[0]["loss"] if losses else None
    lines = ["### Training", "",
             f"{train.get('num_examples')} examples, {train.get('trainable_params')} "
             f"trainable parameters, {train.get('wall_time_s', 0):.1f} s."]
    if first is not None:
        lines.append(f"Loss {first:.4f} (first logged step) → {train.get('final_loss'):.4f} "
                     "(final).")
    if train.get("reward_margin_end") is not None:  # DPO
        lines.append(f"DPO reward margin (chosen − rejected) {train['reward_margin_start']:.4f} "
                     f"→ {train['reward_margin_end']:.4f}, reward accuracy "
                     f"{train.get('reward_accuracy_end') or 0:.2f} (method "
                     f"`{train.get('method')}`).")
    return lines + [""]


def _stage_costs(stages: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["### Cost per stage", "", "| stage | wall time (s) | tokens |", "|---|---|---|"]
    for name, manifest in stages.items():
        tokens = manifest.get("tokens") or {}
        token_text = (f"{tokens.get('prompt_tokens', 0)} prompt + "
                      f"{tokens.get('completion_tokens', 0)} completion") if tokens else ""
        lines.append(f"| {name} | {manifest.get('wall_time_s', 0):.1f} | {token_text} |")
    return lines + [""]


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in
                     sorted(reasons.items(), key=lambda item: -item[1])) or "none"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"
