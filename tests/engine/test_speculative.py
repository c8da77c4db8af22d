"""Speculative decoding under the window (`--draft-model`): greedy output with a draft equals
greedy output without one, token for token, with the window hit and not, a budget that falls
inside a multi-token accepted step, think longer, answer-now, sweeps and a chat's reused cache;
a draft that is the model itself accepts every proposal; a draft with another tokenizer is
refused in one line."""

from dataclasses import replace

import pytest

from z1mlx.engine import Engine
from z1mlx.errors import Z1Error
from z1mlx.events import Done, TextDelta
from z1mlx.window import ShiftedWindow, WindowControl

from helpers import find_prompt, one_line_error, z1

FIELDS = (
    "thinking_token_ids",
    "hint_token_ids",
    "answer_token_ids",
    "thinking_text",
    "answer_text",
    "window_hit",
    "finish_reason",
    "shift_reason",
    "forced_continuations",
)


def tiny(root, spec_kwargs, name):
    from z1mlx.convert.command import convert_checkpoint
    from z1mlx.convert.demo import TinySpec, build_checkpoint
    from z1mlx.convert.source import locate

    source = build_checkpoint(root / f"{name}-hf", TinySpec(**spec_kwargs))
    out = root / name
    convert_checkpoint(locate(str(source)), out, quantize=False, dtype="float32", verify=False, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def draft_model(tmp_path_factory):
    """Another random tiny Qwen2 with the same tokenizer: it agrees with the model rarely."""
    return tiny(tmp_path_factory.mktemp("draft"), {"seed": 5, "hidden_size": 32, "num_hidden_layers": 1}, "draft")


def result_of(engine, prompt, window, act_at=None, action=None, conversation=None):
    control = WindowControl(window.budget)
    for event in engine.generate(prompt, window, control=control, conversation=conversation):
        if act_at is not None and isinstance(event, TextDelta) and event.phase == "thinking" and event.tokens == act_at:
            action(control)
        if isinstance(event, Done):
            return event.result


def assert_same(got, want):
    for name in FIELDS:
        assert getattr(got, name) == getattr(want, name), name


@pytest.fixture(scope="module")
def prompts(engine):
    long_prompt, _ = find_prompt(engine, longer_than=60)
    short_prompt, reply = find_prompt(engine, ends_within=30)
    return long_prompt, short_prompt, len(reply)


@pytest.mark.parametrize("which", ["itself", "other"])
def test_greedy_with_a_draft_equals_greedy_without(engine, tiny_model, draft_model, prompts, which):
    long_prompt, short_prompt, natural = prompts
    spec = Engine.load(str(tiny_model), draft_model=str(tiny_model if which == "itself" else draft_model))
    spec.num_draft_tokens = 4
    cases = [
        (long_prompt, ShiftedWindow(budget=7, answer_tokens=9)),  # inside the second 5-token step
        (long_prompt, ShiftedWindow(budget=0, answer_tokens=6)),
        (long_prompt, ShiftedWindow(budget=43, answer_tokens=11)),
        (short_prompt, ShiftedWindow(budget=300, answer_tokens=5)),  # ends inside the window
        (short_prompt, ShiftedWindow(budget=300, answer_tokens=5, min_thinking=natural + 9)),
        (short_prompt, ShiftedWindow(budget=natural - 1, answer_tokens=4)),  # the end token lies past the budget
    ]
    for prompt, window in cases:
        want = result_of(engine, prompt, window)
        got = result_of(spec, prompt, window)
        assert_same(got, want)
        assert got.thinking_tokens == (window.budget if want.window_hit else want.thinking_tokens)
    want = result_of(engine, long_prompt, ShiftedWindow(budget=500, answer_tokens=6), 13, WindowControl.answer_now)
    got = result_of(spec, long_prompt, ShiftedWindow(budget=500, answer_tokens=6), 13, WindowControl.answer_now)
    assert want.shift_reason == "answer_now" and want.thinking_tokens == 13
    assert_same(got, want)
    counts = spec.draft_counts
    assert counts["generated"] > 100
    if which == "itself":
        # Every proposal is accepted: only the step's own last token is not the draft's.
        assert counts["generated"] - counts["accepted"] <= counts["generated"] // 5 + 30
    else:
        assert counts["accepted"] < counts["generated"] // 2


def test_a_budget_sweep_with_a_draft_equals_separate_runs(engine, tiny_model, prompts):
    long_prompt, _, _ = prompts
    spec = Engine.load(str(tiny_model), draft_model=str(tiny_model), num_draft_tokens=3)
    window = ShiftedWindow(budget=999, answer_tokens=6)
    results, one_pass = spec.sweep(long_prompt, window, [2, 9, 30])
    assert one_pass
    for budget, got in results.items():
        assert_same(got, result_of(engine, long_prompt, replace(window, budget=budget)))


def test_a_chat_reuses_the_cache_of_both_models(engine, tiny_model, draft_model, prompts):
    _, short_prompt, _ = prompts
    spec = Engine.load(str(tiny_model), draft_model=str(draft_model))
    conversation = spec.new_conversation_cache()
    window = ShiftedWindow(budget=20, answer_tokens=5)
    first = result_of(spec, short_prompt, window, conversation=conversation)
    follow = short_prompt + first.thinking_token_ids + engine.encode(" and once more")
    second = result_of(spec, follow, window, conversation=conversation)
    assert second.cached_prompt_tokens >= len(short_prompt)
    assert_same(second, result_of(engine, follow, window))
    layers = len(spec.model.layers)
    assert conversation.cache[0].offset == conversation.cache[layers].offset  # both caches at one point


def test_a_draft_with_another_tokenizer_is_refused_in_one_line(tiny_model, tmp_path):
    other = tiny(tmp_path, {"seed": 3, "hidden_size": 32, "num_hidden_layers": 1, "vocab_target": 500}, "other")
    with pytest.raises(Z1Error, match="tokenizer does not match"):
        Engine.load(str(tiny_model), draft_model=str(other))
    problem = tmp_path / "p.py"
    problem.write_text("def f(x):\n    return x\n")
    proc = z1("solve", problem, "--model", tiny_model, "--draft-model", other)
    assert proc.returncode == 2
    assert "its tokenizer does not match" in one_line_error(proc)
    proc = z1("solve", problem, "--model", tiny_model, "--num-draft-tokens", "2")
    assert "--num-draft-tokens needs --draft-model" in one_line_error(proc)


def test_solve_json_is_the_same_with_a_draft(tiny_model, draft_model, tmp_path):
    import json

    problem = tmp_path / "p.py"
    problem.write_text('def f(x):\n    """Return x plus 3."""\n')
    args = ["solve", problem, "--model", tiny_model, "--budget", "11", "--answer-tokens", "7", "--json", "--quiet"]
    plain = json.loads(z1(*args).stdout)
    drafted = z1(*args, "--draft-model", draft_model, "--num-draft-tokens", "5")
    assert drafted.returncode == 0, drafted.stderr
    got = json.loads(drafted.stdout)
    for key in ("thinking_token_ids", "hint_token_ids", "answer_token_ids", "reasoning", "answer", "window_hit"):
        assert got[key] == plain[key], key


@pytest.mark.slow
def test_serve_with_a_draft_gives_the_same_reply(engine, tiny_model, draft_model, prompts, session_home):
    import httpx

    from helpers import serve

    messages = [{"role": "user", "content": "Problem 4: add numbers 28"}]
    want = result_of(engine, engine.chat_prompt(messages), ShiftedWindow(budget=9, answer_tokens=5))
    assert want.window_hit and want.answer_token_ids
    with serve(tiny_model, "--draft-model", draft_model, env={"Z1MLX_HOME": str(session_home)}) as (url, _):
        body = {"messages": messages, "thinking_budget": 9, "max_tokens": 5, "return_token_ids": True}
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
        health = httpx.get(f"{url}/health").json()
    assert reply["choices"][0]["message"]["reasoning_content"] == want.thinking_text
    assert reply["z1"]["answer_token_ids"] == want.answer_token_ids
    assert health["parallel"] == 8
