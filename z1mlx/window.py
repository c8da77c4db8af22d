"""The Shifted Thinking Window: the policy alone, no model and no I/O.

Phase 1 thinks for at most `budget` tokens. If the model ends its turn inside that
window, its text is the whole reply. If the window fills (or the user asks for the
answer now), the hint is appended and phase 2 answers in at most `answer_tokens`.
There are no <think> tags: Z1 was trained without them.
"""

import threading
from dataclasses import dataclass

HINT = "\n\nI overthought it, the final answer should be:\n\n"
BOXED_HINT = "\n\nI overthought it, the final answer in \\boxed{} should be:\n\n"

DEFAULT_BUDGET = 2048
DEFAULT_ANSWER_TOKENS = 1024
MAX_BUDGET = 32768


@dataclass(frozen=True)
class ShiftedWindow:
    budget: int = DEFAULT_BUDGET
    answer_tokens: int = DEFAULT_ANSWER_TOKENS
    hint: str = HINT

    def __post_init__(self):
        if not isinstance(self.budget, int) or self.budget < 0:
            raise ValueError(f"thinking budget must be a whole number >= 0, got {self.budget!r}")
        if not isinstance(self.answer_tokens, int) or self.answer_tokens < 1:
            raise ValueError(f"answer tokens must be a whole number >= 1, got {self.answer_tokens!r}")
        if not self.hint:
            raise ValueError("the hint must not be empty")


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
    return ShiftedWindow(budget, answer, window.hint)


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

    def shift_reason(self, thinking_tokens: int) -> str | None:
        """Why phase 1 must end now, or None to keep thinking."""
        if self._answer_now:
            return "answer_now"
        if thinking_tokens >= self._budget:
            return "budget"
        return None
