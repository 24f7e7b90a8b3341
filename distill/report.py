"""The run report: `runs/<name>/report.md`, rebuilt from the committed manifests.

Per round: the funnel (what each filter dropped, with examples), the contamination check,
training loss, benchmark scores before and after, and tokens and wall time per stage.
"""

from __future__ import annotations

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
    lines += _summary_table(by_round)
    for label, stages in by_round.items():
        if label == "base":
            continue
        lines += [f"## {label}", ""]
        lines += _funnel_section(run_dir / label, stages)
        lines += _contamination_section(run_dir / label, stages)
        lines += _training_section(stages)
        lines += _stage_costs(stages)
    path = run_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def _main_scores(manifest: dict[str, Any] | None) -> dict[str, float]:
    """Flatten a stage's scores into `task/metric -> value` (no stderr entries)."""
    flat: dict[str, float] = {}
    for task, metrics in ((manifest or {}).get("scores") or {}).items():
        if isinstance(metrics, dict):
            for metric, value in metrics.items():
                if isinstance(value, int | float) and "stderr" not in metric:
                    flat[f"{task}/{metric}"] = value
    return flat


def _summary_table(by_round: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Counts, loss and the headline score per round; every task's score per round below."""
    scores = {label: _main_scores(stages.get("evaluate")) for label, stages in by_round.items()}
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
        lines.append(f"Generation: {counts.get('candidates', 0)} candidates parsed, "
                     f"{counts.get('rejected', 0)} teacher outputs rejected while parsing "
                     f"({_reasons(generate.get('stats', {}).get('parse_rejected', {}))}).")
        lines.append("")
    if not funnel_path.exists():
        return lines + ["(no filter stage yet)", ""]
    lines += ["| filter | in | out | dropped by reason |", "|---|---|---|---|"]
    funnel = read_json(funnel_path)
    for step in funnel:
        lines.append(f"| {step['filter']} | {step['in']} | {step['out']} | "
                     f"{_reasons(step['dropped'])} |")
    lines.append("")
    for step in funnel:
        for reason, examples in step.get("examples", {}).items():
            lines.append(f"<details><summary>{step['filter']}: {reason}</summary>")
            lines.append("")
            for example in examples:
                text = _one_line(example["instruction"], 160)
                output = _one_line(example.get("output", ""), 80)
                lines.append(f"- `{example['id']}`: {text} → {output}")
            lines += ["", "</details>"]
    return lines + [""]


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
        contaminated = read_json(report_path).get("contaminated", [])
        for item in contaminated[:5]:
            match = item["matches"][0]
            lines.append(f"- `{item['id']}` \"{_one_line(item['excerpt'], 100)}\" ↔ "
                         f"{match['task']} doc {match['doc_index']} ({match['view']}): "
                         f"\"{_one_line(match['doc_text'], 100)}\"")
        if contaminated:
            lines.append("")
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
