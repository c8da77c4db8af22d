"""Standard-input/standard-output problems: the program runs sandboxed once per case, its output
compared as LiveCodeBench compares it; `z1 eval` reads LiveCodeBench, APPS and plain layouts."""

import json
import sys

import pytest

from z1mlx.checks.sandbox import Limits, bwrap_problem
from z1mlx.checks.stdio import outputs_match, run_stdio

from helpers import one_line_error, z1

needs_bwrap = pytest.mark.skipif(
    not sys.platform.startswith("linux") or bwrap_problem() is not None, reason="needs bubblewrap on Linux"
)

ADD = "a, b = map(int, input().split())\nprint(a + b)\n"
CASES = [{"input": "1 2\n", "output": "3\n"}, {"input": "40 2\n", "output": "42"}]


def test_outputs_compare_as_livecodebench_compares_them():
    assert outputs_match("3\n", "3")
    assert outputs_match("  1 2 \n3\n\n", "1 2\n3")
    assert outputs_match("0.3333333\n", "0.33333333")  # numbers within 1e-6
    assert outputs_match("1.0 2\n", "1 2.000000")
    assert not outputs_match("0.334\n", "0.333")
    assert not outputs_match("1 2 3\n", "1 2")
    assert not outputs_match("3\n4\n", "3")
    assert not outputs_match("yes\n", "YES")


@needs_bwrap
def test_each_case_runs_in_the_sandbox_with_its_input():
    assert run_stdio(ADD, CASES, sandbox="bwrap").outcome == "passed"
    wrong = run_stdio("a, b = map(int, input().split())\nprint(a - b)\n", CASES, sandbox="bwrap")
    assert (wrong.outcome, wrong.cases_run) == ("failed", 1) and "printed '-1', expected '3'" in wrong.detail
    crash = run_stdio("input()\ninput()\n", CASES, sandbox="bwrap")  # reads past its input: EOFError
    assert crash.outcome == "error" and "EOFError" in crash.detail
    slow = run_stdio("while True:\n    pass\n", CASES, Limits(cpu_seconds=1, wall_seconds=5), sandbox="bwrap")
    assert slow.outcome == "timeout" and slow.cases_run == 1
    assert run_stdio(ADD, [], sandbox="bwrap").outcome == "no_tests"


@needs_bwrap
def test_eval_scores_given_completions_in_each_layout(tmp_path):
    lcb = {
        "question_id": "lcb-1",
        "question_content": "Read two integers and print their sum.",
        "public_test_cases": json.dumps([{"input": "1 2\n", "output": "3\n", "testtype": "stdin"}]),
        "private_test_cases": [{"input": "5 5\n", "output": "10\n"}],
    }
    apps = {
        "problem_id": 7,
        "question": "Print the sum.",
        "input_output": json.dumps({"inputs": ["2 2\n"], "outputs": ["4\n"]}),
    }
    plain = {"task_id": "plain", "prompt": "Sum.", "inputs": ["3 4\n", "0 0\n"], "outputs": ["7\n", "0\n"]}
    data = tmp_path / "contest.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (lcb, apps, plain)))
    samples = tmp_path / "samples.jsonl"
    rows = []
    for task in ("lcb-1", "7", "plain"):
        rows.append({"task_id": task, "completion": ADD})
        rows.append({"task_id": task, "completion": "print(0)\n"})  # right only for plain's second case
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = z1("eval", "--data", data, "--samples", samples, "--sandbox", "bwrap", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["samples"], summary["problems"], summary["passed"]) == (6, 3, 3)
    assert summary["outcomes"] == {"failed": 3, "passed": 3}


def test_bad_stdio_rows_are_one_line_errors(tmp_path):
    cases = [
        ({"question": "q", "inputs": ["1"], "outputs": []}, "needs as many inputs as outputs"),
        ({"question": "q", "public_test_cases": "[{"}, "is neither a list nor JSON text"),
        ({"question": "q", "public_test_cases": [{"input": "1"}]}, "must be a list of"),
        ({"inputs": ["1"], "outputs": ["1"]}, "missing field 'question'"),
        ({"question": "q", "public_test_cases": "[]"}, "no test cases"),
    ]
    for row, message in cases:
        data = tmp_path / "bad.jsonl"
        data.write_text(
            json.dumps({"question": "ok", "inputs": ["1"], "outputs": ["1"]}) + "\n" + json.dumps(row) + "\n"
        )
        proc = z1("eval", "--data", data, "--format", "stdio", "--out", tmp_path / "out")
        assert proc.returncode == 2 and f"{data}:2: " in one_line_error(proc) and message in one_line_error(proc), row
        assert not (tmp_path / "out").exists()
