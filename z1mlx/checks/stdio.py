"""Standard-input/standard-output problems (LiveCodeBench, APPS, contest sets): the candidate
program runs in the sandbox once per test case, with the case's input on stdin, and its
output is compared with the expected one as those harnesses compare it.

The comparison (LiveCodeBench's for stdin tests): both outputs are split into lines with
surrounding whitespace stripped and trailing empty lines dropped; the lines must be equal, or
else have the same whitespace-separated tokens where every pair is equal or both are numbers
within 1e-6.
"""

from dataclasses import dataclass

from .sandbox import Limits, run_sandboxed


@dataclass(frozen=True)
class StdioVerdict:
    passed: bool
    outcome: str  # passed, failed, timeout, error
    detail: str
    cases_run: int


def outputs_match(got: str, expected: str) -> bool:
    a, b = _lines(got), _lines(expected)
    if a == b:
        return True
    if len(a) != len(b):
        return False
    return all(x == y or _same_tokens(x, y) for x, y in zip(a, b))


def _lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.strip().splitlines()]
    return lines


def _same_tokens(a: str, b: str) -> bool:
    xs, ys = a.split(), b.split()
    if len(xs) != len(ys):
        return False
    for x, y in zip(xs, ys):
        if x == y:
            continue
        try:
            if abs(float(x) - float(y)) > 1e-6:
                return False
        except ValueError:
            return False
    return True


def run_stdio(code: str, cases: list[dict], limits: Limits = Limits(), sandbox: str = "auto") -> StdioVerdict:
    """Run `code` on every case ({"input", "output"}) in order; the first case that fails decides."""
    if not cases:
        return StdioVerdict(False, "no_tests", "the problem has no test cases", 0)
    for number, case in enumerate(cases, 1):
        result = run_sandboxed(code, limits=limits, mode=sandbox, stdin=case["input"])
        where = f"case {number} of {len(cases)}"
        if result.status in ("timeout", "memory"):
            return StdioVerdict(False, "timeout", f"{where}: {result.reason}", number)
        if not result.ok:
            last = result.stderr.strip().splitlines()[-1:] or [result.reason]
            return StdioVerdict(False, "error", f"{where}: {result.reason}: {last[0][:200]}", number)
        if not outputs_match(result.stdout, case["output"]):
            got = " / ".join(_lines(result.stdout)[:3])[:120]
            want = " / ".join(_lines(case["output"])[:3])[:120]
            return StdioVerdict(False, "failed", f"{where}: printed {got!r}, expected {want!r}", number)
    return StdioVerdict(True, "passed", f"{len(cases)} cases passed", len(cases))
