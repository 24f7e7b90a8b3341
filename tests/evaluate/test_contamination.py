"""The decontamination gate against the fixture tasks, rendered by lm-eval itself."""

from pathlib import Path

import pytest
from pydantic import ValidationError

from distill.evaluate.contamination import (
    BenchmarkDoc,
    BenchmarkIndex,
    Config,
    ContaminationError,
    apply_policy,
    find_contamination,
    load_benchmark_docs,
    normalize_words,
)
from distill.records import Example

TASKS = Path(__file__).resolve().parents[2] / "tests" / "assets" / "tasks"
# qa doc 0: a 19-word question; qa doc 2: 11 words; qa doc 6: a 19-word answer.
LONG_Q = ("The lighthouse keeper on Gull Island counts exactly seventeen ships every foggy "
          "morning; how many ships does he count?")
SHORT_Q = "What colour is the sky over the Amber Desert at noon?"
LONG_A = ("Because the town's founder decreed that time in Bramblewick should flow toward the "
          "harvest rather than away from it.")


@pytest.fixture(scope="module")
def docs():
    return load_benchmark_docs(["distill_fixture"], TASKS)


def ex(id, instruction, input="", output=""):
    return Example(id=id, instruction=instruction, input=input, output=output)


def check(examples, docs, **config):
    return find_contamination(examples, Config(**config), documents=docs)


def only_match(report, example_id):
    [item] = [c for c in report.contaminated if c.id == example_id]
    assert len(item.matches) == 1, item.matches
    return item.matches[0]


def test_normalisation_ignores_case_punctuation_and_spacing():
    assert normalize_words("Gull  Island, at NOON!\n(really)") == [
        "gull", "island", "at", "noon", "really"]
    assert normalize_words("ｆｕｌｌ-width 3+4=7") == ["full", "width", "3", "4", "7"]


def test_benchmark_side_is_what_lm_eval_renders(docs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the fixture data loads from any working directory
    assert set(docs) == {"distill_fixture_qa", "distill_fixture_mc"}  # the tag expanded
    qa, mc = docs["distill_fixture_qa"], docs["distill_fixture_mc"]
    assert len(qa) == 10 and len(mc) == 6
    assert qa[0].prompt == f"Question: {LONG_Q}\nAnswer:"  # the task's doc_to_text
    assert qa[0].targets == ["seventeen"]
    assert mc[0].targets == ["copper"]  # the label index resolved to the choice's text
    assert mc[3].targets == ["nine"]
    index = BenchmarkIndex(docs, Config())
    assert index.stats["distill_fixture_qa"].template == "question {...} answer"


def test_verbatim_and_reformatted_benchmark_items_are_caught(docs):
    examples = [
        ex("verbatim-prompt", LONG_Q),
        ex("shouted", LONG_Q.upper().replace(";", " -- ").replace("?", "!!"),
           output="I think 17."),
        ex("embedded", "Here is a riddle for you.", input=f"({LONG_Q})", output="Sure."),
        ex("answer", "Why does the clockmaker do that?", output=LONG_A),
        ex("unrelated", "Write a haiku about autumn leaves falling on a quiet pond at dusk "
                        "while the lighthouse keeper sleeps."),
    ]
    report = check(examples, docs)
    assert report.contaminated_ids == {"verbatim-prompt", "shouted", "embedded", "answer"}
    for example_id in ("verbatim-prompt", "shouted", "embedded"):
        match = only_match(report, example_id)
        assert (match.task, match.doc_index, match.view, match.kind) == (
            "distill_fixture_qa", 0, "prompt", "ngram")
        assert len(match.ngram.split()) == 13
        assert match.ngram in " ".join(normalize_words(LONG_Q))
        assert match.doc_text.startswith("Question: The lighthouse keeper")
    match = only_match(report, "answer")
    assert (match.task, match.doc_index, match.view) == ("distill_fixture_qa", 6, "target")
    stats = report.tasks["distill_fixture_qa"]
    assert stats.contaminated_examples == 4 and stats.contaminated_docs == 2
    assert report.tasks["distill_fixture_mc"].contaminated_examples == 0
    assert report.checked == 5


def test_short_items_are_matched_whole(docs):
    # 11 words of question; with lm-eval's "Question: ... Answer:" it is 13 words, one
    # 13-gram that a training example without the template would never contain.
    examples = [
        ex("short-q", f"Please answer: {SHORT_Q.lower()}", output="It is orange."),
        ex("mc-q", "which season brings the lantern festival to Velmora", output="autumn"),
        ex("half-q", "What colour is the sky over the Amber Desert?"),  # 9 of 11 words
        ex("answer-only", "Name a colour.", output="orange"),  # a one-word target alone
    ]
    report = check(examples, docs)
    assert report.contaminated_ids == {"short-q", "mc-q"}
    match = only_match(report, "short-q")
    assert (match.task, match.doc_index, match.kind) == ("distill_fixture_qa", 2, "whole_doc")
    assert match.ngram == "what colour is the sky over the amber desert at noon"
    match = only_match(report, "mc-q")
    assert (match.task, match.doc_index) == ("distill_fixture_mc", 2)


def test_overlap_shorter_than_n_is_not_contamination(docs):
    words = LONG_Q.split()
    twelve = " ".join(words[:12])  # 12 consecutive words of a 19-word item
    other_twelve = " ".join(words[7:19])
    examples = [ex("twelve", twelve, output="A story."), ex("tail", "Tell me: " + other_twelve)]
    assert check(examples, docs).contaminated == []
    # The same 12 words are enough once n is 12.
    assert check(examples, docs, ngram=12).contaminated_ids == {"twelve", "tail"}


def test_question_with_its_short_answer_is_caught_by_the_joined_view():
    documents = {"arith": [BenchmarkDoc("arith", i, f"{a} + {b} =", [str(a + b)])
                           for i, (a, b) in enumerate([(2, 3), (40, 2), (7, 8)])]}
    examples = [ex("qa", "What is 40 + 2?", output="40 + 2 = 42"),
                ex("q-only", "Compute 40 + 2."), ex("a-only", "The answer is 42.")]
    report = find_contamination(examples, Config(min_doc_words=3), documents=documents)
    assert report.contaminated_ids == {"qa"}
    match = only_match(report, "qa")
    assert (match.doc_index, match.view, match.ngram) == (1, "prompt+target", "40 2 42")


def test_prompt_template_text_is_not_an_item():
    rule = "Reply with the number only and do not explain your reasoning in any way at all"
    questions = ["How many red apples sit in the wooden bowl?",
                 "How many blue cups hang above the kitchen sink?",
                 "How many old books lean on the top shelf?",
                 "How many tin cans roll across the cellar floor?",
                 "How many glass jars hold the winter jam?",
                 "How many paper kites fly over the hill?"]
    names = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    documents = {"count": [BenchmarkDoc("count", i, f"{q}\n{rule}.\nItem {name}.", [str(i)])
                           for i, (q, name) in enumerate(zip(questions, names, strict=True))]}
    index = BenchmarkIndex(documents, Config())
    assert index.stats["count"].boilerplate > 0
    assert index.stats["count"].template == "how many {...}"
    examples = [ex("format", f"How many cats are there? {rule}.", output="3"),
                ex("item", "Old books lean on the top shelf: how many?", output="2"),
                ex("item+rule", f"{questions[4]} {rule}.", output="5")]
    report = find_contamination(examples, Config(), documents=documents)
    assert report.contaminated_ids == {"item", "item+rule"}
    assert (only_match(report, "item").doc_index, only_match(report, "item+rule").doc_index) == (
        2, 4)


def test_short_question_above_its_choices_is_its_own_view():
    rule = "Choose the best option below"
    documents = {"mc": [BenchmarkDoc("mc", i, f"{q}\n{rule}\nA. {a}\nB. {b}\nAnswer:", [a])
                        for i, (q, a, b) in enumerate([
                            ("Which bird nests on the Tharn observatory?", "owl", "stork"),
                            ("What do Gull Island fishermen use at low tide?", "spears", "kites"),
                            ("Which metal is the Bramblewick weather vane made of?",
                             "copper", "iron")])]}
    examples = [ex("q", "which metal is the bramblewick weather vane made of", output="tin"),
                ex("rule", f"{rule}: tea or coffee?")]
    report = find_contamination(examples, Config(boilerplate_min_docs=3), documents=documents)
    assert report.contaminated_ids == {"q"}
    match = only_match(report, "q")
    assert (match.doc_index, match.view, match.kind) == (2, "prompt line", "whole_doc")


def test_policies(docs):
    examples = [ex("bad", LONG_Q), ex("good", "Write a limerick about a cat.")]
    report = check(examples, docs)

    clean, dropped = apply_policy(report, examples, "drop")
    assert [e.id for e in clean] == ["good"]
    [rejected] = dropped
    assert (rejected.id, rejected.stage, rejected.reason) == (
        "bad", "decontaminate", "contaminated:distill_fixture_qa")
    assert rejected.record["instruction"] == LONG_Q
    assert rejected.model_dump()["matches"][0]["doc_index"] == 0

    clean, dropped = apply_policy(report, examples, "warn")
    assert [e.id for e in clean] == ["bad", "good"] and dropped == []

    with pytest.raises(ContaminationError) as error:
        apply_policy(report, examples, "fail")
    message = str(error.value)
    assert "1 of 2 training examples" in message and "distill_fixture_qa" in message
    assert "bad ~ doc 0" in message
    assert error.value.report is report

    # The report's own policy is the default; a clean set passes every policy.
    assert apply_policy(report, examples)[0] == clean[1:]
    clean_report = check([examples[1]], docs, policy="fail")
    assert apply_policy(clean_report, [examples[1]]) == ([examples[1]], [])


def test_fields_and_switches(docs):
    examples = [ex("in-output", "Tell me a fact.", output=LONG_Q)]
    assert check(examples, docs).contaminated_ids == {"in-output"}
    assert check(examples, docs, fields=["instruction", "input"]).contaminated == []
    disabled = find_contamination(examples, Config(enabled=False))
    assert not disabled.enabled and disabled.contaminated == []
    assert disabled.summary() == "decontamination: disabled"
    with pytest.raises(ValueError, match="no tasks"):
        find_contamination(examples, Config())
    with pytest.raises(ValidationError):
        Config(policy="delete")
    with pytest.raises(ValidationError):
        Config(ngrams=13)


def test_tasks_and_include_path_come_from_config_or_caller():
    examples = [ex("bad", SHORT_Q)]
    by_caller = find_contamination(examples, Config(), TASKS, tasks=["distill_fixture_qa"])
    by_config = find_contamination(
        examples, Config(tasks=["distill_fixture_qa"], include_path=str(TASKS)))
    assert by_caller.contaminated_ids == by_config.contaminated_ids == {"bad"}
    assert list(by_caller.tasks) == ["distill_fixture_qa"]
    assert by_caller.model_dump_json()  # the report is saved as JSON
