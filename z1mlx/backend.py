"""The contract between front ends and backends, and between backends and the window driver.

`Backend` is what solve, chat, the TUI and the server use: the local `engine.Engine` and
the HTTP `remote.RemoteEngine` implement it, so no front end probes an engine for what it
can do. `TokenSource` is what a backend hands the driver in `window.drive`: it feeds
tokens (or text) and streams what the model generates, and nothing else; the driver
alone counts phases, decides the shift and builds the `GenerationResult`.

Imports no mlx and no HTTP client.
"""

from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from .events import Event, Sampling

if TYPE_CHECKING:
    from .window import ShiftedWindow, WindowControl

Events = Generator[Event, None, None]

SegmentEnd = Literal["stop", "length", "stopped"]


@runtime_checkable
class PromptCache(Protocol):
    """A backend's per-conversation cache: the exact token ids it holds, reusable across turns."""

    tokens: list[int]

    def reset(self) -> None: ...

    def reuse(self, prompt: list[int]) -> int:
        """Keep the longest reusable prefix of `prompt`; return its length."""
        ...


@runtime_checkable
class Backend(Protocol):
    """A model that generates under the window; front ends need nothing else of it."""

    name: str  # short model name (store name, served model)
    label: str  # for display; says so when the weights are random or the model is remote
    model_path: Path  # directory with config.json and the tokenizer

    def render(self, messages: list[dict]) -> str:
        """The conversation rendered with the model's chat template, ready for the reply."""
        ...

    def chat_prompt(self, messages: list[dict], prefill: str = "") -> list[int]:
        """Token ids of `render(messages) + prefill`."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def new_conversation_cache(self, pool: int = 0) -> PromptCache:
        """A cache for one conversation (with `pool` > 0: keeping that many earlier prompts)."""
        ...

    def generate(
        self,
        prompt: list[int],
        window: "ShiftedWindow" = ...,
        sampling: Sampling = ...,
        control: "WindowControl | None" = None,
        conversation: PromptCache | None = None,
    ) -> Events:
        """Events of one reply to `prompt` under `window`; closing it early stops the reply."""
        ...

    def batch(self, size: int, prompt_cache_size: int = 0) -> "Batcher":
        """Up to `size` replies at once, each under its own window (`batch.Batch` locally,
        `batch.ThreadBatch` for a remote server); `prompt_cache_size` earlier prompts' caches
        are kept for reuse where the backend keeps caches."""
        ...


class Batcher(Protocol):
    """Many generations stepped together: `z1 serve` and `z1 eval` drive this and nothing else."""

    size: int
    one_pass: bool  # True: `add_sweep` answers every budget from one phase 1

    def __len__(self) -> int: ...

    def add(self, prompt: list[int], window: "ShiftedWindow", sampling: Sampling, control=None, key=None): ...

    def add_sweep(self, prompt: list[int], window: "ShiftedWindow", budgets: list[int], key=None): ...

    def step(self) -> list[tuple]:
        """(sequence, item) pairs produced since the last step: events, sweep results or the
        exception that ended a sequence."""
        ...

    def drop(self, sequence) -> None: ...

    def close(self) -> None: ...


@dataclass
class Piece:
    """Text the model generated: usually one token's worth."""

    text: str
    token_ids: list[int]  # empty where a remote server streams text only
    tokens: int  # tokens generated in this segment so far (a remote source may estimate)


# What a batched source's `stream` yields while its sequence waits for the batch's next step;
# the driver passes it on as `events.WAIT` (see `batch`).
WAITING = Piece("", [], -1)


@dataclass
class Segment:
    """How a `TokenSource.stream` call ended, with its exact account."""

    end: SegmentEnd  # stop: the model ended its turn; length: the limit; stopped: should_stop said so
    text: str
    token_ids: list[int]
    tokens: int
    cached_tokens: int = 0  # prompt tokens the backend had cached (remote servers report it)


class TokenSource(Protocol):
    """One generation's stream of tokens, segment after segment, in one context.

    A segment starts by feeding `feed_ids` (local) or `feed_text` (remote) after what the
    context already holds (the prompt first), then generates until the model ends its turn,
    `should_stop(tokens)` returns a reason after a piece, or (for a source that must fix a
    length up front, like an HTTP request) `limit` tokens. The text and ids of an ended
    turn exclude its end token.
    """

    exact_counts: bool  # False: the live `Piece.tokens` is an estimate until the segment ends
    reports_prefill: bool  # True: the first piece's latency measures the prompt's prefill

    def begin(self, prompt: list[int]) -> int:
        """Start a generation on `prompt`; return the prompt tokens already cached."""
        ...

    def stream(
        self, feed_ids: list[int], feed_text: str, limit: int, should_stop: Callable[[int], str | None]
    ) -> Generator[Piece, None, Segment]:
        """Pieces of one segment; the generator's return value is its `Segment`."""
        ...

    def drop_end(self) -> None:
        """Forget the end token of the segment that just stopped (think longer)."""
        ...

    def peak_memory_gb(self) -> float: ...
