"""Pilot tests of `z1 chat`'s TUI on the real engine (tiny random models).

Fakes only at the edges: the clipboard, and a loader that waits for the test.
"""

import re
import threading
import time

import pytest

from z1mlx.chat.history import History, StoredMessage
from z1mlx.chat.settings import load_settings
from z1mlx.tui import budget_scale
from z1mlx.tui.app import ChatApp
from z1mlx.tui.messages import AssistantMessage, UserMessage
from z1mlx.tui.prompt import PromptInput
from z1mlx.tui.screens import HelpScreen, HistoryScreen
from z1mlx.tui.slider import BudgetSlider
from z1mlx.tui.stream import SEPARATOR
from z1mlx.window import HINT

from helpers import GatedEngine, StepClock, wait_until

pytestmark = pytest.mark.slow  # real subprocesses, servers or training: see `make test-fast`

SIZE = (100, 32)


def make_app(engine, home, **options) -> ChatApp:
    options.setdefault("answer_tokens", 6)
    return ChatApp(engine, history=History(home / "history.sqlite3"), **options)


async def send(pilot, text: str) -> None:
    prompt = pilot.app.query_one(PromptInput)
    prompt.text = text
    prompt.focus()
    await pilot.press("enter")


async def reply_done(pilot, timeout: float = 30.0):
    app = pilot.app
    await wait_until(pilot, lambda: not app.busy, timeout, "the reply to finish")
    await pilot.pause()
    return app.conversation.turns[-1]


def text_of(widget) -> str:
    return str(widget.render())


def header(message: AssistantMessage) -> str:
    return text_of(message.query_one(".reasoning-header"))


async def test_send_shows_reasoning_then_the_answer(engine, home):
    gated = GatedEngine(engine, pause_after=5)
    app = make_app(gated, home, budget=16)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Explain recursion")
        message = app.query_one(AssistantMessage)
        await wait_until(pilot, lambda: "thinking 5 / 16" in header(message), what="the live counter")
        reasoning, answer = message.query_one(".reasoning"), message.query_one(".answer")
        assert reasoning.display and reasoning.region.height > 0 and text_of(reasoning).strip()
        assert answer.region.height == 0
        assert text_of(app.query_one("#status")).split(SEPARATOR)[1] == "thinking"
        gated.release()
        turn = await reply_done(pilot)
        assert [type(w) for w in app.query("UserMessage, AssistantMessage")] == [UserMessage, AssistantMessage]
        assert text_of(app.query_one(UserMessage)) == "Explain recursion"
        # The answer is shown; the reasoning folded away when it started.
        assert answer.region.height > 0 and message.query_one(".reasoning").region.height == 0
        assert app.query_one(".answer").source == turn.reasoning_and_answer[1]
        assert "idle" in text_of(app.query_one("#status"))


async def test_small_budget_gives_exactly_that_many_thinking_tokens_and_the_shift_mark(engine, home):
    app = make_app(engine, home, budget=12)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Sort a list in Python")
        turn = await reply_done(pilot)
        assert turn.thinking_tokens == 12 and turn.hint == HINT and turn.budget == 12
        message = app.query_one(AssistantMessage)
        assert header(message) == "▸ thought 12 / 12 tokens"
        mark = message.query_one(".shift-mark")
        assert mark.region.height > 0
        assert text_of(mark) == "── window full at 12 tokens · I overthought it, the final answer should be: ──"
        assert app.query_one(".answer").source == turn.answer


async def test_slider_keys_change_the_next_replys_budget(engine, home):
    app = make_app(engine, home, budget=128)
    async with app.run_test(size=SIZE) as pilot:
        slider = app.query_one(BudgetSlider)
        await pilot.press("ctrl+b")
        assert app.focused is slider
        await pilot.press("right")
        assert slider.value == 256
        await pilot.press("left", "left")
        assert slider.value == 64
        await pilot.press("pageup")
        assert slider.value == 512
        await pilot.press("end")
        assert slider.value == 32768
        await pilot.press("home")
        assert slider.value == 0
        assert text_of(app.query_one("#budget-value")) == "answer at once"
        await pilot.press("right", "right")
        assert text_of(app.query_one("#budget-value")) == "128 tokens"
        await pilot.press("left")
        await send(pilot, "Sort a list in Python")
        turn = await reply_done(pilot)
        assert turn.budget == 64 and app.conversation.last_result.budget == 64
        assert turn.thinking_tokens <= 64


async def test_slider_mouse_click_and_drag_change_the_next_replys_budget(engine, home):
    app = make_app(engine, home, budget=2048)
    async with app.run_test(size=SIZE) as pilot:
        slider = app.query_one(BudgetSlider)
        width = slider.content_size.width
        await pilot.click(BudgetSlider, offset=(0, 0))
        assert slider.value == 0
        await pilot.click(BudgetSlider, offset=(width - 1, 0))
        assert slider.value == 32768
        # Drag: press near the left end, move right while held, release.
        x1, x2 = 2, round(width * 3 / 17)
        await pilot.mouse_down(BudgetSlider, offset=(x1, 0))
        assert slider.value == budget_scale.from_cell(x1, width)
        await pilot.hover(BudgetSlider, offset=(x2, 0))
        assert slider.value == budget_scale.from_cell(x2, width)
        await pilot.mouse_up(BudgetSlider, offset=(x2, 0))
        dragged = slider.value
        assert dragged == budget_scale.STOPS[3]
        assert app.query_one("#budget-value").render().plain.startswith(f"{dragged:,}")
        await send(pilot, "Sort a list in Python")
        turn = await reply_done(pilot)
        assert turn.budget == dragged and app.conversation.last_result.budget == dragged


async def test_slider_during_a_reply_shifts_the_current_window(endless_engine, home):
    app = make_app(endless_engine, home, budget=32768)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Think about it")
        await wait_until(pilot, lambda: app._stream is not None and app._stream.view().thinking_tokens >= 20)
        await pilot.press("ctrl+b", "home")  # budget 0: below what was spent, so shift now
        turn = await reply_done(pilot)
        result = app.conversation.last_result
        assert result.window_hit and result.shift_reason == "budget" and result.budget == 0
        assert 20 <= turn.thinking_tokens < 32768 and turn.answer_tokens == 6
        assert "window full at" in text_of(app.query_one(".shift-mark"))


async def test_answer_now_mid_reply(endless_engine, home):
    app = make_app(endless_engine, home, budget=32768)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Think about it")
        await wait_until(pilot, lambda: app._stream is not None and app._stream.view().thinking_tokens >= 10)
        await pilot.press("ctrl+s")
        turn = await reply_done(pilot)
        result = app.conversation.last_result
        assert result.shift_reason == "answer_now" and turn.hint == HINT and turn.answer_tokens == 6
        assert turn.thinking_tokens >= 10 and turn.finish_reason == "length"
        mark = text_of(app.query_one(".shift-mark"))
        assert mark.startswith(f"── answer now at {turn.thinking_tokens} tokens")


async def test_stop_mid_reply_then_answer_now_finishes_it(endless_engine, home):
    app = make_app(endless_engine, home, budget=32768)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Think about it")
        await wait_until(pilot, lambda: app._stream is not None and app._stream.view().thinking_tokens >= 10)
        await pilot.press("escape")
        turn = await reply_done(pilot)
        assert turn.finish_reason == "cancelled" and turn.thinking_tokens >= 10 and turn.hint is None
        note = app.query_one(".reply-note")
        assert note.display and "stopped while thinking" in text_of(note)
        assert "idle" in text_of(app.query_one("#status"))
        stopped_at = turn.thinking_tokens
        await pilot.press("ctrl+s")
        turn = await reply_done(pilot)
        assert turn.thinking_tokens == stopped_at and turn.hint == HINT and turn.answer_tokens == 6
        assert len(app.query(AssistantMessage)) == 1
        assert text_of(app.query_one(".shift-mark")).startswith(f"── answer now at {stopped_at} tokens")
        assert app.query_one(".answer").source == turn.answer
        assert "stopped" not in text_of(app.query_one(".reply-note"))


async def test_regenerate_replaces_the_reply(engine, home):
    app = make_app(engine, home, budget=16)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Sort a list in Python")
        first = await reply_done(pilot)
        assert first.thinking_tokens == 16
        app.query_one(BudgetSlider).value = 0
        await pilot.press("ctrl+r")
        again = await reply_done(pilot)
        assert again.thinking_tokens == 0 and again.budget == 0
        assert [t.role for t in app.conversation.turns] == ["user", "assistant"]
        assert len(app.query(AssistantMessage)) == 1
        assert header(app.query_one(AssistantMessage)) == "▸ answered at once (budget 0)"
        stored = app.history.load(app.conversation.id).messages
        assert [m.role for m in stored] == ["user", "assistant"] and stored[-1].thinking_tokens == 0


async def test_history_survives_a_restart(engine, home):
    app = make_app(engine, home, budget=16)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Remember me")
        first = await reply_done(pilot)
        conversation_id = app.conversation.id
    app = make_app(engine, home, resume=conversation_id)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert [text_of(w) for w in app.query(UserMessage)] == ["Remember me"]
        message = app.query_one(AssistantMessage)
        assert app.query_one(".answer").source == first.answer
        assert header(message) == "▸ thought 16 / 16 tokens"
        assert message.query_one(".shift-mark").region.height > 0
        await send(pilot, "And again")
        await reply_done(pilot)
        assert app.conversation.id == conversation_id
    stored = History(home / "history.sqlite3").load(conversation_id).messages
    assert [m.role for m in stored] == ["user", "assistant", "user", "assistant"]


async def test_history_screen_reopens_a_conversation(engine, home):
    store = History(home / "history.sqlite3")
    old = store.new_conversation(model="tiny")
    store.add_message(old, StoredMessage("user", "An old question"))
    store.add_message(old, StoredMessage("assistant", "Final Answer: 4", thinking="Final Answer: 4", thinking_tokens=4))
    app = make_app(engine, home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+o")
        assert isinstance(app.screen, HistoryScreen)
        await pilot.press("enter")
        await wait_until(pilot, lambda: not isinstance(app.screen, HistoryScreen))
        await pilot.pause()
        assert app.conversation.id == old
        assert [text_of(w) for w in app.query(UserMessage)] == ["An old question"]
        assert app.query_one(".answer").source == "Final Answer: 4"


async def test_last_budget_is_remembered(engine, home):
    app = make_app(engine, home, budget=256)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+b", "right", "right")
        assert app.query_one(BudgetSlider).value == 512
    assert load_settings().budget == 512
    app = make_app(engine, home)  # no --budget: the remembered one
    async with app.run_test(size=SIZE) as pilot:
        assert app.query_one(BudgetSlider).value == 512
        assert text_of(app.query_one("#budget-value")) == "512 tokens"


async def test_toggle_reasoning_for_every_message(engine, home):
    app = make_app(engine, home, budget=8)
    async with app.run_test(size=SIZE) as pilot:
        for text in ("first", "second"):
            await send(pilot, text)
            await reply_done(pilot)
        reasonings = list(app.query(".reasoning"))
        assert len(reasonings) == 2 and all(r.region.height == 0 for r in reasonings)
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert all(r.region.height > 0 or not r.display for r in app.query(".reasoning"))
        assert all(header(m).startswith("▾") for m in app.query(AssistantMessage))
        assert load_settings().show_reasoning
        await pilot.press("ctrl+t")
        await pilot.pause()
        assert all(r.region.height == 0 for r in app.query(".reasoning"))
        assert not load_settings().show_reasoning


async def test_copy_the_last_code_block(engine, home, monkeypatch):
    store = History(home / "history.sqlite3")
    cid = store.new_conversation()
    store.add_message(cid, StoredMessage("user", "code please"))
    reply = "Let me think.\n\nFinal Answer:\n```python\nprint('hi')\nprint('there')\n```"
    store.add_message(cid, StoredMessage("assistant", reply, thinking=reply, thinking_tokens=20))
    app = make_app(engine, home, resume=cid)
    copied = []
    monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert copied == ["print('hi')\nprint('there')\n"]


async def test_copy_without_code_says_so(engine, home, monkeypatch):
    app = make_app(engine, home)
    copied = []
    monkeypatch.setattr(app, "copy_to_clipboard", copied.append)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert copied == [] and any("No code block" in n.message for n in app._notifications)


async def test_new_chat_starts_over(engine, home):
    app = make_app(engine, home, budget=8)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "one")
        await reply_done(pilot)
        first = app.conversation.id
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert not app.query(AssistantMessage) and app.query_one("#welcome").display
        await send(pilot, "two")
        await reply_done(pilot)
        assert app.conversation.id != first and len(app.history.conversations()) == 2


async def test_enter_sends_and_ctrl_j_adds_a_line(engine, home):
    app = make_app(engine, home, budget=8)
    async with app.run_test(size=SIZE) as pilot:
        prompt = app.query_one(PromptInput)
        prompt.focus()
        await pilot.press("a", "ctrl+j", "b")
        assert prompt.text == "a\nb" and not app.query(UserMessage)
        await pilot.press("enter")
        await reply_done(pilot)
        assert prompt.text == "" and text_of(app.query_one(UserMessage)) == "a\nb"


async def test_loading_shows_progress_and_keeps_the_ui_live(engine, home):
    release = threading.Event()

    def loader():
        release.wait(30)
        return engine

    app = ChatApp(loader=loader, model_label="tiny", history=History(home / "h.sqlite3"), budget=8, answer_tokens=4)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        assert app.query_one("#loading").display
        assert text_of(app.query_one("#status")).startswith("tiny · loading")
        await send(pilot, "too early")  # the UI answers while the model loads
        await pilot.pause()
        assert any("still loading" in n.message for n in app._notifications)
        await pilot.press("ctrl+b", "right")
        assert app.query_one(BudgetSlider).value == 64
        release.set()
        await wait_until(pilot, lambda: app.conversation is not None, what="the model to load")
        await pilot.pause()
        assert not app.query_one("#loading").display and "idle" in text_of(app.query_one("#status"))
        await send(pilot, "now")
        turn = await reply_done(pilot)
        assert turn.budget == 64


async def test_a_loader_failure_is_shown(home):
    from z1mlx.errors import Z1Error

    def loader():
        raise Z1Error("no such model")

    app = ChatApp(loader=loader, history=History(home / "h.sqlite3"))
    async with app.run_test(size=SIZE) as pilot:
        await wait_until(pilot, lambda: "failed" in text_of(app.query_one("#status")))
        assert "Cannot load the model: no such model" in text_of(app.query_one("#loading-label"))


async def test_status_bar_with_a_fixed_clock(engine, home):
    app = make_app(engine, home, budget=16, clock=StepClock(step=0.01, start=0.0))
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Sort a list in Python")
        turn = await reply_done(pilot)
        tokens = turn.thinking_tokens + turn.answer_tokens
        # Clock read at the start and at each delta (one per token, plus one per phase's tail).
        status = text_of(app.query_one("#status"))
        model, phase, speed, ttft, peak = status.split(SEPARATOR)
        assert model == engine.label and phase == "idle"
        assert ttft == "ttft 0.01s" and speed.endswith(" tok/s") and peak.startswith("peak ")
        assert 90 < float(speed.split()[0]) <= 100 and tokens > 1


async def test_help_lists_the_keys(engine, home):
    app = make_app(engine, home)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        text = app.screen.text
        for key, action in [
            ("Esc", "stop"),
            ("Ctrl+S", "answer now"),
            ("Ctrl+R", "regenerate"),
            ("Ctrl+T", "reasoning"),
            ("Ctrl+L", "copy code"),
            ("Ctrl+N", "new chat"),
            ("Ctrl+O", "history"),
            ("F1", "help"),
            ("Ctrl+Q", "quit"),
            ("Ctrl+B", "budget slider"),
            ("Enter", "send"),
        ]:
            assert re.search(rf"^{re.escape(key)} +{action}$", text, re.MULTILINE), key
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_quit_during_a_reply_stops_it(endless_engine, home):
    app = make_app(endless_engine, home, budget=32768)
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "Think about it")
        await wait_until(pilot, lambda: app._stream is not None and app._stream.view().thinking_tokens >= 5)
        stream = app._stream
        await pilot.press("ctrl+q")
    # The app exited (and its worker thread ended: run_test waits for it).
    assert stream.control.cancelled


def test_needs_an_engine_or_a_loader():
    with pytest.raises(ValueError):
        ChatApp()


async def test_quit_while_loading_does_not_wait_for_the_load(engine, home):
    release = threading.Event()
    app = ChatApp(loader=lambda: (release.wait(30), engine)[1], history=History(home / "h.sqlite3"))
    started = time.monotonic()
    try:
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("ctrl+q")
        assert time.monotonic() - started < 10
    finally:
        release.set()


async def test_a_locked_history_is_a_notification_and_the_reply_goes_on(engine, home, monkeypatch):
    import sqlite3

    from z1mlx.chat import history as history_module

    monkeypatch.setattr(history_module, "BUSY_TIMEOUT_MS", 100)
    app = make_app(engine, home, budget=8)
    path = home / "history.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)  # another program holds the write lock
    other.execute("BEGIN EXCLUSIVE")
    async with app.run_test(size=SIZE) as pilot:
        await send(pilot, "hello while locked")
        turn = await reply_done(pilot)
        assert turn.role == "assistant" and app.conversation.unsaved
        told = [n.message for n in app._notifications if "locked by another program" in n.message]
        assert len(told) == 1 and str(app.conversation.recovery_file) in told[0]
        other.execute("ROLLBACK")
        await send(pilot, "hello again")
        await reply_done(pilot)
        assert not app.conversation.unsaved
        assert any("stored in the history again" in n.message for n in app._notifications)
    other.close()
    stored = History(path)
    users = [m.content for m in stored.load(stored.latest().id).messages if m.role == "user"]
    assert users == ["hello while locked", "hello again"]
