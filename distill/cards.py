"""Dataset and model cards of a run, in the Hugging Face hub's format.

    distill report runs/<name>        rewrites report.md and every round's cards
    distill export runs/<name> --round 0 --to out/   the data as Parquet + its card

For each round whose train stage is committed:

    runs/<name>/round_<r>/cards/dataset_card.md   the data the student trained on
    runs/<name>/round_<r>/cards/model_card.md     the student trained on it

The dataset card's front matter holds the licence, language, task categories, size and
source datasets, and `generated_by`: every model that wrote or chose the data, with its
revision, commit, licence and terms; its text gives the generation method and settings,
the funnel, the contamination check and the expert review's error rate. A round that
trained on several rounds' data (`data_policy: accumulate`) gets each of those rounds'
funnel and contamination check, with the rows of each in its data. The model card
names the base model, adapter and merged checkpoints, the training method and arguments,
the scores before and after, and the contamination status.

Cards are rebuilt from the committed manifests and `licences.json`, which `distill run`
writes when it starts (the licences as the recipe states them or the models' cards say,
`licence_survey`); none of it enters a fingerprint. Cards are built with huggingface_hub's
own `DatasetCard` / `ModelCard` classes, so the front matter is what the hub reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from distill.licences import Licence, Writer, data_licence, warnings, writer
from distill.records import atomic_write_text, read_json, write_json
from distill.settings import Strict

if TYPE_CHECKING:
    from huggingface_hub import DatasetCard, ModelCard

    from distill.models import ModelSpec
    from distill.recipe import Recipe

LICENCES_FILE = "licences.json"
# the layout `datasets.load_dataset(DIR)` and the hub read, declared in the card's configs
PARQUET_PATH = "data/train-00000-of-00001.parquet"
CONFIGS = [{"config_name": "default", "data_files": [{"split": "train",
                                                      "path": "data/train-*"}]}]
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                   (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]


class CardSettings(Strict):
    """What the data cards say that a run cannot know: the data's licence and language."""

    license: str | None = Field(
        None, description="The training data's licence (a hub licence id: cc-by-4.0, "
        "apache-2.0, other, ...); null: the licence every model that wrote it shares, else "
        "unknown (and `distill validate` warns).")
    license_name: str | None = Field(None, description="With license `other`: its name.")
    license_link: str | None = Field(None, description="With license `other`: a link to it.")
    language: list[str] = Field(default_factory=list, description="The data's languages "
                                "(ISO 639-1 codes: en, de, ...); empty: left off the card.")


@dataclass
class LicenceSurvey:
    """The licences of a recipe's writers and student, and the data's licence."""

    writers: list[Writer]
    student: Writer
    data: Licence
    reason: str  # how the data's licence was decided

    def warnings(self) -> list[str]:
        """Restrictive terms of any writer; an undeterminable data licence."""
        return warnings(self.writers, self.data, self.reason)

    def save(self, run_dir: Path) -> None:
        """Write `licences.json` (not part of any stage: rewritten by every run)."""
        write_json(run_dir / LICENCES_FILE, {
            "writers": [w.to_json() for w in self.writers], "student": self.student.to_json(),
            "data": self.data.__dict__, "data_reason": self.reason})

    @classmethod
    def load(cls, run_dir: Path) -> LicenceSurvey | None:
        """The survey a run recorded, or None (a run made before licences were recorded)."""
        path = run_dir / LICENCES_FILE
        if not path.is_file():
            return None
        data = read_json(path)
        return cls(writers=[Writer.from_json(w) for w in data["writers"]],
                   student=Writer.from_json(data["student"]), data=Licence(**data["data"]),
                   reason=data["data_reason"])


def licence_survey(recipe: Recipe,
                   commit_of: Callable[[ModelSpec], str | None] = lambda spec: None
                   ) -> LicenceSurvey:
    """Every writer's licence (read at its resolved commit when `commit_of` knows it)."""
    writers = [writer(role, spec, commit_of(spec))
               for role, spec in recipe.data_writers().items()]
    card = recipe.card
    stated = Licence(license=card.license, license_name=card.license_name,
                     license_link=card.license_link, source="recipe") if card.license else None
    data, reason = data_licence(writers, stated)
    return LicenceSurvey(writers=writers, student=writer("student", recipe.student,
                                                         commit_of(recipe.student)),
                         data=data, reason=reason)


# -- writing ------------------------------------------------------------------------------

def write_cards(run_dir: str | Path) -> list[Path]:
    """Write the cards of every round whose train stage is committed; their paths."""
    run_dir = Path(run_dir)
    written = []
    for train in sorted(run_dir.glob("round_*/train/manifest.json")):
        round_dir = train.parent.parent
        cards = round_dir / "cards"
        cards.mkdir(exist_ok=True)
        for name, card in (("dataset_card.md", dataset_card(run_dir, round_dir.name)),
                           ("model_card.md", model_card(run_dir, round_dir.name))):
            atomic_write_text(cards / name, str(card))
            written.append(cards / name)
    return written


def dataset_card(run_dir: Path, label: str, configs: bool = False) -> DatasetCard:
    """The card of a round's training data (`configs`: with the Parquet layout of export)."""
    from huggingface_hub import DatasetCard, DatasetCardData

    run = _Run(run_dir)
    rows = run.manifest(label, "train").get("counts", {}).get("examples", 0)
    licence = run.survey.data if run.survey else Licence()
    extra: dict[str, Any] = {}
    if licence.license_name or licence.license_link:
        extra.update(license_name=licence.license_name, license_link=licence.license_link)
    if configs:
        extra["configs"] = CONFIGS
    data = DatasetCardData(
        license=licence.license or "unknown", language=run.card.get("language") or None,
        task_categories=["text-generation"], size_categories=[_size_category(rows)],
        source_datasets=run.sources(), pretty_name=f"{run_dir.name} {label} training data",
        tags=["synthetic", "distillation", f"distill-{run.method}"],
        generated_by=[w.to_json() for w in run.survey.writers] if run.survey else None,
        **extra)
    body = [f"# {run_dir.name}, {label}: training data", "",
            f"{rows} records written by `distill` (run `{run_dir.name}`, {label}): what the "
            f"{label} student was trained on, under the data policy "
            f"`{_policy(run.recipe['rounds']['data_policy'])}` "
            f"({_mix(run.manifest(label, 'train'))}).",
            ""]
    body += _licence_section(run)
    body += _generation_section(run)
    body += _funnel_section(run, label)
    body += _contamination_section(run, label)
    body += _review_section(run_dir, label)
    body += _columns_section()
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(body) + "\n")


def model_card(run_dir: Path, label: str) -> ModelCard:
    """The card of a round's trained student."""
    from huggingface_hub import ModelCard, ModelCardData

    run = _Run(run_dir)
    student = run.recipe["student"]
    lora = student.get("lora") is not None
    base = run.survey.student if run.survey else None
    hub_base = base.commit is not None if base else False  # only a hub model has a commit
    licence = base.licence if base else Licence()
    train = run.manifest(label, "train")
    data = ModelCardData(
        base_model=student["model"] if hub_base else None,
        base_model_relation="adapter" if lora else "finetune",
        library_name="peft" if lora else "transformers", license=licence.license or "unknown",
        license_name=licence.license_name, license_link=licence.license_link,
        tags=["distill", "distillation", "synthetic-data", train.get("train", {}).get(
            "method", run.recipe["train"]["method"])],
        pipeline_tag="text-generation")
    at = f" at commit `{base.commit}`" if base and base.commit else ""
    body = [f"# {run_dir.name}, {label}: the trained student", "",
            f"Base model `{student['model']}`{at} (licence {licence.label()}), trained by "
            f"`distill` on [this round's training data](dataset_card.md). "
            + ("A LoRA adapter (`train/adapter/`) and the base model merged with it "
               "(`train/merged/`)." if lora else "Full fine-tune: `train/merged/`."), ""]
    body += _training_section(run, train)
    body += _scores_section(run, label)
    decon = run.manifest(label, "decontaminate")
    counts = decon.get("counts", {})
    body += ["## Contamination", "",
             (f"{counts.get('contaminated', 0)} of {counts.get('in', 0)} training examples "
              f"overlapped an evaluation task (method `{decon.get('method', 'ngram')}`, policy "
              f"`{decon.get('policy', 'off')}`); see the data card."
              if decon.get("policy") else "Not checked (decontamination disabled)."), ""]
    restricted = [w for w in (run.survey.writers if run.survey else []) if w.restriction]
    if restricted:
        body += ["## Terms inherited from the data", ""]
        body += [f"- {w.role} `{w.model}`: {w.restriction}." for w in restricted]
        body.append("")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n" + "\n".join(body) + "\n")


# -- the run, as the cards read it ---------------------------------------------------------

class _Run:
    """A run directory's resolved recipe, manifests and licences."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.recipe: dict[str, Any] = read_json(run_dir / "recipe.resolved.json")
        self.card: dict[str, Any] = self.recipe.get("card") or {}
        self.survey = LicenceSurvey.load(run_dir)
        self.method = self.recipe["generate"]["kind"]

    def manifest(self, label: str, stage: str) -> dict[str, Any]:
        path = self.dir / label / stage / "manifest.json"
        return read_json(path) if path.is_file() else {}

    def sources(self) -> list[str]:
        """`original` (synthetic), the seed tasks and the real data by file or source name."""
        sources = ["original"]
        seeds = (self.recipe.get("data") or {}).get("seed_tasks")
        if seeds:
            sources.append(Path(seeds).name)
        real = (self.recipe.get("data") or {}).get("real")
        if real:
            sources.append(Path(real["path"]).name if real.get("path") else real["kind"])
        return sources


def _size_category(rows: int) -> str:
    return next((name for bound, name in SIZE_CATEGORIES if rows < bound), "n>1B")


def _policy(policy: dict[str, Any] | str) -> str:
    return policy.get("kind", str(policy)) if isinstance(policy, dict) else policy


def _mix(train: dict[str, Any]) -> str:
    mix = train.get("data_mix") or {}
    return ", ".join(f"{key} {value}" for key, value in mix.items()) or "no mix recorded"


def _licence_section(run: _Run) -> list[str]:
    lines = ["## Models and licences", ""]
    if run.survey is None:
        return lines + ["Not recorded: the run was made before distill recorded licences; run "
                        "it again (finished stages are skipped) to record them.", ""]
    lines += ["| role | model | revision | backend | licence | terms |",
              "|---|---|---|---|---|---|"]
    for w in run.survey.writers:
        revision = w.commit or w.revision or ""
        source = f" ({w.licence.source})" if w.licence.source else ""
        lines.append(f"| {w.role} | `{w.model}` | {revision} | {w.backend or ''} | "
                     f"{w.licence.label()}{source} | {w.licence.terms or ''} |")
    lines += ["", f"Data licence: **{run.survey.data.label()}**, {run.survey.reason}.", ""]
    lines += [f"- Warning: {line}." for line in run.survey.warnings()]
    return lines + ([""] if run.survey.warnings() else [])


def _generation_section(run: _Run) -> list[str]:
    import yaml

    teacher = run.recipe["teacher"]
    return ["## Generation", "",
            f"Method `{run.method}`, teacher `{teacher['model']}` served by "
            f"`{teacher['backend']}`, seed {run.recipe['seed']}; "
            f"{run.recipe['rounds']['count']} round(s), next teacher "
            f"`{run.recipe['rounds']['next_teacher']}`. The method's settings:", "",
            "```yaml", yaml.safe_dump(run.recipe["generate"], sort_keys=False).rstrip(), "```",
            ""]


def _data_rounds(run: _Run, label: str) -> list[tuple[str, int | None]]:
    """The rounds whose generated data `label` trained on, with their rows in it.

    Read from the train stage's `data_mix` (`round_<r>` keys: the data policy's choice, so
    `accumulate` names every round so far); None rows: a run that recorded no mix.
    """
    mix = run.manifest(label, "train").get("data_mix") or {}
    rounds = sorted((key for key in mix if key.startswith("round_")),
                    key=lambda key: int(key.removeprefix("round_")))
    return [(key, mix[key]) for key in rounds] or [(label, None)]


def _funnel_section(run: _Run, label: str) -> list[str]:
    rounds = _data_rounds(run, label)
    if len(rounds) == 1 and rounds[0][0] == label:  # the round's own data alone
        return ["## Funnel", "", *_funnel_table(run, label), ""]
    policy = _policy(run.recipe["rounds"]["data_policy"])
    lines = ["## Funnel", "",
             f"The data policy `{policy}` trained {label} on the data of "
             f"{', '.join(key for key, _ in rounds)}: each round's funnel below, and how many "
             "of the records it kept are in this data.", ""]
    for key, rows in rounds:
        lines += [f"### {key}", "", *_funnel_table(run, key), "",
                  f"In this data: {rows} of {key}'s records.", ""]
    return lines


def _funnel_table(run: _Run, label: str) -> list[str]:
    generated = run.manifest(label, "generate").get("counts", {})
    lines = ["| step | in | out | dropped by reason |", "|---|---|---|---|",
             f"| generate | | {generated.get('candidates', 0)} | "
             f"{generated.get('rejected', 0)} teacher outputs not parsed |"]
    funnel = run.dir / label / "filter" / "funnel.json"
    for step in read_json(funnel) if funnel.is_file() else []:
        dropped = ", ".join(f"{reason} {n}" for reason, n in step["dropped"].items())
        lines.append(f"| {step['filter']} | {step['in']} | {step['out']} | {dropped} |")
    decon = run.manifest(label, "decontaminate").get("counts")
    if decon:
        lines.append(f"| decontaminate | {decon.get('in', 0)} | {decon.get('clean', 0)} | "
                     f"contaminated {decon.get('contaminated', 0)} |")
    return lines


def _contamination_section(run: _Run, label: str) -> list[str]:
    rounds = [key for key, _ in _data_rounds(run, label)]
    lines = ["## Contamination", ""]
    for key in rounds:
        decon = run.manifest(key, "decontaminate")
        where = f"{key}: " if len(rounds) > 1 else ""
        if not decon.get("policy"):
            lines += [f"{where}Not checked: decontamination was disabled.", ""]
            continue
        counts = decon.get("counts", {})
        per_task = {task: n for task, n in (decon.get("per_task") or {}).items() if n}
        tasks = ", ".join(f"{task} {n}" for task, n in per_task.items()) or "none"
        lines += [f"{where}Checked against the evaluation tasks' own texts (method "
                  f"`{decon.get('method')}`, policy `{decon['policy']}`): "
                  f"{counts.get('contaminated', 0)} of {counts.get('in', 0)} examples "
                  f"overlapped ({tasks}), {counts.get('suspect', 0)} suspect; "
                  f"{counts.get('clean', 0)} kept.", ""]
    return lines


def _review_section(run_dir: Path, label: str) -> list[str]:
    from distill.review import summarize

    summary = summarize(run_dir, label)
    if summary is None or not summary.reviewed:
        return ["## Expert review", "", "Not reviewed (`distill review export` draws a "
                "sample to review).", ""]
    low, high = summary.interval
    return ["## Expert review", "",
            f"{summary.reviewed} records reviewed: error rate (rejected + fixed) / reviewed = "
            f"{summary.error_rate:.1%} (95% Wilson interval {low:.1%} to {high:.1%}).", ""]


def _columns_section() -> list[str]:
    return ["## Columns", "",
            "One row per training record, as distill trained on it: `id`, the task "
            "(`instruction`, `input`), the answer (`output`, `reasoning` with a trace) and "
            "`messages` (the chat the student saw), or for preference pairs `prompt`, "
            "`chosen`, `rejected`. `lineage` (round, method, teacher, prompt template, "
            "sampling) and `scores` (each filter's) are JSON text.", ""]


def _training_section(run: _Run, train: dict[str, Any]) -> list[str]:
    import yaml

    result = train.get("train", {})
    losses = result.get("loss_history") or []
    settings = {"method": run.recipe["train"]["method"], "args": run.recipe["train"]["args"],
                "lora": run.recipe["student"].get("lora")}
    lines = ["## Training", "",
             f"{result.get('num_examples', 0)} examples, {result.get('steps', '?')} steps."]
    if losses:
        lines.append(f"Loss {losses[0]['loss']:.4f} (first logged step) → "
                     f"{result.get('final_loss', losses[-1]['loss']):.4f} (final).")
    return lines + ["", "```yaml", yaml.safe_dump(settings, sort_keys=False).rstrip(), "```", ""]


def _scores_section(run: _Run, label: str) -> list[str]:
    before = _flat_scores(run.manifest("base", "evaluate"))
    after = _flat_scores(run.manifest(label, "evaluate"))
    if not after:
        return ["## Scores", "", "Not evaluated yet.", ""]
    lines = ["## Scores", "", "lm-eval, before training (the base student) and after:", "",
             "| task / metric | before | after |", "|---|---|---|"]
    lines += [f"| {key} | {_score(before.get(key))} | {_score(value)} |"
              for key, value in after.items()]
    return lines + [""]


def _flat_scores(manifest: dict[str, Any]) -> dict[str, float]:
    return {f"{task}/{metric}": value
            for task, metrics in (manifest.get("scores") or {}).items()
            if isinstance(metrics, dict)
            for metric, value in metrics.items()
            if isinstance(value, int | float) and "stderr" not in metric}


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"

