"""The decontamination gate: no training example may carry a benchmark item into training.

Runs once, on the main process, between filtering and training:

    from distill.evaluate.contamination import Config, find_contamination, apply_policy
    report = find_contamination(examples, Config(), "eval/tasks", tasks=["microworld"])
    clean, dropped = apply_policy(report, examples, "drop")

The benchmark side is each eval task's documents exactly as lm-eval renders them: the
task is built with lm-eval's `TaskManager` (local tasks from `include_path` included),
and for every document it evaluates on (`task.eval_docs`: the test split, else the
validation split, after the task's `process_docs`) we take `doc_to_text(doc)` and
`doc_to_target(doc)` (a choice index resolved to the choice's text; several targets each
on their own). From them come the "views" that are indexed: `prompt`, `target`,
`prompt+target` (a question asked together with its answer) and, for a multi-line prompt,
each `prompt line` shorter than `ngram` words (a short question above its choices).

Matching works on words after normalisation: Unicode NFKC, lowercase, every run of
characters that are not letters or digits (punctuation, underscores, whitespace) is one
word break. So "Gull Island, at NOON!" and "gull island at noon" are the same four words.

- A view of at least `ngram` words (13 by default, as in GPT-3's decontamination) is
  indexed as its set of word n-grams; a training example that shares any one of them is
  contaminated.
- A view shorter than `ngram` words has no n-gram, which would make short items (such as
  the microworld's) invisible. Such a view, if it has at least `min_doc_words` words, is
  indexed whole: an example is contaminated when it contains the view's full word
  sequence, contiguously. Views shorter than `min_doc_words` (a one-word answer like
  "12") are too common to be evidence and are not checked on their own; `prompt+target`
  still catches a short question given together with its short answer.
- A task's prompt template is not part of its items, and is removed in two ways. The words
  that every prompt of the task starts and ends with ("question" ... "answer" for
  "Question: {{question}} Answer:") are stripped (likewise for targets): otherwise the
  template would pad a short item past `ngram` words, into n-grams that a training
  example holding the item without the template never shares. Template text elsewhere
  ("Reply with the number only ..." between question and choices) is found by frequency:
  an n-gram, or a whole short view, present in at least max(`boilerplate_min_docs`,
  `boilerplate_fraction` x the task's documents) documents of the task is template; it is
  cut out of the views, and the pieces between the cuts are indexed as views of their
  own. So training data written in the benchmark's format is not flagged, and an item is
  still caught without its template. The report shows the stripped template and counts
  the template n-grams per task.

The training side is the example's `fields` (instruction, input, output) joined in that
order, so a gram may run from a question in the instruction into its answer in the output.

N-grams are kept as Python hashes in dicts; every reported match is checked against the
real words, so a hash collision can never flag an example. Each contaminated example keeps
a list of `Match`es (task, document, view, matched words, score). In front of that exact
check sits a sieve (gram_hash.py): a few thousand training texts at a time are hashed in
numpy, and only those holding an indexed n-gram (or the first words of a short view) are
checked word by word; the findings are the same (tests/evaluate/test_contamination_sieve.py).

Beyond "any shared n-gram" (`method: ngram`, GPT-3's rule and the default):

- Token coverage (Llama 2's contamination analysis; Tulu 3): every matched document gets a
  score, the share of its item words (template cut out; best of prompt, target and
  prompt+target) that lie inside n-grams it shares with the example (`coverage_of:
  example` counts the example's words instead). Below `clean_below` is clean, above
  `dirty_above` dirty, in between partial. The score is reported with every match; with
  `method: coverage` only dirty examples are flagged and partial ones are listed as
  suspect. Words here are normalised words, not model tokens, and Llama 2's skip-gram
  budget is not modelled. `preset` names published settings (PRESETS).
- Paraphrases (`paraphrase:`, LLM Decontaminator): embedding candidates confirmed by a
  second signal; see distill/evaluate/paraphrase.py.
"""

from __future__ import annotations

import math
import re
import time
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from distill.component import Dependencies, Dependent
from distill.evaluate.paraphrase import ParaphraseConfig
from distill.records import Example, Rejected

Policy = Literal["drop", "fail", "warn"]
Method = Literal["ngram", "coverage"]
# Published settings: GPT-3 (Brown et al. 2020, appendix C), Tulu 3 (Lambert et al. 2024,
# decontamination), Llama 2 (Touvron et al. 2023, appendix A.6).
# Tokens there are model tokens; here they are normalised words.
PRESETS: dict[str, dict[str, Any]] = {
    "gpt3": {"ngram": 13, "method": "ngram"},
    "tulu3": {"ngram": 8, "method": "coverage", "clean_below": 0.5, "dirty_above": 0.5},
    "llama2": {"ngram": 11, "method": "coverage", "clean_below": 0.2, "dirty_above": 0.8},
}
STAGE = "decontaminate"
MAX_MATCHES_PER_EXAMPLE = 20
EXCERPT_CHARS = 240

_WORD = re.compile(r"[^\W_]+")


class Config(Dependent):
    """The recipe's `decontamination` section."""

    enabled: bool = True
    ngram: int = Field(13, ge=1, description="Word n-gram length.")
    min_doc_words: int = Field(
        4, ge=1, description="Benchmark texts shorter than `ngram` but at least this long are "
        "matched whole; shorter ones (one-word answers) are not checked.")
    tasks: list[str] | None = Field(None, description="lm-eval tasks; None: the eval tasks.")
    include_path: str | None = Field(None, description="None: the eval include_path.")
    policy: Policy = Field("drop", description="drop the examples, fail the run, or warn.")
    fields: list[Literal["instruction", "input", "output"]] = Field(
        default_factory=lambda: ["instruction", "input", "output"], min_length=1,
        description="Which fields of a training example are checked.")
    boilerplate_fraction: float = Field(
        0.1, ge=0, le=1, description="Text in at least this fraction of a task's documents "
        "(and in at least `boilerplate_min_docs`) is its template, not an item.")
    boilerplate_min_docs: int = Field(5, ge=2)
    preset: Literal["gpt3", "tulu3", "llama2"] | None = Field(
        None, description="Fills ngram, method and the coverage thresholds that are not set: "
        "gpt3 (13-grams, any shared gram), tulu3 (8-grams, coverage above 0.5), llama2 "
        "(11-grams, i.e. longer than 10, clean below 0.2, dirty above 0.8). See PRESETS.")
    method: Method = Field(
        "ngram", description="ngram: any shared n-gram (or whole short text) flags the "
        "example. coverage: only a coverage score above `dirty_above` does; scores between "
        "`clean_below` and `dirty_above` are listed as partial and kept.")
    coverage_of: Literal["benchmark", "example"] = Field(
        "benchmark", description="Whose words the coverage score counts: benchmark (the "
        "share of the benchmark item's words inside n-grams it shares with the example, as "
        "Llama 2 and Tulu 3 score evaluation samples) or example (the share of the "
        "example's own words).")
    clean_below: float = Field(0.2, ge=0, le=1, description="Coverage below this is clean "
                               "(Llama 2: 0.2).")
    dirty_above: float = Field(0.8, ge=0, le=1, description="Coverage above this is dirty "
                               "(Llama 2: 0.8; Tulu 3: 0.5).")
    paraphrase: ParaphraseConfig | None = Field(
        None, description="Rephrased benchmark items: nearest benchmark item by sentence "
        "embedding, confirmed by agreeing numbers and words or by an LLM judge (LLM "
        "Decontaminator). null: off. Needs the `embeddings` extra.")

    def dependencies(self) -> Dependencies:
        """The paraphrase judge and its prompt, and a local embedding model's files.

        The benchmark texts themselves are the runner's to hash (the task directory).
        """
        paraphrase = self.paraphrase
        if paraphrase is None or not self.enabled:
            return Dependencies()
        files = {}
        if paraphrase.model is not None and Path(paraphrase.model).exists():
            files["embedding_model"] = paraphrase.model
        if paraphrase.judge is None:
            return Dependencies(files=files)
        return Dependencies(models={"paraphrase_judge": paraphrase.judge}, files=files,
                            templates=(paraphrase.judge.template,))

    @model_validator(mode="after")
    def _apply_preset(self) -> Config:
        # A preset fills only what the recipe left unset, so `preset: tulu3, ngram: 10` works.
        for key, value in PRESETS.get(self.preset or "", {}).items():
            if key not in self.model_fields_set:
                setattr(self, key, value)
        if self.clean_below > self.dirty_above:
            raise ValueError(f"clean_below ({self.clean_below}) is above dirty_above "
                             f"({self.dirty_above})")
        return self

    def coverage_class(self, score: float) -> str:
        """"clean", "partial" or "dirty" for a coverage score."""
        if score > self.dirty_above:
            return "dirty"
        return "clean" if score < self.clean_below else "partial"


# --------------------------------------------------------------------------- report


class Match(BaseModel):
    """One piece of evidence that a training example overlaps a benchmark document."""

    task: str
    doc_index: int = Field(description="Position in the task's eval docs (lm-eval's doc_id).")
    view: str = Field(description='"prompt", "prompt line", "target" or "prompt+target".')
    kind: str = Field(description='"ngram", "whole_doc" for a view shorter than ngram, or '
                      '"paraphrase" (embedding neighbour).')
    ngram: str = Field(description="The normalised words both texts share ('' for a "
                       "paraphrase).")
    doc_text: str = Field(description="The benchmark text (excerpt).")
    score: float | None = Field(None, description="Coverage (n-gram matches) or cosine "
                                "similarity (paraphrase).")
    judge: str | None = Field(None, description='The LLM judge\'s verdict on a paraphrase: '
                              '"same", "different" or "unclear"; None when no judge ran.')
    evidence: str | None = Field(None, description="For a paraphrase: how its numbers and "
                                 "words compare with the benchmark item's (the agreement "
                                 "check).")


class ContaminatedExample(BaseModel):
    """A training example and what it matched."""

    id: str
    excerpt: str
    matches: list[Match]
    kind: str = Field("ngram", description='What flags it: "ngram" (a shared n-gram), '
                      '"coverage" (coverage above dirty_above) or "paraphrase".')
    score: float | None = Field(None, description="Its best coverage, or for a paraphrase "
                                "the cosine similarity.")
    coverage_class: str | None = Field(None, description='"clean", "partial" or "dirty".')

    @property
    def tasks(self) -> list[str]:
        """The tasks it overlaps, in order of first match."""
        return list(dict.fromkeys(m.task for m in self.matches))


class TaskStats(BaseModel):
    """Per-task counts: what was indexed and what was found."""

    docs: int = 0
    indexed: int = Field(0, description="Distinct n-grams and whole short views indexed.")
    whole_views: int = Field(0, description="Views (or pieces) shorter than ngram, matched "
                             "whole.")
    skipped_views: int = Field(0, description="Views (or pieces) shorter than min_doc_words.")
    template: str = Field("", description="Words every prompt starts / ends with, stripped.")
    boilerplate: int = Field(0, description="Template n-grams (and short texts) cut out.")
    contaminated_examples: int = 0
    contaminated_docs: int = Field(0, description="Distinct benchmark documents hit.")


class ContaminationReport(BaseModel):
    """What the gate found; saved as JSON beside the stage's output and summarised in report.md."""

    enabled: bool = True
    ngram: int = 13
    min_doc_words: int = 4
    fields: list[str] = Field(default_factory=list)
    policy: str = "drop"
    checked: int = 0
    tasks: dict[str, TaskStats] = Field(default_factory=dict)
    contaminated: list[ContaminatedExample] = Field(default_factory=list)
    suspect: list[ContaminatedExample] = Field(
        default_factory=list, description="Listed, not flagged: partial coverage, or a "
        "paraphrase candidate that was not confirmed (the judge said different, or its "
        "numbers and words disagree with the item's).")
    method: str = "ngram"
    coverage_of: str = "benchmark"
    clean_below: float = 0.2
    dirty_above: float = 0.8
    paraphrase: dict[str, Any] | None = Field(None, description="The paraphrase detector's "
                                              "settings and counts; None when off.")
    seconds: float = 0.0

    @property
    def contaminated_ids(self) -> set[str]:
        """Ids of the contaminated training examples."""
        return {item.id for item in self.contaminated}

    def summary(self, examples: int = 3) -> str:
        """A few readable lines: counts per task and the first matches."""
        if not self.enabled:
            return "decontamination: disabled"
        method = (f"{self.ngram}-grams" if self.method == "ngram" else
                  f"{self.ngram}-gram coverage of the {self.coverage_of} > {self.dirty_above}")
        if self.paraphrase is not None:
            confirm = "judge" if self.paraphrase.get("judge") else self.paraphrase.get("confirm")
            method += (f", paraphrases (cosine >= {self.paraphrase.get('threshold')}, "
                       f"confirmed by {confirm})")
        head = (f"decontamination ({method}, policy {self.policy}): "
                f"{len(self.contaminated)} of {self.checked} training examples overlap "
                f"{sum(1 for s in self.tasks.values() if s.contaminated_examples)} of "
                f"{len(self.tasks)} benchmark tasks")
        if self.suspect:
            head += f"; {len(self.suspect)} more listed as suspect, kept"
        lines = [head]
        for name, stats in self.tasks.items():
            lines.append(f"  {name}: {stats.contaminated_examples} examples, "
                         f"{stats.contaminated_docs} of {stats.docs} documents")
            shown = [item for item in self.contaminated if name in item.tasks][:examples]
            for item in shown:
                match = next(m for m in item.matches if m.task == name)
                evidence = match.ngram or match.doc_text
                lines.append(f"    {item.id} ~ doc {match.doc_index} ({match.view}, "
                             f"{item.kind} {_score(item.score)}): "
                             f'"{_clip(evidence, 100)}"')
        return "\n".join(lines)


class ContaminationError(RuntimeError):
    """Raised by the "fail" policy; carries the report."""

    def __init__(self, report: ContaminationReport):
        self.report = report
        super().__init__(report.summary() + "\n(policy 'fail': training stopped; use policy "
                         "'drop' to train without these examples)")


# --------------------------------------------------------------------------- text


def normalize_words(text: str) -> list[str]:
    """Lowercase words of `text`, punctuation and whitespace being word breaks."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def _normalized(text: str) -> str:
    """`text` as `normalize_words` sees it before splitting it into words."""
    return unicodedata.normalize("NFKC", text).lower()


@dataclass
class BenchmarkDoc:
    """One evaluation document of one task, as lm-eval renders it."""

    task: str
    index: int
    prompt: str
    targets: list[str]


def load_benchmark_docs(tasks: Sequence[str], include_path: str | Path | None
                        ) -> dict[str, list[BenchmarkDoc]]:
    """Every eval document of `tasks` (groups and tags expand to their tasks), rendered."""
    from distill.evaluate.harness import _is_unknown_task, _task_manager

    manager, local_only = _task_manager(include_path, list(tasks), None)
    try:
        loaded = manager.load(list(tasks))
    except KeyError as error:
        if not (local_only and _is_unknown_task(error)):
            raise
        loaded = _task_manager(include_path, None, None)[0].load(list(tasks))
    return {name: render_task(name, task) for name, task in sorted(loaded["tasks"].items())}


def render_task(name: str, task: Any) -> list[BenchmarkDoc]:
    """An lm-eval task's eval documents through its own `doc_to_text` / `doc_to_target`."""
    config = getattr(task, "config", None)
    has_choices = getattr(config, "doc_to_choice", None) is not None
    docs = []
    for index, doc in enumerate(task.eval_docs):
        choices = task.doc_to_choice(doc) if has_choices else None
        text = task.doc_to_text(doc)
        multiple_input = isinstance(text, int) and bool(choices)
        if multiple_input:  # e.g. winogrande: the text is the index of the right context
            text = choices[text]
        elif isinstance(text, (list, tuple)):
            text = "\n".join(map(str, text))
        target = task.doc_to_target(doc)
        targets = []
        for item in target if isinstance(target, (list, tuple)) else [target]:
            if (isinstance(item, int) and not isinstance(item, bool) and choices
                    and not multiple_input and 0 <= item < len(choices)):
                item = choices[item]
            targets.append(str(item))
        docs.append(BenchmarkDoc(name, index, str(text), targets))
    return docs


# --------------------------------------------------------------------------- index


class BenchmarkIndex:
    """Hashed n-grams (and whole short texts) of benchmark documents -> documents."""

    def __init__(self, docs: dict[str, list[BenchmarkDoc]], config: Config):
        self.config = config
        self.n = config.ngram
        self.m = min(config.min_doc_words, config.ngram)
        self.docs: list[BenchmarkDoc] = []
        self.stats: dict[str, TaskStats] = {}
        # Per task: how many leading / trailing words every prompt (every target) shares.
        self.templates: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {}
        # n-gram hash -> doc ref, or a list of refs once several documents share it
        self.grams: dict[int, int | list[int]] = {}
        # hash of a short text's first m words -> [(doc ref, the text's words)]
        self.short: dict[int, list[tuple[int, tuple[str, ...]]]] = defaultdict(list)
        # Per task: the template n-gram hashes and short template texts cut out of views.
        self.common: dict[str, tuple[set[int], set[tuple[str, ...]]]] = {}
        self._pieces: dict[int, list[list[list[str]]]] = {}  # see item_pieces
        # The indexed word runs again, as bytes for the numpy sieve (see `candidates`).
        self._sieve_grams: list[bytes] = []
        self._sieve_short: list[bytes] = []
        for name, task_docs in docs.items():
            self._add_task(name, task_docs)
        from distill.evaluate.gram_hash import GramSieve

        self.sieves = [GramSieve(self._sieve_grams, self.n),
                       GramSieve(self._sieve_short, self.m, whole=True)]
        del self._sieve_grams, self._sieve_short

    def views(self, ref: int) -> list[tuple[str, list[str], str]]:
        """(view, words, text) of a document, its task's template words stripped.

        The template is the run of words at the start and at the end that every prompt
        of the task shares ("question" ... "answer" for a "Question: {q} Answer:" prompt),
        and likewise for targets. Besides prompt, target and prompt+target, each line of a
        multi-line prompt that is shorter than `ngram` words is a view of its own, so that
        a short question stays visible when its choices follow it on other lines.
        """
        doc = self.docs[ref]
        (p_head, p_tail), (t_head, t_tail) = self.templates[doc.task]
        lines = [normalize_words(line) for line in doc.prompt.splitlines()]
        lines = _strip_lines([line for line in lines if line], p_head, p_tail)
        prompt = [word for line in lines for word in line]
        views = []
        if len(lines) > 1:  # listed first: a match names the most specific view holding it
            views += [("prompt line", line, " ".join(line)) for line in lines
                      if len(line) < self.n]
        views.append(("prompt", prompt, doc.prompt))
        for target in doc.targets:
            words = _strip(normalize_words(target), t_head, t_tail)
            views.append(("target", words, target))
            views.append(("prompt+target", prompt + words, f"{doc.prompt} {target}"))
        return views

    def _add_task(self, name: str, task_docs: list[BenchmarkDoc]) -> None:
        n, m = self.n, self.m
        stats = self.stats[name] = TaskStats(docs=len(task_docs))
        prompts = [normalize_words(doc.prompt) for doc in task_docs]
        targets = [normalize_words(t) for doc in task_docs for t in doc.targets]
        self.templates[name] = (_affixes(prompts), _affixes(targets))
        stats.template = _template_text(prompts, self.templates[name][0])
        first = len(self.docs)
        self.docs.extend(task_docs)
        refs = range(first, len(self.docs))
        views = {ref: [words for _, words, _ in self.views(ref)] for ref in refs}

        # Text that recurs in many documents is template, not item: count documents.
        gram_docs: Counter[int] = Counter()
        short_docs: Counter[tuple[str, ...]] = Counter()
        for ref in refs:
            gram_docs.update({hash(tuple(w[i:i + n])) for w in views[ref] if len(w) >= n
                              for i in range(len(w) - n + 1)})
            short_docs.update({tuple(w) for w in views[ref] if m <= len(w) < n})
        threshold = max(self.config.boilerplate_min_docs,
                        math.ceil(self.config.boilerplate_fraction * len(task_docs)))
        common = {key for key, count in gram_docs.items() if count >= threshold}
        common_short = {seq for seq, count in short_docs.items() if count >= threshold}
        stats.boilerplate = len(common) + len(common_short)
        self.common[name] = (common, common_short)

        grams: set[int] = set()
        short: set[tuple[int, tuple[str, ...]]] = set()
        for ref in refs:
            for words in views[ref]:
                # Cut the template n-grams out; what is left between them are items.
                for segment in _segments(words, n, common) if len(words) >= n else [words]:
                    if len(segment) >= n:
                        self._sieve_grams.append(" ".join(segment).encode("utf-8"))
                        for i in range(len(segment) - n + 1):
                            key = hash(tuple(segment[i:i + n]))
                            grams.add(key)
                            _add(self.grams, key, ref)
                    elif len(segment) >= m and tuple(segment) not in common_short:
                        entry = (ref, tuple(segment))
                        if entry not in short:
                            short.add(entry)
                            self.short[hash(entry[1][:m])].append(entry)
                            self._sieve_short.append(" ".join(segment[:m]).encode("utf-8"))
                    else:
                        stats.skipped_views += 1
        stats.indexed = len(grams) + len({seq for _, seq in short})
        stats.whole_views = len(short)

    def candidates(self, texts: Sequence[str]) -> list[int]:
        """Indices of the `texts` that may overlap a benchmark document, in order.

        A superset of the texts `match_refs` finds anything in: each holds an indexed
        n-gram, or the first `min_doc_words` words of an indexed short view, by a 64-bit
        hash of its words computed in numpy (gram_hash.py). The others need no check.
        """
        from distill.evaluate.gram_hash import candidates, encode

        return candidates([encode(text, _normalized) for text in texts], self.sieves)

    def match(self, text: str) -> list[Match]:
        """Every benchmark document `text` overlaps, with the first shared words for each."""
        found = self.match_refs(normalize_words(text))
        return sorted(found.values(), key=lambda x: (x.task, x.doc_index))

    def match_refs(self, words: list[str]) -> dict[int, Match]:
        """Document ref -> the first evidence that the normalised `words` overlap it."""
        n, m = self.n, self.m
        found: dict[int, Match] = {}
        if self.grams and len(words) >= n:
            for i in range(len(words) - n + 1):
                refs = self.grams.get(hash(tuple(words[i:i + n])))
                if refs is None:
                    continue
                gram = words[i:i + n]
                for ref in _refs(refs):
                    if ref not in found:
                        match = self._verify(ref, gram, "ngram")
                        if match is not None:
                            found[ref] = match
        if self.short and len(words) >= m:
            for i in range(len(words) - m + 1):
                entries = self.short.get(hash(tuple(words[i:i + m])))
                if entries is None:
                    continue
                for ref, seq in entries:
                    if ref not in found and tuple(words[i:i + len(seq)]) == seq:
                        match = self._verify(ref, list(seq), "whole_doc")
                        if match is not None:
                            found[ref] = match
        return found

    def item_pieces(self, ref: int) -> list[list[list[str]]]:
        """Per whole view of a document, the pieces left once its template text is cut out.

        Whole views are prompt, target and prompt+target: a single line of a multi-line
        prompt is evidence for the n-gram check but not the item whose share is scored.
        """
        pieces = self._pieces.get(ref)
        if pieces is None:
            common, common_short = self.common[self.docs[ref].task]
            pieces = []
            for view, words, _ in self.views(ref):
                if view == "prompt line":
                    continue
                cut = _segments(words, self.n, common) if len(words) >= self.n else [words]
                pieces.append([p for p in cut if len(p) >= self.n or tuple(p) not in
                               common_short])
            self._pieces[ref] = pieces
        return pieces

    def coverage(self, words: list[str], grams: set[tuple[str, ...]], ref: int,
                 of: str = "benchmark") -> float:
        """Share of words inside n-grams that `words` and document `ref` share.

        A word is covered when it lies in an n-gram both texts hold, or in a piece shorter
        than n (and at least `min_doc_words` long) that `words` contains whole, the rule
        the n-gram check itself uses. `of="benchmark"` counts the document's item words
        (its template cut out) in its prompt, its target and both together, and returns
        the best of the three; `of="example"` counts the words of `words`. `grams` is the
        set of `words`' n-grams. A document matched only through one line of its prompt
        scores 0 here.
        """
        n, m = self.n, self.m
        if of == "example":
            covered = [False] * len(words)
            for view in self.item_pieces(ref):
                for piece in view:
                    if len(piece) >= n:
                        doc_grams = {tuple(piece[i:i + n]) for i in range(len(piece) - n + 1)}
                        for i in range(len(words) - n + 1):
                            if tuple(words[i:i + n]) in doc_grams:
                                covered[i:i + n] = [True] * n
                    elif len(piece) >= m:
                        for i in _occurrences(words, piece):
                            covered[i:i + len(piece)] = [True] * len(piece)
            return sum(covered) / len(words) if words else 0.0
        best = 0.0
        for view in self.item_pieces(ref):
            total = sum(len(piece) for piece in view)
            hit = 0
            for piece in view:
                if len(piece) >= n:
                    flags = [False] * len(piece)
                    for i in range(len(piece) - n + 1):
                        if tuple(piece[i:i + n]) in grams:
                            flags[i:i + n] = [True] * n
                    hit += sum(flags)
                elif len(piece) >= m and _contains(words, piece):
                    hit += len(piece)
            if total:
                best = max(best, hit / total)
        return best

    def item_text(self, ref: int) -> str:
        """A document's prompt as written, its task's template words cut off.

        The words every prompt of the task starts and ends with are removed, so
        "Question: {q} Answer:" gives the question: what paraphrases are compared with.
        """
        (head, tail), _ = self.templates[self.docs[ref].task]
        return _strip_text(self.docs[ref].prompt, head, tail)

    def _verify(self, ref: int, gram: list[str], kind: str) -> Match | None:
        """The `Match` if `gram` really occurs in one of the document's views (no collision)."""
        doc = self.docs[ref]
        for view, words, text in self.views(ref):
            if _contains(words, gram):
                return Match(task=doc.task, doc_index=doc.index, view=view, kind=kind,
                             ngram=" ".join(gram), doc_text=_clip(text, EXCERPT_CHARS))
        return None


def _segments(words: list[str], n: int, common: set[int]) -> list[list[str]]:
    """`words` split around every n-gram whose hash is in `common`."""
    if not common:  # most benchmarks have no template n-gram: spare the hashing
        return [words] if words else []
    covered = [False] * len(words)
    for i in range(len(words) - n + 1):
        if hash(tuple(words[i:i + n])) in common:
            covered[i:i + n] = [True] * n
    segments, current = [], []
    for word, cut in zip(words, covered, strict=True):
        if cut:
            if current:
                segments.append(current)
            current = []
        else:
            current.append(word)
    if current:
        segments.append(current)
    return segments


def _affixes(sequences: list[list[str]]) -> tuple[int, int]:
    """Lengths of the word prefix and suffix that all `sequences` share (0, 0 for < 2)."""
    if len(sequences) < 2:
        return 0, 0
    shortest = min(len(seq) for seq in sequences)
    head = 0
    while head < shortest and all(seq[head] == sequences[0][head] for seq in sequences):
        head += 1
    tail = 0
    while (head + tail < shortest
           and all(seq[-1 - tail] == sequences[0][-1 - tail] for seq in sequences)):
        tail += 1
    return head, tail


def _strip(words: list[str], head: int, tail: int) -> list[str]:
    return words[head:len(words) - tail]


def _strip_lines(lines: list[list[str]], head: int, tail: int) -> list[list[str]]:
    """Drop `head` words from the start and `tail` from the end of a list of lines."""
    lines = [list(line) for line in lines]
    while head and lines:
        take = min(head, len(lines[0]))
        lines[0] = lines[0][take:]
        head -= take
        if not lines[0]:
            lines.pop(0)
    while tail and lines:
        take = min(tail, len(lines[-1]))
        lines[-1] = lines[-1][:len(lines[-1]) - take]
        tail -= take
        if not lines[-1]:
            lines.pop()
    return lines


def _template_text(prompts: list[list[str]], affixes: tuple[int, int]) -> str:
    head, tail = affixes
    if not prompts or not (head or tail):
        return ""
    first = prompts[0]
    return " ".join(first[:head] + ["{...}"] + first[len(first) - tail:])


def _add(table: dict[int, int | list[int]], key: int, ref: int) -> None:
    current = table.get(key)
    if current is None:
        table[key] = ref
    elif isinstance(current, int):
        if current != ref:
            table[key] = [current, ref]
    elif current[-1] != ref:  # refs arrive in increasing order
        current.append(ref)


def _refs(value: int | list[int]) -> list[int]:
    return [value] if isinstance(value, int) else value


def _strip_text(text: str, head: int, tail: int) -> str:
    """`text` without its first `head` and last `tail` words, punctuation inside kept."""
    text = unicodedata.normalize("NFKC", text)
    spans = [match.span() for match in _WORD.finditer(text)]
    if not (head or tail) or head + tail >= len(spans):
        return text.strip()
    start = spans[head][0]
    end = spans[len(spans) - tail][0] if tail else len(text)
    return text[start:end].strip()


def _occurrences(words: list[str], seq: list[str]) -> list[int]:
    k = len(seq)
    return [i for i in range(len(words) - k + 1) if words[i:i + k] == seq]


def _contains(words: list[str], gram: list[str]) -> bool:
    k = len(gram)
    return any(words[i:i + k] == gram for i in range(len(words) - k + 1))


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


# --------------------------------------------------------------------------- gate


def example_text(example: Example, fields: Iterable[str]) -> str:
    """The checked text of a training example: its chosen fields, in order."""
    return "\n".join(str(getattr(example, name, "") or "") for name in fields)


@dataclass
class TextItem:
    """A training record as the gate sees it.

    `text` is checked for n-grams; `question` (default: `text`) is compared with the
    benchmark questions for paraphrases.
    """

    id: str
    text: str
    question: str = ""


def find_contamination(examples: Sequence[Example], config: Config,
                       include_path: str | Path | None = None, *,
                       tasks: Sequence[str] | None = None,
                       documents: dict[str, list[BenchmarkDoc]] | None = None,
                       judge_backend: Any = None,
                       ) -> ContaminationReport:
    """Check every example against the benchmark documents; nothing is removed here.

    The tasks are `config.tasks`, else `tasks` (the caller passes the eval tasks); the
    include path is `include_path`, else `config.include_path`. `documents` replaces the
    lm-eval rendering (for callers that already hold it). `judge_backend` replaces the
    paraphrase judge that `config.paraphrase.judge` names (tests pass a scripted one).
    """
    para_fields = config.paraphrase.fields if config.paraphrase else []
    items = [TextItem(example.id, example_text(example, config.fields),
                      example_text(example, para_fields)) for example in examples]
    return check_items(items, config, include_path, tasks=tasks, documents=documents,
                       judge_backend=judge_backend)


def check_items(items: Sequence[TextItem], config: Config,
                include_path: str | Path | None = None, *,
                tasks: Sequence[str] | None = None,
                documents: dict[str, list[BenchmarkDoc]] | None = None,
                judge_backend: Any = None) -> ContaminationReport:
    """`find_contamination` for any texts (the `distill decontaminate` command's entry)."""
    started = time.perf_counter()
    report = ContaminationReport(
        enabled=config.enabled, ngram=config.ngram, min_doc_words=config.min_doc_words,
        fields=list(config.fields), policy=config.policy, checked=len(items),
        method=config.method, coverage_of=config.coverage_of, clean_below=config.clean_below,
        dirty_above=config.dirty_above)
    if not config.enabled:
        return report
    if documents is None:
        names = config.tasks or (list(tasks) if tasks else None)
        if not names:
            raise ValueError("decontamination: no tasks to check against (set "
                             "decontamination.tasks or eval.tasks)")
        include = include_path if include_path is not None else config.include_path
        documents = load_benchmark_docs(names, include)
    index = BenchmarkIndex(documents, config)
    n = config.ngram
    for item in _sieved(items, index):
        words = normalize_words(item.text)
        found = index.match_refs(words)
        if not found:
            continue
        grams = {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
        for ref, match in found.items():
            match.score = round(index.coverage(words, grams, ref, config.coverage_of), 4)
        matches = sorted(found.values(), key=lambda x: (-(x.score or 0), x.task, x.doc_index))
        best = matches[0].score or 0.0
        entry = ContaminatedExample(
            id=item.id, excerpt=_clip(item.text, EXCERPT_CHARS),
            matches=matches[:MAX_MATCHES_PER_EXAMPLE],
            kind="ngram" if config.method == "ngram" else "coverage",
            score=best, coverage_class=config.coverage_class(best))
        if config.method == "ngram" or entry.coverage_class == "dirty":
            report.contaminated.append(entry)
        elif entry.coverage_class == "partial":
            report.suspect.append(entry)
    if config.paraphrase is not None:
        report.paraphrase = _add_paraphrases(report, items, index, config.paraphrase,
                                             judge_backend)
    hit_docs: dict[str, set[int]] = defaultdict(set)
    for entry in report.contaminated:
        for task in entry.tasks:
            index.stats[task].contaminated_examples += 1
        for match in entry.matches:
            hit_docs[match.task].add(match.doc_index)
    for task, docs in hit_docs.items():
        index.stats[task].contaminated_docs = len(docs)
    report.tasks = index.stats
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _sieved(items: Sequence[TextItem], index: BenchmarkIndex,
            chunk: int = 4096) -> Iterable[TextItem]:
    """The items that may overlap the benchmark (all that can), a chunk at a time.

    Most training texts share no n-gram with the benchmark; the sieve rules them out in
    numpy, without a Python tuple and hash per n-gram. Chunks keep its buffers small.
    """
    for start in range(0, len(items), chunk):
        batch = items[start:start + chunk]
        for position in index.candidates([item.text for item in batch]):
            yield batch[position]


def _add_paraphrases(report: ContaminationReport, items: Sequence[TextItem],
                     index: BenchmarkIndex, config: ParaphraseConfig,
                     judge_backend: Any) -> dict[str, Any]:
    """Flag the items whose nearest benchmark question is a confirmed paraphrase.

    Items the n-gram check already flagged are not embedded again. A candidate that is
    not confirmed (the judge said "different", or without a usable verdict its numbers
    and words disagree with the item's) is listed as suspect and kept. Returns the
    detector's settings and counts for the report.
    """
    from distill.evaluate.paraphrase import find_paraphrases

    started = time.perf_counter()
    flagged = report.contaminated_ids
    todo = [item for item in items if item.id not in flagged]
    refs = range(len(index.docs))
    found = find_paraphrases([item.question or item.text for item in todo],
                             [index.item_text(ref) for ref in refs], config, judge_backend)
    suspects = {entry.id: entry for entry in report.suspect}
    counts = {"threshold": config.threshold, "confirm": config.confirm,
              "reworded_cosine": config.reworded_cosine,
              "reworded_max_similarity": config.reworded_max_similarity,
              "model": config.model or "all-MiniLM-L6-v2",
              "judge": config.judge.model if config.judge else None, "checked": len(todo),
              "candidates": len(found), "flagged": 0, "unconfirmed": 0,
              "judge_different": 0, "judge_unclear": 0}
    for neighbour in found:
        item, doc = todo[neighbour.item], index.docs[neighbour.doc]
        match = Match(task=doc.task, doc_index=doc.index, view="prompt", kind="paraphrase",
                      ngram="", doc_text=_clip(doc.prompt, EXCERPT_CHARS),
                      score=round(neighbour.cosine, 4), judge=neighbour.judge,
                      evidence=neighbour.evidence.describe())
        earlier = suspects.pop(item.id, None)
        entry = ContaminatedExample(
            id=item.id, excerpt=_clip(item.question or item.text, EXCERPT_CHARS),
            matches=[match] + (earlier.matches if earlier else []), kind="paraphrase",
            score=match.score, coverage_class=earlier.coverage_class if earlier else None)
        counts["judge_different"] += neighbour.judge == "different"
        counts["judge_unclear"] += neighbour.judge == "unclear"
        if neighbour.confirmed:
            counts["flagged"] += 1
            report.contaminated.append(entry)
        else:
            counts["unconfirmed"] += 1
            report.suspect.append(entry)
    report.suspect = [e for e in report.suspect if e.kind == "paraphrase" or e.id in suspects]
    counts["seconds"] = round(time.perf_counter() - started, 3)
    return counts


def apply_policy(report: ContaminationReport, examples: Sequence[Example],
                 policy: Policy | None = None) -> tuple[list[Example], list[Rejected]]:
    """(examples to train on, rejected records) under `policy` (default: the report's).

    "drop" removes the contaminated examples and returns them as rejected records with
    reason "contaminated:<first task matched>" and the matches; "warn" keeps everything
    (the report still lists what was found); "fail" raises `ContaminationError` when
    anything was found.
    """
    policy = policy or report.policy
    if policy not in ("drop", "fail", "warn"):
        raise ValueError(f"unknown decontamination policy {policy!r}")
    if not report.contaminated or policy == "warn":
        return list(examples), []
    if policy == "fail":
        raise ContaminationError(report)
    by_id = {item.id: item for item in report.contaminated}
    clean, dropped = [], []
    for example in examples:
        item = by_id.get(example.id)
        if item is None:
            clean.append(example)
            continue
        dropped.append(Rejected(
            id=example.id, stage=STAGE, reason=f"contaminated:{item.tasks[0]}",
            record=example.to_json(), tasks=item.tasks, kind=item.kind, score=item.score,
            matches=[m.model_dump() for m in item.matches]))
    return clean, dropped
