"""The generation context trusts no checkpoint it cannot account for, and loses no request.

A shard that lost lines (cut at a line boundary or mid-line), holds a request twice, or
answers other requests is regenerated with a warning; requests the backend could not get
answered are rejected with their reason, kept out of what methods see, and asked again by
the next run; a server that is plainly down stops the stage with its chunks saved.
"""

from __future__ import annotations

import logging

import pytest
from scripted_teacher import ScriptedTeacher

from distill.backends.base import FAILED, Generation, GenerationRequest, Sampling
from distill.generate.failures import FailedRequests, TooManyFailedRequests


def requests(count: int, prefix: str = "Question", n: int = 1) -> list[GenerationRequest]:
    return [GenerationRequest(id=f"r{i:03d}", sampling=Sampling(seed=i, n=n),
                              messages=[{"role": "user", "content": f"{prefix} {i}"}])
            for i in range(count)]


class FlakyTeacher(ScriptedTeacher):
    """Answers like the scripted teacher, except for the request ids it is told to fail."""

    def __init__(self, fail: set[str] = frozenset(), retry: bool = True) -> None:
        super().__init__()
        self.fail, self.retry = set(fail), retry

    def generate(self, requests, progress=None):
        answered = super().generate([r for r in requests if r.id not in self.fail])
        by_id = {g.request_id: [g] for g in answered}
        for request in requests:
            if request.id in self.fail:
                by_id[request.id] = [Generation(request.id, 0, "", FAILED, extra={
                    "error": "HTTP 503 from http://server after 6 attempts",
                    "retry": self.retry})]
        return [g for r in requests for g in by_id[r.id]]


def shard(ctx, key: str, chunk: int):
    return ctx._shard_path(key, chunk)


@pytest.mark.parametrize("damage", ["lost-line", "cut-mid-line", "doubled-line"])
def test_a_damaged_shard_is_regenerated_with_a_warning(make_ctx, caplog, damage):
    first = make_ctx(ScriptedTeacher(), chunk_size=4)
    whole = first.generate("answers", requests(10))
    path = shard(first, "answers", 1)
    lines = path.read_text().splitlines(keepends=True)
    damaged = {"lost-line": lines[:-1], "cut-mid-line": [*lines[:-1], lines[-1][:40]],
               "doubled-line": [*lines, lines[0]]}[damage]
    path.write_text("".join(damaged))

    teacher = ScriptedTeacher()
    again = make_ctx(teacher, chunk_size=4)
    with caplog.at_level(logging.WARNING):
        resumed = again.generate("answers", requests(10))
    assert resumed == whole  # all 10 answers, the lost one generated again
    assert [r.id for r in teacher.requests] == ["r004", "r005", "r006", "r007"]  # chunk 1
    assert "is not complete" in caplog.text and str(path) in caplog.text


def test_a_shard_answering_other_prompts_is_not_trusted(make_ctx):
    # same request ids, other prompts (an earlier step was filled in and changed them)
    make_ctx(ScriptedTeacher(), chunk_size=4).generate("answers", requests(4, "Question"))
    teacher = ScriptedTeacher()
    changed = make_ctx(teacher, chunk_size=4).generate("answers", requests(4, "Task"))
    assert len(teacher.requests) == 4
    assert all(g.text.startswith("Answer to: Task") for g in changed)


def test_failed_requests_are_rejected_now_and_asked_again_next_run(make_ctx):
    ctx = make_ctx(FlakyTeacher(fail={"r001", "r006"}), chunk_size=4)
    answered = ctx.generate("answers", requests(8))
    assert [g.request_id for g in answered] == ["r000", "r002", "r003", "r004", "r005",
                                                "r007"]
    assert [(r.id, r.reason, r.stage) for r in ctx.failures.rejected] == [
        ("r001", "request_failed", "generate"), ("r006", "request_failed", "generate")]
    assert ctx.failures.rejected[0].record["error"].startswith("HTTP 503")
    assert ctx.failures.rejected[0].record["messages"][0]["content"] == "Question 1"
    assert ctx.failures.to_retry == 2

    healthy = FlakyTeacher()
    again = make_ctx(healthy, chunk_size=4)
    filled = again.generate("answers", requests(8))
    assert [r.id for r in healthy.requests] == ["r001", "r006"]  # only what failed
    assert filled == make_ctx(ScriptedTeacher(), "clean", chunk_size=4).generate(
        "answers", requests(8))
    assert again.failures.rejected == [] and again.stats.resumed_requests == 6


def test_refused_requests_are_not_asked_again(make_ctx):
    ctx = make_ctx(FlakyTeacher(fail={"r002"}, retry=False), chunk_size=4)
    ctx.generate("answers", requests(4))
    assert [r.reason for r in ctx.failures.rejected] == ["request_refused"]
    assert ctx.failures.to_retry == 0
    teacher = FlakyTeacher()
    again = make_ctx(teacher, chunk_size=4)
    again.generate("answers", requests(4))
    assert teacher.requests == []  # the server refused it on its merits: no rerun changes that
    assert [r.reason for r in again.failures.rejected] == ["request_refused"]


def test_a_server_that_is_down_stops_the_stage_with_its_chunks_saved(make_ctx):
    down = {f"r{i:03d}" for i in range(4, 40)}  # up for the first chunk, then down
    ctx = make_ctx(FlakyTeacher(fail=down), chunk_size=4,
                   failures=FailedRequests(max_fraction=0.25))
    with pytest.raises(TooManyFailedRequests, match=r"12 of the 16 requests sent failed.*"
                       r"max_failed_fraction 0.25.*HTTP 503"):
        ctx.generate("answers", requests(40))
    assert sorted(p.name for p in (ctx.checkpoint_dir / "answers").iterdir()) == [
        f"chunk4-0000{i}.jsonl" for i in range(4)]  # every chunk finished before the stop


def test_occasional_failures_never_stop_a_stage(make_ctx):
    ctx = make_ctx(FlakyTeacher(fail={"r000", "r001", "r002"}), chunk_size=4,
                   failures=FailedRequests(max_fraction=0.05))
    assert len(ctx.generate("answers", requests(8))) == 5  # 3 of 8, but fewer than 10
