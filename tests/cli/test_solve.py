"""`z1 solve` as a user runs it: streams, JSON, exit codes, one-line errors, Ctrl+C."""

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from z1mlx.events import Done
from z1mlx.prompts import solve_messages
from z1mlx.window import HINT, ShiftedWindow

from helpers import one_line_error, z1

pytestmark = pytest.mark.slow  # real subprocesses, servers or training: see `make test-fast`

PROBLEM = '''def add(a, b):
    """Return the sum of a and b.

    >>> add(2, 3)
    5
    """
'''


@pytest.fixture
def problem(tmp_path):
    path = tmp_path / "problem.py"
    path.write_text(PROBLEM)
    return path


def engine_result(engine, budget, answer_tokens):
    prompt = engine.chat_prompt(solve_messages(PROBLEM, "py"))
    events = list(engine.generate(prompt, ShiftedWindow(budget, answer_tokens)))
    assert isinstance(events[-1], Done)
    return prompt, events[-1].result


def test_json_has_every_field_and_matches_the_engine(engine, tiny_model, problem):
    proc = z1("solve", problem, "--model", tiny_model, "--budget", "12", "--answer-tokens", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)  # exactly one JSON object on stdout
    prompt, expected = engine_result(engine, 12, 5)
    assert data["prompt_token_ids"] == prompt
    assert data["thinking_token_ids"] == expected.thinking_token_ids
    assert data["answer_token_ids"] == expected.answer_token_ids
    assert data["thinking_tokens"] == min(12, len(expected.thinking_token_ids))
    assert data["window_hit"] == expected.window_hit
    assert data["hint"] == (HINT if expected.window_hit else None)
    for key in (
        "model",
        "budget",
        "answer_cap",
        "finish_reason",
        "prompt_tokens",
        "answer_tokens",
        "reasoning",
        "answer",
        "code",
        "ttft_s",
        "prompt_tps",
        "generation_tps",
        "peak_memory_gb",
    ):
        assert key in data
    assert data["budget"] == 12 and data["answer_cap"] == 5


def test_min_thinking_json_counts_the_forced_continuations(engine, tiny_model, problem):
    """--min-thinking through the CLI equals the engine with the same window, and --json
    says how many continuations were forced."""
    natural = engine_result(engine, 400, 5)[1]
    assert not natural.window_hit  # the model ends by itself: a minimum above that forces more
    minimum = natural.thinking_tokens + 5
    proc = z1(
        "solve",
        problem,
        "--model",
        tiny_model,
        "--budget",
        "400",
        "--answer-tokens",
        "5",
        "--min-thinking",
        minimum,
        "--continue-text",
        " Wait,",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    prompt = engine.chat_prompt(solve_messages(PROBLEM, "py"))
    window = ShiftedWindow(400, 5, min_thinking=minimum, continue_text=" Wait,")
    expected = list(engine.generate(prompt, window))[-1].result
    assert data["thinking_token_ids"] == expected.thinking_token_ids
    assert data["forced_continuations"] == expected.forced_continuations >= 1
    assert data["forced_tokens"] == expected.forced_continuations * len(engine.encode(" Wait,"))
    assert data["min_thinking"] == minimum and " Wait," in data["reasoning"] + data["answer"]
    assert data["thinking_token_ids"][: natural.thinking_tokens] == natural.thinking_token_ids


def test_reasoning_to_stderr_answer_to_stdout(engine, tiny_model, problem):
    _, expected = engine_result(engine, 10, 6)
    assert expected.window_hit
    proc = z1("solve", problem, "--model", tiny_model, "--budget", "10", "--answer-tokens", "6")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected.answer_text + "\n"
    assert expected.thinking_text in proc.stderr
    assert "window full at 10 tokens" in proc.stderr
    assert "thinking 10/10 tokens" in proc.stderr.splitlines()[-1]


def test_quiet_prints_only_the_answer(engine, tiny_model, problem):
    _, expected = engine_result(engine, 10, 6)
    proc = z1("solve", problem, "--model", tiny_model, "--budget", "10", "--answer-tokens", "6", "--quiet")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == expected.answer_text + "\n"


def test_stdin_problem_and_budget_zero(tiny_model):
    proc = z1("solve", "-", "--model", tiny_model, "--budget", "0", "--answer-tokens", "4", "--json", input=PROBLEM)
    data = json.loads(proc.stdout)
    assert data["thinking_tokens"] == 0 and data["window_hit"] and 1 <= data["answer_tokens"] <= 4


def test_out_without_a_code_block_writes_nothing(tiny_model, problem, tmp_path):
    out = tmp_path / "solution.py"
    proc = z1("solve", problem, "--model", tiny_model, "--budget", "5", "--answer-tokens", "5", "--out", out)
    assert proc.returncode == 1 and not out.exists()
    assert "no code block" in proc.stderr


def test_check_without_code_fails(tiny_model, problem):
    proc = z1("solve", problem, "--model", tiny_model, "--budget", "5", "--answer-tokens", "5", "--check", "--quiet")
    assert proc.returncode == 1 and "check failed" in proc.stderr


@pytest.fixture
def corrupt_model(tiny_model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    return broken


@pytest.mark.parametrize(
    "case, args, expected",
    [
        ("missing", ["nope.py"], "nope.py: no such file"),
        ("directory", ["{tmp}"], "is a directory"),
        ("empty", ["{tmp}/empty.py"], "empty problem"),
        ("binary", ["{tmp}/binary.py"], "not UTF-8 text"),
        ("negative budget", ["{problem}", "--budget", "-3"], "argument --budget: must be a whole number >= 0"),
        ("non-integer budget", ["{problem}", "--budget", "2k"], "argument --budget: must be a whole number >= 0"),
        ("unknown model", ["{problem}", "--model", "no-such-model"], "unknown model 'no-such-model'"),
        ("corrupt model", ["{problem}", "--model", "{corrupt}"], "cannot load model"),
    ],
)
def test_bad_input_one_line_exit_2(case, args, expected, tmp_path, problem, corrupt_model):
    (tmp_path / "empty.py").write_text("  \n")
    (tmp_path / "binary.py").write_bytes(b"def f():\n    return '\xff\xfe'\n")
    args = [a.format(tmp=tmp_path, problem=problem, corrupt=corrupt_model) for a in args]
    proc = z1("solve", *args)
    assert proc.returncode == 2
    assert expected in one_line_error(proc)


def test_ctrl_c_stops_cleanly_with_partial_output_and_stats(endless_model, problem):
    proc = subprocess.Popen(
        [sys.executable, "-m", "z1mlx", "solve", str(problem), "--model", str(endless_model), "--budget", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = err.strip().splitlines()[-1]
    assert "interrupted" in summary and "thinking" in summary
    thinking = int(summary.split("thinking ")[1].split("/")[0])
    assert thinking > 0


def test_help_lists_examples_and_exit_codes():
    proc = z1("solve", "--help")
    assert proc.returncode == 0
    assert "z1 solve problem.py --budget 2048" in proc.stdout and "130" in proc.stdout
    top = z1("--help")
    assert "z1 solve problem.py --budget 2048" in top.stdout and "finetune" in top.stdout
    assert z1("--version").stdout.startswith("z1-mlx ")


def test_z1mlx_debug_shows_the_traceback_of_a_user_error(tmp_path):
    missing = tmp_path / "missing.py"
    plain = z1("solve", missing)
    assert plain.returncode == 2 and "no such file" in one_line_error(plain)
    debug = z1("solve", missing, env={"Z1MLX_DEBUG": "1"})
    assert debug.returncode == 2 and "Traceback" in debug.stderr and "no such file" in debug.stderr.splitlines()[-1]


def test_an_internal_error_is_one_line_unless_debugging(monkeypatch, capsys):
    from z1mlx import cli, solve

    def broken(argv):
        raise RuntimeError("a bug")

    monkeypatch.setattr(solve, "main", broken)
    assert cli.main(["solve", "x.py"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        "z1 solve: internal error: RuntimeError: a bug (set Z1MLX_DEBUG=1 for the traceback to include in a bug report)"
    )
    monkeypatch.setenv("Z1MLX_DEBUG", "1")
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["solve", "x.py"])
