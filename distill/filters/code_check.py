"""Run a record's code against its tests in the sandbox.

The code is the record's `output`: its ```python fenced blocks joined, or the whole
output when it has no fence. The tests are the record's extra field `code_tests` (a
string or a list of strings of Python, usually asserts); `entry_point`, when given, must be
defined by the code, and tests that define HumanEval's `check(candidate)` are called with
it. The program is code, then tests, then a print of a random token: a record passes only
if the program exits 0 having printed the token, so code that calls `exit(0)` before the
tests run does not pass.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from distill.filters.sandbox import SandboxConfig, SandboxResult, run_many
from distill.records import Example

FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)
ENTRY_MISSING = "distill-entry-point-missing"
TAIL = 400  # characters of stderr kept in the record's scores


def extract_code(output: str) -> str:
    """The Python in a response: its python (or untagged) fenced blocks, else all of it."""
    blocks = FENCE.findall(output)
    if not blocks:
        return output if "```" not in output else ""
    return "\n\n".join(body for lang, body in blocks
                       if lang.lower() in ("", "python", "python3", "py"))


def _tests(record: Example) -> str:
    tests = (record.model_extra or {}).get("code_tests")
    if isinstance(tests, list):
        tests = "\n".join(str(test) for test in tests)
    return tests.strip() if isinstance(tests, str) else ""


def build_program(code: str, tests: str, entry_point: str | None, token: str) -> str:
    """The program the sandbox runs: code, entry-point check, tests, success token."""
    parts = [code, "\n# ---- tests ----"]
    if entry_point:
        parts.append(f"assert callable(globals().get({entry_point!r})), {ENTRY_MISSING!r}")
    parts.append(tests)
    if entry_point and re.search(r"^def check\(", tests, re.MULTILINE):
        parts.append(f"check({entry_point})")
    parts.append(f"print({token!r})")
    return "\n".join(parts) + "\n"


def _syntax_ok(source: str) -> bool:
    try:
        compile(source, "<record>", "exec")  # compiles only; nothing runs
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def _outcome(result: SandboxResult, token: str) -> tuple[str, str]:
    """(status, reason) of one finished program."""
    if result.status == "passed":
        if token in result.stdout:
            return "correct", "correct"
        return "wrong_answer", "exited_early"
    if result.status == "timeout":
        return "wrong_answer", "timeout"
    if result.status == "killed":
        return "wrong_answer", "resource_limit"
    if ENTRY_MISSING in result.stderr:
        return "wrong_answer", "missing_entry_point"
    if "MemoryError" in result.stderr:
        return "wrong_answer", "resource_limit"
    if "AssertionError" in result.stderr:
        return "wrong_answer", "tests_failed"
    return "wrong_answer", "runtime_error"


def check_code(records: list[Example], sandbox: SandboxConfig,
               workers: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(status, reason, scores) per record; programs run `workers` at a time."""
    checks: list[tuple[str, str, dict[str, Any]] | None] = [None] * len(records)
    programs, tokens, positions = [], [], []
    for position, record in enumerate(records):
        tests, code = _tests(record), extract_code(record.output)
        entry_point = (record.model_extra or {}).get("entry_point") or None
        if not tests:
            checks[position] = ("unverifiable", "unverifiable",
                                {"correct": False, "unverifiable_reason": "no_tests"})
        elif not _syntax_ok(tests):
            checks[position] = ("unverifiable", "unverifiable",
                                {"correct": False, "unverifiable_reason": "bad_tests"})
        elif not code.strip():
            checks[position] = ("wrong_answer", "no_code", {"correct": False})
        elif not _syntax_ok(code):
            checks[position] = ("wrong_answer", "syntax_error", {"correct": False})
        else:
            token = secrets.token_hex(16)
            programs.append(build_program(code, tests, entry_point, token))
            tokens.append(token)
            positions.append(position)
    for position, token, result in zip(positions, tokens,
                                       run_many(programs, sandbox, workers=workers),
                                       strict=True):
        if result.status == "error":
            raise RuntimeError(f"the sandbox could not run record {records[position].id}: "
                               f"{result.detail} (try `sandbox: {{isolation: rlimits}}`)")
        status, reason = _outcome(result, token)
        scores: dict[str, Any] = {"correct": status == "correct", "sandbox": result.status,
                                  "duration_s": result.duration_s,
                                  "isolation": result.isolation}
        if status != "correct":
            scores["detail"] = result.detail
            scores["stderr_tail"] = result.stderr[-TAIL:]
        checks[position] = (status, reason, scores)
    return [check for check in checks if check is not None]
