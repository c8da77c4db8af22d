"""What a generation under the window produces: events as it runs, one result at the end.

Every front end (solve, chat, TUI, server, eval) consumes these, whichever backend made
them; this module imports no mlx, no HTTP client and no UI toolkit.
"""

from dataclasses import dataclass
from typing import Literal

Phase = Literal["thinking", "answer"]
ShiftReason = Literal["budget", "answer_now"]
FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # greedy, as in the paper's evaluations
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top-p must be in (0, 1]")
        if self.top_k < 0 or not 0 <= self.min_p <= 1:
            raise ValueError("top-k must be >= 0 and min-p in [0, 1]")
        if self.repetition_penalty is not None and not 0 < self.repetition_penalty < float("inf"):
            raise ValueError("repetition penalty must be a number > 0")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ValueError("seed must be a whole number >= 0")


@dataclass
class TextDelta:
    text: str
    phase: Phase
    tokens: int  # tokens generated in this phase so far (thinking: continuation tokens included)


@dataclass
class Shift:
    """The window shifted: the hint goes in next, then the answer."""

    thinking_tokens: int
    hint: str
    reason: ShiftReason


@dataclass
class Continuation:
    """Think longer: the model ended its turn before `min_thinking` thinking tokens, so its
    end token was dropped and `text` was fed in its place; phase 1 goes on."""

    thinking_tokens: int  # thinking tokens before the continuation
    text: str
    count: int  # continuations so far in this reply, this one included


@dataclass
class GenerationResult:
    prompt_tokens: int
    thinking_tokens: int
    answer_tokens: int
    window_hit: bool
    finish_reason: FinishReason
    budget: int
    answer_cap: int
    hint: str | None
    shift_reason: ShiftReason | None
    thinking_text: str
    answer_text: str
    prompt_token_ids: list[int]
    thinking_token_ids: list[int]
    hint_token_ids: list[int]
    answer_token_ids: list[int]
    ttft_s: float
    prompt_tps: float
    generation_tps: float
    peak_memory_gb: float
    cached_prompt_tokens: int = 0  # prompt tokens reused from an earlier turn's cache
    min_thinking: int = 0
    forced_continuations: int = 0  # times think-longer fed the continuation text
    forced_tokens: int = 0  # thinking tokens that are continuation text, not generated

    @property
    def text(self) -> str:
        """The reply as the model saw it: thinking, then hint and answer if it shifted."""
        return self.thinking_text + (self.hint or "") + self.answer_text


@dataclass
class Done:
    result: GenerationResult


@dataclass(frozen=True)
class Wait:
    """A batched source has no token yet: the batch must step first. Only `batch` ever sees
    it (it pauses the sequence there); no front end receives it."""


WAIT = Wait()

Event = TextDelta | Shift | Continuation | Done | Wait
