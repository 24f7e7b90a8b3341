"""Decontamination beyond "any shared 13-gram": token coverage, presets, paraphrases."""

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from distill.backends.base import Generation
from distill.evaluate.contamination import (
    BenchmarkDoc,
    Config,
    apply_policy,
    find_contamination,
    load_benchmark_docs,
)
from distill.evaluate.paraphrase import JudgeConfig, ParaphraseConfig, parse_verdict
from distill.records import Example

TASKS = Path(__file__).resolve().parents[2] / "tests" / "assets" / "tasks"

# One benchmark item of 25 words (p0 ... p24) whose answer is 5 words (t0 ... t4).
P = [f"p{i}" for i in range(25)]
T = [f"t{i}" for i in range(5)]
TOY = {"toy": [BenchmarkDoc("toy", 0, " ".join(P), [" ".join(T)])]}


def ex(id, *words):
    return Example(id=id, instruction=" ".join(words))


# With 4-grams, by hand: share of the item's words (prompt 25, target 5, both 30) inside
# 4-grams the example shares with it, best of prompt / target / prompt+target.
COVERAGE_EXAMPLES = [
    ex("dirty", "intro", *P),                        # prompt 25/25 = 1.0
    ex("partial", *P[:12]),                          # prompt 12/25 = 0.48
    ex("clean", "x", *P[5:9], "y"),                  # one 4-gram: 4/25 = 0.16
    ex("two-pieces", *P[0:5], "x y z", *P[10:15]),   # (5 + 5)/25 = 0.4
    ex("answer", "q", *T),                           # target 5/5 = 1.0
    ex("unrelated", "hello there my friend how are you"),
]


def scores(entries):
    return {e.id: (e.score, e.coverage_class, e.kind) for e in entries}


def test_coverage_of_the_benchmark_item_hand_computed():
    report = find_contamination(COVERAGE_EXAMPLES, Config(ngram=4, method="coverage"),
                                documents=TOY)
    assert scores(report.contaminated) == {"dirty": (1.0, "dirty", "coverage"),
                                           "answer": (1.0, "dirty", "coverage")}
    # Partial ones are listed, not flagged; clean ones are neither.
    assert scores(report.suspect) == {"partial": (0.48, "partial", "coverage"),
                                      "two-pieces": (0.4, "partial", "coverage")}
    clean, dropped = apply_policy(report, COVERAGE_EXAMPLES, "drop")
    assert [e.id for e in clean] == ["partial", "clean", "two-pieces", "unrelated"]
    assert {r.id for r in dropped} == {"dirty", "answer"}
    assert report.tasks["toy"].contaminated_examples == 2


def test_ngram_method_flags_any_shared_gram_and_reports_coverage_beside_it():
    report = find_contamination(COVERAGE_EXAMPLES, Config(ngram=4), documents=TOY)
    assert scores(report.contaminated) == {
        "dirty": (1.0, "dirty", "ngram"), "partial": (0.48, "partial", "ngram"),
        "clean": (0.16, "clean", "ngram"), "two-pieces": (0.4, "partial", "ngram"),
        "answer": (1.0, "dirty", "ngram")}
    assert report.suspect == []
    [match] = next(e for e in report.contaminated if e.id == "clean").matches
    assert (match.kind, match.ngram, match.score) == ("ngram", "p5 p6 p7 p8", 0.16)


def test_coverage_of_the_example_and_thresholds():
    config = Config(ngram=4, method="coverage", coverage_of="example")
    report = find_contamination(COVERAGE_EXAMPLES, config, documents=TOY)
    # Share of the example's own words: 25/26, 12/12, 4/6, 10/13, 5/6.
    assert scores(report.contaminated) == {
        "dirty": (round(25 / 26, 4), "dirty", "coverage"),
        "partial": (1.0, "dirty", "coverage"), "answer": (round(5 / 6, 4), "dirty", "coverage")}
    assert scores(report.suspect) == {"clean": (round(4 / 6, 4), "partial", "coverage"),
                                      "two-pieces": (round(10 / 13, 4), "partial", "coverage")}
    strict = Config(ngram=4, method="coverage", clean_below=0.1, dirty_above=0.3)
    report = find_contamination(COVERAGE_EXAMPLES, strict, documents=TOY)
    assert report.contaminated_ids == {"dirty", "partial", "two-pieces", "answer"}
    assert scores(report.suspect) == {"clean": (0.16, "partial", "coverage")}


def test_presets_fill_only_what_is_unset():
    tulu = Config(preset="tulu3")
    assert (tulu.ngram, tulu.method, tulu.clean_below, tulu.dirty_above) == (
        8, "coverage", 0.5, 0.5)
    assert Config(preset="tulu3", ngram=10).ngram == 10
    assert Config(preset="llama2").ngram == 11
    assert Config(preset="gpt3").model_dump(exclude={"preset"}) == Config().model_dump(
        exclude={"preset"})
    assert Config(**tulu.model_dump()) == tulu  # the resolved form reloads as itself
    with pytest.raises(ValidationError, match="clean_below"):
        Config(clean_below=0.9, dirty_above=0.5)
    with pytest.raises(ValidationError):
        Config(preset="palm")
    # Tulu 3: 8-grams, more than half of the item's words.
    examples = [ex("12-words", *P[:12]), ex("13-words", *P[:13])]
    report = find_contamination(examples, tulu, documents=TOY)
    assert report.contaminated_ids == {"13-words"}  # 13/25 = 0.52 > 0.5; 12/25 = 0.48
    assert report.suspect == []


def test_coverage_scores_the_item_without_its_template():
    # Every prompt reads "Question: ... Answer:"; the item is what lies between.
    docs = {"qa": [BenchmarkDoc("qa", i, f"Question: {q}\nAnswer:", [a]) for i, (q, a) in
                   enumerate([(" ".join(P[:10]), "t0"), ("a b c d e f g h i j", "k")])]}
    report = find_contamination([ex("q", *P[:10])], Config(ngram=4, method="coverage"),
                                documents=docs)
    assert scores(report.contaminated) == {"q": (1.0, "dirty", "coverage")}


# --------------------------------------------------------------------------- paraphrases

# Rewordings of three qa fixture items (docs 0, 1 and 6) that share no 13-gram with them.
REPHRASED = {
    "re-lighthouse": (0, "Every misty morning, the keeper of the Gull Island lighthouse tallies "
                         "seventeen vessels. What number of ships does he tally?"),
    "re-baker": (1, "Mira purchases three loaves at a bakery where each loaf is cut into four "
                    "slices. How many slices does Mira end up with for her picnic?"),
    "re-clock": (6, "Why does Bramblewick's clockmaker always wind the clock on the tower in "
                    "reverse? Answer in a single sentence."),
}
UNRELATED = {
    "haiku": "Write a haiku about autumn leaves falling on a quiet pond.",
    "photosynthesis": "Explain how photosynthesis converts sunlight into chemical energy.",
    "boston": "How many ships sailed into Boston harbor in 1850?",
    "banana": "What colour is a ripe banana?",
}
# Doc 0 with another number: as close by embedding as a rewording, but another answer.
LOOKALIKE = ("lookalike", "The lighthouse keeper on Gull Island counts exactly twenty ships "
                          "every foggy morning; how many ships does he count?")


@pytest.fixture(scope="module")
def docs():
    return load_benchmark_docs(["distill_fixture"], TASKS)


@pytest.fixture(scope="module")
def examples():
    pytest.importorskip("sentence_transformers")
    return ([Example(id=k, instruction=text) for k, (_, text) in REPHRASED.items()]
            + [Example(id=k, instruction=text, output="Sure.") for k, text in UNRELATED.items()]
            + [Example(id=LOOKALIKE[0], instruction=LOOKALIKE[1])])


def test_rephrased_items_pass_13_grams_and_are_caught_as_paraphrases(docs, examples):
    assert find_contamination(examples, Config(), documents=docs).contaminated == []

    report = find_contamination(examples, Config(paraphrase=ParaphraseConfig()), documents=docs)
    assert report.contaminated_ids == set(REPHRASED)
    for entry in report.contaminated:
        [match] = entry.matches
        assert (entry.kind, match.kind, match.task) == ("paraphrase", "paraphrase",
                                                        "distill_fixture_qa")
        assert match.doc_index == REPHRASED[entry.id][0]
        assert entry.score == match.score and entry.score >= 0.8 and match.judge is None
    for entry in report.contaminated:
        assert entry.matches[0].evidence.startswith("same numbers")
    # The look-alike is a candidate too, but its number is not the item's: listed, kept.
    [suspect] = report.suspect
    assert (suspect.id, suspect.kind, suspect.matches[0].doc_index) == ("lookalike",
                                                                       "paraphrase", 0)
    assert suspect.score >= 0.9 and suspect.matches[0].evidence.startswith("other numbers")
    para = report.paraphrase
    assert (para["candidates"], para["flagged"], para["unconfirmed"]) == (4, 3, 1)
    assert report.tasks["distill_fixture_qa"].contaminated_examples == 3
    assert "paraphrase" in report.summary()
    # Rephrased or not, the drop policy takes them out and names the task.
    clean, dropped = apply_policy(report, examples, "drop")
    assert {e.id for e in clean} == set(UNRELATED) | {"lookalike"}
    assert {r.reason for r in dropped} == {"contaminated:distill_fixture_qa"}


class ScriptedJudge:
    """Answers by a word of the training text; records the prompts it saw."""

    def __init__(self):
        self.prompts = []

    def generate(self, requests, progress=None):
        out = []
        for request in requests:
            prompt = request.messages[-1]["content"]
            self.prompts.append(prompt)
            answer = ("True" if "misty" in prompt.split("part2")[1] else
                      "False." if "Mira" in prompt.split("part2")[1] else "Hmm, hard to say")
            out.append(Generation(request.id, 0, answer, "stop"))
        return out

    def close(self):
        pass


def test_judge_confirms_rejects_or_leaves_unclear(docs, examples):
    judge = ScriptedJudge()
    config = Config(paraphrase=ParaphraseConfig(judge=JudgeConfig(model="org/scripted")))
    report = find_contamination(examples, config, documents=docs, judge_backend=judge)
    # Only the candidates above the threshold reach the judge, each with its neighbour.
    assert len(judge.prompts) == 4
    assert all("part1: {" in p and "rephrased" in p for p in judge.prompts)
    lighthouse = next(p for p in judge.prompts if "misty" in p)
    assert "The lighthouse keeper on Gull Island" in lighthouse.split("part2")[0]
    assert "Question:" not in lighthouse  # the task's template is cut off
    verdicts = {e.id: e.matches[0].judge for e in report.contaminated + report.suspect}
    assert verdicts == {"re-lighthouse": "same", "re-baker": "different",
                        "re-clock": "unclear", "lookalike": "unclear"}
    # "same" flags, "different" is suspect whatever the words say (the baker's agree);
    # an unclear answer falls back to the agreement check: the clock's rewording
    # agrees, the look-alike's number does not.
    assert report.contaminated_ids == {"re-lighthouse", "re-clock"}
    assert [e.id for e in report.suspect] == ["re-baker", "lookalike"]
    para = report.paraphrase
    assert (para["judge_different"], para["judge_unclear"], para["unconfirmed"]) == (1, 2, 2)


def test_judge_runs_on_a_real_backend(docs, examples, tiny_model_dir):
    # A random tiny model answers nonsense, which is "unclear" (flagged); whatever it
    # answers, each candidate carries its verdict and lands on the matching list.
    judge = JudgeConfig(backend="hf", model=str(tiny_model_dir), max_tokens=3,
                        engine={"device": "cpu"})
    report = find_contamination(examples[:4], Config(paraphrase=ParaphraseConfig(judge=judge)),
                                documents=docs)
    judged = {e.id: e.matches[0].judge for e in report.contaminated + report.suspect}
    assert set(judged) == set(REPHRASED) and None not in judged.values()
    assert report.contaminated_ids == {k for k, v in judged.items() if v != "different"}


def test_verdict_parsing():
    assert [parse_verdict(t) for t in ["True", " true.", "Yes, same", "False", "no",
                                       "Different questions", "", "Maybe", "Truely"]] == [
        "same", "same", "same", "different", "different", "different", "unclear", "unclear",
        "unclear"]


def test_missing_embeddings_extra_is_a_clear_error(docs, monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import fails
    with pytest.raises(ImportError, match=r"pip install 'distill\[embeddings\]'"):
        find_contamination([ex("a", "some text")], Config(paraphrase=ParaphraseConfig()),
                           documents=docs)


def test_a_judge_that_cannot_be_reached_stops_the_gate(monkeypatch):
    # a question that got no answer must not count as an "unclear" one the gate decides
    import socket

    from distill.backends.base import load_backend
    from distill.evaluate.paraphrase import judge_pairs

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend = load_backend("openai", model="judge", base_url=f"http://127.0.0.1:{port}/v1",
                           api_key_env=None, max_retries=0)
    with pytest.raises(RuntimeError, match=r"decontamination judge: 2 of 2 questions got no "
                       r"answer \(APIConnectionError from http://127\.0\.0\.1"):
        judge_pairs([("What is 2 + 2?", "What's two plus two?"), ("a", "b")], None, backend)
