"""A budget sweep from one phase 1 equals separate runs, token for token (tiny float32 model)."""

from dataclasses import replace

import pytest

from z1mlx.events import Done, Sampling
from z1mlx.window import ShiftedWindow, sweep

from helpers import find_prompt

FIELDS = (
    "prompt_token_ids",
    "thinking_token_ids",
    "hint_token_ids",
    "answer_token_ids",
    "thinking_text",
    "answer_text",
    "thinking_tokens",
    "answer_tokens",
    "window_hit",
    "finish_reason",
    "shift_reason",
    "budget",
    "hint",
    "answer_cap",
)


def separate(engine, prompt, window):
    return next(e.result for e in engine.generate(prompt, window) if isinstance(e, Done))


def assert_same(got, want):
    for name in FIELDS:
        assert getattr(got, name) == getattr(want, name), name


@pytest.mark.parametrize("kind", ["long", "short"])
def test_every_budget_equals_its_own_run(engine, kind):
    if kind == "long":  # thinks past every budget of the sweep
        prompt, _ = find_prompt(engine, longer_than=40)
    else:  # ends by itself between the budgets
        prompt, _ = find_prompt(engine, ends_within=30)
    window = ShiftedWindow(budget=999, answer_tokens=6)
    budgets = [0, 3, 17, 40]
    results, one_pass = engine.sweep(prompt, window, budgets)
    assert one_pass and sorted(results) == budgets
    for budget in budgets:
        assert_same(results[budget], separate(engine, prompt, replace(window, budget=budget)))
    natural = results[40]
    if kind == "short":
        assert not natural.window_hit and natural.thinking_tokens < 30
        longest = max(b for b in budgets if b <= natural.thinking_tokens)
        assert results[longest].window_hit  # budgets it thought past shift; those above end by themselves
    else:
        assert all(results[b].window_hit and results[b].thinking_tokens == b for b in budgets)


def test_the_sweep_prefills_phase_one_once(engine):
    """One phase 1 of the largest budget: every other budget feeds only its hint."""
    from z1mlx.engine import LocalTokens

    prompt, _ = find_prompt(engine, longer_than=40)
    source = LocalTokens(engine, engine.new_conversation_cache(), Sampling())
    fed: list[int] = []
    stream = source.stream

    def counting(feed_ids, feed_text, limit, should_stop):
        fed.append(len(source.pending) + len(feed_ids))
        return (yield from stream(feed_ids, feed_text, limit, should_stop))

    source.stream = counting  # type: ignore[method-assign]
    hint = engine.encode(ShiftedWindow().hint)
    results = list(sweep(source, prompt, ShiftedWindow(budget=40, answer_tokens=4), [10, 20, 40], engine.encode))
    assert [r.budget for r in results] == [40, 20, 10]
    assert fed == [len(prompt), len(hint), len(hint), len(hint)]  # prompt, then the top's hint, then one each


def test_sampled_or_think_longer_falls_back_to_separate_runs(engine):
    prompt, _ = find_prompt(engine, longer_than=40)
    window = ShiftedWindow(budget=64, answer_tokens=4)
    results, one_pass = engine.sweep(prompt, window, [8, 16], Sampling(temperature=0.8, seed=3))
    assert not one_pass and sorted(results) == [8, 16] and results[8].thinking_tokens == 8
    results, one_pass = engine.sweep(prompt, replace(window, min_thinking=4), [8, 16])
    assert not one_pass
    assert_same(results[16], separate(engine, prompt, replace(window, budget=16, min_thinking=4)))
