"""Teacher tokens in the generation checkpoints: a sidecar per shard, trusted only whole.

On the microworld teacher (hf backend): a chunk whose requests ask for top-k
log-probabilities keeps them in `chunk<size>-<index>.tokens.safetensors` (the JSONL rows
stay as they were), and a resumed context reads them back without asking the teacher. A
missing or damaged sidecar, or one holding other answers, regenerates its chunk with a
warning; a request that failed and is answered next run completes its chunk's sidecar; a
sidecar that cannot be written leaves no shard; a backend that drops the tokens stops the
stage. `generate_responses` files each answered record's tokens under its id.
Slow: a generation SIGKILLed after its first shard resumes to every shard, sidecar and
token file of an uninterrupted run, byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from distill.backends.base import GenerationRequest, Sampling
from distill.generate.context import GenerationContext
from distill.generate.responses import ResponseSampling, generate_responses
from distill.records import Example

QUESTIONS = ["What is 3 plus 4?", "Explain step by step how to add 17 and 25.",
             "How many legs does a cat have?", "Come up with 3 new tasks.", "What is 9 plus 8?"]


@pytest.fixture(scope="module")
def teacher():
    from distill.backends.base import load_backend
    from distill.microworld.build import build_models

    backend = load_backend("hf", model=str(build_models(quiet=True)["teacher"]), device="cpu")
    yield backend
    backend.close()


class Recording:
    """A backend that passes requests on to `inner` and remembers their ids."""

    def __init__(self, inner) -> None:
        self.inner, self.asked = inner, []

    def generate(self, requests, progress=None):
        self.asked += [r.id for r in requests]
        return self.inner.generate(requests, progress)


def requests(k: int = 3) -> list[GenerationRequest]:
    return [GenerationRequest(id=f"r{i}", messages=[{"role": "user", "content": text}],
                              sampling=Sampling(temperature=1.0, max_tokens=24, seed=i,
                                                top_logprobs=k if i != 2 else 0))
            for i, text in enumerate(QUESTIONS)]


def context(tmp_path: Path, backend) -> GenerationContext:
    return GenerationContext(backend=backend, checkpoint_dir=tmp_path / "ckpt", chunk_size=2)


def test_tokens_are_kept_beside_the_shards_and_read_back(tmp_path, teacher):
    first = context(tmp_path, teacher).generate("answers", requests())
    assert [g.tokens is None for g in first] == [False, False, True, False, False]
    shard_dir = tmp_path / "ckpt" / "answers"
    assert sorted(p.name for p in shard_dir.iterdir()) == [
        "chunk2-00000.jsonl", "chunk2-00000.tokens.safetensors",
        "chunk2-00001.jsonl", "chunk2-00001.tokens.safetensors",  # r2 has none, r3 has
        "chunk2-00002.jsonl", "chunk2-00002.tokens.safetensors"]
    rows = [json.loads(line) for line in (shard_dir / "chunk2-00000.jsonl").open()]
    assert all("tokens" not in row for row in rows)
    again = Recording(teacher)
    resumed = context(tmp_path, again).generate("answers", requests())
    assert again.asked == []
    assert resumed == first  # tokens included, array for array


def test_a_chunk_without_tokens_has_no_sidecar(tmp_path, teacher):
    context(tmp_path, teacher).generate("answers", requests(k=0))
    assert not list((tmp_path / "ckpt").rglob("*.safetensors"))


def damage_missing(sidecar: Path, other: Path) -> None:
    sidecar.unlink()


def damage_cut(sidecar: Path, other: Path) -> None:
    sidecar.write_bytes(sidecar.read_bytes()[:-5])


def damage_other_answers(sidecar: Path, other: Path) -> None:
    sidecar.write_bytes(other.read_bytes())  # a well-formed file of another chunk


@pytest.mark.parametrize("damage", [damage_missing, damage_cut, damage_other_answers])
def test_a_sidecar_that_does_not_match_regenerates_its_chunk(tmp_path, teacher, caplog, damage):
    first = context(tmp_path, teacher).generate("answers", requests())
    shard_dir = tmp_path / "ckpt" / "answers"
    sidecar = shard_dir / "chunk2-00000.tokens.safetensors"
    original = sidecar.read_bytes()
    damage(sidecar, shard_dir / "chunk2-00002.tokens.safetensors")
    again = Recording(teacher)
    with caplog.at_level(logging.WARNING):
        resumed = context(tmp_path, again).generate("answers", requests())
    assert again.asked == ["r0", "r1"]  # chunk 0 only
    assert "is not complete" in caplog.text
    assert resumed == first
    assert sidecar.read_bytes() == original


def test_a_failed_request_asked_again_completes_its_chunks_sidecar(tmp_path, teacher):
    from distill.backends.base import FAILED, Generation

    class FailsOnce(Recording):
        def generate(self, requests, progress=None):
            answered = super().generate([r for r in requests if r.id != "r1"])
            failed = [Generation("r1", 0, "", FAILED, extra={"error": "HTTP 503", "retry": True})
                      for r in requests if r.id == "r1"]
            return sorted(answered + failed, key=lambda g: g.request_id)

    clean = context(tmp_path / "clean", teacher).generate("answers", requests())
    first = context(tmp_path, FailsOnce(teacher)).generate("answers", requests())
    assert [g.request_id for g in first] == ["r0", "r2", "r3", "r4"]
    again = Recording(teacher)
    resumed = context(tmp_path, again).generate("answers", requests())
    assert again.asked == ["r1"]
    # r0 and r1 ran in other batches than in the clean run: the same tokens, floats that
    # may differ in their last bits (distill.backends.hf)
    for got, want in zip(resumed, clean, strict=True):
        assert (got.request_id, got.text) == (want.request_id, want.text)
        if want.tokens is not None:
            assert np.array_equal(got.tokens.token_ids, want.tokens.token_ids)
            assert np.array_equal(got.tokens.top_ids, want.tokens.top_ids)
            np.testing.assert_allclose(got.tokens.top_logprobs, want.tokens.top_logprobs,
                                       atol=1e-5)
    # the rewritten sidecar holds r0's tokens of the first run and r1's of the second
    reread = Recording(teacher)
    assert context(tmp_path, reread).generate("answers", requests()) == resumed
    assert reread.asked == [] and resumed[0] == first[0]


def test_a_sidecar_that_cannot_be_written_leaves_no_shard(tmp_path, teacher, monkeypatch):
    import distill.generate.context as context_module

    def full_disk(path, tokens):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(context_module, "save_teacher_tokens", full_disk)
    with pytest.raises(OSError, match="No space left"):
        context(tmp_path, teacher).generate("answers", requests())
    assert not list((tmp_path / "ckpt").rglob("*.jsonl"))


def test_a_backend_that_drops_the_tokens_stops_the_stage(tmp_path, teacher):
    class Forgetful(Recording):
        def generate(self, requests, progress=None):
            return [dataclasses.replace(g, tokens=None) for g in super().generate(requests)]

    with pytest.raises(RuntimeError, match="asked for the top 3 log-probabilities and has none"):
        context(tmp_path, Forgetful(teacher)).generate("answers", requests())
    assert not list((tmp_path / "ckpt").rglob("*.jsonl"))


def test_responses_file_each_answered_records_tokens(tmp_path, teacher):
    ctx = context(tmp_path, teacher)
    ctx.top_logprobs = 5
    examples = [Example(id=f"e{i}", instruction=text) for i, text in enumerate(QUESTIONS[:3])]
    answered, refused = generate_responses(examples, ResponseSampling(max_tokens=24), ctx)
    assert [e.id for e in answered] + [r.id for r in refused] == ["e0", "e1", "e2"]
    assert sorted(ctx.teacher_tokens) == sorted(e.id for e in answered)
    for example in answered:
        tokens = ctx.teacher_tokens[example.id]
        assert tokens.k == 5
        assert example.lineage.sampling["top_logprobs"] == 5
        text = teacher.tokenizer.decode(tokens.token_ids.tolist(), skip_special_tokens=True)
        assert text.strip() == example.output
    # without top_logprobs nothing is filed, and the lineage names no k
    plain = context(tmp_path / "plain", teacher)
    answered, _ = generate_responses(examples, ResponseSampling(max_tokens=24), plain)
    assert plain.teacher_tokens == {} and "top_logprobs" not in answered[0].lineage.sampling


RUN = Path(__file__).with_name("tokens_run.py")


def run(checkpoints: Path, out: Path, marker: Path | None = None) -> subprocess.Popen:
    command = [sys.executable, str(RUN), str(checkpoints), str(out)]
    return subprocess.Popen(command + ([str(marker)] if marker else []),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def files(directory: Path) -> dict[str, bytes]:
    """Every committed file under `directory` (not the temporary files of a killed write)."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


@pytest.mark.slow
def test_killed_generation_resumes_to_the_same_bytes(tmp_path):
    """About 45 s on 2 shared cores: three runs of tokens_run.py (5 chunks of 4 each)."""
    whole = run(tmp_path / "whole", tmp_path / "whole.safetensors")
    assert whole.wait(timeout=600) == 0, whole.stderr.read().decode()[-3000:]

    marker = tmp_path / "first-shard"
    killed = run(tmp_path / "resumed", tmp_path / "resumed.safetensors", marker)
    deadline = time.monotonic() + 600
    while not marker.exists():
        assert killed.poll() is None, killed.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=60)
    on_disk = files(tmp_path / "resumed")
    assert 0 < len(on_disk) < len(files(tmp_path / "whole"))  # killed mid-generation
    assert not (tmp_path / "resumed.safetensors").exists()

    resumed = run(tmp_path / "resumed", tmp_path / "resumed.safetensors")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-3000:]
    assert files(tmp_path / "resumed") == files(tmp_path / "whole")
    assert any(name.endswith(".tokens.safetensors") for name in files(tmp_path / "whole"))
    assert ((tmp_path / "resumed.safetensors").read_bytes()
            == (tmp_path / "whole.safetensors").read_bytes())
