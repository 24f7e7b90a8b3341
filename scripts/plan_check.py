"""Measure `distill plan` against real generation: the error per recipe, with and without --from.

    python scripts/plan_check.py [--out runs/plan_check]

For the quickstart and two small microworld recipes, runs the round-0 generate stage
for real twice (the target, and a calibration run with another seed, and for the
quickstart a smaller size), then plans the target without a previous run (the stated
assumptions: --fill 0.5) and with `--from` the calibration run, and prints the planned
against the measured prompt and completion tokens. Runs already in --out are reused.
tests/test_plan.py asserts the calibrated error is within 25 %.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from distill.models import ModelRef
from distill.plan import Measured, Planner
from distill.recipe import load_recipe
from distill.records import read_json
from distill.runner import Runner

ROOT = Path(__file__).resolve().parents[1]

# recipe: (overrides of the target run, overrides of the calibration run); as in the test
CASES = {
    "recipes/quickstart.yaml": (["generate.num_instructions=96", "generate.prompts_per_step=16",
                                 "teacher.checkpoint_every=16"],
                                ["generate.num_instructions=48", "seed=1"]),
    "recipes/small/evol_instruct.yaml": ([], ["seed=1"]),
    "recipes/small/ultrafeedback_dpo.yaml": (["generate.num_prompts=64"],
                                             ["generate.num_prompts=32", "seed=1"]),
}


def generate(recipe: str, out: Path, overrides: list[str]) -> tuple[Path, dict[str, int]]:
    """Run (or find) the round-0 generate stage; the run directory and its tokens."""
    loaded = load_recipe(ROOT / recipe, [f"output_dir={out}", "rounds.count=1", *overrides])
    runner = Runner(loaded)
    stage = runner.generate("round_0", 0, ModelRef.resolve(loaded.teacher))
    return runner.store.root, read_json(stage.path / "manifest.json")["tokens"]


def main() -> None:
    """Print planned against measured tokens for every case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/plan_check"))
    args = parser.parse_args()
    print("| recipe | measured prompt + completion | plan (assumed) | error | "
          "plan (--from) | error | prompt error |")
    print("|---|---|---|---|---|---|---|")
    for recipe, (target, calibration) in CASES.items():
        name = Path(recipe).stem
        _, measured = generate(recipe, args.out / name / "target", target)
        calibrated, _ = generate(recipe, args.out / name / "calibration", calibration)
        loaded = load_recipe(ROOT / recipe, ["rounds.count=1", *target])
        assumed = Planner(loaded).plan().totals("generate")
        fitted = Planner(loaded, Measured.read(calibrated)).plan().totals("generate")
        total = measured["prompt_tokens"] + measured["completion_tokens"]
        print(f"| {recipe} | {measured['prompt_tokens']:,} + {measured['completion_tokens']:,} "
              f"| {assumed['tokens']:,} | {assumed['tokens'] / total - 1:+.1%} "
              f"| {fitted['tokens']:,} | {fitted['tokens'] / total - 1:+.1%} "
              f"| {fitted['prompt_tokens'] / measured['prompt_tokens'] - 1:+.1%} |")


if __name__ == "__main__":
    main()
