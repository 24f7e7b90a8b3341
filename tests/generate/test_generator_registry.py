"""Every generation method: registered under its kind, one entry point, declared inputs.

Each method runs with the scripted teacher while `distill.prompts.render` and
`template_hash` record the templates it touches and an audit hook records the data files
it opens; what it touched must be what its `dependencies()` declares. The context gets
only the run inputs the method declared, so reading another one fails the run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from scripted_teacher import ScriptedTeacher, default_script

import distill.generate
import distill.prompts
from distill.component import Dependencies
from distill.generate.base import GeneratorSettings
from distill.generate.context import GenerationContext, GenerationResult
from distill.records import Example
from distill.registry import GENERATORS

KINDS = {"self_instruct", "evol_instruct", "doc_qa", "textbook", "preference", "continuation"}
SEEDS = [Example(id=f"seed-{i}", instruction=f"Explain topic number {i} clearly.",
                 output=f"Topic {i} is simple.") for i in range(4)]
REAL = [Example(id=f"real-{i}", instruction="", text=f"Real text number {i} goes on and on "
                "with several more words after it.") for i in range(3)]
DOC = ("# Lumen\n\nLumen is a lamp that retries a request three times before it gives up. "
       "Its retry setting controls how often it asks again, and its timeout setting how "
       "long it waits.\n")


def chat_script(request):
    """Evolutions, equality and difficulty judgements as Evol-Instruct's prompts expect."""
    if request.prompt is not None:  # a task list, or a text to continue
        if "Instruction:" in request.prompt:
            return default_script(request)
        return " and then it ends.", "stop"
    content = request.messages[-1]["content"]
    if "Prompt#:" in content:
        return "Explain photosynthesis in three detailed steps.", "stop"
    if content.startswith("Here are two Instructions"):
        return "Not Equal", "stop"
    if "## Score:" in content:
        return "Score: 7", "stop"
    return f"A fine answer at temperature {request.sampling.temperature}.", "stop"


class WordTokenizer:
    """Words as tokens: enough for continuation's text mode."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, Any]:
        return {"input_ids": text.split()}

    def decode(self, ids: list[str]) -> str:
        return " ".join(ids)


def data_files(root: Path) -> dict[str, str]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "lumen.md").write_text(DOC)
    (root / "instructions.jsonl").write_text('{"instruction": "Explain the tides."}\n'
                                             '{"instruction": "Name a prime.", "input": "2"}\n')
    (root / "prompts.jsonl").write_text('{"prompt": "Say hi."}\n{"instruction": "Add.", '
                                        '"input": "1 + 2"}\n')
    return {name: str(root / name) for name in ("lumen.md", "instructions.jsonl",
                                                 "prompts.jsonl")}


def cases(files: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Settings per case, chosen to make each method touch as much as it can."""
    return {
        "self_instruct": {"kind": "self_instruct", "num_instructions": 4, "prompts_per_step": 2,
                          "tasks_per_prompt": 6, "response_template": "alpaca_prompt"},
        "self_instruct_keep": {"kind": "self_instruct", "num_instructions": 2,
                               "template": "self_instruct_compact", "tasks_per_prompt": 6,
                               "responses": "keep_generated",
                               "response_template": "alpaca_prompt"},
        "evol_instruct": {"kind": "evol_instruct", "evolution_rounds": 2,
                          "difficulty_judge": True, "response_template": "alpaca_prompt"},
        "evol_instruct_file": {"kind": "evol_instruct", "evolution_rounds": 1,
                               "instructions": files["instructions.jsonl"],
                               "operation_weights": {"in_breadth": 1.0},
                               "breadth_template": "evol_breadth_compact"},
        "doc_qa": {"kind": "doc_qa", "documents": [files["lumen.md"]], "chunk_words": 30,
                   "overlap_words": 5, "min_chunk_words": 5, "template": "doc_qa_compact"},
        "textbook": {"kind": "textbook", "sections": 2, "exercises": 2,
                     "audiences": ["children"], "levels": ["introductory"],
                     "topics": ["Fractions", {"name": "Loops", "domain": "code"}]},
        "preference_rubric": {"kind": "preference", "temperatures": [0.2, 0.7]},
        "preference_pairwise": {"kind": "preference", "temperatures": [0.2, 0.7],
                                "prompts": files["prompts.jsonl"],
                                "judge": {"kind": "llm", "mode": "pairwise"}},
        "continuation": {"kind": "continuation", "prompt_tokens": 4},
    }


CASES = list(cases({name: name for name in ("lumen.md", "instructions.jsonl",
                                            "prompts.jsonl")}))


def context_for(config: GeneratorSettings, checkpoint_dir: Path,
                teacher: ScriptedTeacher) -> GenerationContext:
    """A context as the runner builds it: only the run inputs the method declared."""
    inputs = config.dependencies().inputs
    fields: dict[str, Any] = {}
    if "seed_tasks" in inputs:
        fields["seed_tasks"] = lambda: SEEDS
    if "real" in inputs:
        fields["real_records"] = lambda: REAL
    return GenerationContext(backend=teacher, checkpoint_dir=checkpoint_dir, chunk_size=3,
                             teacher_name="scripted", **fields)


# Audit hook: installed once (hooks cannot be removed), records only while a list is set.
_opened: list[list[str]] = []


def _audit(event: str, args: tuple) -> None:
    if _opened and event == "open" and isinstance(args[0], str | Path):
        _opened[-1].append(str(args[0]))


sys.addaudithook(_audit)


def test_all_six_methods_are_registered_with_one_entry_point():
    assert set(GENERATORS.names()) >= KINDS
    for kind in KINDS:
        cls = GENERATORS.get(kind)
        assert issubclass(cls, GeneratorSettings)
        assert cls.model_fields["kind"].default == kind
        module = sys.modules[cls.__module__]
        assert not hasattr(module, "run")  # no second entry point beside Config.run
    assert not hasattr(distill.generate, "GENERATORS")
    assert not hasattr(distill.generate, "load_generator")
    assert GENERATORS.get("preference").OUTPUT == "pairs"
    assert {GENERATORS.get(k).OUTPUT for k in KINDS - {"preference"}} == {"examples"}


@pytest.mark.parametrize("case", CASES)
def test_a_method_touches_only_what_it_declares(case, tmp_path, monkeypatch):
    files = data_files(tmp_path / "data")
    settings = cases(files)[case]
    config = GENERATORS.get(settings["kind"]).model_validate(settings)
    rendered: list[str] = []
    render, template_hash = distill.prompts.render, distill.prompts.template_hash

    def recording_render(name, **variables):
        rendered.append(name)
        return render(name, **variables)

    def recording_hash(name):
        rendered.append(name)
        return template_hash(name)

    monkeypatch.setattr(distill.prompts, "render", recording_render)
    monkeypatch.setattr(distill.prompts, "template_hash", recording_hash)
    teacher = ScriptedTeacher(chat_script)
    teacher.tokenizer = WordTokenizer()  # continuation cuts real texts with the teacher's
    needs = config.dependencies()
    ctx = context_for(config, tmp_path / "ckpt", teacher)
    _opened.append([])
    try:
        result = config.run(ctx)
    finally:
        opened = _opened.pop()

    assert isinstance(result, GenerationResult) and result.stats["method"] == config.kind
    assert rendered or not needs.templates, "the case exercises none of its templates"
    assert set(rendered) <= set(needs.templates), \
        f"{case} rendered {sorted(set(rendered) - set(needs.templates))} undeclared"
    data = tmp_path / "data"
    read = {str(Path(path).resolve()) for path in opened
            if Path(path).resolve().is_relative_to(data.resolve())}
    declared = {str(Path(path).resolve()) for path in needs.files.values()}
    assert read <= declared, f"{case} read {sorted(read - declared)} undeclared"
    assert set(needs.models.values()) <= {"teacher"}  # every case: the teacher alone
    if case == "continuation":
        assert needs.templates == () and needs.inputs == ("real",)


@pytest.mark.parametrize("case", CASES)
def test_declared_templates_exist_and_files_are_named_by_role(case, tmp_path):
    files = data_files(tmp_path / "data")
    settings = cases(files)[case]
    needs = GENERATORS.get(settings["kind"]).model_validate(settings).dependencies()
    assert isinstance(needs, Dependencies)
    for name in needs.templates:
        distill.prompts.template_source(name)  # raises on an unknown template
    assert all(Path(path).exists() for path in needs.files.values())


def test_seed_tasks_are_declared_exactly_where_they_are_read(tmp_path):
    files = data_files(tmp_path / "data")
    declared = {case: "seed_tasks" in GENERATORS.get(s["kind"]).model_validate(s)
                .dependencies().inputs for case, s in cases(files).items()}
    assert declared == {"self_instruct": True, "self_instruct_keep": True,
                        "evol_instruct": True, "evol_instruct_file": False,
                        "doc_qa": False, "textbook": False, "preference_rubric": True,
                        "preference_pairwise": False, "continuation": False}


def test_reading_an_undeclared_run_input_is_a_clear_error(tmp_path):
    class Sneaky(GeneratorSettings):
        kind: Literal["sneaky"] = "sneaky"

        def dependencies(self) -> Dependencies:
            return Dependencies()

        def run(self, ctx: GenerationContext) -> GenerationResult:
            return GenerationResult(examples=list(ctx.seed_tasks()), rejected=[])

    config = Sneaky()
    ctx = context_for(config, tmp_path / "ckpt", ScriptedTeacher())
    with pytest.raises(RuntimeError, match=r"seed_tasks without declaring it.*'seed_tasks'"):
        config.run(ctx)
    with pytest.raises(RuntimeError, match="real without declaring it"):
        ctx.real_records()


def test_each_method_writes_its_own_report_section_and_reject_counts():
    evol = {"method": "evol_instruct", "rejected": {"copies_template": 2},
            "rounds": [{"round": 0, "attempted": 3, "evolved": 0, "kept": 3,
                        "by_operation": {}, "failures": {}, "mean_words": 5.0,
                        "mean_difficulty": None, "difficulty_scored": 0}]}
    assert GENERATORS.get("evol_instruct").report_section(evol)[0] == "### Evol-Instruct rounds"
    assert GENERATORS.get("evol_instruct").reject_counts(evol) == {"copies_template": 2}
    pairs = {"method": "preference", "pairs": 2, "judge": {"model": "t"},
             "parse_rejected": {"tie": 1}}
    assert GENERATORS.get("preference").report_section(pairs)[0] == "### Preference pairs"
    assert GENERATORS.get("preference").reject_counts(pairs) == {"tie": 1}
    continued = {"method": "continuation",
                 "rejected": {"empty_continuation": 1, "empty_response": 0}}
    assert GENERATORS.get("continuation").reject_counts(continued) == {"empty_continuation": 1}
    for kind in ("self_instruct", "doc_qa", "textbook", "continuation"):
        assert GENERATORS.get(kind).report_section({"method": kind}) == []


def test_the_report_asks_the_method_for_its_section(tmp_path):
    from distill.report import write_report
    from distill.store import RunStore

    store = RunStore(tmp_path / "run")
    stats = {"evol_instruct": {"method": "evol_instruct", "rejected": {"copies_template": 2},
                               "rounds": []},
             "real_first": {"method": "real_first"}}
    for label, method in (("round_0", "real_first"), ("round_1", "evol_instruct")):
        stage = store.stage(label, "generate", {"label": label}, {})
        stage.begin()
        stage.commit({"counts": {"candidates": 3, "rejected": 2}, "stats": stats[method]})
    text = write_report(tmp_path / "run").read_text()
    assert text.count("### Evol-Instruct rounds") == 1
    assert "2 teacher outputs rejected while parsing (copies_template 2)" in text
