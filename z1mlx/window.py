"""The Shifted Thinking Window: the policy, its live controls, and THE driver.

Phase 1 thinks for at most `budget` tokens. If the model ends its turn inside that
window, its text is the whole reply. If the window fills (or the user asks for the
answer now), the hint is appended and phase 2 answers in at most `answer_tokens`.
There are no <think> tags: Z1 was trained without them.

Think longer (s1's budget forcing, for a tagless model): with `min_thinking` N, a turn
ended before N thinking tokens loses its end token, `continue_text` is fed in its place
and phase 1 goes on, until N is reached; then the window applies as usual.

`drive` is where all of this is enforced, for every backend: a backend only supplies a
`backend.TokenSource` (tokens from mlx, text from an HTTP server); the driver counts the
phases, decides every shift, emits the events and builds the `GenerationResult`.
No model, no I/O here.
"""

import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .backend import WAITING, Events, Piece, Segment, TokenSource
from .events import (
    WAIT,
    Continuation,
    Done,
    Event,
    FinishReason,
    GenerationResult,
    Phase,
    Shift,
    ShiftReason,
    TextDelta,
    Wait,
)

HINT = "\n\nI overthought it, the final answer should be:\n\n"
BOXED_HINT = "\n\nI overthought it, the final answer in \\boxed{} should be:\n\n"

CONTINUE_TEXT = "\n\nWait"

DEFAULT_BUDGET = 2048
DEFAULT_ANSWER_TOKENS = 1024
MAX_BUDGET = 32768


@dataclass(frozen=True)
class ShiftedWindow:
    budget: int = DEFAULT_BUDGET
    answer_tokens: int = DEFAULT_ANSWER_TOKENS
    hint: str = HINT
    min_thinking: int = 0  # think longer: no end of turn before this many thinking tokens
    continue_text: str = CONTINUE_TEXT

    def __post_init__(self) -> None:
        if not isinstance(self.budget, int) or self.budget < 0:
            raise ValueError(f"thinking budget must be a whole number >= 0, got {self.budget!r}")
        if not isinstance(self.answer_tokens, int) or self.answer_tokens < 1:
            raise ValueError(f"answer tokens must be a whole number >= 1, got {self.answer_tokens!r}")
        if not self.hint:
            raise ValueError("the hint must not be empty")
        if not isinstance(self.min_thinking, int) or self.min_thinking < 0:
            raise ValueError(f"minimum thinking must be a whole number >= 0, got {self.min_thinking!r}")
        if self.min_thinking and not self.continue_text:
            raise ValueError("the continuation text must not be empty")


def fit_to_context(window: ShiftedWindow, prompt_tokens: int, hint_tokens: int, context: int) -> ShiftedWindow | None:
    """The window shrunk so prompt + thinking + hint + answer fit the model's context:
    the thinking budget gives way first, then the answer cap. None if even a one-token
    answer at budget 0 does not fit."""
    room = context - prompt_tokens - hint_tokens
    if room < 1:
        return None
    answer = min(window.answer_tokens, room)
    budget = min(window.budget, room - answer)
    if (budget, answer) == (window.budget, window.answer_tokens):
        return window
    return ShiftedWindow(budget, answer, window.hint, window.min_thinking, window.continue_text)


class WindowControl:
    """Live controls for one generation, safe to call from any thread.

    The generating thread polls `shift_due` and `cancelled` between tokens, so every
    request takes effect at the next token.
    """

    def __init__(self, budget: int):
        self._lock = threading.Lock()
        self._budget = budget
        self._answer_now = False
        self._cancelled = False

    @property
    def budget(self) -> int:
        return self._budget

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def cancel(self) -> None:
        self._cancelled = True

    def answer_now(self) -> None:
        self._answer_now = True

    def set_budget(self, budget: int) -> None:
        """A budget at or below the tokens already spent shifts at the next token."""
        if budget < 0:
            raise ValueError("thinking budget must be >= 0")
        with self._lock:
            self._budget = budget

    def shift_reason(self, thinking_tokens: int) -> ShiftReason | None:
        """Why phase 1 must end now, or None to keep thinking."""
        if self._answer_now:
            return "answer_now"
        if thinking_tokens >= self._budget:
            return "budget"
        return None


def drive(
    source: TokenSource,
    prompt: list[int],
    window: ShiftedWindow,
    control: WindowControl | None,
    encode: Callable[[str], list[int]],
    clock: Callable[[], float] = time.perf_counter,
) -> Events:
    """Run one reply under the window on `source`, as events ending with `Done`.

    `encode` turns the hint and the continuation text into the model's token ids.
    Closing the generator early leaves the source's context holding exactly what it was
    fed and generated so far.
    """
    from .errors import Z1Error

    if not prompt:
        raise Z1Error("the prompt is empty")
    yield from _Driver(source, prompt, window, control or WindowControl(window.budget), encode, clock).run()


class _Driver:
    """The bookkeeping of one reply; `run` is the whole window, start to finish."""

    def __init__(
        self,
        source: TokenSource,
        prompt: list[int],
        window: ShiftedWindow,
        control: WindowControl,
        encode: Callable[[str], list[int]],
        clock: Callable[[], float],
    ):
        self.source, self.prompt, self.window, self.control = source, prompt, window, control
        self.encode, self.clock = encode, clock
        self.texts: dict[Phase, list[str]] = {"thinking": [], "answer": []}
        self.ids: dict[Phase, list[int]] = {"thinking": [], "answer": []}
        self.counts: dict[Phase, int] = {"thinking": 0, "answer": 0}
        self.forced = self.forced_tokens = 0
        self.cached = 0
        self.first_at: float | None = None
        self.prefill_s = self.later_prefill_s = 0.0
        self.stop_reason: str | None = None  # what the last should_stop answered

    def run(self) -> Events:
        start = self.clock()
        window, control = self.window, self.control
        self.cached = self.source.begin(self.prompt)
        hint_ids = self.encode(window.hint)
        finish: FinishReason = "length"
        shift_reason: ShiftReason | None = None
        budget_at_shift = None
        if control.cancelled:
            finish = "cancelled"
        else:
            shift_reason = control.shift_reason(0)  # budget 0 or answer-now: no thinking
            feed_ids: list[int] = []
            feed_text = ""
            while shift_reason is None:
                spent = self.counts["thinking"]
                segment = yield from self._segment(
                    "thinking",
                    feed_ids,
                    feed_text,
                    control.budget - spent,
                    self._thinking_stop(spent, control.budget - spent),
                )
                feed_ids, feed_text = [], ""
                if segment.end == "stopped":
                    if self.stop_reason == "cancelled":
                        finish = "cancelled"
                        break
                    shift_reason = self.stop_reason  # type: ignore[assignment]  # budget or answer_now
                elif segment.end == "stop":
                    if control.cancelled or self.counts["thinking"] >= window.min_thinking:
                        finish = "stop"
                        break
                    feed_ids, feed_text = self.encode(window.continue_text), window.continue_text
                    if self.counts["thinking"] + len(feed_ids) > control.budget:
                        shift_reason = "budget"  # no room left to think longer: the window is full
                        break
                    yield from self._continue(feed_ids, feed_text)
                    shift_reason = control.shift_reason(self.counts["thinking"])
                else:  # the source's limit: the budget, unless it was raised meanwhile
                    shift_reason = control.shift_reason(self.counts["thinking"])
                    if shift_reason is None and segment.tokens == 0:
                        shift_reason = "budget"  # a server that stops short of the budget (its own cap)
        shifted = shift_reason is not None and finish == "length"
        if shifted:
            assert shift_reason is not None
            budget_at_shift = control.budget  # the window that was hit, whatever moves later
            finish = yield from self._answer(shift_reason, hint_ids)
        yield Done(
            self._result(
                start,
                finish,
                shifted,
                shift_reason if shifted else None,
                control.budget if budget_at_shift is None else budget_at_shift,
                hint_ids,
            )
        )

    def _answer(self, shift_reason: ShiftReason, hint_ids: list[int]) -> Generator[Event, None, FinishReason]:
        """Phase 2: the hint, then the answer under its cap."""
        window = self.window
        yield Shift(self.counts["thinking"], window.hint, shift_reason)
        segment = yield from self._segment(
            "answer", hint_ids, window.hint, window.answer_tokens, self._answer_stop(window.answer_tokens)
        )
        if segment.end == "stop":
            return "stop"
        if segment.end == "stopped" and self.stop_reason == "cancelled":
            return "cancelled"
        return "length"

    def _thinking_stop(self, spent: int, limit: int) -> Callable[[int], str | None]:
        control, exact = self.control, self.source.exact_counts

        def should_stop(tokens: int) -> str | None:
            if control.cancelled:
                reason: str | None = "cancelled"
            else:
                reason = control.shift_reason(spent + tokens)
                if reason == "budget" and not exact and control.budget >= spent + limit:
                    reason = None  # an estimated count: the source stops at its limit, exactly
            self.stop_reason = reason
            return reason

        return should_stop

    def _answer_stop(self, cap: int) -> Callable[[int], str | None]:
        control, exact = self.control, self.source.exact_counts

        def should_stop(tokens: int) -> str | None:
            reason = "cancelled" if control.cancelled else ("cap" if exact and tokens >= cap else None)
            self.stop_reason = reason
            return reason

        return should_stop

    def _segment(
        self, phase: Phase, feed_ids: list[int], feed_text: str, limit: int, should_stop: Callable[[int], str | None]
    ) -> Generator[Event, None, Segment]:
        """Stream one segment as TextDeltas; returns its `Segment` (via `yield from`)."""
        offset = self.counts[phase]
        self.stop_reason = None
        fed_at = self.clock()
        stream = self.source.stream(feed_ids, feed_text, limit, should_stop)
        first = True
        while True:
            try:
                piece: Piece = next(stream)
            except StopIteration as stop:
                segment: Segment = stop.value
                break
            if piece is WAITING:  # a batched source: its sequence waits for the batch's next step
                yield WAIT
                continue
            if first:
                first = False
                now = self.clock()
                if self.first_at is None:
                    self.first_at, self.prefill_s = now, now - fed_at
                else:
                    self.later_prefill_s += now - fed_at
            yield TextDelta(piece.text, phase, offset + piece.tokens)
        self.texts[phase].append(segment.text)
        self.ids[phase].extend(segment.token_ids)
        self.counts[phase] += segment.tokens
        self.cached = self.cached or segment.cached_tokens
        return segment

    def _continue(self, ids: list[int], text: str) -> Iterator[Event]:
        """Think longer: drop the end token, count the continuation as thinking."""
        self.source.drop_end()
        self.forced += 1
        self.forced_tokens += len(ids)
        yield Continuation(self.counts["thinking"], text, self.forced)
        self.texts["thinking"].append(text)
        self.ids["thinking"].extend(ids)
        self.counts["thinking"] += len(ids)
        yield TextDelta(text, "thinking", self.counts["thinking"])

    def _result(
        self,
        start: float,
        finish: FinishReason,
        shifted: bool,
        shift_reason: ShiftReason | None,
        budget: int,
        hint_ids: list[int],
    ) -> GenerationResult:
        ended = self.clock()
        first = self.first_at
        generated = self.counts["thinking"] - self.forced_tokens + self.counts["answer"]
        decode_s = (ended - first - self.later_prefill_s) if first is not None else 0.0
        fresh_prompt = len(self.prompt) - self.cached
        return GenerationResult(
            prompt_tokens=len(self.prompt),
            thinking_tokens=self.counts["thinking"],
            answer_tokens=self.counts["answer"],
            window_hit=shifted,
            finish_reason=finish,
            budget=budget,
            answer_cap=self.window.answer_tokens,
            hint=self.window.hint if shifted else None,
            shift_reason=shift_reason,
            thinking_text="".join(self.texts["thinking"]),
            answer_text="".join(self.texts["answer"]),
            prompt_token_ids=list(self.prompt),
            thinking_token_ids=self.ids["thinking"],
            hint_token_ids=list(hint_ids) if shifted else [],
            answer_token_ids=self.ids["answer"],
            ttft_s=(first - start) if first is not None else 0.0,
            prompt_tps=fresh_prompt / self.prefill_s if self.source.reports_prefill and self.prefill_s > 0 else 0.0,
            generation_tps=(generated - 1) / decode_s if generated > 1 and decode_s > 0 else 0.0,
            peak_memory_gb=self.source.peak_memory_gb(),
            cached_prompt_tokens=self.cached,
            min_thinking=self.window.min_thinking,
            forced_continuations=self.forced,
            forced_tokens=self.forced_tokens,
        )


def sweep(
    source: TokenSource,
    prompt: list[int],
    window: ShiftedWindow,
    budgets: list[int],
    encode: Callable[[str], list[int]],
    clock: Callable[[], float] = time.perf_counter,
) -> Iterator[GenerationResult]:
    """Greedy results for every budget of a sweep from one phase 1, largest budget first.

    Greedy phase 1 under budget B is a prefix of phase 1 under any larger budget. So phase 1
    runs once, under the largest budget (or to the model's own end); then, for each smaller
    budget B the model thought past, the context is rewound to prompt + B thinking tokens,
    the hint is fed and the answer generated, exactly as a separate run with budget B would
    (same tokens, same texts). The cost falls from the sum of the budgets to the largest.

    `source` must be `Rewindable`; think longer (`min_thinking`) is not swept (the point
    where a forced continuation runs out of room depends on the budget).
    """
    for item in sweep_steps(source, prompt, window, budgets, encode, clock):
        if isinstance(item, GenerationResult):
            yield item


def sweep_steps(
    source: TokenSource,
    prompt: list[int],
    window: ShiftedWindow,
    budgets: list[int],
    encode: Callable[[str], list[int]],
    clock: Callable[[], float] = time.perf_counter,
) -> Generator[GenerationResult | Wait, None, None]:
    """`sweep`, passing on a batched source's `WAIT`s (so a batch can run many sweeps at once)."""
    from dataclasses import replace

    if not isinstance(source, Rewindable):
        raise TypeError("a sweep needs a source whose context can be rewound")
    if window.min_thinking:
        raise ValueError("a sweep does not combine with min_thinking")
    order = sorted(set(budgets), reverse=True)
    top: GenerationResult | None = None
    for event in _Driver(
        source, prompt, replace(window, budget=order[0]), WindowControl(order[0]), encode, clock
    ).run():
        if isinstance(event, Done):
            top = event.result
        elif event is WAIT:
            yield WAIT
    assert top is not None
    yield top
    thinking = top.thinking_token_ids
    hint_ids = encode(window.hint)
    for budget in order[1:]:
        if top.finish_reason == "stop" and not top.window_hit and len(thinking) < budget:
            yield replace(top, budget=budget)  # the model ended inside this window too
            continue
        if not source.rewind(len(prompt) + budget):
            raise RuntimeError("the context could not be rewound")
        driver = _Driver(source, prompt, replace(window, budget=budget), WindowControl(budget), encode, clock)
        driver.ids["thinking"] = thinking[:budget]
        driver.texts["thinking"] = [source.decode(thinking[:budget])] if budget else []
        driver.counts["thinking"] = budget
        driver.cached = top.cached_prompt_tokens
        start = clock()
        finish = yield from _waits_of(driver._answer("budget", hint_ids))
        yield driver._result(start, finish, True, "budget", budget, hint_ids)


def _waits_of(events: Generator[Event, None, FinishReason]) -> Generator[Wait, None, FinishReason]:
    """Run a phase for its return value, passing on only its `WAIT`s (a sweep reports results)."""
    while True:
        try:
            event = next(events)
        except StopIteration as stop:
            return stop.value
        if event is WAIT:
            yield WAIT


@runtime_checkable
class Rewindable(Protocol):
    """A `TokenSource` whose context can be cut back (a local KV cache), for `sweep`."""

    def rewind(self, keep: int) -> bool:
        """Keep the first `keep` tokens of the context; False where it cannot be cut."""
        ...

    def decode(self, ids: list[int]) -> str:
        """The text a segment of exactly these tokens reports."""
        ...
