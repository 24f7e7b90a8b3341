r"""Parse what a teacher writes for the textbook method: sections and exercises.

A section is prose: it is accepted when it is non-blank and long enough. An exercise is
a labelled completion, written in the format the exercise prompt asks for:

    Exercise:
    Write a function `merge_amber_orbits(xs)` that ...

    Solution:
    ```python
    def merge_amber_orbits(xs):
        ...
    ```

    Tests:
    ```python
    assert merge_amber_orbits([1, 2]) == 3
    ```

(for math, "Final answer: 42" instead of tests). Teachers decorate the labels, so a
label line may be a markdown heading (`## Solution`), bold (`**Solution:**`), numbered
(`Exercise 1:`), use a synonym (Problem / Question; Test cases / Unit tests; Answer) and
carry text after its colon. Lines inside code fences are never labels. Text before the
first label counts as the exercise when no exercise label is present.

Code exercises are checked without running anything (running is the `verify` filter's
job): the solution must hold Python that parses and defines the entry point, and the
tests must parse and contain an `assert`. Top-level asserts the teacher put in the
solution become the tests when there is no tests block. Nothing here raises on teacher
output: every failure is one of `REASONS`.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# Why a completion was refused, roughly in the order they are checked.
REASONS = (
    "empty",                  # blank completion
    "too_short",              # a section under the word minimum
    "truncated",              # hit max_tokens before a required part was complete
    "unlabelled",             # none of the Exercise / Solution / Tests / Answer labels
    "no_exercise",            # no exercise statement
    "no_solution",            # no solution block (or an empty one)
    "no_code",                # a code exercise whose solution holds no Python
    "solution_syntax_error",  # the solution code does not parse
    "no_function",            # the solution code defines no top-level function
    "no_tests",               # a code exercise without tests
    "tests_syntax_error",     # the tests do not parse
    "no_asserts",             # the tests hold no assert statement
    "no_entry_point",         # the tests call no function the solution defines
    "no_final_answer",        # a math exercise without a final answer
)

_LABELS = {
    "exercise": "exercise", "problem": "exercise", "question": "exercise",
    "solution": "solution", "worked solution": "solution",
    "tests": "tests", "test": "tests", "test cases": "tests", "unit tests": "tests",
    "final answer": "answer", "answer": "answer",
}
_LABEL_WORDS = "|".join(sorted((re.escape(k) for k in _LABELS), key=len, reverse=True))
# A label line: optional heading hashes / bold / number around the label, then a colon
# and text, or nothing; prose such as "Answer the question below." is not a label.
_LABEL_LINE = re.compile(
    rf"^\s{{0,3}}(#{{1,6}}\s*)?(?:\*\*|__)?\s*({_LABEL_WORDS})(?:\s+\d+)?\s*(?:\*\*|__)?"
    rf"\s*(:)?\s*(?:\*\*|__)?\s*(.*?)\s*$", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)\s*$")
_FENCED = re.compile(r"(```+|~~~+)[ \t]*([\w+-]*)[ \t]*\n(.*?)\n[ \t]*\1[ \t]*(?:\n|$)", re.S)
_ANSWER_PATTERNS = (
    re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}"),
    re.compile(r"^\s*####\s*(.+?)\s*$", re.M),  # GSM8K's answer line
    re.compile(r"final answer\s*(?:is|:)\s*(.+?)\s*$", re.I | re.M),
    re.compile(r"^\s*(?:the\s+)?answer\s*(?:is|:)\s*(.+?)\s*$", re.I | re.M),
)


@dataclass
class Parsed:
    """A parsed exercise, or the reason it was refused (`reason` set, fields empty)."""

    reason: str = ""
    exercise: str = ""
    solution: str = ""  # the output: Python source for code, worked text otherwise
    explanation: str = ""  # prose around the solution code (code exercises)
    tests: str = ""
    entry_point: str = ""
    answer: str = ""

    @property
    def ok(self) -> bool:
        """Whether the completion was accepted."""
        return not self.reason


def parse_section(text: str, min_words: int) -> Parsed:
    """Accept a section that is non-blank and has at least `min_words` words."""
    body = _normalise(text).strip()
    if not body:
        return Parsed(reason="empty")
    if len(body.split()) < min_words:
        return Parsed(reason="too_short")
    return Parsed(solution=body)


def split_labelled(text: str) -> tuple[str, dict[str, str]]:
    """(text before the first label, {label: text of its first block}).

    Labels are `exercise`, `solution`, `tests` and `answer`; a later block with a label
    already seen is appended to the first (a teacher that writes "Tests:" twice).
    """
    preamble: list[str] = []
    blocks: dict[str, list[str]] = {}
    current: list[str] = preamble
    fence: str | None = None
    for line in _normalise(text).split("\n"):
        match = None if fence else _LABEL_LINE.match(line)
        if match and match.group(4) and not (match.group(1) or match.group(3)):
            match = None  # text after the label word without a colon: prose
        fence_match = _FENCE.match(line)
        if fence_match:
            marker = fence_match.group(1)
            if fence is None:
                fence = marker[:3]
            elif marker.startswith(fence) and not fence_match.group(2):
                fence = None
        if match:
            label = _LABELS[match.group(2).lower()]
            current = blocks.setdefault(label, [])
            rest = match.group(4).strip("*_").strip()
            if rest:
                current.append(rest)
            continue
        current.append(line)
    return ("\n".join(preamble).strip(),
            {label: "\n".join(lines).strip() for label, lines in blocks.items()})


def code_blocks(text: str) -> tuple[list[str], bool]:
    """The contents of closed code fences in `text`, and whether an unclosed one remains."""
    blocks = [m.group(3) for m in _FENCED.finditer(text)
              if m.group(2).lower() in ("", "python", "py", "python3")]
    rest = _FENCED.sub("", text)
    return blocks, bool(re.search(r"^\s*(```|~~~)", rest, re.M))


def parse_exercise(text: str, domain: str, finish_reason: str = "stop",
                   entry_point: str | None = None) -> Parsed:
    """Parse one exercise completion of `domain` ("code", "math" or "general").

    Args:
        text: the teacher's completion.
        domain: code exercises need a solution function and assert tests; math ones a
            final answer; general ones an exercise and a solution.
        finish_reason: "length" makes a missing or unclosed part "truncated".
        entry_point: the function name the prompt asked for (code); a different function
            the tests call is accepted too.

    Returns:
        A `Parsed` with the fields of the exercise, or with `reason` set.
    """
    if not text or not text.strip():
        return Parsed(reason="empty")
    truncated = finish_reason == "length"
    preamble, blocks = split_labelled(text)
    if not blocks:
        return Parsed(reason="unlabelled")
    exercise = blocks.get("exercise") or preamble
    if not exercise:
        return Parsed(reason="no_exercise")
    solution = blocks.get("solution", "")
    if domain == "code":
        return _parse_code(exercise, solution, blocks.get("tests", ""), truncated,
                           entry_point)
    answer_block = blocks.get("answer", "")
    if not solution and "\n" in answer_block:
        solution, answer_block = answer_block, ""  # "Answer:" used as the solution label
    if not solution:
        return Parsed(reason="truncated" if truncated else "no_solution")
    answer = _final_answer(answer_block) or _final_answer(solution, search=True)
    if domain == "math" and not answer:
        return Parsed(reason="truncated" if truncated else "no_final_answer")
    output = solution
    if answer and answer_block:
        output = f"{solution}\n\nFinal answer: {answer}"
    return Parsed(exercise=exercise, solution=output, answer=answer)


def _parse_code(exercise: str, solution: str, tests: str, truncated: bool,
                entry_point: str | None) -> Parsed:
    if not solution:
        return Parsed(reason="truncated" if truncated else "no_solution")
    blocks, unclosed = code_blocks(solution)
    if unclosed and truncated and not tests:
        return Parsed(reason="truncated")
    if blocks:
        code = "\n\n".join(b.strip("\n") for b in blocks)
        explanation = _FENCED.sub("\n", solution).strip()
    elif _parses(solution) and "def " in solution:
        code, explanation = solution, ""  # bare code without a fence
    else:
        return Parsed(reason="truncated" if truncated and unclosed else "no_code")
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return Parsed(reason="solution_syntax_error")
    functions = [n.name for n in tree.body
                 if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    if not functions:
        return Parsed(reason="no_function")
    asserts = [n for n in tree.body if isinstance(n, ast.Assert)]
    if asserts:
        # Asserts beside the function are tests: move them out of the solution.
        lines = code.split("\n")
        moved = [ast.get_source_segment(code, n) or "" for n in asserts]
        drop = {i for n in asserts for i in range(n.lineno - 1, (n.end_lineno or n.lineno))}
        code = "\n".join(line for i, line in enumerate(lines) if i not in drop).strip("\n")
        if not tests:
            tests = "\n".join(moved)
    if not tests:
        return Parsed(reason="truncated" if truncated else "no_tests")
    test_blocks, test_unclosed = code_blocks(tests)
    if test_blocks:
        test_code = "\n\n".join(b.strip("\n") for b in test_blocks)
    elif test_unclosed and truncated:
        return Parsed(reason="truncated")
    else:
        # No fence: keep the lines that read as code (teachers add prose around asserts).
        test_code = "\n".join(line for line in tests.split("\n")
                              if not _FENCE.match(line)).strip()
    try:
        test_tree = ast.parse(test_code)
    except SyntaxError:
        test_code = "\n".join(line for line in test_code.split("\n")
                              if line.lstrip().startswith(("assert", "from ", "import ")))
        try:
            test_tree = ast.parse(test_code)
        except SyntaxError:
            return Parsed(reason="tests_syntax_error")
    if not any(isinstance(n, ast.Assert) for n in ast.walk(test_tree)):
        return Parsed(reason="truncated" if truncated else "no_asserts")
    called = {n.func.id for n in ast.walk(test_tree)
              if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    # The requested name when the tests call it, else a solution function they call.
    tested = [f for f in functions if f in called]
    name = entry_point if entry_point in tested else next(iter(tested), "")
    if not name:
        return Parsed(reason="no_entry_point")
    return Parsed(exercise=exercise, solution=code.rstrip() + "\n", explanation=explanation,
                  tests=test_code.strip() + "\n", entry_point=name)


def _final_answer(text: str, search: bool = False) -> str:
    """The final answer in an answer block (its first line) or, searching, in a solution."""
    if not text:
        return ""
    if not search:
        return _clean_answer(text.strip().split("\n")[0])
    for pattern in _ANSWER_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return _clean_answer(matches[-1])
    return ""


def _clean_answer(answer: str) -> str:
    answer = answer.strip().strip("*_").strip()
    boxed = _ANSWER_PATTERNS[0].search(answer)
    if boxed:
        answer = boxed.group(1)
    return answer.strip().strip("$").strip().rstrip(".").strip()


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")
