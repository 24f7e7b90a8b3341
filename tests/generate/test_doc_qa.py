import json
import re

import pytest
import yaml
from pydantic import ValidationError
from scripted_teacher import ScriptedTeacher

from distill.generate.doc_qa import Config, parse_qa_pairs
from distill.generate.documents import (
    DocumentError,
    chunk_text,
    expand_sources,
    load_documents,
)
from distill.recipe import RecipeError, load_recipe
from distill.registry import GENERATORS

# ---------------------------------------------------------------------------- chunking


def words(n, prefix="w"):
    return " ".join(f"{prefix}{i}" for i in range(n))


def test_chunks_overlap_by_the_asked_words_and_keep_exact_offsets():
    text = words(250)  # one paragraph, no sentence ends: cuts fall on word counts
    chunks = chunk_text(text, chunk_words=100, overlap_words=20, min_chunk_words=10)
    assert [c.words for c in chunks] == [100, 100, 90]
    for chunk in chunks:
        assert text[chunk.start:chunk.end] == chunk.text
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.text.split()[-20:] == after.text.split()[:20]
    assert chunks[-1].text.split()[-1] == "w249"  # nothing lost at the end


def test_headings_start_chunks_without_overlap_and_name_the_section():
    text = (f"# Guide\n\n{words(30, 'a')}\n\n## Install\n\n{words(30, 'b')}\n\n"
            f"```\n# a comment, not a heading\n```\n\n### Linux\n\n{words(30, 'c')}\n\n"
            f"## Use\n\n{words(5, 'd')}\n")
    chunks = chunk_text(text, chunk_words=200, overlap_words=20, min_chunk_words=10)
    assert [c.heading for c in chunks] == ["Guide", "Guide > Install",
                                           "Guide > Install > Linux", "Guide > Use"]
    assert [c.text.split()[:2] for c in chunks] == [["#", "Guide"], ["##", "Install"],
                                                    ["###", "Linux"], ["##", "Use"]]
    assert "a comment, not a heading" in chunks[1].text
    assert not re.search(r"\ba\d", chunks[1].text)  # no overlap across the heading


def test_a_short_title_stays_with_the_section_below():
    text = f"# Title\n\nOne line.\n\n## Part\n\n{words(40)}\n"
    chunks = chunk_text(text, chunk_words=200, overlap_words=10, min_chunk_words=20)
    assert len(chunks) == 1 and chunks[0].heading == "Title"


def test_cuts_prefer_paragraph_breaks_then_sentence_ends():
    text = f"{words(70, 'p')}\n\n{words(60, 'q')}"
    first = chunk_text(text, chunk_words=100, overlap_words=0, min_chunk_words=10)[0]
    assert first.text.split()[-1] == "p69"  # the paragraph break, not word 100
    sentences = " ".join(f"{words(9, f's{i}_')}." for i in range(20))  # 10-word sentences
    first = chunk_text(sentences, chunk_words=95, overlap_words=0, min_chunk_words=10)[0]
    assert first.words == 90 and first.text.endswith(".")


def test_blank_text_has_no_chunks_and_bad_overlap_is_refused():
    assert chunk_text("  \n\n ") == []
    with pytest.raises(ValueError, match="overlap_words"):
        chunk_text("a b c", chunk_words=10, overlap_words=10)


# ---------------------------------------------------------------------------- documents


def test_sources_expand_globs_directories_and_jsonl_documents(tmp_path):
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "a.md").write_text("# A\n\nalpha text")
    (tmp_path / "docs" / "sub" / "b.txt").write_text("beta text")
    (tmp_path / "docs" / "notes.pdf").write_bytes(b"%PDF")  # ignored inside a directory
    rows = [{"body": "first record"}, {"body": ""}, {"body": "third record"}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = expand_sources([str(tmp_path / "docs"), str(tmp_path / "*.jsonl")])
    assert [f.name for f in files] == ["a.md", "b.txt", "c.jsonl"]
    documents = load_documents(files, text_field="body")
    assert [(d.text, d.line) for d in documents][2:] == [("first record", 1), ("", 2),
                                                         ("third record", 3)]
    assert documents[4].name.endswith("c.jsonl:3")
    with pytest.raises(DocumentError, match=r"c\.jsonl:1: .*'text'"):
        load_documents(files)  # the default field "text" is missing
    with pytest.raises(DocumentError, match="unsupported document type '.pdf'"):
        expand_sources([str(tmp_path / "docs" / "notes.pdf")])
    with pytest.raises(DocumentError, match="no document matches"):
        expand_sources([str(tmp_path / "*.md")])


def test_a_missing_document_is_a_recipe_error_naming_the_field(tmp_path):
    recipe = {"name": "t", "teacher": {"model": "org/t"}, "student": {"model": "org/s"},
              "eval": {"tasks": ["microworld"]},
              "generate": {"kind": "doc_qa", "documents": "docs/*.md"}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=r"generate\.doc_qa\.documents: .*no document matches"):
        load_recipe(path)
    recipe["generate"]["documents"] = "missing.md"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match="file or directory not found: missing.md"):
        load_recipe(path)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text("text")
    recipe["generate"]["documents"] = "docs/*.md"  # resolved against the recipe's folder
    path.write_text(yaml.safe_dump(recipe))
    loaded = load_recipe(path)
    assert [p.name for p in loaded.generate.files()] == ["x.md"]
    assert list(loaded.generate.dependencies().files.values()) == [
        str(tmp_path / "docs" / "x.md")]


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("completion", [
    "Q1: What is X?\nA1: X is a tool.\nQ2: Why?\nA2: Because.",
    "Here are the pairs:\n\n**Q1:** What is X?\n**A1:** X is a tool.\n\n**Q2:** Why?\n"
    "**A2:** Because.\n---",
    "Question 1: What is X?\nAnswer 1: X is a tool.\r\nQuestion 2: Why?\r\nAnswer 2: Because.",
    "1. Question: What is X?\n   Answer: X is a tool.\n2. Question: Why?\n   Answer: Because.",
])
def test_well_formed_variants_parse_to_the_same_pairs(completion):
    parsed = parse_qa_pairs(completion)
    assert [(p.question, p.answer) for p in parsed.pairs] == [("What is X?", "X is a tool."),
                                                              ("Why?", "Because.")]
    assert parsed.failures == []


def test_multiline_answers_are_kept_whole():
    parsed = parse_qa_pairs("Q1: List the steps.\nA1: First this.\n\nThen that.\n"
                            "Q2: Next?\nA2: No.")
    assert parsed.pairs[0].answer == "First this.\n\nThen that."


@pytest.mark.parametrize(("completion", "finish", "reasons", "pairs"), [
    ("", "stop", ["empty"], 0),
    ("   \n", "stop", ["empty"], 0),
    ("I cannot write questions about this text.", "stop", ["no_pairs"], 0),
    ("Q1: What?\nQ2: Why?\nA2: Because.", "stop", ["missing_answer"], 1),
    ("A1: An answer alone.\nQ2: Why?\nA2: Because.", "stop", ["missing_question"], 1),
    ("Q1: What?\nA1:\nQ2:\nA2: Something.", "stop", ["empty_answer", "empty_question"], 0),
    ("Q1: What?\nA1: This.\nQ2: Why?\nA2: Because the", "length", ["truncated"], 1),
    ("Q1: a?\nA1: b.\nQ2: c?\nA2: d.\nQ3: e?\nA3: f.", "stop", ["surplus"], 2),
])
def test_malformed_output_is_refused_with_a_reason(completion, finish, reasons, pairs):
    parsed = parse_qa_pairs(completion, finish, limit=2)
    assert [f.reason for f in parsed.failures] == reasons
    assert len(parsed.pairs) == pairs


# ---------------------------------------------------------------------------- generation

DOC = ("# Lumen\n\nLumen is a lamp made in Oslo. It was designed in 2011 by Kari Berg.\n\n"
       "## Power\n\nThe lamp runs on two AA batteries for forty hours. A USB port charges it.\n")


def chunk_in(request):
    return request.messages[-1]["content"].split('"""')[1].strip()


def grounded_script(request):
    """Two pairs per chunk quoting its first words; chunks about power get junk."""
    chunk = chunk_in(request)
    if "batteries" in chunk:
        return "Sorry, I can only summarise this.", "stop"
    first = " ".join(chunk.split()[2:6])
    return f"Q1: What does it say first?\nA1: {first}\nQ2: Who?\nA2: Kari Berg.", "stop"


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "lumen.md").write_text(DOC)
    (folder / "empty.txt").write_text("\n\n")
    return folder


def config(docs, **fields):
    fields.setdefault("chunk_words", 30)
    fields.setdefault("overlap_words", 5)
    fields.setdefault("min_chunk_words", 5)
    fields.setdefault("questions_per_chunk", 2)
    return Config(documents=[str(docs)], **fields)


def test_records_are_grounded_in_their_chunk_and_refusals_are_counted(docs, make_ctx):
    teacher = ScriptedTeacher(grounded_script)
    result = config(docs).run(make_ctx(teacher, teacher_name="scripted"))
    assert result.stats["documents"] == 2 and result.stats["empty_documents"] == 1
    assert result.stats["chunks"] == 2 and result.stats["parse_rejected"] == {"no_pairs": 1}
    assert [e.id for e in result.examples] == ["r0-d1-c0-q0", "r0-d1-c0-q1"]
    example = result.examples[0]
    lineage = example.lineage.model_extra
    assert lineage["document"].endswith("lumen.md") and lineage["chunk_index"] == 0
    assert example.lineage.teacher == "scripted"  # the context's teacher_name
    assert lineage["chunk"] == DOC[lineage["chunk_start"]:lineage["chunk_end"]]
    assert lineage["chunk_heading"] == "Lumen" and "Oslo" in lineage["chunk"]
    assert example.instruction == "What does it say first?" and example.input == ""
    assert example.output in lineage["chunk"]  # the scripted answer quotes the chunk
    assert example.messages()[0]["content"] == "What does it say first?"  # closed book
    refused = result.rejected[0]
    assert refused.reason == "no_pairs" and "batteries" in refused.record["lineage"]["chunk"]
    prompt = teacher.requests[0].messages[-1]["content"]
    assert "write 2 question-answer pairs" in prompt and "lumen.md" in prompt


def test_open_book_puts_the_chunk_in_the_input(docs, make_ctx):
    result = config(docs, book="open").run(make_ctx(ScriptedTeacher(grounded_script)))
    example = result.examples[0]
    assert example.input == example.lineage.model_extra["chunk"]
    assert "Oslo" in example.messages()[0]["content"]


def test_rerun_is_answered_from_the_checkpoint(docs, make_ctx):
    first = ScriptedTeacher(grounded_script)
    one = config(docs).run(make_ctx(first, "same"))
    again = ScriptedTeacher(grounded_script)
    two = config(docs).run(make_ctx(again, "same"))
    assert again.requests == [] and len(first.requests) == 2
    assert [e.to_json() for e in one.examples] == [e.to_json() for e in two.examples]
    assert len({r.sampling.seed for r in first.requests}) == 2  # a seed per chunk


def test_max_chunks_samples_and_all_empty_documents_fail_clearly(docs, make_ctx, tmp_path):
    result = config(docs, max_chunks=1).run(make_ctx(ScriptedTeacher(grounded_script)))
    assert result.stats["chunks"] == 2 and result.stats["chunks_used"] == 1
    (docs / "lumen.md").write_text("")
    with pytest.raises(DocumentError, match="hold no text"):
        config(docs).run(make_ctx(ScriptedTeacher(grounded_script), "x"))


def test_registered_as_a_generation_method(docs, make_ctx):
    method = GENERATORS.get("doc_qa")
    assert method is Config
    result = method(documents=[str(docs)], chunk_words=30, overlap_words=5).run(
        make_ctx(ScriptedTeacher(grounded_script)))
    assert all(re.fullmatch(r"r0-d\d+-c\d+-q\d+", e.id) for e in result.examples)
    # every document file the recipe names enters the fingerprint, with the template
    needs = config(docs).dependencies()
    assert needs.templates == ("doc_qa",) and not needs.inputs
    assert sorted(needs.files.values()) == sorted(str(p) for p in config(docs).files())


def test_config_refuses_overlap_as_large_as_the_chunk(docs):
    with pytest.raises(ValidationError, match="overlap_words"):
        config(docs, chunk_words=20, overlap_words=20)
