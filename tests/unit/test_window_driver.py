"""The window driver on a scripted token source: every rule of the window, no model."""

import pytest

from z1mlx.backend import Piece, Segment
from z1mlx.events import Continuation, Done, Shift, TextDelta
from z1mlx.window import ShiftedWindow, WindowControl, drive

END = -1  # the script's end-of-turn marker


class ScriptedTokens:
    """A token source that replays a script: token ids to generate, END where the model
    ends its turn. Records what was fed, so tests can check the context."""

    reports_prefill = True

    def __init__(self, script: list[int], exact: bool = True, on_token=None):
        self.script = list(script)
        self.exact_counts = exact
        self.on_token = on_token
        self.context: list[int] = []
        self.feeds: list[tuple[list[int], str, int]] = []
        self.dropped = 0

    def begin(self, prompt):
        self.context = list(prompt)
        return 0

    def stream(self, feed_ids, feed_text, limit, should_stop):
        self.feeds.append((list(feed_ids), feed_text, limit))
        self.context += feed_ids
        out = []
        while True:
            if not self.exact_counts and len(out) >= limit:
                return Segment("length", "".join(map(chr, out)), out, len(out))
            token = self.script.pop(0) if self.script else 0
            self.context.append(token)
            if token == END:
                return Segment("stop", "".join(map(chr, out)), out, len(out))
            out.append(token)
            if self.on_token:
                self.on_token(len(out))
            yield Piece(chr(token), [token], len(out))
            if should_stop(len(out)):
                return Segment("stopped", "".join(map(chr, out)), out, len(out))

    def drop_end(self):
        assert self.context[-1] == END
        self.context.pop()
        self.dropped += 1

    def peak_memory_gb(self):
        return 0.0


def encode(text):
    return [ord(c) for c in text]


def run(source, window, control=None, prompt=(1, 2, 3)):
    events = list(drive(source, list(prompt), window, control, encode))
    assert isinstance(events[-1], Done)
    return events, events[-1].result


def letters(n, start=97):
    return [start + i % 26 for i in range(n)]


def test_ends_inside_the_window():
    source = ScriptedTokens(letters(5) + [END])
    events, result = run(source, ShiftedWindow(budget=10, answer_tokens=4))
    assert result.thinking_token_ids == letters(5) and result.thinking_text == "abcde"
    assert result.finish_reason == "stop" and not result.window_hit and result.answer_tokens == 0
    assert not any(isinstance(e, Shift) for e in events)
    assert [e.tokens for e in events if isinstance(e, TextDelta)] == [1, 2, 3, 4, 5]


def test_the_budget_shifts_exactly_then_the_hint_then_the_answer_cap():
    source = ScriptedTokens(letters(30))
    window = ShiftedWindow(budget=7, answer_tokens=3, hint="!H!")
    events, result = run(source, window)
    assert result.thinking_tokens == 7 and result.thinking_token_ids == letters(7)
    assert result.window_hit and result.shift_reason == "budget" and result.hint == "!H!"
    assert result.hint_token_ids == encode("!H!") and source.feeds[1][0] == encode("!H!")
    assert result.answer_token_ids == letters(10)[7:10] and result.finish_reason == "length"
    shift = next(e for e in events if isinstance(e, Shift))
    assert shift.thinking_tokens == 7 and shift.reason == "budget"
    assert result.text == "abcdefg!H!hij"


def test_budget_zero_feeds_the_hint_at_once():
    source = ScriptedTokens(letters(4) + [END])
    _, result = run(source, ShiftedWindow(budget=0, answer_tokens=9, hint="H"))
    assert result.thinking_tokens == 0 and result.window_hit and result.answer_token_ids == letters(4)
    assert result.finish_reason == "stop" and source.feeds == [([ord("H")], "H", 9)]


def test_answer_now_shifts_at_the_next_token():
    control = WindowControl(100)
    source = ScriptedTokens(letters(50), on_token=lambda n: n == 4 and control.answer_now())
    _, result = run(source, ShiftedWindow(budget=100, answer_tokens=2), control)
    assert result.thinking_tokens == 4 and result.shift_reason == "answer_now" and result.budget == 100


def test_a_budget_lowered_below_spent_shifts_now_and_a_raised_one_thinks_on():
    control = WindowControl(10)
    source = ScriptedTokens(letters(50), on_token=lambda n: n == 6 and control.set_budget(3))
    _, result = run(source, ShiftedWindow(budget=10, answer_tokens=1), control)
    assert result.thinking_tokens == 6 and result.budget == 3
    control = WindowControl(5)
    source = ScriptedTokens(letters(50), on_token=lambda n: n == 2 and control.set_budget(9))
    _, result = run(source, ShiftedWindow(budget=5, answer_tokens=1), control)
    assert result.thinking_tokens == 9 and result.budget == 9


def test_cancel_ends_without_a_shift():
    control = WindowControl(100)
    source = ScriptedTokens(letters(50), on_token=lambda n: n == 3 and control.cancel())
    events, result = run(source, ShiftedWindow(budget=100), control)
    assert result.finish_reason == "cancelled" and result.thinking_tokens == 3 and not result.window_hit
    assert not any(isinstance(e, Shift) for e in events)
    control = WindowControl(100)
    control.cancel()
    _, result = run(ScriptedTokens(letters(5)), ShiftedWindow(budget=100), control)
    assert result.finish_reason == "cancelled" and result.thinking_tokens == 0


def test_min_thinking_replaces_early_ends_with_the_continuation():
    source = ScriptedTokens(letters(3) + [END] + letters(2, 65) + [END] + letters(9, 110) + [END])
    window = ShiftedWindow(budget=50, answer_tokens=5, min_thinking=10, continue_text="W")
    events, result = run(source, window)
    # abc, W, AB, W, then the model goes on past 10 thinking tokens and ends by itself.
    assert result.thinking_token_ids == letters(3) + [87] + letters(2, 65) + [87] + letters(9, 110)
    assert result.thinking_text == "abcWABWnopqrstuv"
    assert result.thinking_tokens == 16 and result.finish_reason == "stop" and not result.window_hit
    assert result.forced_continuations == 2 and result.forced_tokens == 2 and result.min_thinking == 10
    assert source.dropped == 2 and END not in source.context[:-1] and source.context[-1] == END
    assert [(e.thinking_tokens, e.text, e.count) for e in events if isinstance(e, Continuation)] == [
        (3, "W", 1),
        (6, "W", 2),
    ]
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta) and e.phase == "thinking")
    assert streamed == result.thinking_text


def test_min_thinking_then_the_budget_still_applies():
    source = ScriptedTokens([97, END] + letters(40))
    _, result = run(source, ShiftedWindow(budget=6, answer_tokens=2, min_thinking=4, continue_text="WW"))
    assert result.thinking_token_ids == [97, 87, 87, 97, 98, 99] and result.window_hit
    assert result.thinking_tokens == 6 and result.shift_reason == "budget"


def test_no_room_to_think_longer_means_the_window_is_full():
    source = ScriptedTokens(letters(4) + [END] + letters(9))
    _, result = run(source, ShiftedWindow(budget=5, answer_tokens=2, min_thinking=5, continue_text="WW"))
    assert result.thinking_tokens == 4 and result.window_hit and result.shift_reason == "budget"
    assert result.forced_continuations == 0


def test_estimated_counts_let_the_source_stop_at_its_limit():
    """A remote stream's count is an estimate: the budget is left to the server's max_tokens."""
    source = ScriptedTokens(letters(30), exact=False)
    _, result = run(source, ShiftedWindow(budget=7, answer_tokens=3))
    assert result.thinking_tokens == 7 and result.answer_tokens == 3
    assert [limit for _, _, limit in source.feeds] == [7, 3]


@pytest.mark.parametrize(
    "kwargs", [{"min_thinking": -1}, {"min_thinking": 2, "continue_text": ""}, {"min_thinking": 1.5}]
)
def test_window_rejects_bad_think_longer_values(kwargs):
    with pytest.raises(ValueError):
        ShiftedWindow(**kwargs)
