"""The verify filter's code checker (sandboxed tests) and math checker (final answers)."""

from __future__ import annotations

import pytest

from distill.filters.base import FilterContext, run_funnel
from distill.filters.code_check import build_program, extract_code
from distill.filters.math_check import equivalent, extract_answer
from distill.filters.sandbox import SandboxConfig
from distill.filters.verify import Config
from distill.records import Example

SOLUTION = '''Here is the function:

```python
def median(values):
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
```

It sorts, then takes the middle.'''

TESTS = ["assert median([3, 1, 2]) == 2", "assert median([4, 1, 3, 2]) == 2.5",
         "assert median([7]) == 7"]


def code_record(id: str, output: str, **extra) -> Example:
    return Example(id=id, instruction="Write median(values).", output=output,
                   **{"code_tests": TESTS, "entry_point": "median", **extra})


CODE_RECORDS = [
    code_record("correct", SOLUTION),
    # subtly wrong: the even case takes the upper middle instead of the mean
    code_record("off-by-half", SOLUTION.replace(
        "return (ordered[middle - 1] + ordered[middle]) / 2", "return ordered[middle]")),
    code_record("syntax", "```python\ndef median(values)\n    return 0\n```"),
    code_record("no-tests", SOLUTION, code_tests=[]),
    code_record("wrong-name", SOLUTION.replace("def median", "def middle_value")),
    code_record("exits-early", "```python\nimport sys\nsys.exit(0)\n```"),
    code_record("hangs", "```python\ndef median(values):\n    while True:\n        pass\n```"),
    code_record("humaneval", SOLUTION, code_tests="def check(candidate):\n"
                "    assert candidate([1, 2, 3]) == 2\n", entry_point="median"),
]

CODE_CONFIG = Config(checker="code", workers=2, sandbox=SandboxConfig(timeout_s=3))


def test_extract_code() -> None:
    assert extract_code(SOLUTION).startswith("def median(values):")
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1\n"
    two = "```py\na = 1\n```\nthen\n```\nb = a\n```\n```bash\nls\n```"
    assert extract_code(two) == "a = 1\n\n\nb = a\n"
    program = build_program("x = 1", "assert x == 1", "x", "TOKEN")
    assert program.index("x = 1") < program.index("assert x == 1") < program.index("TOKEN")


def test_code_checker_verdicts() -> None:
    flt = CODE_CONFIG.build(FilterContext())
    assert flt.name == "verify"
    verdicts = flt(CODE_RECORDS)
    assert [(v.keep, v.reason) for v in verdicts] == [
        (True, ""), (False, "tests_failed"), (False, "syntax_error"), (False, "unverifiable"),
        (False, "missing_entry_point"), (False, "exited_early"), (False, "timeout"),
        (True, "")]
    assert verdicts[0].scores["correct"] is True and verdicts[0].scores["sandbox"] == "passed"
    assert "AssertionError" in verdicts[1].scores["stderr_tail"]
    assert verdicts[3].scores == {"correct": False, "unverifiable_reason": "no_tests"}
    assert verdicts[6].scores["sandbox"] == "timeout"


def test_code_funnel_and_keep_unverifiable() -> None:
    records = [r.model_copy(deep=True) for r in CODE_RECORDS[:4]]
    result = run_funnel([CODE_CONFIG.build(FilterContext())], records)
    assert [r.id for r in result.kept] == ["correct"]
    assert result.funnel[0]["dropped"] == {"tests_failed": 1, "syntax_error": 1,
                                           "unverifiable": 1}
    keep = Config(checker="code", keep_unverifiable=True, sandbox=SandboxConfig(timeout_s=3))
    assert [v.keep for v in keep.build(FilterContext())(CODE_RECORDS[2:4])] == [False, True]


@pytest.mark.parametrize(("output", "answer"), [
    ("Half of it: 0.5", "1/2"),
    ("So the share is $\\frac{1}{2}$.", "50%"),
    ("The answer is 50%.", "0.5"),
    ("We get \\boxed{\\dfrac{1}{2}}", "0.5"),
    ("Simplifying, \\boxed{x+1}.", "1 + x"),
    ("The answer is 2(x + 1)", "2x + 2"),
    ("#### 1,200", "1200"),
    ("She pays $18.00 in total. The answer is $18.", "18"),
    ("Therefore x = 3.", "3"),
    ("The final answer is \\boxed{(1, -2)}", "(1,-2)"),
    ("0.3333333 of the cake", "1/3"),
    ("It measures \\boxed{90^\\circ}", "90"),
    ("The answer is \\boxed{\\sqrt{2}/2}", "\\frac{1}{\\sqrt{2}}"),
])
def test_math_equivalent_forms_accepted(output: str, answer: str) -> None:
    predicted = extract_answer(output)
    assert predicted is not None
    assert equivalent(predicted, answer)[0], (predicted, answer)


@pytest.mark.parametrize(("output", "answer"), [
    ("Half of it: 0.51", "1/2"),
    ("The answer is 5%.", "0.5"),
    ("\\boxed{x+2}", "x + 1"),
    ("\\boxed{x^2 + 1}", "(x + 1)^2"),
    ("The answer is -1/2", "1/2"),
    ("#### 1,201", "1200"),
    ("The final answer is \\boxed{(1, 2)}", "(1,-2)"),
    ("0.33 of the cake", "1/3"),
    ("\\boxed{__import__('os').getcwd()}", "0"),
])
def test_math_subtly_wrong_rejected(output: str, answer: str) -> None:
    assert not equivalent(extract_answer(output) or "", answer)[0]


def test_extract_answer_priority() -> None:
    assert extract_answer("First 3, then \\boxed{\\frac{7}{2}} and 9 more") == "\\frac{7}{2}"
    assert extract_answer("12 apples.\n#### 15") == "15"
    assert extract_answer("The answer is 4. Check: 2 + 2 = 4, not 5") == "4"
    assert extract_answer("I have 3 cats and 12 dogs") == "12"
    assert extract_answer("no numbers here") is None


def test_code_then_math_on_mixed_exercises() -> None:
    code = code_record("code", SOLUTION)
    math = Example(id="math", instruction="1/2 + 1/4?", output="\\boxed{3/4}", answer="0.75")
    wrong = Example(id="math-wrong", instruction="1/2 + 1/4?", output="2/6", answer="0.75")
    # two verifiers in one funnel keep their own rows under the names the recipe gives them
    filters = [CODE_CONFIG.model_copy(update={"keep_unverifiable": True, "name": "verify_code"})
               .create(FilterContext()),
               Config(checker="math", keep_unverifiable=True, name="verify_math")
               .create(FilterContext())]
    result = run_funnel(filters, [code, math, wrong])
    assert [r.id for r in result.kept] == ["code", "math"]
    assert [row["filter"] for row in result.funnel] == ["verify_code", "verify_math"]
    assert result.kept[0].scores["verify_code"]["correct"] is True
    assert result.kept[1].scores["verify_math"]["method"] == "numeric"


def test_math_checker_verdicts() -> None:
    records = [
        Example(id="right", instruction="Half of 1?", output="The answer is 1/2.", answer="0.5"),
        Example(id="wrong", instruction="Half of 1?", output="The answer is 2.", answer="0.5"),
        Example(id="silent", instruction="Half of 1?", output="I am not sure.", answer="0.5"),
        Example(id="no-ref", instruction="Write a poem.", output="Roses."),
        Example(id="number", instruction="How many?", output="\\boxed{42}", answer=42),
    ]
    verdicts = Config(checker="math").build(FilterContext())(records)
    assert [(v.keep, v.reason) for v in verdicts] == [
        (True, ""), (False, "wrong_answer"), (False, "no_final_answer"),
        (False, "unverifiable"), (True, "")]
    assert verdicts[0].scores == {"expected": "0.5", "correct": True, "predicted": "1/2",
                                  "method": "numeric"}
    assert verdicts[3].scores["unverifiable_reason"] == "no_reference"
