"""Fixtures and helpers shared by the chat, TUI and REPL tests (imported by those modules).

The session `engine` (conftest) ends most replies within a few hundred tokens. Stopping
or answering mid-reply needs replies that keep going, so `endless_engine` is the same
tiny random Qwen2 with a zero end-of-turn row: it never ends on its own.
"""

import threading
import time
from pathlib import Path

import pytest

from z1mlx.events import TextDelta

_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def endless_model(tmp_path_factory) -> Path:
    if "endless" not in _BUILT:
        from z1mlx.convert.command import convert_checkpoint
        from z1mlx.convert.demo import TinySpec, build_checkpoint
        from z1mlx.convert.source import locate

        root = tmp_path_factory.mktemp("endless")
        checkpoint = build_checkpoint(root / "hf", TinySpec(eos_boost=0.0))
        out = root / "endless-f32"
        convert_checkpoint(locate(str(checkpoint)), out, quantize=False, dtype="float32", verify=False,
                           log=lambda m: None)
        _BUILT["endless"] = out
    return _BUILT["endless"]


@pytest.fixture(scope="session")
def endless_engine(endless_model):
    from z1mlx.engine import Engine

    return Engine.load(str(endless_model))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A Z1MLX_HOME of this test's own: its history and settings start empty."""
    path = tmp_path / "home"
    monkeypatch.setenv("Z1MLX_HOME", str(path))
    for name in ("BUDGET", "ANSWER_TOKENS", "SHOW_REASONING"):
        monkeypatch.delenv(f"Z1MLX_CHAT_{name}", raising=False)
    return path


class StepClock:
    """A fake clock: every reading is `step` seconds after the previous one."""

    def __init__(self, step: float = 0.05, start: float = 100.0):
        self.now = start
        self.step = step
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += self.step
            return self.now


class GatedEngine:
    """The real engine, paused after `pause_after` thinking tokens until `release()`
    (or the reply is cancelled): a reply frozen mid-reasoning, for snapshots."""

    def __init__(self, engine, pause_after: int):
        self._engine = engine
        self.pause_after = pause_after
        self.reached = threading.Event()
        self._release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def release(self) -> None:
        self._release.set()

    def generate(self, prompt, window, sampling, control=None, conversation=None):
        for event in self._engine.generate(prompt, window, sampling, control=control, conversation=conversation):
            yield event
            if isinstance(event, TextDelta) and event.phase == "thinking" and event.tokens == self.pause_after:
                self.reached.set()
                while not self._release.wait(0.02):
                    if control is not None and control.cancelled:
                        break


async def wait_until(pilot, predicate, timeout: float = 20.0, what: str = "condition"):
    """Let the app run until `predicate()` holds (no bare sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
