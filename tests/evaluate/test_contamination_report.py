"""report.md: the funnel step by step and each flagged item beside its benchmark match."""

from distill.evaluate.contamination import BenchmarkDoc, Config, apply_policy, find_contamination
from distill.filters.base import Verdict, run_funnel
from distill.records import Example, Rejected, write_json, write_jsonl
from distill.report import write_report
from distill.store import RunStore

P = [f"p{i}" for i in range(25)]
DOCS = {"toy": [BenchmarkDoc("toy", 0, " ".join(P), ["t0 t1 t2 t3 t4"]),
                BenchmarkDoc("toy", 1, "what is the capital of the moon colony", ["luna"])]}


class ShortFilter:
    name = "short"

    def __call__(self, records):
        return [Verdict(len(r.instruction.split()) > 2, "too_short") for r in records]


class NoDigitsFilter:
    name = "no_digits"

    def __call__(self, records):
        return [Verdict(not any(c.isdigit() for c in r.output), "has_digits") for r in records]


def commit(store, label, name, summary, files):
    stage = store.stage(label, name, {"name": name}, {})
    stage.begin()
    for filename, write in files.items():
        write(stage.work / filename)
    stage.commit(summary)


def test_report_lists_funnel_steps_and_flagged_items(tmp_path):
    examples = [Example(id="leak", instruction="intro " + " ".join(P)),
                Example(id="part", instruction=" ".join(P[:13]), output="x"),
                Example(id="moon", instruction="Tell me what is the capital of the moon colony",
                        output="Luna"),
                Example(id="tiny", instruction="hi there"),
                Example(id="digits", instruction="Count to three please", output="1 2 3"),
                Example(id="fine", instruction="Write a poem about rain", output="Rain.")]
    funnel = run_funnel([ShortFilter(), NoDigitsFilter()], examples)
    report = find_contamination(funnel.kept, Config(ngram=8, method="coverage"), documents=DOCS)
    clean, dropped = apply_policy(report, funnel.kept, "drop")
    parse_rejects = [Rejected(id=f"g{i}", stage="parse", reason="missing_output",
                              record={"raw": f"1. Instruction: broken {i}"}) for i in range(5)]

    store = RunStore(tmp_path / "run")
    commit(store, "round_0", "generate", {"counts": {"candidates": 6, "rejected": 5},
                                          "stats": {"parse_rejected": {"missing_output": 5}}},
           {"rejected.jsonl": lambda p: write_jsonl(p, parse_rejects)})
    commit(store, "round_0", "filter", {"counts": {"in": 6, "kept": len(funnel.kept)}},
           {"funnel.json": lambda p: write_json(p, funnel.funnel)})
    commit(store, "round_0", "decontaminate", {
        "counts": {"in": len(funnel.kept), "clean": len(clean),
                   "contaminated": len(report.contaminated), "suspect": len(report.suspect)},
        "per_task": {"toy": report.tasks["toy"].contaminated_examples}, "policy": "drop"},
        {"contamination.json": lambda p: write_json(p, report.model_dump(mode="json"))})
    text = write_report(tmp_path / "run").read_text()

    # The funnel: every filter in order with counts in and out and reasons, then the gate.
    assert "| short | 6 | 5 | too_short 1 |" in text
    assert "| no_digits | 5 | 4 | has_digits 1 |" in text
    assert "| decontaminate (drop) | 4 | 2 | contaminated:toy 2 |" in text
    assert "<details><summary>short: too_short (1)</summary>" in text
    assert "- `digits`: Count to three please → 1 2 3" in text
    # A few unparseable teacher outputs per reason, not all of them.
    assert "<details><summary>generate: missing_output (5)</summary>" in text
    assert "broken 2" in text and "broken 3" not in text

    # Contamination: each flagged item beside its match, with kind and score.
    assert "coverage of the benchmark: dirty above 0.8" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in text.splitlines() if line.startswith("| `")}
    assert rows["`leak`"][1:5] == ["coverage", "1.00", "toy", "0"]
    assert rows["`moon`"][1:5] == ["coverage", "1.00", "toy", "1"]
    assert rows["`moon`"][6] == "what is the capital of the moon colony"
    assert rows["`part`"][1:3] == ["coverage", "0.52"]  # suspect: 13 of 25 words, kept
    assert "1 suspect item(s), listed and kept" in text
