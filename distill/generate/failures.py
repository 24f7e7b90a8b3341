"""Requests that ran out of retries: rejected with their reason now, asked again next run.

A backend that cannot get one request answered (an OpenAI-compatible server that kept
failing, or kept replying with a body that is not a completion) returns that request's
generation with `finish_reason == FAILED` and the reason in `extra["error"]`, instead of
ending the stage and throwing away the chunk's finished answers. The generation context
keeps such requests out of what methods see and records them here; the stage commits with
them as `request_failed` rejected records and counts them in its manifest, so the next
run redoes the stage and asks only those requests again (every other answer comes from
the checkpoints). A request the server refused on its own merits (HTTP 400) is rejected
as `request_refused` and not asked again.

When the failures are not occasional but the server is plainly down (more than
`max_fraction` of the requests sent, and at least `MIN_FAILURES_TO_STOP` of them), the
stage stops with `TooManyFailedRequests`; the chunks finished so far stay on disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from distill.backends.base import FAILED, Generation, GenerationRequest
from distill.records import Rejected

# Fewer failures than this never stop a stage: a small run finishes (what failed is
# rejected and asked again next run) rather than stopping on 2 failures out of 8.
MIN_FAILURES_TO_STOP = 10


class TooManyFailedRequests(RuntimeError):
    """More than the allowed share of a stage's requests failed: the server looks down."""


@dataclass
class FailedRequests:
    """The failed requests of one stage, shared by every generation context in it."""

    max_fraction: float = 0.1  # of the requests sent in this run
    stage: str = "generate"  # the stage the rejected records are filed under
    sent: int = 0
    failed_now: int = 0  # failures in this run (the stop rule's numerator)
    rejected: list[Rejected] = field(default_factory=list)  # final state, one per request
    last_error: str = ""

    def count(self, key: str, requests: list[GenerationRequest],
              generations: list[Generation]) -> None:
        """Count one finished chunk's requests and failures; stop when the server is down.

        Raises:
            TooManyFailedRequests: when the stop rule in the module docstring holds.
        """
        failed = {g.request_id: g.extra.get("error", "") for g in generations
                  if g.finish_reason == FAILED}
        self.sent += len(requests)
        self.failed_now += len(failed)
        if failed:
            self.last_error = next(iter(failed.values()))
        if (self.failed_now >= MIN_FAILURES_TO_STOP
                and self.failed_now > self.max_fraction * self.sent):
            raise TooManyFailedRequests(
                f"generation {key}: {self.failed_now} of the {self.sent} requests sent failed "
                f"(more than max_failed_fraction {self.max_fraction:g}); the server looks "
                f"down. Last error: {self.last_error}. The finished chunks are saved: run "
                "again to resume")

    @property
    def to_retry(self) -> int:
        """Requests the next run asks again (transport failures, not refusals)."""
        return sum(r.reason == "request_failed" for r in self.rejected)

    def reject(self, key: str, failed: Generation, request: GenerationRequest) -> None:
        """File a request that is still failed once its generation call returns.

        `request_failed` when the server may answer next time (it kept failing, or its
        replies were malformed), `request_refused` when it refused this request itself
        (HTTP 400: too long, a value it does not take), which no rerun changes.
        """
        error = failed.extra.get("error", "")
        record: dict[str, Any] = {"key": key, "error": error,
                                  "sampling": request.sampling.as_dict()}
        if request.messages is not None:
            record["messages"] = request.messages
        else:
            record["prompt"] = request.prompt
        reason = "request_failed" if retried_later(failed) else "request_refused"
        self.rejected.append(Rejected(id=request.id, stage=self.stage, reason=reason,
                                      record=record))


def retried_later(failed: Generation) -> bool:
    """Whether a FAILED generation's request is asked again on the next run."""
    return bool(failed.extra.get("retry", True))
