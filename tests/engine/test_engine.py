"""The Shifted Thinking Window engine on a tiny random Qwen2 model, against mlx-lm itself."""

import pytest

from z1mlx.events import Continuation, Done, Sampling, Shift, TextDelta
from z1mlx.window import BOXED_HINT, HINT, ShiftedWindow, WindowControl

from helpers import find_prompt, greedy_reference


def run(engine, prompt, window, control=None, on_delta=None, conversation=None):
    events = []
    for event in engine.generate(prompt, window, Sampling(), control=control, conversation=conversation):
        events.append(event)
        if on_delta and isinstance(event, TextDelta):
            on_delta(event, control)
    assert isinstance(events[-1], Done)
    return events, events[-1].result


def test_natural_end_inside_window_equals_mlx_lm_greedy(engine):
    prompt, reference = find_prompt(engine, ends_within=60)
    events, result = run(engine, prompt, ShiftedWindow(budget=100, answer_tokens=50))
    assert result.thinking_token_ids == reference
    assert result.thinking_tokens == len(reference)
    assert not result.window_hit and result.finish_reason == "stop"
    assert result.hint is None and result.answer_tokens == 0
    assert not any(isinstance(e, Shift) for e in events)
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert streamed == result.thinking_text == engine.tokenizer.decode(reference)


def test_window_hit_exact_budget_then_hint_then_answer(engine):
    prompt, reference = find_prompt(engine, longer_than=40)
    budget, cap = 24, 12
    events, result = run(engine, prompt, ShiftedWindow(budget=budget, answer_tokens=cap))
    assert result.window_hit and result.shift_reason == "budget"
    assert result.thinking_token_ids == reference[:budget]
    assert result.hint == HINT and result.hint_token_ids == engine.encode(HINT)
    assert 1 <= result.answer_tokens <= cap
    # The answer equals a from-scratch greedy run over prompt + thinking + hint.
    scratch = greedy_reference(engine, prompt + reference[:budget] + engine.encode(HINT), cap)
    assert result.answer_token_ids == scratch[:cap]
    shifts = [e for e in events if isinstance(e, Shift)]
    assert len(shifts) == 1 and shifts[0].thinking_tokens == budget
    phases = [e.phase for e in events if isinstance(e, TextDelta)]
    assert phases.index("answer") > len([p for p in phases if p == "thinking"]) - 1
    assert result.text == result.thinking_text + HINT + result.answer_text


def test_answer_cap_ends_with_length(engine):
    prompt, _ = find_prompt(engine, longer_than=40)
    _, result = run(engine, prompt, ShiftedWindow(budget=8, answer_tokens=3))
    scratch = greedy_reference(engine, prompt + result.thinking_token_ids + engine.encode(HINT), 10)
    if len(scratch) >= 3:
        assert result.answer_tokens == 3 and result.finish_reason == "length"
    else:
        assert result.finish_reason == "stop"


def test_budget_zero_answers_at_once(engine):
    prompt, _ = find_prompt(engine, longer_than=40)
    events, result = run(engine, prompt, ShiftedWindow(budget=0, answer_tokens=6))
    assert isinstance(events[0], Shift) and events[0].thinking_tokens == 0
    assert result.thinking_tokens == 0 and result.window_hit
    assert result.answer_token_ids == greedy_reference(engine, prompt + engine.encode(HINT), 6)[:6]


def test_boxed_hint_is_used_verbatim(engine):
    prompt, _ = find_prompt(engine, longer_than=40)
    _, result = run(engine, prompt, ShiftedWindow(budget=4, answer_tokens=4, hint=BOXED_HINT))
    assert result.hint == BOXED_HINT and result.hint_token_ids == engine.encode(BOXED_HINT)


def test_answer_now_shifts_at_the_next_token(engine):
    prompt, reference = find_prompt(engine, longer_than=40)

    def press_answer_now(delta, control):
        if delta.phase == "thinking" and delta.tokens == 5:
            control.answer_now()

    control = WindowControl(budget=1000)
    _, result = run(engine, prompt, ShiftedWindow(budget=1000, answer_tokens=5), control, press_answer_now)
    assert result.thinking_tokens == 5 and result.shift_reason == "answer_now"
    assert result.answer_token_ids == greedy_reference(engine, prompt + reference[:5] + engine.encode(HINT), 5)[:5]


def test_budget_lowered_below_spent_shifts_now(engine):
    prompt, reference = find_prompt(engine, longer_than=40)

    def lower(delta, control):
        if delta.phase == "thinking" and delta.tokens == 9:
            control.set_budget(4)

    control = WindowControl(budget=30)
    _, result = run(engine, prompt, ShiftedWindow(budget=30, answer_tokens=4), control, lower)
    assert result.thinking_tokens == 9 and result.window_hit and result.budget == 4
    assert result.thinking_token_ids == reference[:9]


def test_budget_raised_mid_run_extends_window(engine):
    prompt, reference = find_prompt(engine, longer_than=40)

    def raise_budget(delta, control):
        if delta.phase == "thinking" and delta.tokens == 2:
            control.set_budget(20)

    control = WindowControl(budget=5)
    _, result = run(engine, prompt, ShiftedWindow(budget=5, answer_tokens=2), control, raise_budget)
    assert result.thinking_token_ids == reference[:20]


def test_cancel_stops_generation(engine):
    prompt, reference = find_prompt(engine, longer_than=40)

    def cancel(delta, control):
        if delta.tokens == 7:
            control.cancel()

    control = WindowControl(budget=100)
    events, result = run(engine, prompt, ShiftedWindow(budget=100), control, cancel)
    assert result.finish_reason == "cancelled" and not result.window_hit
    assert result.thinking_token_ids == reference[:7]
    assert not any(isinstance(e, Shift) for e in events)


def test_streamed_text_has_no_broken_utf8_at_the_shift(engine):
    prompt, _ = find_prompt(engine, longer_than=40)
    events, result = run(engine, prompt, ShiftedWindow(budget=17, answer_tokens=9))
    thinking = "".join(e.text for e in events if isinstance(e, TextDelta) and e.phase == "thinking")
    answer = "".join(e.text for e in events if isinstance(e, TextDelta) and e.phase == "answer")
    assert thinking == engine.tokenizer.decode(result.thinking_token_ids)
    assert answer == engine.tokenizer.decode(result.answer_token_ids)
    for text in (thinking, answer):
        text.encode("utf-8")  # strings only, never raw partial bytes


def test_second_turn_reuses_the_cache_and_matches_a_fresh_run(engine):
    prompt, _ = find_prompt(engine, longer_than=40)
    conversation = engine.new_conversation_cache()
    _, first = run(engine, prompt, ShiftedWindow(budget=6, answer_tokens=4), conversation=conversation)
    follow_up = engine.chat_prompt(
        [
            {"role": "user", "content": "Problem 0: add numbers 0"},
            {"role": "assistant", "content": first.text},
            {"role": "user", "content": "And now?"},
        ]
    )
    _, second = run(engine, follow_up, ShiftedWindow(budget=6, answer_tokens=4), conversation=conversation)
    _, fresh = run(engine, follow_up, ShiftedWindow(budget=6, answer_tokens=4))
    assert second.cached_prompt_tokens > len(prompt) // 2
    assert second.thinking_token_ids == fresh.thinking_token_ids
    assert second.answer_token_ids == fresh.answer_token_ids


def test_stats_are_filled(engine):
    prompt, _ = find_prompt(engine, longer_than=40)
    _, result = run(engine, prompt, ShiftedWindow(budget=10, answer_tokens=5))
    assert result.prompt_tokens == len(prompt)
    assert result.ttft_s > 0 and result.prompt_tps > 0 and result.generation_tps > 0
    assert result.peak_memory_gb >= 0


@pytest.mark.parametrize("kwargs", [{"budget": -1}, {"answer_tokens": 0}, {"hint": ""}, {"budget": 1.5}])
def test_window_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        ShiftedWindow(**kwargs)


def test_controls_from_another_thread(endless_model):
    """The UI thread presses keys while a worker thread generates."""
    import threading
    import time

    from z1mlx.engine import Engine

    endless = Engine.load(str(endless_model))
    prompt = endless.chat_prompt([{"role": "user", "content": "Think forever."}])
    control = WindowControl(budget=10**6)
    results = []

    def worker():
        results.extend(endless.generate(prompt, ShiftedWindow(budget=10**6, answer_tokens=8), control=control))

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.time() + 30
    while time.time() < deadline and not any(isinstance(e, TextDelta) and e.tokens >= 20 for e in list(results)):
        time.sleep(0.01)
    control.answer_now()
    thread.join(timeout=60)
    result = results[-1].result
    assert result.window_hit and result.shift_reason == "answer_now"
    assert result.thinking_tokens >= 20 and result.answer_tokens == 8 and result.finish_reason == "length"


def test_a_failing_step_resets_the_conversation_cache(tiny_model):
    from z1mlx.engine import Engine

    engine = Engine.load(str(tiny_model))
    prompt = engine.chat_prompt([{"role": "user", "content": "Problem 3: add numbers 21"}])
    conversation = engine.new_conversation_cache()
    real_model = engine.model
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("device lost")
        return real_model(*args, **kwargs)

    engine.model = failing
    with pytest.raises(RuntimeError):
        list(engine.generate(prompt, ShiftedWindow(budget=20, answer_tokens=4), conversation=conversation))
    engine.model = real_model
    assert conversation.tokens == [] and conversation.cache[0].offset == 0
    _, again = run(engine, prompt, ShiftedWindow(budget=20, answer_tokens=4), conversation=conversation)
    _, fresh = run(engine, prompt, ShiftedWindow(budget=20, answer_tokens=4))
    assert again.thinking_token_ids == fresh.thinking_token_ids


@pytest.mark.parametrize("kwargs", [{"seed": -1}, {"repetition_penalty": -1.0}, {"repetition_penalty": float("nan")}])
def test_sampling_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        Sampling(**kwargs)


def test_window_fits_the_context_budget_first_then_answer():
    from z1mlx.window import fit_to_context

    window = ShiftedWindow(budget=200, answer_tokens=50)
    assert fit_to_context(window, 100, 10, 4096) is window
    assert fit_to_context(window, 3900, 10, 4096) == ShiftedWindow(136, 50)
    assert fit_to_context(window, 4050, 10, 4096) == ShiftedWindow(0, 36)
    assert fit_to_context(window, 4090, 10, 4096) is None


def greedy_until_end(engine, prompt: list[int], limit: int) -> tuple[list[int], bool]:
    """mlx-lm's greedy tokens for `prompt`, at most `limit`; True if it ended its turn."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    out = []
    for token, _ in generate_step(mx.array(prompt), engine.model, max_tokens=limit + 1):
        if token in engine.eos_token_ids:
            return out, True
        if len(out) == limit:
            break
        out.append(token)
    return out, False


def test_think_longer_equals_mlx_lm_over_the_continued_text(engine):
    """min-thinking: each early end token is dropped (text and cache) and the continuation
    fed; the result equals mlx-lm's greedy run from scratch over prompt + the thinking
    before each end + the continuation."""
    prompt, reference = find_prompt(engine, ends_within=60)
    min_thinking, budget = len(reference) + 30, 300
    window = ShiftedWindow(budget=budget, answer_tokens=8, min_thinking=min_thinking)
    events, result = run(engine, prompt, window)
    continuation = engine.encode("\n\nWait")
    expected, forced = [], 0
    while True:
        more, ended = greedy_until_end(engine, prompt + expected, budget - len(expected))
        expected += more
        if not ended or len(expected) >= min_thinking:
            break
        expected += continuation
        forced += 1
    assert forced >= 1
    assert result.thinking_token_ids == expected
    assert result.forced_continuations == forced and result.forced_tokens == forced * len(continuation)
    assert result.thinking_tokens == len(expected) >= min_thinking or result.window_hit
    assert result.thinking_text.count("\n\nWait") >= forced
    assert sum(isinstance(e, Continuation) for e in events) == forced
    if result.window_hit:  # the answer continues the same cache: a from-scratch run agrees
        scratch = greedy_reference(engine, prompt + expected + engine.encode(HINT), 8)
        assert result.answer_token_ids == scratch[:8]


def test_a_pooled_cache_keeps_each_conversations_prefix(engine):
    """A server's cache (mlx-lm's LRUPromptCache): prompts from two conversations alternate,
    and each resent conversation prefills only its new tail; results equal fresh runs."""
    window = ShiftedWindow(budget=6, answer_tokens=3)
    first = engine.chat_prompt([{"role": "user", "content": "Problem 1: add numbers 7"}])
    other = engine.chat_prompt([{"role": "user", "content": "A different question entirely, about lists"}])
    pooled = engine.new_conversation_cache(pool=4)
    _, a = run(engine, first, window, conversation=pooled)
    _, b = run(engine, other, window, conversation=pooled)
    follow_up = first + a.thinking_token_ids + engine.encode(" and then?")
    _, c = run(engine, follow_up, window, conversation=pooled)
    assert a.cached_prompt_tokens == 0 and b.cached_prompt_tokens < len(other)
    assert c.cached_prompt_tokens >= len(first) + len(a.thinking_token_ids) - 1  # first's cache came back
    _, fresh = run(engine, follow_up, window)
    assert c.thinking_token_ids == fresh.thinking_token_ids and c.answer_token_ids == fresh.answer_token_ids
    plain = engine.new_conversation_cache()  # the one-slot cache loses `first` to `other`
    run(engine, first, window, conversation=plain)
    run(engine, other, window, conversation=plain)
    _, d = run(engine, follow_up, window, conversation=plain)
    assert d.cached_prompt_tokens < c.cached_prompt_tokens
