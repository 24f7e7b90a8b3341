import functools
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from rouge_score import rouge_scorer, tokenize

from distill.filters import novelty
from distill.filters.base import FilterContext
from distill.filters.novelty import Config, rouge_l_fmeasure, rouge_tokens
from distill.records import Example

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

TRICKY = [
    "", "   ", "?!...", "—", "¿¡", "日本語のテキストです", "Ünïcödé wörds", "İstanbul'da",
    "KELVIN: 5 K", "ﬁle ligature", "ＦＵＬＬ ｗｉｄｔｈ", "١٢٣ arabic digits 123", "ǅungla",
    "tab\tnew\nline\r\n", "snake_case and kebab-case", "don't won't", "C++ / C# / F#",
    "ẞtraße STRASSE", "ΣΊΣΥΦΟΣ σίσυφος", "x²+y² = z²", "emoji 😀 text", "a\u00a0b\u2003c",
]


def rouge_f(candidate: str, pool_item: str) -> float:
    """rouge_score's ROUGE-L F-measure as Alpaca calls it."""
    return rouge_scorer._score_lcs(SCORER._tokenizer.tokenize(candidate),
                                   SCORER._tokenizer.tokenize(pool_item)).fmeasure


def reference(seeds: list[str], stream: list[str], threshold: float = 0.7):
    """Alpaca's loop, one candidate at a time, with rouge_score."""
    pool = [SCORER._tokenizer.tokenize(text) for text in seeds]
    out = []
    for text in stream:
        tokens = SCORER._tokenizer.tokenize(text)
        best = max((rouge_scorer._score_lcs(tokens, item).fmeasure for item in pool), default=0)
        keep = not best > threshold
        out.append((keep, best))
        if keep:
            pool.append(tokens)
    return out


def run(seeds: list[str], stream: list[str], **config):
    seed_tasks = [Example(id=f"s{i}", instruction=t) for i, t in enumerate(seeds)]
    records = [Example(id=str(i), instruction=t) for i, t in enumerate(stream)]
    return Config(**config).build(FilterContext(seed_tasks=lambda: seed_tasks))(records)


@pytest.mark.parametrize("text", TRICKY)
def test_tokens_equal_rouge_score_tokenizer(text):
    assert rouge_tokens(text) == tokenize.tokenize(text, None)
    assert rouge_tokens(text) == SCORER._tokenizer.tokenize(text)


def test_tokens_equal_rouge_score_on_random_unicode():
    rng = random.Random(0)
    alphabet = [chr(c) for c in range(0x20, 0x2500)] + ["K", "İ", "ẞ", " ", "\n"]
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert rouge_tokens(text) == tokenize.tokenize(text, None), text


def test_fmeasure_formula_matches_rouge_score_bit_for_bit():
    rng = random.Random(1)
    for _ in range(1000):
        la, lb = rng.randint(0, 40), rng.randint(0, 40)
        lcs = rng.randint(0, min(la, lb))
        a = [f"a{i}" for i in range(la)]
        b = a[:lcs] + [f"b{i}" for i in range(lb - lcs)]  # LCS exactly lcs
        expected = rouge_scorer._score_lcs(a, b).fmeasure
        got = rouge_l_fmeasure(np.array(lcs), np.array(la), np.array(lb))
        assert float(got) == expected, (lcs, la, lb)


def words(n: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def test_boundary_exactly_threshold_is_kept_and_just_above_dropped():
    # 7 of 10 tokens shared, both 10 long: rouge_score gives exactly 0.7, kept.
    seed = " ".join(words(10))
    at = " ".join(words(7) + ["x", "y", "z"])
    assert rouge_f(at, seed) == 0.7
    # 7 tokens, all inside a 13-token seed: mathematically 0.7 too, but rouge_score's
    # floats give 0.7000000000000001, so Alpaca drops it; so must we.
    seed_13 = " ".join(words(7) + words(6, "v"))
    above = " ".join(words(7))
    assert rouge_f(above, seed_13) == 0.7000000000000001
    [kept] = run([seed], [at], score_kept=True)
    [dropped] = run([seed_13], [above])
    assert kept.keep and kept.scores["rouge_l_max"] == 0.7
    assert run([seed], [at])[0].scores == {}  # by default kept records carry no scores
    assert not dropped.keep and dropped.reason == "rouge_l>0.7"
    assert dropped.scores["rouge_l_max"] == 0.7000000000000001
    assert dropped.scores["most_similar"] == seed_13 and dropped.scores["most_similar_id"] == "s0"
    # Within one block, against an earlier kept candidate, the same holds.
    assert [v.keep for v in run([], [seed, at, "q r s t u", seed_13, above])] == \
        [True, True, True, True, False]


def test_threshold_is_configurable():
    seed = " ".join(words(10))
    close = " ".join(words(8) + ["x", "y"])  # 0.8
    assert not run([seed], [close])[0].keep
    assert rouge_f(close, seed) == 0.8000000000000002  # rouge_score rounds up here
    assert run([seed], [close], threshold=0.81)[0].keep
    assert not run([seed], [close], threshold=0.8)[0].keep
    assert not run([seed], [close], threshold=0.79)[0].keep
    with pytest.raises(ValidationError):
        Config(threshold=1.5)
    with pytest.raises(ValidationError):
        Config(kind="novelty", treshold=0.5)


def test_pool_grows_with_kept_instructions_only():
    a = " ".join(words(10))
    a2 = " ".join(words(8) + ["x", "y"])                       # 0.8 to a: dropped
    b = " ".join(words(6) + ["p", "q", "x", "y"])              # 0.8 to a2, 0.6 to a
    assert rouge_f(a2, a) > 0.7 and rouge_f(b, a2) > 0.7 and rouge_f(b, a) <= 0.7
    verdicts = run([], [a, a2, b], score_kept=True)
    assert [v.keep for v in verdicts] == [True, False, True]
    assert verdicts[2].scores["most_similar_id"] == "0"
    assert verdicts[2].scores["rouge_l_max"] == pytest.approx(0.6)
    # The kept b now guards the pool: its own near-duplicate goes.
    b2 = " ".join(words(6) + ["p", "q", "x", "z"])
    assert [v.keep for v in run([], [a, a2, b, b2])] == [True, False, True, False]


def test_seed_tasks_start_the_pool_unless_disabled():
    seed = "Give three tips for staying healthy."
    copy = "Give three tips for staying healthy!"
    [verdict] = run([seed], [copy])
    assert not verdict.keep and verdict.scores["rouge_l_max"] == 1.0
    assert verdict.scores["most_similar"] == seed
    assert run([seed], [copy], include_seed_tasks=False)[0].keep


def test_instructions_without_tokens_score_zero_and_are_kept():
    stream = ["???", "日本語のテキストです", "", "!!!", "Describe a cat in four words."]
    verdicts = run(["What is 2 + 2?"], stream, score_kept=True)
    assert [v.keep for v in verdicts] == [True] * 5
    for verdict in verdicts[:4]:
        assert verdict.scores == {"rouge_l_max": 0.0, "most_similar": None,
                                  "most_similar_id": None}
    assert [v.scores for v in run(["What is 2 + 2?"], stream)] == [{}] * 5


def test_each_call_starts_from_the_seed_pool():
    flt = Config().build(FilterContext(seed_tasks=list))
    records = [Example(id="1", instruction="List five common birds in Europe.")]
    assert flt(records)[0].keep and flt(records)[0].keep
    assert flt([]) == []


def near_duplicate_stream(rng: random.Random, n: int) -> list[str]:
    """Instructions over a small vocabulary, many of them edits of earlier ones."""
    vocab = ["write", "a", "short", "poem", "about", "the", "sea", "list", "three", "fruits",
             "explain", "why", "sky", "is", "blue", "café", "naïve", "İstanbul", "K", "—",
             "it's", "x2", "...", "日本", "C++", "tips", "for", "kids"]
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < 0.6:
            words = rng.choice(out).split()
            for _ in range(rng.randint(0, 3)):
                op = rng.random()
                if op < 0.4 and words:
                    words[rng.randrange(len(words))] = rng.choice(vocab)
                elif op < 0.7:
                    words.insert(rng.randint(0, len(words)), rng.choice(vocab))
                elif words:
                    words.pop(rng.randrange(len(words)))
            text = " ".join(words)
            if rng.random() < 0.1:
                text = text.upper()
        elif rng.random() < 0.05:
            text = rng.choice(["", "?!", "—", "日本 日本"])
        else:
            text = " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 14)))
        out.append(text)
    return out


@functools.cache
def random_case(seed: int):
    rng = random.Random(seed)
    seeds = near_duplicate_stream(rng, 15)
    stream = near_duplicate_stream(rng, 300)
    return seeds, stream, reference(seeds, stream)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("block", [1, 7, 256])
def test_decisions_and_scores_equal_rouge_score(seed, block, monkeypatch):
    """Blocks of 1 and 7 candidates exercise the in-block comparisons and block edges."""
    monkeypatch.setattr(novelty, "_MAX_BLOCK", block)
    seeds, stream, expected = random_case(seed)
    verdicts = run(seeds, stream, score_kept=True)
    assert [(v.keep, v.scores["rouge_l_max"]) for v in verdicts] == expected
    kept = sum(keep for keep, _ in expected)
    assert 20 < kept < 280  # the stream exercises both outcomes
    # The recorded most similar instruction has the recorded score.
    for text, verdict in zip(stream, verdicts, strict=True):
        if verdict.scores["rouge_l_max"] > 0:
            assert rouge_f(text, verdict.scores["most_similar"]) == verdict.scores["rouge_l_max"]


def test_most_similar_is_the_first_of_equal_maxima():
    pool = ["red green blue one", "red green blue two"]
    [verdict] = run(pool, ["red green blue three"])
    assert verdict.scores["most_similar_id"] == "s0"
    assert [v.scores.get("most_similar_id") for v in run([], [*pool, "red green blue three"])
            ] == [None, "0", "0"]


def test_integer_codes_past_the_code_point_limit_give_the_same_result(monkeypatch):
    seeds, stream, expected = random_case(0)
    monkeypatch.setattr(novelty._Encoder, "LIMIT", 5)  # overflows within the seeds
    assert [(v.keep, v.scores["rouge_l_max"]) for v in run(seeds, stream, score_kept=True)
            ] == expected


def test_bench_script_replays_a_stream_with_no_differences():
    script = Path(__file__).resolve().parents[2] / "scripts" / "bench_novelty.py"
    done = subprocess.run([sys.executable, str(script), "--n", "40", "--big-n", "400"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "differing decisions: 0;" in done.stdout
    assert "differing max scores: 0 " in done.stdout


def test_fields_option_compares_instruction_and_input():
    from distill.filters.base import FilterContext
    from distill.filters.novelty import Config
    from distill.records import Example

    records = [Example(id="a", instruction="Add the two numbers.", input="59 + 22"),
               Example(id="b", instruction="Add the two numbers.", input="34 + 31"),
               Example(id="c", instruction="Add the two numbers.", input="59 + 22")]
    # without the seed tasks, a context that has none will do
    by_instruction = Config(include_seed_tasks=False).build(FilterContext())(records)
    assert [v.keep for v in by_instruction] == [True, False, False]
    with_input = Config(include_seed_tasks=False,
                        fields=["instruction", "input"]).build(FilterContext())(records)
    assert [v.keep for v in with_input] == [True, True, False]
