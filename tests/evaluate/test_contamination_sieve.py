"""The gate's numpy sieve: the same findings as the plain word-by-word scan, found faster.

The reference, `plain_findings`, is the gate's loop as it was before the sieve: every text
normalised and scanned n-gram by n-gram with `BenchmarkIndex.match_refs`, then scored.
The gate now scans only the texts the sieve (distill/evaluate/gram_hash.py) passes; on a
seeded set with planted leaks both must report the same items with the same matches.
"""

import random

import pytest

from distill.evaluate.contamination import (
    BenchmarkDoc,
    BenchmarkIndex,
    Config,
    TextItem,
    _normalized,
    check_items,
    normalize_words,
)
from distill.evaluate.gram_hash import encode, word_hashes

WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with",
         "as", "was", "by", "at", "be", "this", "from", "or", "have", "an", "they",
         "which", "one", "you", "were", "all", "we", "when", "there", "can", "an", "your",
         "more", "if", "out", "so", "what", "up", "river", "stone", "lantern", "harbour",
         "copper", "owl", "kite", "bramble", "meadow", "tide"]
WEIRD = ["café", "naïve", "Straße", "ＦＵＬＬ", "x_y", "ΟΔΟΣ", "İstanbul", "3+4=7", "l'été",
         "antidisestablishmentarianism"]


def plain_findings(items, config, documents):
    """id -> (flagged or suspect, matches) by the scan before the sieve, in item order."""
    index = BenchmarkIndex(documents, config)
    n = config.ngram
    findings = {}
    for item in items:
        words = normalize_words(item.text)
        found = index.match_refs(words)
        if not found:
            continue
        grams = {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
        for ref, match in found.items():
            match.score = round(index.coverage(words, grams, ref, config.coverage_of), 4)
        matches = sorted(found.values(), key=lambda x: (-(x.score or 0), x.task, x.doc_index))
        kind = config.coverage_class(matches[0].score or 0.0)
        if config.method == "ngram" or kind == "dirty":
            findings[item.id] = ("flagged", [m.model_dump() for m in matches[:20]])
        elif kind == "partial":
            findings[item.id] = ("suspect", [m.model_dump() for m in matches[:20]])
    return findings


def gate_findings(items, config, documents):
    report = check_items(items, config, documents=documents)
    found = {e.id: ("flagged", [m.model_dump() for m in e.matches]) for e in report.contaminated}
    found.update({e.id: ("suspect", [m.model_dump() for m in e.matches])
                  for e in report.suspect})
    assert [e.id for e in report.contaminated] == [i.id for i in items
                                                   if i.id in report.contaminated_ids]
    return found


def phrase(rng, count):
    # Some non-ASCII words and punctuation (split off as normalize_words splits them).
    return " ".join(rng.choice(WORDS + WEIRD[:3] + ["don’t", "—", "“so”"])
                    for _ in range(count))


@pytest.fixture(scope="module")
def seeded():
    """(documents, items, ids of the items that hold a leak) from seed 16."""
    rng = random.Random(16)
    questions = [phrase(rng, rng.randint(14, 30)).capitalize() + "?" for _ in range(40)]
    shorts = [phrase(rng, rng.randint(5, 9)) for _ in range(30)]
    documents = {
        "qa": [BenchmarkDoc("qa", i, f"Question: {q}\nAnswer:", [phrase(rng, 2)])
               for i, q in enumerate(questions)],
        "mc": [BenchmarkDoc("mc", i, f"{s}\nA. {phrase(rng, 2)}\nB. {phrase(rng, 2)}", ["A"])
               for i, s in enumerate(shorts)],
    }
    items, leaks = [], set()

    def add(text, leak=False):
        items.append(TextItem(f"t{len(items)}", text))
        if leak:
            leaks.add(items[-1].id)

    for _ in range(300):
        add(phrase(rng, rng.randint(0, 120)))
    for q in questions[:8]:  # verbatim, reformatted, at the edges, full-width, non-ASCII
        words = normalize_words(q)
        add(f"{phrase(rng, 30)} {q} {phrase(rng, 30)}", leak=True)
        add(f"{phrase(rng, 5)}\n" + "  ".join(w.upper() + "," for w in words), leak=True)
        add(" ".join(words[:13]) + f" {phrase(rng, 40)}", leak=True)
        add(f"{phrase(rng, 40)} " + " ".join(words[-13:]), leak=True)
        add("ｘ " + " ".join(words), leak=True)
        add(f"{WEIRD[1]} {WEIRD[5]} " + " ".join(words[:20]) + f" {WEIRD[7]}", leak=True)
        add(f"{phrase(rng, 20)} lighthouse " + " ".join(words[:12]) + " lighthouse")
    for s in shorts[:8]:  # a short item whole, and with a word changed
        add(f"{phrase(rng, 25)} {s.upper()}! {phrase(rng, 25)}", leak=True)
        add(f"{phrase(rng, 25)} {' '.join(normalize_words(s)[:-1])} lighthouse")
    add("")
    add(" ".join(WEIRD))
    rng.shuffle(items)
    return documents, items, leaks


@pytest.mark.parametrize("config", [
    Config(), Config(preset="tulu3"), Config(preset="llama2", coverage_of="example"),
    Config(ngram=3, min_doc_words=2),  # most texts share a 3-gram: the sieve passes many
], ids=["gpt3", "tulu3", "llama2-example", "3-gram"])
def test_the_sieve_changes_no_finding(seeded, config):
    documents, items, leaks = seeded
    expected = plain_findings(items, config, documents)
    assert gate_findings(items, config, documents) == expected
    if config.preset is None and config.ngram == 13:
        assert {i for i, (kind, _) in expected.items() if kind == "flagged"} == leaks


def test_the_sieve_passes_every_text_with_a_finding_and_few_others(seeded):
    documents, items, leaks = seeded
    index = BenchmarkIndex(documents, Config())
    texts = [item.text for item in items]
    passed = {items[i].id for i in index.candidates(texts)}
    assert leaks <= passed
    assert len(passed) < len(items) / 4  # most texts are ruled out in numpy
    # In chunks, as the gate calls it: positions are per chunk.
    chunked = {items[start + i].id for start in range(0, len(texts), 7)
               for i in index.candidates(texts[start:start + 7])}
    assert chunked == passed


def test_a_hash_collision_costs_a_check_not_a_finding():
    # 13 words: the long word is in the only 13-gram.
    long_q = ("the river town debate on antidisestablishmentarianism lasted seven long winters "
              "and one summer")
    documents = {"qa": [BenchmarkDoc("qa", 0, long_q, ["yes"])]}
    index = BenchmarkIndex(documents, Config())
    # Same first and last eight letters and length: the word hashes collide by design.
    text = long_q.replace("antidisestablishmentarianism", "antidisestXblishmentarianism")
    assert index.candidates([text]) == [0]
    assert check_items([TextItem("t", text)], Config(), documents=documents).contaminated == []


@pytest.mark.parametrize("text", [
    "Gull  Island, at NOON!\n(really)", "snake_case_WORD", "ｆｕｌｌ-width 3+4=7", "naïve café",
    "ÅNGSTRÖM ΟΔΟΣ İstanbul Straße", "x" * 40 + " y", "", "a", "\tTabs\tand\r\nCRLF",
    "l'été — déjà vu", "ﬁne ligature", "caf\u00e9 cafe\u0301", "don’t “quote”", "a\u00a0b",
    "①② ½ ǅ ﬀ", "日本語のテキスト、句読点。", "x\u200by", "ÉCOLE_normale", "a\u0301\u0301_b",
])
def test_word_hashes_split_text_as_normalize_words_does(text):
    words = normalize_words(text)
    hashes, _ = word_hashes(encode(text, _normalized))
    assert len(hashes) == len(words)
    joined, _ = word_hashes(" ".join(words).encode("utf-8"))
    assert hashes.tolist() == joined.tolist()
    for word, value in zip(words, hashes.tolist(), strict=True):
        assert word_hashes(word.encode("utf-8"))[0].tolist() == [value]


def test_distinct_words_get_distinct_hashes():
    rng = random.Random(0)
    words = {"".join(rng.choice("abcdefghij0é") for _ in range(rng.randint(1, 16)))
             for _ in range(20_000)}
    hashes, _ = word_hashes(" ".join(sorted(words)).encode("utf-8"))
    assert len(set(hashes.tolist())) == len(words)
