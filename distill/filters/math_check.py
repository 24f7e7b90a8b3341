r"""Final-answer extraction and equivalence for math answers.

`extract_answer` reads the final answer out of a worked solution the way math graders
do: the last `\boxed{...}`, else a GSM8K `#### 42` line, else the last "the answer is
...", else the last number. `equivalent` compares it with the reference answer: equal
after normalisation (LaTeX wrappers, `$`, units after a number, `x = ` prefixes), equal as
numbers within a relative tolerance (fractions, decimals, percentages: 0.5, 1/2,
\frac{1}{2} and 50% are one value), element-wise for tuples, or equal as sympy
expressions (x+1 and 1+x). sympy only ever sees whitelisted text, since `parse_expr`
evaluates its input.
"""

from __future__ import annotations

import re
from fractions import Fraction

NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?%?|-?\.\d+%?"
ANSWER_IS = re.compile(r"(?:final answer|answer)\s*(?:is|:|=)\s*:?\s*(.+)", re.IGNORECASE)
# sympy's parser evaluates its input: only arithmetic on these names and one-letter symbols.
SYMPY_NAMES = {"sqrt", "pi", "exp", "log", "ln", "sin", "cos", "tan", "oo", "E", "I"}
SAFE_TEXT = re.compile(r"[0-9A-Za-z+\-*/^().,\s]*")
MAX_SYMPY_CHARS = 200
MAX_EXPONENT = 1000  # 9^9^9 would take sympy forever; answers have small exponents


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the {...} group opening at text[start], and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[start + 1:index], index + 1
    return None


def _last_boxed(text: str) -> str | None:
    found = None
    for match in re.finditer(r"\\(?:boxed|fbox)\s*", text):
        group = _braced(text, match.end())
        if group is not None:
            found = group[0]
    return found


def extract_answer(text: str) -> str | None:
    """The final answer of a worked solution, or None when there is none."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    hashes = re.findall(r"^\s*####\s*(.+?)\s*$", text, re.MULTILINE)
    if hashes:
        return hashes[-1]
    stated = ANSWER_IS.findall(text)
    if stated:
        answer = re.split(r"\.(?!\d)|\n", stated[-1])[0]  # to the end of the sentence
        return answer.strip().strip("*").strip()
    numbers = re.findall(rf"\\[dt]?frac\{{-?\d+\}}\{{-?\d+\}}|{NUMBER}", text)
    return numbers[-1] if numbers else None


def _unwrap(text: str, command: str) -> str:
    r"""Replace \command{x} by x, for every occurrence."""
    while (match := re.search(rf"\\{command}\s*(?={{)", text)) is not None:
        group = _braced(text, match.end())
        if group is None:
            break
        text = text[:match.start()] + group[0] + text[group[1]:]
    return text


def normalize(text: str) -> str:
    r"""Strip presentation: $, \text{}, \left, degrees, spacing, a trailing period."""
    text = str(text).strip()
    for command in ("text", "textbf", "mathrm", "mathbf", "boxed"):
        text = _unwrap(text, command)
    text = re.sub(r"\\[dt]frac", r"\\frac", text)
    for junk in ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\ ", "$",
                 "^{\\circ}", "^\\circ", "°"):
        text = text.replace(junk, "")
    text = text.replace("\\%", "%").replace("\\$", "")
    text = re.sub(r"\s+", " ", text).strip().rstrip(".").strip()
    return text


def _number(text: str) -> list[Fraction] | None:
    """The values a numeric answer may mean: x% is x/100 (or x, said as a percentage)."""
    text = text.replace(" ", "")
    frac = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}%?", text)
    if frac:
        text = f"{frac[1]}{frac[2]}/{frac[3]}" + ("%" if text.endswith("%") else "")
    match = re.fullmatch(rf"({NUMBER})[A-Za-z]*", text)  # a unit after the number is dropped
    if match is None:
        return None
    raw = match[1].replace(",", "")
    percent = raw.endswith("%")
    try:
        value = Fraction(raw.rstrip("%"))
    except (ValueError, ZeroDivisionError):
        return None
    return [value / 100, value] if percent else [value]


def _close(a: complex | float | Fraction, b: complex | float | Fraction,
           tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(1.0, abs(b))


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def _latex_to_sympy(text: str) -> str | None:
    """Plain sympy syntax, or None when text holds anything beyond the safe subset."""
    while (match := re.search(r"\\frac\s*(?={)", text)) is not None:
        numerator = _braced(text, match.end())
        denominator = numerator and _braced(text, numerator[1])
        if not denominator:
            return None
        text = (text[:match.start()] + f"(({numerator[0]})/({denominator[0]}))"
                + text[denominator[1]:])
    text = re.sub(r"\\sqrt\s*\[([^\]]+)\]\s*\{([^{}]*)\}", r"((\2)**(1/(\1)))", text)
    for latex, plain in (("\\sqrt", "sqrt"), ("\\cdot", "*"), ("\\times", "*"), ("\\div", "/"),
                         ("\\pi", "pi"), ("\\infty", "oo"), ("\\ln", "log"), ("\\log", "log"),
                         ("\\exp", "exp"), ("\\sin", "sin"), ("\\cos", "cos"),
                         ("\\tan", "tan"), ("{", "("), ("}", ")")):
        text = text.replace(latex, plain)
    text = text.replace("^", "**")
    if len(text) > MAX_SYMPY_CHARS or not SAFE_TEXT.fullmatch(text) or "__" in text:
        return None  # unsafe to evaluate
    names = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text))
    if any(len(name) > 1 and name not in SYMPY_NAMES for name in names):
        return None
    return text


def _small_powers(expression) -> bool:
    """No power tower and no exponent beyond MAX_EXPONENT (checked before evaluating)."""
    from sympy import Pow

    for power in expression.atoms(Pow):
        exponent = power.exp
        if exponent.atoms(Pow) or (exponent.is_number
                                   and abs(float(exponent.evalf(15))) > MAX_EXPONENT):
            return False
    return True


def _sympy_equal(predicted: str, reference: str, tolerance: float) -> bool:
    from sympy import N, simplify
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    texts = [_latex_to_sympy(predicted), _latex_to_sympy(reference)]
    if None in texts:
        return False
    transformations = (*standard_transformations, implicit_multiplication_application,
                       convert_xor)
    try:
        a, b = (parse_expr(t, transformations=transformations, evaluate=False)
                for t in texts)
        if not (_small_powers(a) and _small_powers(b)):
            return False
        if not (a.free_symbols or b.free_symbols):
            return _close(complex(N(a)), complex(N(b)), tolerance)
        return bool(simplify(a - b) == 0)
    except Exception:  # noqa: BLE001 - unparsable or not comparable: not equal
        return False


def equivalent(predicted: str, reference: str, tolerance: float = 1e-6) -> tuple[bool, str]:
    """Whether two final answers are the same; also how it was decided.

    Returns:
        (equal, method) with method "exact", "numeric", "tuple", "symbolic" or "".
    """
    pred, ref = normalize(predicted), normalize(reference)
    if "=" in pred and "=" not in ref:  # "x = 3" answers "3"
        pred = pred.rsplit("=", 1)[1].strip()
    if pred == ref:
        return True, "exact"
    pred_values, ref_values = _number(pred), _number(ref)
    if pred_values is not None and ref_values is not None:
        equal = any(_close(p, r, tolerance) for p in pred_values for r in ref_values)
        return equal, "numeric"
    pred_parts = _split_top_level(pred.strip("()[]"))
    ref_parts = _split_top_level(ref.strip("()[]"))
    if len(ref_parts) > 1 and len(pred_parts) == len(ref_parts):
        pairs = zip(pred_parts, ref_parts, strict=True)
        equal = all(equivalent(p, r, tolerance)[0] for p, r in pairs)
        return equal, "tuple"
    if _sympy_equal(pred, ref, tolerance):
        return True, "symbolic"
    return False, ""
