r"""Grounded question-answer pairs from the user's documents (`generate.kind: doc_qa`).

The recipe points at text, Markdown or JSONL documents; each is cut into overlapping
word chunks that respect headings and paragraphs (`distill.generate.documents`); the
teacher reads one chunk per chat request and writes `questions_per_chunk` pairs

    Q1: What does the `retry` setting of Lumen control?
    A1: It sets how many times Lumen re-sends a request that timed out ...

which become examples whose instruction is the question and whose output is the answer.
This is the document-grounded synthetic QA of domain-adaptation work (e.g. "instruction
pre-training" and RAG fine-tuning data recipes): closed-book (`book: closed`, the
default) teaches the student the documents' facts; open-book (`book: open`) puts the
chunk in the example's `input`, teaching reading comprehension over given context.

Parsing never raises: a blank completion, text without Q/A markers, a question without
an answer (or the reverse), an empty field, the pair a truncated completion ended in,
and pairs beyond the number asked for each become a `Rejected` record with a reason.
Every example keeps its source in lineage: document path (and JSONL line), chunk index,
character offsets, word count, heading path, sha256 and the chunk text itself, so a
reviewer can check the answer against it. Requests are keyed by document and chunk, so a
killed run resumes from its checkpoint.

    generate:
      kind: doc_qa
      documents: [docs/*.md]        # paths, globs or directories, relative to the recipe
      chunk_words: 300
      overlap_words: 50
      questions_per_chunk: 3
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from distill.backends.base import GenerationRequest
from distill.component import Dependencies
from distill.generate.base import GeneratorSettings
from distill.generate.context import GenerationContext, GenerationResult
from distill.generate.documents import (
    Chunk,
    Document,
    DocumentError,
    chunk_text,
    expand_sources,
    has_glob,
    load_documents,
)
from distill.generate.responses import SamplingConfig
from distill.records import Example, Lineage, Rejected
from distill.registry import GENERATORS

METHOD = "doc_qa"

# Why a pair was refused, in the order they are checked.
REASONS = (
    "empty",             # the whole completion was blank
    "no_pairs",          # text without any "Q1:" / "A1:" (or Question / Answer) marker
    "truncated",         # the completion hit max_tokens inside (or right after) this pair
    "missing_answer",    # a question followed by another question or by the end
    "missing_question",  # an answer with no question before it
    "empty_question",
    "empty_answer",
    "surplus",           # well formed, but beyond questions_per_chunk
)


class QASampling(SamplingConfig):
    """Sampling for writing question-answer pairs: temperature 0.7, up to 1024 tokens."""

    max_tokens: int = Field(1024, ge=1, description="Most new tokens per chunk's completion "
                            "(all its pairs).")


@GENERATORS.register
class Config(GeneratorSettings):
    """`generate:` settings of document-grounded question answering."""

    kind: Literal["doc_qa"] = "doc_qa"
    documents: list[str] = Field(
        min_length=1,
        description="Files, directories or globs (`**` recurses) of .md, .markdown, .txt or "
                    ".jsonl documents, relative to the recipe; a JSONL line is one document.")
    text_field: str = Field("text", description="The field holding a JSONL document's text.")
    chunk_words: int = Field(300, ge=10, description="Most words per chunk.")
    overlap_words: int = Field(
        50, ge=0, description="Words a chunk repeats from the end of the previous one (within "
                              "a section), so no fact is only ever seen cut in half.")
    min_chunk_words: int = Field(
        40, ge=1, description="A Markdown heading starts a new chunk only after this many "
                              "words; chunks shorter than this are still used.")
    max_chunks: int | None = Field(
        None, ge=1, description="Use at most this many chunks, a seeded random sample kept in "
                                "document order; null uses all.")
    questions_per_chunk: int = Field(
        3, ge=1, le=50, description="Question-answer pairs asked for per chunk; extra pairs a "
                                    "teacher writes are refused as `surplus`.")
    book: Literal["closed", "open"] = Field(
        "closed", description="closed: the example is the question alone (the student learns "
        "the facts); open: the chunk is the example's `input` (reading comprehension).")
    template: str = Field(
        "doc_qa", description="Prompt template in distill/prompts (variables num_questions, "
                              "chunk, source, heading, open_book).")
    system_prompt: str | None = Field(None, description="Optional system message.")
    sampling: QASampling = Field(default_factory=QASampling)

    @field_validator("documents", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("documents")
    @classmethod
    def _resolve(cls, patterns: list[str], info: ValidationInfo) -> list[str]:
        base = Path((info.context or {}).get("base_dir", "."))
        resolved = []
        for pattern in patterns:
            path = Path(pattern).expanduser()
            resolved.append(str(path if path.is_absolute() else base.resolve() / path))
            if not has_glob(pattern) and not Path(resolved[-1]).exists():
                raise ValueError(f"file or directory not found: {pattern} "
                                 f"(looked at {resolved[-1]})")
        try:
            expand_sources(resolved)
        except DocumentError as error:
            raise ValueError(str(error)) from None
        return resolved

    @field_validator("template")
    @classmethod
    def _template_exists(cls, name: str) -> str:
        from distill.prompts import template_source

        template_source(name)  # ValueError listing the available templates
        return name

    @model_validator(mode="after")
    def _overlap(self) -> Config:
        if self.overlap_words >= self.chunk_words:
            raise ValueError(f"overlap_words ({self.overlap_words}) must be smaller than "
                             f"chunk_words ({self.chunk_words})")
        return self

    @model_validator(mode="after")
    def _readable(self) -> Config:
        # the run's reader: an undecodable file or a bad JSONL line is named at load
        load_documents(self.files(), self.text_field)
        return self

    def files(self) -> list[Path]:
        """The document files, sorted."""
        return expand_sources(self.documents)

    def dependencies(self) -> Dependencies:
        """Every document file the sources name now, and the prompt template."""
        return Dependencies(files={f"document:{path}": str(path) for path in self.files()},
                            templates=(self.template,))

    def run(self, ctx: GenerationContext) -> GenerationResult:
        """Chunk the documents and ask the teacher for grounded pairs about each chunk.

        Args:
            ctx: checkpointing and the executor (one checkpoint key, "doc_qa"), and the
                teacher's name for lineage.

        Returns:
            Examples (ids "r{round}-d{document}-c{chunk}-q{position}") in document and chunk
            order, every refused pair with its reason, and stats.

        Raises:
            DocumentError: a document vanished or cannot be read, or none holds any text.
        """
        from distill.prompts import render, template_hash
        from distill.store import file_sha256

        files = self.files()
        documents = load_documents(files, self.text_field)
        file_hashes = {str(path): file_sha256(path) for path in files}
        sources: list[_Source] = []
        empty = 0
        for doc_index, document in enumerate(documents):
            chunks = chunk_text(document.text, self.chunk_words, self.overlap_words,
                                self.min_chunk_words)
            empty += not chunks
            sources += [_Source(doc_index, document, chunk) for chunk in chunks]
        if not sources:
            raise DocumentError(f"doc_qa: the {len(documents)} document(s) in {self.documents} "
                                "hold no text")
        total_chunks = len(sources)
        if self.max_chunks is not None and total_chunks > self.max_chunks:
            rng = random.Random(ctx.request_seed("doc_qa-max_chunks"))
            picked = sorted(rng.sample(range(total_chunks), self.max_chunks))
            sources = [sources[i] for i in picked]

        requests = []
        for source in sources:
            doc = source.document
            prompt = render(self.template, num_questions=self.questions_per_chunk,
                            chunk=source.chunk.text, heading=source.chunk.heading,
                            source=Path(doc.path).name + (f" line {doc.line}" if doc.line else ""),
                            open_book=self.book == "open")
            messages = [{"role": "user", "content": prompt}]
            if self.system_prompt:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            seed = ctx.request_seed(METHOD, doc.name, source.chunk.index, source.chunk.sha256)
            requests.append(GenerationRequest(
                id=f"dq-d{source.doc_index}-c{source.chunk.index}", messages=messages,
                sampling=self.sampling.to_sampling(seed=seed)))
        generations = ctx.generate(METHOD, requests)
        by_id = {g.request_id: g for g in generations if g.index == 0}

        base_lineage = {"round": ctx.round, "method": METHOD, "teacher": ctx.teacher_name,
                        "template": self.template,
                        "template_hash": template_hash(self.template), "book": self.book}
        examples: list[Example] = []
        rejected: list[Rejected] = []
        reasons: Counter[str] = Counter()
        truncated = 0
        for source, request in zip(sources, requests, strict=True):
            generation = by_id.get(request.id)
            if generation is None:
                continue  # failed: the context filed it as rejected
            text, finish = generation.text, generation.finish_reason
            truncated += finish == "length"
            parsed = parse_qa_pairs(text, finish, limit=self.questions_per_chunk)
            lineage = {**base_lineage, **_chunk_lineage(source, file_hashes),
                       "sampling": request.sampling.as_dict(), "prompt_id": request.id,
                       "completion_finish_reason": finish}
            record_id = f"r{ctx.round}-d{source.doc_index}-c{source.chunk.index}-q{{}}"
            for pair in parsed.pairs:
                examples.append(Example(
                    id=record_id.format(pair.position), instruction=pair.question,
                    input=source.chunk.text if self.book == "open" else "", output=pair.answer,
                    # A parsed pair is complete (the parser refuses the one a cut-off ended in).
                    lineage=Lineage(**lineage, finish_reason="stop",
                                    question_position=pair.position)))
            for failure in parsed.failures:
                reasons[failure.reason] += 1
                rejected.append(Rejected(id=record_id.format(failure.position), stage="parse",
                                         reason=failure.reason,
                                         record={"raw": failure.raw, "lineage": lineage}))
        stats = {
            "method": METHOD,
            "template": self.template,
            "book": self.book,
            "documents": len(documents),
            "empty_documents": empty,
            "chunks": total_chunks,
            "chunks_used": len(sources),
            "mean_chunk_words": round(sum(s.chunk.words for s in sources) / len(sources), 1),
            "requests": len(requests),
            "truncated_completions": truncated,
            "asked": len(requests) * self.questions_per_chunk,
            "parsed": len(examples),
            "parse_rejected": dict(sorted(reasons.items())),
            "examples": len(examples),
            "chunks_without_pairs": len(sources) - len({e.lineage.prompt_id for e in examples}),
        }
        return GenerationResult(examples=examples, rejected=rejected, stats=stats)


# ---------------------------------------------------------------------------------------
# Parsing

_MARKER = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+|\d+[.)][ \t]+)?(?:\*\*|__)?"
    r"(question|answer|q|a)[ \t]*(\d+)?[ \t]*(?:\*\*|__)?[ \t]*:[ \t]*(?:\*\*|__)?[ \t]*",
    re.IGNORECASE | re.MULTILINE)
# Lines a teacher puts around its list (rules, fences, quotes) that belong to no field.
_TRAILER = re.compile(r"(?:\n[ \t]*(?:-{3,}|\*{3,}|_{3,}|`{3,}|\"{3,}|#{3,})[ \t]*)+\Z")


@dataclass
class QAPair:
    """One well-formed pair, at `position` among the completion's pairs."""

    position: int
    question: str
    answer: str
    raw: str


@dataclass
class QAFailure:
    """One refused item of a completion, with the reason and the raw text."""

    position: int
    reason: str
    raw: str


@dataclass
class QAParse:
    """Everything one completion yielded, in order."""

    pairs: list[QAPair] = field(default_factory=list)
    failures: list[QAFailure] = field(default_factory=list)


def parse_qa_pairs(completion: str, finish_reason: str = "stop",
                   limit: int | None = None) -> QAParse:
    """Parse "Q1: ... / A1: ..." pairs (also "Question:", "**Q1:**", "1. Question:").

    Field numbers are not checked: a question pairs with the next answer. Text before the
    first marker (a preamble) is ignored; a field runs up to the next marker.

    Args:
        completion: the teacher's text, exactly as returned.
        finish_reason: "length" refuses the last item as "truncated".
        limit: pairs beyond this many are refused as "surplus".

    Returns:
        Pairs and failures; a blank completion gives one "empty" failure and text without
        markers one "no_pairs" failure.
    """
    if not isinstance(completion, str) or not completion.strip():
        return QAParse(failures=[QAFailure(0, "empty", completion or "")])
    text = completion.replace("\r\n", "\n").replace("\r", "\n")
    markers = list(_MARKER.finditer(text))
    if not markers:
        return QAParse(failures=[QAFailure(0, "no_pairs", completion)])
    fields = []  # (is_question, content, raw)
    for i, marker in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
        content = _TRAILER.sub("", text[marker.end():end].rstrip()).strip()
        fields.append((marker.group(1).lower().startswith("q"), _unbold(content),
                       text[marker.start():end]))
    items: list[QAPair | QAFailure] = []
    question: tuple[str, str] | None = None
    for is_question, content, raw in fields:
        if is_question:
            if question is not None:
                items.append(QAFailure(len(items), "missing_answer", question[1]))
            question = (content, raw)
        elif question is None:
            items.append(QAFailure(len(items), "missing_question", raw))
        else:
            items.append(_pair(len(items), question, content, raw))
            question = None
    if question is not None:
        items.append(QAFailure(len(items), "missing_answer", question[1]))
    if finish_reason == "length":
        items[-1] = QAFailure(items[-1].position, "truncated", items[-1].raw)
    result = QAParse()
    for item in items:
        if isinstance(item, QAPair) and limit is not None and len(result.pairs) >= limit:
            item = QAFailure(item.position, "surplus", item.raw)
        (result.pairs if isinstance(item, QAPair) else result.failures).append(item)
    return result


def _pair(position: int, question: tuple[str, str], answer: str, raw: str) -> QAPair | QAFailure:
    whole = question[1] + raw
    if not question[0]:
        return QAFailure(position, "empty_question", whole)
    if not answer:
        return QAFailure(position, "empty_answer", whole)
    return QAPair(position, question[0], answer, whole)


def _unbold(text: str) -> str:
    # "**What is X?**" -> "What is X?" (a teacher that bolds its questions)
    if len(text) > 4 and text.startswith("**") and text.endswith("**") and "**" not in text[2:-2]:
        return text[2:-2].strip()
    return text


# ---------------------------------------------------------------------------------------
# Generation


@dataclass
class _Source:
    doc_index: int
    document: Document
    chunk: Chunk


def _chunk_lineage(source: _Source, file_hashes: dict[str, str]) -> dict[str, Any]:
    chunk = source.chunk
    return {"document": source.document.path, "document_line": source.document.line,
            "document_sha256": file_hashes.get(source.document.path, ""),
            "chunk_index": chunk.index, "chunk_start": chunk.start, "chunk_end": chunk.end,
            "chunk_words": chunk.words, "chunk_heading": chunk.heading,
            "chunk_sha256": chunk.sha256, "chunk": chunk.text}
