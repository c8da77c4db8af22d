"""Snapshots of the main screen: idle, mid-reasoning and after the answer.

Deterministic: greedy decoding on the seeded tiny model, a fixed terminal size, a fake
clock for the speed and time-to-first-token figures, and no cursor blink.
"""

import pytest

from z1mlx.chat.history import History
from z1mlx.tui.app import ChatApp
from z1mlx.tui.messages import AssistantMessage
from z1mlx.tui.prompt import PromptInput

from helpers import GatedEngine, StepClock, wait_until

pytestmark = pytest.mark.slow  # real subprocesses, servers or training: see `make test-fast`

SIZE = (100, 30)
QUESTION = "Write a function that sums a list"


def make_app(engine, home, budget: int) -> ChatApp:
    return ChatApp(
        engine,
        history=History(home / "history.sqlite3"),
        budget=budget,
        answer_tokens=24,
        clock=StepClock(step=0.01, start=0.0),
    )


async def steady(pilot) -> None:
    pilot.app.query_one(PromptInput).cursor_blink = False
    await pilot.pause()


async def send(pilot) -> None:
    prompt = pilot.app.query_one(PromptInput)
    prompt.text = QUESTION
    await pilot.press("enter")


def test_idle_screen(engine, home, snap_compare):
    assert snap_compare(make_app(engine, home, 2048), terminal_size=SIZE, run_before=steady)


def test_mid_reasoning(engine, home, snap_compare):
    gated = GatedEngine(engine, pause_after=40)

    async def run_before(pilot):
        await send(pilot)
        message = pilot.app.query_one(AssistantMessage)
        await wait_until(pilot, lambda: gated.reached.is_set() and message.thinking_tokens == 40, what="40 tokens")
        await steady(pilot)

    try:
        assert snap_compare(make_app(gated, home, 64), terminal_size=SIZE, run_before=run_before)
    finally:
        gated.release()


def test_after_the_answer(engine, home, snap_compare):
    async def run_before(pilot):
        await send(pilot)
        await wait_until(pilot, lambda: pilot.app.conversation.turns and not pilot.app.busy, what="the answer")
        await steady(pilot)

    assert snap_compare(make_app(engine, home, 64), terminal_size=SIZE, run_before=run_before)
