"""The second signal for a paraphrase candidate: do its numbers and words agree with the item?

Sentence embeddings put a rephrased benchmark question close to the original, but they
put a look-alike just as close: the same word problem with other numbers (a different
answer), or the same sentence asking for something else ("... in degrees Fahrenheit?"
beside "... in degrees Celsius?"). With all-MiniLM-L6-v2 such look-alikes score 0.8-1.0,
as high as the rephrasings (docs/decontamination.md), so no cosine threshold separates
them. This module compares the two texts' words instead, after normalisation:

    from distill.evaluate.agreement import compare
    evidence = compare(benchmark_text, training_text)
    evidence.numbers, evidence.missing, evidence.edit_similarity

- Numbers are folded to one form: "twenty-four" and "24", "1,200" and "1200", "2.50"
  and "2.5", "3 thousand" and "3000", "$40" and "40 dollars" are the same. `numbers`
  is "same" when both hold the same multiset, "added" when the text holds every number
  of the item and more, else "different".
- Content words (not function words, stemmed lightly so that "bakes" and "baked" agree)
  of the item that the text lacks are `missing`; `in_order` says whether the item's
  content words and numbers appear in the text in the item's order.
- `degree` lists words of comparison ("more", "than", "largest") that the text's
  question sentence adds: "How many more girls than boys are there?" asks something
  else than "How many girls are there?" with the same words around it.
- `edit_similarity` is difflib's ratio between the two normalised word sequences: near
  1 for the item with a word or two swapped, about 0.5 or less for a real rewording.

`confirms` turns this into a verdict (see its docstring). It is English-only and
deliberately simple: a judge model (the LLM Decontaminator's second stage) is the
stronger check where one is available.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal


def _words(text: str) -> list[str]:
    """The words of a space-separated list (long word lists read better as text)."""
    return text.split()


_UNITS = {word: value for value, word in enumerate(_words(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen "
    "fourteen fifteen sixteen seventeen eighteen nineteen"))}
_TENS = {word: 10 * value for value, word in enumerate(
    _words("twenty thirty forty fifty sixty seventy eighty ninety"), start=2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_NUMBER_WORDS = {**_UNITS, **_TENS, "dozen": 12}
# A number with thousands separators or a decimal part, or a word; "3rd" splits into
# 3 and "rd", and the ordinal suffix is dropped.
_TOKEN = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|[^\W\d_]+")
_ORDINAL_SUFFIXES = frozenset(_words("st nd rd th"))
# "$40" becomes "40 dollar", the order "40 dollars" has.
_CURRENCY = re.compile(r"([$€£])\s*(\d[\d,.]*)")
_CURRENCY_WORDS = {"$": "dollar", "€": "euro", "£": "pound"}
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_VOWEL = re.compile("[aeiouy]")
# Function words, question words and "one" (mostly a pronoun: "which one is it"). They
# carry the phrasing, not the item, so a rephrasing may change them freely.
_STOPWORDS = frozenset(_words("""
a an the of in on at to for from by with and or but if then than as into onto out up down
over under about after before while during within through is are was were be been being
am do does did done has have had having will would can could should shall may might must
it its this that these those there here what which who whom whose when where why how much
many each every per all any some he she they we you i me him her them us my your his their
our not no so such also just only more most very own other another one let please given
find write tell say st nd rd th"""))
# Words that change which thing or quantity is asked for when added to the question
# itself: comparison and superlatives (see _is_degree). Only the question sentence is
# looked at, since a sentence of context may well say "the most popular sport". Negation
# and ordinals are left out: "prime or not", "in the first week" are common rewordings.
_DEGREE = frozenset(_words("more less fewer most least than except"))
_NOT_SUPERLATIVE = frozenset(_words("""interest forest test request contest harvest honest
modest suggest west rest guest nest chest protest invest digest arrest manifest conquest
quest pest vest crest jest zest"""))
# At or above this word-sequence similarity a text is a near copy of the item: the
# differences are a few edited words, which is how look-alikes are made.
NEAR_COPY = 0.8


@dataclass
class Evidence:
    """How a training text's words compare with a benchmark item's."""

    numbers: Literal["same", "added", "different"]
    item_numbers: int = 0  # numbers in the item
    missing: list[str] = field(default_factory=list)  # item content words it lacks
    in_order: bool = True  # the item's content words and numbers appear in its order
    degree: list[str] = field(default_factory=list)  # comparison words it adds
    edit_similarity: float = 0.0  # difflib ratio of the normalised word sequences

    def describe(self) -> str:
        """One line for reports: what agreed and what did not."""
        parts = [{"same": "same numbers", "added": "the item's numbers and more",
                  "different": "other numbers"}[self.numbers]]
        parts.append(f"lacks {', '.join(self.missing[:4])}" if self.missing
                     else "keeps every item word" + ("" if self.in_order else " (reordered)"))
        if self.degree:
            parts.append(f"adds {', '.join(self.degree[:4])}")
        parts.append(f"word-sequence similarity {self.edit_similarity:.2f}")
        return "; ".join(parts)


def compare(item: str, text: str) -> Evidence:
    """The evidence that `text` is `item` rephrased (see the module docstring)."""
    item_words, text_words = normalize(item), normalize(text)
    item_numbers = Counter(w for w in item_words if _is_number(w))
    text_numbers = Counter(w for w in text_words if _is_number(w))
    item_content = Counter(w for w in item_words if _is_content(w))
    text_content = Counter(w for w in text_words if _is_content(w))
    numbers = ("same" if item_numbers == text_numbers else
               "added" if not item_numbers - text_numbers else "different")
    ratio = difflib.SequenceMatcher(None, item_words, text_words, autojunk=False).ratio()
    key = [w for w in item_words if _is_number(w) or _is_content(w)]
    return Evidence(
        numbers=numbers, item_numbers=sum(item_numbers.values()),
        missing=sorted((item_content - text_content).elements()),
        in_order=_is_subsequence(key, text_words),
        degree=sorted({w for w in normalize(_question(text)) if _is_degree(w)}
                      - {w for w in item_words if _is_degree(w)}),
        edit_similarity=round(ratio, 4))


def confirms(evidence: Evidence, cosine: float, reworded_cosine: float,
             reworded_max_similarity: float) -> bool:
    """Whether the evidence confirms an embedding candidate as a rephrased item.

    Never when a number of the item is changed or dropped, when a word problem (an
    item with numbers) gains a quantity, or when the question adds a word of comparison
    ("more ... than", "largest"): these make a look-alike that asks something else. A
    text around a factual question may bring numbers of its own ("published in 1813").
    Then either:

    - the candidate keeps every content word of the item, as often as the item has it:
      it holds the whole item, with clauses moved, numbers spelt out, or a sentence of
      context added. A near copy of the item
      (word-sequence similarity at least NEAR_COPY) must keep them in the item's order:
      "from Fahrenheit to Celsius" and a ratio of 5:4 for 4:5 are other questions; or
    - it has exactly the item's numbers and is a real rewording that the embedding
      still finds very close: cosine at least `reworded_cosine` while its word sequence
      is at most `reworded_max_similarity` like the item's. The second condition keeps
      out the item with one word swapped ("passed" -> "failed", "Celsius" ->
      "Fahrenheit"): its cosine is as high as a rewording's, but its words are nearly
      the item's, so the high cosine says nothing beyond the words they share.
    """
    if evidence.numbers == "different" or evidence.degree:
        return False
    if evidence.numbers == "added" and evidence.item_numbers:
        return False
    if not evidence.missing:
        return evidence.in_order or evidence.edit_similarity < NEAR_COPY
    return (evidence.numbers == "same" and cosine >= reworded_cosine
            and evidence.edit_similarity <= reworded_max_similarity)


def normalize(text: str) -> list[str]:
    """Lowercase stemmed words with every number in one canonical decimal form."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _CURRENCY.sub(lambda m: f"{m[2]} {_CURRENCY_WORDS[m[1]]}", text)
    text = text.replace("%", " percent ")
    tokens = _TOKEN.findall(text.replace("-", " "))
    words: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token[0].isdigit():
            value = Decimal(token.replace(",", ""))
            i += 1
            if i < len(tokens) and tokens[i] in _SCALES:  # "1.5 million", "3 thousand"
                value *= _SCALES[tokens[i]]
                i += 1
            elif i < len(tokens) and tokens[i] in _ORDINAL_SUFFIXES:  # "3rd"
                i += 1
            words.append(_canonical(value))
        elif (token in _NUMBER_WORDS and token != "one") or (
                token in ("one", "a") and i + 1 < len(tokens)
                and tokens[i + 1] in (*_SCALES, "dozen")):
            value, i = _number_words(tokens, i)
            words.append(_canonical(value))
        else:
            words.append(_stem(token))
            i += 1
    return words


def _number_words(tokens: list[str], i: int) -> tuple[Decimal, int]:
    """The value of the number words starting at `tokens[i]` and the index after them.

    A word joins the number only where English puts it ("twenty four", "three hundred
    and fifty", "two dozen"), so "two, three" stays two numbers.
    """
    total = current = 0
    previous = "start"
    while i < len(tokens):
        token = tokens[i]
        if token in _UNITS and previous in ("start", "tens", "scale"):
            current += _UNITS[token]
            previous = "unit"
        elif token in _TENS and previous in ("start", "scale"):
            current += _TENS[token]
            previous = "tens"
        elif token == "a" and previous == "start":  # "a hundred", "a dozen"
            current, previous = 1, "unit"
        elif token == "dozen" and previous in ("start", "unit", "tens"):
            current, previous = max(current, 1) * 12, "dozen"
        elif token == "hundred" and previous in ("start", "unit", "tens"):
            current, previous = max(current, 1) * 100, "scale"
        elif token in _SCALES:
            total += max(current, 1) * _SCALES[token]
            current, previous = 0, "scale"
        elif not (token == "and" and previous == "scale" and i + 1 < len(tokens)
                  and tokens[i + 1] in _NUMBER_WORDS):
            break
        i += 1
    return Decimal(total + current), i


def _canonical(value: Decimal) -> str:
    """"1200" for 1,200 and 1200.0; "2.5" for 2.50; never an exponent."""
    return format(value.normalize(), "f")


def _question(text: str) -> str:
    """The last sentence that asks something (ends in "?"), else the last sentence."""
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
    asking = [s for s in sentences if s.rstrip().endswith("?")]
    return (asking or sentences or [""])[-1]


def _is_degree(word: str) -> bool:
    return word in _DEGREE or (len(word) > 4 and word.endswith("est")
                               and word not in _NOT_SUPERLATIVE)


def _is_subsequence(words: list[str], text: list[str]) -> bool:
    """Whether `words` occur in `text` in this order (other words may lie between)."""
    remaining = iter(text)
    return all(word in remaining for word in words)


def _is_number(word: str) -> bool:
    return word[0].isdigit()


def _is_content(word: str) -> bool:
    return not word[0].isdigit() and word not in _STOPWORDS and len(word) > 1


def _stem(word: str) -> str:
    """A light suffix stripper: plurals and -ed / -ing forms of regular words.

    Stopwords are returned as they are, so that "does" stays a stopword.
    """
    if word in _STOPWORDS or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    # Only when a vowel is left: "string" and "need" are not forms of "str" and "ne".
    if word.endswith("ing") and _VOWEL.search(word[:-3]):
        return _restore_e(word[:-3])
    if (word.endswith("ed") and not word.endswith("eed") and len(word) > 4
            and _VOWEL.search(word[:-2])):
        return _restore_e(word[:-2])
    return word


def _restore_e(stem: str) -> str:
    """"bak" -> "bake" (baked, baking), "paint" stays, "stopp" -> "stop"."""
    if stem.endswith("v"):  # leaving -> leave: English words do not end in v
        return stem + "e"
    if len(stem) >= 2 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
        return stem[:-1]
    if (len(stem) >= 3 and stem[-1] not in "aeiouwxy" and stem[-2] in "aeiou"
            and stem[-3] not in "aeiou"):
        return stem + "e"
    return stem
