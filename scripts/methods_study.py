"""The methods study of issue 15: SFT on answers, SFT on traces, logit KD, on-policy.

    python scripts/methods_study.py [--skip-sweep] [--held-out 100]

1. runs `distill sweep recipes/methods/methods_study.yaml --only ARM`, arm by arm
   (resumable: finished cells are skipped), and writes its report.md. The arms but kd
   generate the same data for a seed (same fingerprint: only training differs), so before
   an arm runs, the committed `base/evaluate` and `round_0/generate` stages of the seed's
   `sft_traces` cell are copied into its cell: the runner takes a copied stage only when
   its fingerprint is the one it would compute, and recomputes it otherwise;
2. measures every cell's student against the teacher on held-out problems: the teacher's
   greedy worked answers (asked with the reasoning system prompt, as when it wrote the
   data) to microworld problems that no cell generated, scored as the student reads them
   (the user turn alone), mean token KL over the answer in both directions
   (distill.metrics.teacher_kl);
3. prints and writes `methods_table.md` and `methods_study.png` in the study directory:
   per arm the mean over seeds with the min-max range, the base student for reference,
   and which arms' ranges do not overlap (differences larger than the seed spread).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "recipes" / "methods" / "methods_study.yaml"
HELD_OUT_SEED = 999_999  # the cells draw their problems with seeds 0, 1, 2
TEACHER = "microworld:thinker"  # the base recipe's teacher


# The arm whose generation the others (but kd, whose generation also keeps the teacher's
# top-k) share, and the stages they share.
SOURCE_ARM = "sft_traces"
SHARED_STAGES = ("base/evaluate", "round_0/generate")


def run_arms(arms: list[str], seeds: list[int], study_dir: Path) -> None:
    """The sweep, arm by arm, the source arm first, then a report over every cell."""
    import shutil

    def sweep(*options: str) -> None:
        subprocess.run([sys.executable, "-m", "distill", "sweep", str(STUDY), *options],
                       check=True, cwd=ROOT)

    for arm in [SOURCE_ARM, *(a for a in arms if a != SOURCE_ARM)]:
        if arm not in (SOURCE_ARM, "kd"):
            for seed in seeds:
                for stage in SHARED_STAGES:
                    source = study_dir / f"{SOURCE_ARM}-s{seed}" / stage
                    target = study_dir / f"{arm}-s{seed}" / stage
                    if (source / "manifest.json").is_file() and not target.exists():
                        shutil.copytree(source, target)
        sweep("--only", arm)
    sweep("--report-only")


def held_out_conversations(count: int, exclude: set[tuple[str, str]]
                           ) -> list[list[dict[str, str]]]:
    """The teacher's worked answers to `count` problems no cell trained on."""
    from distill.generate.reasoning import SYSTEM_PROMPT
    from distill.metrics.teacher_kl import teacher_answers
    from distill.microworld.build import resolve_model_ref
    from distill.microworld.plugin import microworld_problems

    problems = [p for p in microworld_problems(count + len(exclude), HELD_OUT_SEED)
                if (p.problem, p.input) not in exclude][:count]
    asked = [[{"role": "system", "content": SYSTEM_PROMPT},
              {"role": "user", "content": prompt_text(p)}] for p in problems]
    answered = teacher_answers(resolve_model_ref(TEACHER), asked, max_tokens=96)
    return [conversation[1:] for conversation in answered]  # the student sees no system turn


def prompt_text(problem) -> str:
    return f"{problem.problem}\n\n{problem.input}" if problem.input.strip() else problem.problem


def cell_results(study_dir: Path, held_out, arms: list[str], seeds: list[int]
                 ) -> dict[str, dict[int, dict[str, float]]]:
    """Per arm and seed: benchmark scores and the KL to the teacher both ways.

    `reasoning_em` is the exact match over the benchmark tasks of the families the
    problems come from (the microworld's REASONING_FAMILIES, 30 items each); `all_em`
    over the whole benchmark, of which the other families never appear in training.
    """
    from distill.metrics.teacher_kl import mean_token_kl
    from distill.microworld.build import resolve_model_ref
    from distill.microworld.tasks import REASONING_FAMILIES

    teacher = resolve_model_ref(TEACHER)
    results: dict[str, dict[int, dict[str, float]]] = {}
    for arm in ["base", *arms]:
        for seed in seeds:
            cell = study_dir / f"{(arms[0] if arm == 'base' else arm)}-s{seed}"
            stage = "base" if arm == "base" else "round_0"
            model = (resolve_model_ref("microworld:student") if arm == "base"
                     else cell / "round_0/train/merged")
            if not (cell / stage / "evaluate/manifest.json").is_file():
                print(f"{cell.name}: not finished, left out", flush=True)
                continue
            scores = json.loads((cell / stage / "evaluate/manifest.json").read_text())["scores"]
            families = [scores[f"microworld_{family}"]["exact_match"]
                        for family in REASONING_FAMILIES]
            results.setdefault(arm, {})[seed] = {
                "reasoning_em": sum(families) / len(families),
                "all_em": scores["microworld"]["exact_match"],
                "kl_forward": mean_token_kl(teacher, model, held_out, direction="forward"),
                "kl_reverse": mean_token_kl(teacher, model, held_out, direction="reverse"),
            }
            print(arm, seed, results[arm][seed], flush=True)
    return results


def table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    """Markdown: mean [min, max] per arm and metric, then the pairs beyond the seed spread."""
    metrics = ["reasoning_em", "all_em", "kl_forward", "kl_reverse"]
    lines = ["| arm | seeds | " + " | ".join(metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for arm, seeds in results.items():
        cells = []
        for metric in metrics:
            values = [row[metric] for row in seeds.values()]
            cells.append(f"{sum(values) / len(values):.3f} [{min(values):.3f}, "
                         f"{max(values):.3f}]")
        lines.append(f"| {arm} | {len(seeds)} | " + " | ".join(cells) + " |")
    lines += ["", "Pairs whose seed ranges do not overlap (min-max over seeds):", ""]
    arms = [arm for arm in results if arm != "base"]
    for metric in metrics:
        apart = []
        for i, a in enumerate(arms):
            for b in arms[i + 1:]:
                va = [row[metric] for row in results[a].values()]
                vb = [row[metric] for row in results[b].values()]
                if max(va) < min(vb) or max(vb) < min(va):
                    apart.append(f"{a} vs {b}")
        lines.append(f"- {metric}: " + (", ".join(apart) if apart else "none"))
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[int, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results)
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, metric, title in ((axes[0], "reasoning_em", "exact match, the problems' "
                                 "families (higher is better)"),
                                (axes[1], "kl_forward", "KL(teacher || student), nats/token "
                                 "(lower is closer)")):
        for x, arm in enumerate(arms):
            values = [row[metric] for row in results[arm].values()]
            mean = sum(values) / len(values)
            axis.bar(x, mean, color="0.75" if arm == "base" else "C0")
            axis.errorbar(x, mean, yerr=[[mean - min(values)], [max(values) - mean]],
                          color="k", capsize=4)
            axis.scatter([x] * len(values), values, color="k", s=8, zorder=3)
        axis.set_xticks(range(len(arms)), arms, rotation=20)
        axis.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-sweep", action="store_true", help="Only measure and report.")
    parser.add_argument("--held-out", type=int, default=100, help="Held-out problems.")
    options = parser.parse_args()
    from distill.flywheel.sweep import load_study
    from distill.records import read_jsonl

    study, _ = load_study(STUDY)
    study_dir = ROOT / study.output_dir / study.name
    if not options.skip_sweep:
        run_arms(list(study.arms), list(study.seeds), study_dir)
    arms = list(study.arms)
    trained = {(row["instruction"], row.get("input", ""))
               for path in study_dir.glob("*/round_0/train/train.jsonl")
               for row in read_jsonl(path)}
    held_out = held_out_conversations(options.held_out, trained)
    results = cell_results(study_dir, held_out, arms, list(study.seeds))
    text = table(results)
    (study_dir / "methods_table.md").write_text(text, encoding="utf-8")
    (study_dir / "methods_results.json").write_text(json.dumps(results, indent=1))
    plot(results, study_dir / "methods_study.png")
    print(text)
    print(f"written: {study_dir / 'methods_table.md'}, {study_dir / 'methods_study.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
