"""Scores: a reply's outcome for its problem, and pass@k by the HumanEval paper's unbiased estimator."""

import math
import re
from dataclasses import dataclass

from .data import Item

OUTCOMES = ("passed", "failed", "timeout", "error", "no_tests")


@dataclass(frozen=True)
class Verdict:
    passed: bool
    outcome: str  # one of OUTCOMES
    detail: str = ""


def pass_at_k(n: int, c: int, k: int) -> float:
    """1 - C(n-c, k) / C(n, k): the chance that one of k samples out of n (c correct) passes."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (braces balanced)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed{")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            if depth == 0:
                return text[i:j].strip()
            depth -= 1
    return None


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def last_number(text: str) -> str | None:
    found = NUMBER.findall(text.replace(",", ""))
    return found[-1] if found else None


def _same(a: str, b: str) -> bool:
    a, b = a.strip().strip("$ ."), b.strip().strip("$ .")
    if a == b:
        return True
    try:
        return math.isclose(_value(a), _value(b), rel_tol=1e-9, abs_tol=1e-9)
    except (ValueError, ZeroDivisionError):
        return False


def _value(text: str) -> float:
    if "/" in text:
        top, bottom = text.split("/", 1)
        return float(top) / float(bottom)
    return float(text)


def final_answer(text: str, expected: str) -> str | None:
    """The reply's final answer as the paper's MATH/GPQA evaluations read it: `\\boxed{}`, else a
    multiple-choice letter when the expected answer is one, else the last number."""
    found = boxed(text)
    if found is not None:
        return found
    if re.fullmatch(r"[A-J]", expected.strip()):
        letters = re.findall(r"\b([A-J])\b", text)
        return letters[-1] if letters else None
    return last_number(text)


def score_answer(item: Item, text: str) -> Verdict:
    got = final_answer(text, item.answer) if item.scoring == "answer" else last_number(text)
    if got is None:
        return Verdict(False, "failed", "no answer in the reply")
    ok = _same(got, item.answer)
    return Verdict(ok, "passed" if ok else "failed", "" if ok else f"answered {got}, expected {item.answer}")


def score_code(item: Item, code: str | None, sandbox: str = "auto") -> Verdict:
    """Run `code` against the problem's own tests in the sandbox."""
    if code is None:
        return Verdict(False, "failed", "no code block in the reply")
    if item.scoring == "stdio":
        import json

        from ..checks.stdio import run_stdio

        verdict = run_stdio(code, json.loads(item.tests), sandbox=sandbox)
        return Verdict(verdict.passed, verdict.outcome, verdict.detail)
    from ..checks.check import run_check

    result = run_check(code, item.tests, sandbox=sandbox)
    outcome = result.status if result.status in OUTCOMES else ("timeout" if result.status == "memory" else "error")
    return Verdict(result.passed, outcome, result.summary())
