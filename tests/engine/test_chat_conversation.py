"""Multi-turn conversations on the real engine (tiny random model): cache reuse, storage,
regenerate, answer-now after a stop, partial flushes."""

import pytest

from z1mlx.chat.conversation import Conversation, describe_shift
from z1mlx.chat.history import History
from z1mlx.errors import Z1Error
from z1mlx.events import Done, Shift, TextDelta
from z1mlx.window import HINT, WindowControl

from helpers import StepClock, greedy_reference


@pytest.fixture
def history(tmp_path):
    store = History(tmp_path / "h.sqlite3")
    yield store
    store.close()


def run(events, on_delta=None):
    events = list(events) if on_delta is None else _consume(events, on_delta)
    assert isinstance(events[-1], Done)
    return events, events[-1].result


def _consume(events, on_delta):
    out = []
    for event in events:
        out.append(event)
        if isinstance(event, TextDelta):
            on_delta(event)
    return out


def test_first_turn_is_the_engine_on_the_rendered_chat(engine, history):
    chat = Conversation(engine, history, answer_tokens=8)
    _, result = run(chat.send("hello there", WindowControl(16)))
    assert result.prompt_token_ids == engine.chat_prompt([{"role": "user", "content": "hello there"}])
    reference = greedy_reference(engine, result.prompt_token_ids, 16)
    assert result.thinking_token_ids == reference[:16]
    assert [t.role for t in chat.turns] == ["user", "assistant"]
    # What the model sees next turn is the whole reply: thinking + hint + answer.
    assert chat.turns[1].content == result.text == result.thinking_text + HINT + result.answer_text


def test_each_turn_prefills_only_the_new_part(engine, history):
    chat = Conversation(engine, history, answer_tokens=8)
    previous = None
    for i in range(4):
        _, result = run(chat.send(f"question {i}", WindowControl(16)))
        if previous is not None:
            # Everything the cache held (last prompt + reply) is reused, token for token.
            held = (
                previous.prompt_token_ids
                + previous.thinking_token_ids
                + previous.hint_token_ids
                + previous.answer_token_ids
            )
            assert result.prompt_token_ids[: len(held)] == held
            assert result.cached_prompt_tokens >= len(held)
            new_part = f"<|im_end|>\n<|im_start|>user\nquestion {i}<|im_end|>\n<|im_start|>assistant\n"
            assert result.prompt_tokens - result.cached_prompt_tokens <= len(engine.encode(new_part))
        previous = result


def test_messages_are_stored_as_they_complete(engine, history):
    chat = Conversation(engine, history, system="be brief", answer_tokens=8)
    _, result = run(chat.send("store me", WindowControl(16)))
    stored = history.load(chat.id)
    assert stored.info.system == "be brief" and stored.info.title == "store me"
    user, reply = stored.messages
    assert user.content == "store me"
    assert reply.complete and reply.finish_reason == result.finish_reason
    assert (reply.thinking, reply.hint, reply.answer) == (result.thinking_text, HINT, result.answer_text)
    assert (reply.thinking_tokens, reply.answer_tokens, reply.budget) == (16, result.answer_tokens, 16)
    assert reply.content == result.text


def test_partial_reply_is_flushed_at_most_once_per_interval(engine, history, monkeypatch):
    writes = []
    real_update = history.update_message
    monkeypatch.setattr(history, "update_message", lambda m: (writes.append(m.thinking_tokens), real_update(m)))
    # Each clock reading advances 0.25 s: one flush per four readings, not one per token.
    chat = Conversation(engine, history, answer_tokens=4, clock=StepClock(step=0.25), flush_interval=1.0)
    seen = []

    def check_stored(event):
        seen.append(event.tokens)
        if event.tokens == 12 and event.phase == "thinking":
            row = history.load(chat.id).messages[-1]
            assert not row.complete and 0 < row.thinking_tokens <= 12
            assert row.content == row.thinking

    run(chat.send("flush me", WindowControl(24)), on_delta=check_stored)
    partial_writes = writes[:-1]
    assert 3 <= len(partial_writes) <= len(seen) // 4 + 1
    assert partial_writes == sorted(partial_writes)
    assert history.load(chat.id).messages[-1].complete


def test_regenerate_replaces_the_reply(engine, history):
    chat = Conversation(engine, history, answer_tokens=8)
    run(chat.send("again please", WindowControl(16)))
    _, result = run(chat.regenerate(WindowControl(8)))
    assert [t.role for t in chat.turns] == ["user", "assistant"]
    assert chat.turns[-1].thinking_tokens == 8 and result.thinking_tokens == 8
    # Same prompt, so the whole prompt comes from the cache (less the token fed again).
    assert result.cached_prompt_tokens == result.prompt_tokens - 1
    stored = history.load(chat.id).messages
    assert [m.role for m in stored] == ["user", "assistant"]
    assert stored[-1].thinking_tokens == 8 and stored[-1].content == result.text


def test_regenerate_needs_a_user_message(engine):
    with pytest.raises(Z1Error, match="nothing to regenerate"):
        Conversation(engine).regenerate(WindowControl(8))


def test_stop_then_answer_now_finishes_the_same_reply(endless_engine, history):
    chat = Conversation(endless_engine, history, answer_tokens=6)
    control = WindowControl(10_000)

    def stop_at_20(event):
        if event.tokens == 20:
            control.cancel()

    _, stopped = run(chat.send("think forever", control), on_delta=stop_at_20)
    assert stopped.finish_reason == "cancelled" and stopped.thinking_tokens == 20
    assert chat.can_answer_now
    events, result = run(chat.answer_now(WindowControl(10_000)))
    shift = next(e for e in events if isinstance(e, Shift))
    assert shift.reason == "answer_now" and result.thinking_tokens == 0 and result.answer_tokens == 6
    # The answer continues from the cache: prompt + the 20 thinking tokens, then the hint.
    assert result.prompt_token_ids == stopped.prompt_token_ids + stopped.thinking_token_ids
    assert result.cached_prompt_tokens == result.prompt_tokens - 1
    expected = greedy_reference(endless_engine, result.prompt_token_ids + endless_engine.encode(HINT), 6)
    assert result.answer_token_ids == expected
    turn = chat.turns[-1]
    assert turn.thinking_tokens == 20 and turn.hint == HINT and turn.finish_reason == "length"
    assert turn.content == stopped.thinking_text + HINT + result.answer_text
    stored = history.load(chat.id).messages[-1]
    assert stored.thinking == stopped.thinking_text and stored.answer == result.answer_text and stored.complete
    assert stored.shift_reason == "answer_now"  # a reopened conversation still says why it shifted
    assert not chat.can_answer_now


def test_answer_now_needs_a_stopped_reply(engine):
    with pytest.raises(Z1Error, match="no stopped reply"):
        Conversation(engine).answer_now(WindowControl(8))


def test_stop_before_the_first_token_keeps_nothing(engine, history):
    chat = Conversation(engine, history)
    control = WindowControl(16)
    control.cancel()
    _, result = run(chat.send("never mind", control))
    assert result.finish_reason == "cancelled"
    assert [t.role for t in chat.turns] == ["user"]
    assert [m.role for m in history.load(chat.id).messages] == ["user"]


def test_a_consumer_that_stops_listening_leaves_a_cancelled_partial(endless_engine, history):
    chat = Conversation(endless_engine, history)
    events = chat.send("walk away", WindowControl(10_000))
    for event in events:
        if isinstance(event, TextDelta) and event.tokens == 5:
            break
    events.close()
    stored = history.load(chat.id).messages[-1]
    assert stored.finish_reason == "cancelled" and stored.complete and stored.thinking


def test_resume_continues_a_stored_conversation(engine, history):
    chat = Conversation(engine, history, system="sys", answer_tokens=8)
    run(chat.send("one", WindowControl(16)))
    again = Conversation(engine, history)
    again.resume(chat.id)
    assert again.system == "sys" and again.messages() == chat.messages()
    _, result = run(again.send("two", WindowControl(16)))
    assert result.prompt_token_ids == engine.chat_prompt(again.messages()[:-1])
    assert [m.role for m in history.load(chat.id).messages] == ["user", "assistant"] * 2


def test_new_starts_over(engine, history):
    chat = Conversation(engine, history, answer_tokens=8)
    run(chat.send("one", WindowControl(16)))
    first = chat.id
    chat.new()
    assert chat.turns == [] and chat.id is None
    run(chat.send("two", WindowControl(16)))
    assert chat.id != first and len(history.conversations()) == 2


def test_budget_zero_answers_at_once(engine, history):
    chat = Conversation(engine, history, answer_tokens=5)
    events, result = run(chat.send("quick", WindowControl(0)))
    assert result.thinking_tokens == 0 and result.window_hit
    assert chat.turns[-1].reasoning_and_answer == ("", result.answer_text)


def test_empty_message_is_refused(engine):
    with pytest.raises(Z1Error, match="empty"):
        Conversation(engine).send("  \n", WindowControl(8))


def test_works_without_a_history(engine):
    chat = Conversation(engine, answer_tokens=4)
    run(chat.send("no store", WindowControl(8)))
    assert chat.id is None and chat.turns[-1].complete


def test_shift_labels():
    assert describe_shift("budget", 64) == "window full at 64 tokens"
    assert describe_shift("budget", 0) == "answer at once (budget 0)"
    assert describe_shift("answer_now", 3) == "answer now at 3 tokens"
    assert describe_shift(None, 3) == "window shifted at 3 tokens"
