"""The shipped micro-Z1 models: offline, labelled, and as accurate as their recorded figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from z1mlx import store
from z1mlx.microz1 import MODELS, reply_style, tasks
from z1mlx.microz1.evaluate import FULL_BUDGET, evaluate
from z1mlx.window import HINT

from helpers import greedy_reference, z1

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "straight_line.py"
FIGURES = json.loads((MODELS / "figures.json").read_text())
# Recorded on 200 programs of each kind; the tests use fewer, so allow for sampling error.
MARGIN = 0.15


@pytest.fixture(scope="module")
def demo():
    from z1mlx.engine import Engine

    return Engine.load("demo")


def test_demo_loads_from_the_package_with_no_build_and_says_what_it_is(isolated_home):
    for name, style in (("demo", "short or step-by-step"), ("demo-long", "long-only twin")):
        path = store.resolve_model(name)
        assert path == MODELS / name and (path / "model.safetensors").stat().st_size < 4_000_000
        label = store.describe(path)
        assert "micro-Z1" in label and "M-parameter model trained only on tiny straight-line Python" in label
        assert style in label
        assert "measured accuracy: easy" in label
    assert not (isolated_home / "models" / "demo").exists()  # nothing was built into the store


def test_the_demo_draft_changes_no_token_and_proposes_most(isolated_home):
    path = store.resolve_model("demo-draft")
    assert path == MODELS / "demo-draft" and (path / "model.safetensors").stat().st_size < 500_000
    assert "the demo's draft for --draft-model" in store.describe(path)
    for budget in ("8", "512"):
        args = ["solve", EXAMPLE, "--model", "demo", "--budget", budget, "--json"]
        plain = json.loads(z1(*args).stdout)
        drafted = z1(*args, "--draft-model", "demo-draft")
        assert drafted.returncode == 0, drafted.stderr
        got = json.loads(drafted.stdout)
        for key in ("thinking_token_ids", "answer_token_ids", "reasoning", "answer", "window_hit"):
            assert got[key] == plain[key], (budget, key)
    from z1mlx.engine import Engine

    engine = Engine.load("demo", draft_model="demo-draft")
    prompts = [
        engine.chat_prompt(tasks.solve_messages(p.text(), "program.py")) for p in tasks.fresh_programs("hard", 5, 3)
    ]
    for prompt in prompts:
        list(engine.generate(prompt))
    assert engine.draft_counts["accepted"] >= 0.4 * engine.draft_counts["generated"]  # measured: 65%


def test_solve_shows_a_trace_and_a_final_sentence(demo):
    proc = z1("solve", EXAMPLE, "--model", "demo", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert not out["window_hit"] and out["finish_reason"] == "stop"
    lines = (out["reasoning"] + out["answer"]).strip().splitlines()
    assert len(lines) >= 4 and lines[-1].startswith("So it prints ")
    # The README's quickstart shows this reply: its answer is the one Python prints.
    printed = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=True).stdout
    assert tasks.last_number(lines[-1]) == int(printed)
    assert out["thinking_tokens"] == len(out["thinking_token_ids"]) > 30
    # The tokens are mlx-lm's own greedy tokens for the same prompt.
    assert out["thinking_token_ids"] == greedy_reference(demo, out["prompt_token_ids"], 400)


def test_a_small_budget_cuts_the_trace_and_the_hint_gets_a_number():
    proc = z1("solve", EXAMPLE, "--model", "demo", "--budget", "8", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["window_hit"] and out["thinking_tokens"] == 8 and out["hint"] == HINT
    assert tasks.last_number(out["answer"]) is not None


def test_easy_problems_get_one_sentence(tmp_path):
    problem = tmp_path / "easy.py"
    problem.write_text("a = 4\nb = a + 3\nprint(b)\n")
    proc = z1("solve", problem, "--model", "demo", "--json")
    out = json.loads(proc.stdout)
    reply = (out["reasoning"] + out["answer"]).strip()
    assert proc.returncode == 0 and reply.startswith("It prints ") and "\n" not in reply
    from mlx_lm.utils import load_tokenizer

    sentence = load_tokenizer(MODELS / "demo").encode("It prints b = a + 3 = 4 + 3 = 7.", add_special_tokens=False)
    assert out["thinking_tokens"] <= len(sentence) + 1  # the one sentence and the end token


def test_chat_answers_a_program_typed_as_a_message(demo):
    from z1mlx.chat.conversation import Conversation
    from z1mlx.window import WindowControl

    chat = Conversation(demo, None)
    for _ in chat.send(EXAMPLE.read_text().rstrip("\n"), WindowControl(4096)):
        pass
    result = chat.last_result
    lines = result.text.strip().splitlines()
    assert not result.window_hit and len(lines) >= 4 and lines[-1].startswith("So it prints ")


def test_an_off_task_message_still_gets_a_reply_and_the_label_says_why():
    proc = z1("chat", "--plain", "--model", "demo", input="What is the capital of France?\n", timeout=120)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "anything else gets nonsense" in proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["demo", "demo-long"])
def test_the_recorded_figures_hold(name):
    from z1mlx.engine import Engine

    engine = Engine.load(name)
    recorded = FIGURES["models"][name]
    count = 40
    recheck, trace = reply_style(MODELS / name)
    assert recheck == (name == "demo-long")
    easy = evaluate(engine, "easy", count, (FULL_BUDGET,), seed=101, recheck=recheck, trace=trace)[0]
    hard = evaluate(engine, "hard", count, (FULL_BUDGET,), seed=101, recheck=recheck, trace=trace)[0]
    for summary in (easy, hard):  # every wrong reply is diagnosed, but for one that ran past the longest trace
        wrong = count - round(summary.accuracy * count)
        assert summary.window_hits <= count // 20  # the full budget covers every trained reply (the longest: 497)
        assert wrong - summary.window_hits <= sum(summary.errors.values()) <= wrong
    assert easy.accuracy >= recorded["easy"]["accuracy"] - MARGIN
    assert hard.accuracy >= recorded["hard"][-1]["accuracy"] - MARGIN
    if name == "demo":  # short when easy, long when hard
        assert hard.mean_thinking_tokens >= 4 * easy.mean_thinking_tokens
    if name == "demo-long":  # long on every problem, easy ones included
        assert easy.mean_thinking_tokens >= 3 * FIGURES["models"]["demo"]["easy"]["mean_thinking_tokens"]
    for measured, figure in ((easy, recorded["easy"]), (hard, recorded["hard"][-1])):
        assert (
            abs(measured.mean_thinking_tokens - figure["mean_thinking_tokens"]) <= 0.25 * figure["mean_thinking_tokens"]
        )
