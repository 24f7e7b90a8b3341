"""Documents for grounded generation: find them, read them, cut them into chunks.

    files = expand_sources(["docs/*.md", "notes/"])          # globs, directories, files
    documents = load_documents(files, text_field="text")      # .md / .markdown / .txt / .jsonl
    chunks = chunk_text(documents[0].text, chunk_words=300, overlap_words=50)

A Markdown or text file is one document; a JSONL file holds one document per line (its
`text_field`). Chunks are cut by words: each holds at most `chunk_words` words, and
consecutive chunks of one section share `overlap_words` words so that no fact is only
ever seen cut in half. Cuts prefer, in order, a Markdown heading (a new section starts a
new chunk once the current one has `min_chunk_words` words; chunks never overlap across
headings), a paragraph break, a sentence end, and only then any word. Every chunk keeps
its character offsets into the document and the heading path above it
("Install > Linux"), so a record made from it can be traced back.
"""

from __future__ import annotations

import glob
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from distill.records import numbered_json_objects

SUFFIXES = (".md", ".markdown", ".txt", ".jsonl")

_WORD = re.compile(r"\S+")
_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*$")


class DocumentError(ValueError):
    """A document source that cannot be read; the message names the file (and line)."""


@dataclass(frozen=True)
class Document:
    """One document: a whole file, or one line of a JSONL file."""

    path: str
    text: str
    line: int | None = None  # 1-based line of a JSONL file

    @property
    def name(self) -> str:
        """`path` or `path:line`, as lineage and error messages show it."""
        return self.path if self.line is None else f"{self.path}:{self.line}"


@dataclass(frozen=True)
class Chunk:
    """A slice of a document's text."""

    index: int  # position among the document's chunks
    text: str  # exactly document.text[start:end]
    start: int
    end: int
    words: int
    heading: str  # heading path at the chunk's start, "" before any heading

    @property
    def sha256(self) -> str:
        """Short hash of the chunk text."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def has_glob(pattern: str) -> bool:
    """True when a path pattern holds glob characters."""
    return any(char in pattern for char in "*?[")


def expand_sources(patterns: list[str]) -> list[Path]:
    """Files named by paths, globs (`**` recurses) and directories; sorted, no duplicates.

    A directory contributes its files with a supported suffix (recursively, hidden ones
    left out); a file or glob match with another suffix is an error, as is a pattern that
    matches nothing.
    """
    files: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern, recursive=True)) if has_glob(pattern) else [pattern]
        found = [Path(m) for m in matches if Path(m).exists()]
        if not found:
            raise DocumentError(f"no document matches {pattern!r}")
        for path in found:
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file()
                                and p.suffix.lower() in SUFFIXES
                                and not any(part.startswith(".")
                                            for part in p.relative_to(path).parts))
            elif path.suffix.lower() in SUFFIXES:
                files.append(path)
            else:
                raise DocumentError(f"{path}: unsupported document type {path.suffix!r} "
                                    f"(use {', '.join(SUFFIXES)})")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    if not unique:
        raise DocumentError(f"no {'/'.join(SUFFIXES)} file in {patterns}")
    return unique


def load_documents(files: list[Path], text_field: str = "text") -> list[Document]:
    """Read every file as documents (blank ones included: the caller counts them).

    Raises:
        DocumentError: a missing or undecodable file, or a JSONL line that is not an
            object with a string `text_field`, naming the file and line.
    """
    documents: list[Document] = []
    for path in files:
        try:
            content = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DocumentError(f"{path}: document not found") from None
        except UnicodeDecodeError as error:
            raise DocumentError(f"{path}: not UTF-8 text ({error.reason})") from None
        if Path(path).suffix.lower() != ".jsonl":
            documents.append(Document(str(path), content))
            continue
        try:
            rows = list(numbered_json_objects(content.splitlines(), path))
        except ValueError as error:
            raise DocumentError(str(error)) from None
        for number, row in rows:
            if not isinstance(row.get(text_field), str):
                raise DocumentError(f"{path}:{number}: expected an object with a string "
                                    f"{text_field!r} field (set generate.text_field)")
            documents.append(Document(str(path), row[text_field], line=number))
    return documents


def chunk_text(text: str, chunk_words: int = 300, overlap_words: int = 50,
               min_chunk_words: int = 40) -> list[Chunk]:
    """Cut `text` into chunks of at most `chunk_words` words (see the module docstring).

    Args:
        text: the document (Markdown headings are recognised outside code fences).
        chunk_words: most words per chunk.
        overlap_words: words a chunk repeats from the end of the previous one (same
            section only); must be smaller than `chunk_words`.
        min_chunk_words: a heading cuts the chunk only after this many words, so a title
            and a one-line intro stay with the section below them.

    Returns:
        Chunks in order; none for a blank text.
    """
    if not 0 <= overlap_words < chunk_words:
        raise ValueError(f"overlap_words ({overlap_words}) must be >= 0 and smaller than "
                         f"chunk_words ({chunk_words})")
    words = list(_WORD.finditer(text))
    if not words:
        return []
    headings, paragraphs = _structure(text, words)
    n = len(words)
    chunks: list[Chunk] = []
    start = 0
    while start < n:
        limit = min(start + chunk_words, n)
        section = [h for h, _, _ in headings if start + min_chunk_words <= h < limit]
        if section:
            end, strong = section[0], True
        elif limit == n:
            end, strong = n, False
        else:
            end, strong = _soft_cut(words, paragraphs, start, limit, chunk_words), False
        chunks.append(Chunk(index=len(chunks), text=text[words[start].start():words[end - 1].end()],
                            start=words[start].start(), end=words[end - 1].end(),
                            words=end - start, heading=_heading_path(headings, start)))
        if end >= n:
            break
        # No overlap into a new section; always move forward.
        start = end if strong else max(end - overlap_words, start + 1)
    return chunks


def _structure(text: str, words: list[re.Match[str]]
               ) -> tuple[list[tuple[int, int, str]], set[int]]:
    """Markdown headings as (word index, level, title), and where paragraphs start."""
    found: dict[int, tuple[int, str]] = {}  # char offset -> (level, title)
    offset = 0
    fenced = False
    for line in text.splitlines(keepends=True):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and (match := _HEADING.match(line.rstrip("\r\n"))):
            found[offset + len(line) - len(line.lstrip())] = (len(match.group(1)),
                                                             match.group(2).strip())
        offset += len(line)
    headings = [(i, *found[w.start()]) for i, w in enumerate(words) if w.start() in found]
    paragraphs = {0, *(i for i, _, _ in headings)}
    for i in range(1, len(words)):
        if text.count("\n", words[i - 1].end(), words[i].start()) >= 2:
            paragraphs.add(i)
    return headings, paragraphs


def _soft_cut(words: list[re.Match[str]], paragraphs: set[int], start: int, limit: int,
              chunk_words: int) -> int:
    """Where to end a chunk that cannot hold everything up to `limit`."""
    floor = start + max(1, chunk_words // 2)  # never cut a chunk below half its size
    for cut in range(limit, floor - 1, -1):
        if cut in paragraphs:
            return cut
    for cut in range(limit, floor - 1, -1):
        if _SENTENCE_END.search(words[cut - 1].group()):
            return cut
    return limit


def _heading_path(headings: list[tuple[int, int, str]], index: int) -> str:
    """The headings above word `index`, outermost first: "Guide > Install > Linux"."""
    stack: list[tuple[int, str]] = []
    for word, level, title in headings:
        if word > index:
            break
        stack = [(lvl, name) for lvl, name in stack if lvl < level]
        stack.append((level, title))
    return " > ".join(title for _, title in stack)
