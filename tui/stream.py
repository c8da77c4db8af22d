"""A reply in progress, handed from the generation thread to the UI: plain Python, no Textual.

The generation thread only appends to lists under a lock and never waits for the UI;
the UI polls `view()` on a timer (a few times a second) and redraws once per poll
however many tokens arrived. Decoding therefore never blocks on rendering. Live speed
and time to first token are measured here with an injectable clock, called only from
the generation thread at fixed points, so a test's fake clock gives fixed numbers.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from z1mlx.chat.conversation import describe_shift
from z1mlx.events import Done, GenerationResult, Shift, TextDelta


@dataclass(frozen=True)
class ReplyView:
    """Everything the UI shows of a reply at one moment."""

    thinking: str
    answer: str
    hint: str | None
    shift_reason: str | None
    shift_at: int | None
    thinking_tokens: int
    answer_tokens: int
    budget: int
    phase: str  # "thinking", "answering" or "done"
    ttft_s: float | None
    tokens_per_s: float | None
    result: object | None  # the engine's GenerationResult once done
    error: str | None

    @property
    def done(self) -> bool:
        return self.phase == "done"


class ReplyStream:
    def __init__(
        self,
        control,
        clock: Callable[[], float] = time.perf_counter,
        thinking_before: str = "",
        thinking_tokens_before: int = 0,
    ):
        self.control = control
        self._clock = clock
        self._lock = threading.Lock()
        self._thinking = [thinking_before] if thinking_before else []
        self._answer: list[str] = []
        self._thinking_before = thinking_tokens_before
        self._thinking_tokens = thinking_tokens_before
        self._answer_tokens = 0
        self._hint: str | None = None
        self._shift_reason: str | None = None
        self._shift_at: int | None = None
        self._phase = "thinking"
        self._result: GenerationResult | None = None
        self._error: str | None = None
        self._started = clock()
        self._first: float | None = None
        self._last: float | None = None
        self._tokens = 0
        self._version = 0
        self._seen = -1

    # Generation thread

    def feed(self, event) -> None:
        if isinstance(event, TextDelta):
            now = self._clock()
            with self._lock:
                if self._first is None:
                    self._first = now
                self._last = now
                if event.phase == "thinking":
                    self._thinking.append(event.text)
                    new = self._thinking_before + event.tokens - self._thinking_tokens
                    self._thinking_tokens = self._thinking_before + event.tokens
                else:
                    self._answer.append(event.text)
                    new = event.tokens - self._answer_tokens
                    self._answer_tokens = event.tokens
                self._tokens += new
                self._version += 1
        elif isinstance(event, Shift):
            with self._lock:
                self._hint, self._shift_reason = event.hint, event.reason
                self._shift_at = self._thinking_tokens
                self._phase = "answering"
                self._version += 1
        elif isinstance(event, Done):
            with self._lock:
                self._result = event.result
                self._phase = "done"
                self._version += 1

    def fail(self, message: str) -> None:
        with self._lock:
            self._error = message
            self._phase = "done"
            self._version += 1

    # UI thread

    def view(self, only_if_changed: bool = False) -> ReplyView | None:
        with self._lock:
            if only_if_changed and self._version == self._seen:
                return None
            self._seen = self._version
            first, last, tokens = self._first, self._last, self._tokens
            ttft = first - self._started if first is not None else None
            span = (last - first) if first is not None and last is not None else 0.0
            return ReplyView(
                thinking="".join(self._thinking),
                answer="".join(self._answer),
                hint=self._hint,
                shift_reason=self._shift_reason,
                shift_at=self._shift_at,
                thinking_tokens=self._thinking_tokens,
                answer_tokens=self._answer_tokens,
                budget=self.control.budget,
                phase=self._phase,
                ttft_s=ttft,
                tokens_per_s=(tokens - 1) / span if tokens > 1 and span > 0 else None,
                result=self._result,
                error=self._error,
            )


class RedrawPacer:
    """Spaces a streaming reply's redraws so the UI thread takes at most `share` of the time.

    The UI thread's CPU time since the last redraw (the redraw itself and the rendering
    it caused) divided by `share` is the wait before the next one. Rendering holds the
    GIL, so this bounds what the screen can take from decoding, whatever the terminal's
    size or the reply's length: cheap frames come often, expensive ones less so.
    Call `next_delay` from the UI thread only.
    """

    def __init__(
        self,
        min_interval: float,
        share: float = 0.05,
        max_interval: float = 0.5,
        cpu_clock: Callable[[], float] = time.thread_time,
    ):
        self.min_interval = min_interval
        self.max_interval = max(max_interval, min_interval)
        self.share = share
        self._cpu_clock = cpu_clock
        self._last = cpu_clock()

    def next_delay(self) -> float:
        now = self._cpu_clock()
        spent, self._last = now - self._last, now
        return min(self.max_interval, max(self.min_interval, spent / self.share))


SEPARATOR = " · "


def status_text(
    model: str,
    phase: str,
    tokens_per_s: float | None = None,
    ttft_s: float | None = None,
    peak_memory_gb: float | None = None,
) -> str:
    """The status bar's one line."""
    parts = [model, phase]
    parts.append(f"{tokens_per_s:.1f} tok/s" if tokens_per_s is not None else "– tok/s")
    parts.append(f"ttft {ttft_s:.2f}s" if ttft_s is not None else "ttft –")
    if peak_memory_gb is None:
        parts.append("peak –")
    else:  # tiny models peak at a few MB: "<0.01 GB" rather than a misleading "0.00 GB"
        parts.append(f"peak {peak_memory_gb:.2f} GB" if peak_memory_gb >= 0.01 else "peak <0.01 GB")
    return SEPARATOR.join(parts)


def counter_text(phase: str, thinking_tokens: int, budget: int, expanded: bool) -> str:
    """The header over a reply's reasoning: a live counter, then a fold marker."""
    arrow = "▾" if expanded else "▸"
    if phase == "thinking":
        return f"{arrow} thinking {thinking_tokens} / {budget}"
    if thinking_tokens == 0:
        return f"{arrow} answered at once (budget {budget})"
    return f"{arrow} thought {thinking_tokens} / {budget} tokens"


def shift_mark(reason: str | None, at: int, hint: str) -> str:
    """The line drawn where the window shifted, quoting the hint the model was given."""
    return f"── {describe_shift(reason, at)} · {hint.strip()} ──"
