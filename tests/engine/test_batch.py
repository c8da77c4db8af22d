"""Many sequences in one mlx-lm BatchGenerator, each under its own window, equal their
sequential runs token for token (tiny float32 model): ending inside the window, shifting,
thinking longer, answering now, cancelled, joining late, dropped, and budget sweeps."""

from dataclasses import replace

import pytest

from z1mlx.batch import Batch, generate_all
from z1mlx.events import Done, Sampling, Shift, TextDelta
from z1mlx.window import ShiftedWindow, WindowControl

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
    "forced_continuations",
    "forced_tokens",
)


def assert_same(got, want):
    for name in FIELDS:
        assert getattr(got, name) == getattr(want, name), name


def prompt_for(engine, i: int) -> list[int]:
    return engine.chat_prompt([{"role": "user", "content": f"Problem {i}: add numbers {i * 7}"}])


def sequential(engine, prompt, window, act_at=None, action=None):
    """One `Engine.generate`, with `action(control)` when thinking reaches `act_at` tokens."""
    control = WindowControl(window.budget)
    result, events = None, []
    for event in engine.generate(prompt, window, control=control):
        events.append(event)
        if act_at is not None and isinstance(event, TextDelta) and event.phase == "thinking":
            if event.tokens == act_at:
                action(control)
        if isinstance(event, Done):
            result = event.result
    return result, events


@pytest.fixture(scope="module")
def prompts(engine):
    long_prompt, _ = find_prompt(engine, longer_than=60)
    short_prompt, short_reply = find_prompt(engine, ends_within=30)
    return long_prompt, short_prompt, len(short_reply)


def test_a_mixed_batch_equals_its_sequential_runs(engine, prompts):
    long_prompt, short_prompt, natural = prompts
    cases = {
        "ends_inside": (short_prompt, ShiftedWindow(budget=200, answer_tokens=8), None, None),
        "shifts": (long_prompt, ShiftedWindow(budget=17, answer_tokens=9), None, None),
        "budget_0": (prompt_for(engine, 3), ShiftedWindow(budget=0, answer_tokens=5), None, None),
        "thinks_longer": (
            short_prompt,
            ShiftedWindow(budget=200, answer_tokens=6, min_thinking=natural + 12),
            None,
            None,
        ),
        "answers_now": (long_prompt, ShiftedWindow(budget=500, answer_tokens=7), 11, WindowControl.answer_now),
        "cancelled": (long_prompt, ShiftedWindow(budget=500, answer_tokens=7), 9, WindowControl.cancel),
        "late": (prompt_for(engine, 5), ShiftedWindow(budget=23, answer_tokens=6), None, None),
    }
    want = {name: sequential(engine, p, w, at, act)[0] for name, (p, w, at, act) in cases.items()}
    assert want["shifts"].window_hit and want["shifts"].thinking_tokens == 17
    assert not want["ends_inside"].window_hit and want["ends_inside"].finish_reason == "stop"
    assert want["thinks_longer"].forced_continuations >= 1
    assert want["answers_now"].shift_reason == "answer_now" and want["answers_now"].thinking_tokens == 11
    assert want["cancelled"].finish_reason == "cancelled" and want["cancelled"].thinking_tokens == 9

    batch = Batch(engine, size=8)
    got, sequences, shifts = {}, {}, {}
    for name, (prompt, window, _, _) in cases.items():
        if name != "late":
            sequences[name] = batch.add(prompt, window, key=name)
    steps = 0
    while len(batch):
        steps += 1
        if steps == 6:  # joins while the others run
            prompt, window, _, _ = cases["late"]
            sequences["late"] = batch.add(prompt, window, key="late")
        for sequence, item in batch.step():
            assert not isinstance(item, BaseException), item
            _, _, act_at, action = cases[sequence.key]
            if isinstance(item, TextDelta) and item.phase == "thinking" and item.tokens == act_at:
                action(sequence.control)  # as the sequential consumer did: after seeing that token
            if isinstance(item, Shift):
                shifts[sequence.key] = item.thinking_tokens
            if isinstance(item, Done):
                got[sequence.key] = item.result
    assert set(got) == set(cases)
    for name in cases:
        assert_same(got[name], want[name])
    assert shifts == {n: want[n].thinking_tokens for n in cases if want[n].window_hit}
    assert got["late"].prompt_tokens == len(cases["late"][0])


def test_the_batch_prefills_only_the_hint_at_the_shift(engine, prompts):
    long_prompt, _, _ = prompts
    batch = Batch(engine, size=2)
    window = ShiftedWindow(budget=10, answer_tokens=4)
    sequence = batch.add(long_prompt, window)
    fed = []
    original = batch._insert

    def spy(source, feed):
        fed.append(list(feed))
        original(source, feed)

    batch._insert = spy
    list(batch.run())
    (result,) = sequence.results
    assert result.window_hit
    assert fed == [result.hint_token_ids]  # after the prompt went in: only the hint, never prompt + thinking
    assert sequence.source.tokens[: len(long_prompt)] == long_prompt


def test_sweeps_in_a_batch_equal_separate_runs(engine, prompts):
    long_prompt, short_prompt, _ = prompts
    window = ShiftedWindow(budget=999, answer_tokens=6)
    budgets = [0, 4, 19, 45]
    batch = Batch(engine, size=4)
    sweeps = {
        name: batch.add_sweep(p, window, budgets, key=name)
        for name, p in (("long", long_prompt), ("short", short_prompt))
    }
    list(batch.run())
    for name, prompt in (("long", long_prompt), ("short", short_prompt)):
        results = {r.budget: r for r in sweeps[name].results}
        assert sorted(results) == budgets
        for budget in budgets:
            assert_same(results[budget], sequential(engine, prompt, replace(window, budget=budget))[0])


def test_a_dropped_sequence_leaves_and_the_others_are_unchanged(engine, prompts):
    long_prompt, short_prompt, _ = prompts
    window = ShiftedWindow(budget=30, answer_tokens=6)
    batch = Batch(engine, size=4)
    keep = batch.add(short_prompt, window, key="keep")
    gone = batch.add(long_prompt, window, key="gone")
    other = batch.add(long_prompt, replace(window, budget=12), key="other")
    seen_after_drop = []
    for step in range(400):
        items = batch.step()
        if step == 4:
            batch.drop(gone)
        elif step > 4:
            seen_after_drop += [s.key for s, _ in items]
        if not len(batch):
            break
    assert gone.done and not gone.results and "gone" not in seen_after_drop
    assert not batch._in_generator
    assert_same(keep.results[0], sequential(engine, short_prompt, window)[0])
    assert_same(other.results[0], sequential(engine, long_prompt, replace(window, budget=12))[0])


def test_generate_all_keeps_at_most_size_in_the_batch(engine):
    batch = Batch(engine, size=2)
    window = ShiftedWindow(budget=8, answer_tokens=3)
    jobs = [(i, prompt_for(engine, i), window, Sampling()) for i in range(5)]
    largest = 0
    original = batch.step

    def watched():
        nonlocal largest
        largest = max(largest, len(batch))
        return original()

    batch.step = watched
    got = dict(generate_all(batch, jobs))
    assert sorted(got) == list(range(5)) and largest == 2
    for key, prompt, window, _ in jobs:
        assert_same(got[key], sequential(engine, prompt, window)[0])


def test_a_shared_prefix_comes_from_the_prompt_cache(engine):
    batch = Batch(engine, size=2, prompt_cache_size=4)
    first = engine.chat_prompt([{"role": "user", "content": "Problem 1: add numbers 7"}])
    window = ShiftedWindow(budget=6, answer_tokens=3)
    a = batch.add(first, window)
    list(batch.run())
    longer = first + a.results[0].thinking_token_ids + engine.encode(" and then")
    b = batch.add(longer, window)
    list(batch.run())
    assert a.results[0].cached_prompt_tokens == 0
    assert b.results[0].cached_prompt_tokens >= len(first)
    assert_same(b.results[0], sequential(engine, longer, window)[0])
