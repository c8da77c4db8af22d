"""The request scheduler of `z1 serve`: worker threads that run generations in arrival order.

Each job streams its backend's events back to its request's event loop; a client that
disconnects cancels its job (queued or running) at the next token.
"""

import asyncio
import queue
import threading
from dataclasses import dataclass, field

from ..backend import Backend
from ..events import Sampling
from ..window import ShiftedWindow, WindowControl
from .openai_api import APIError

_END = object()


class GenerationFailed(Exception):
    """The engine raised while generating; the request gets a 500."""


@dataclass(eq=False)
class Job:
    """One request's generation: the worker thread pushes events to the request's loop."""

    prompt: list[int]
    window: ShiftedWindow
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    control: WindowControl = None  # type: ignore[assignment]  # set from the window when not given
    events: asyncio.Queue = field(default_factory=asyncio.Queue)

    def __post_init__(self) -> None:
        self.control = self.control or WindowControl(self.window.budget)

    def push(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass


class Scheduler:
    """Worker threads that run jobs in arrival order, one generation per worker.

    A local engine gets one worker, whose KV cache keeps the caches of the last
    `prompt_cache_size` prompts (mlx-lm's `LRUPromptCache`): a prompt sharing a prefix with
    any of them (a chat resent with one more turn, from any client) prefills only the rest.
    0 gives each request a fresh cache. A remote engine may take several workers.
    """

    def __init__(self, engine: Backend, workers: int = 1, max_queue: int = 64, prompt_cache_size: int = 10):
        self.engine = engine
        self.max_queue = max_queue
        self.prompt_cache_size = prompt_cache_size
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._waiting: set[Job] = set()
        self._running: set[Job] = set()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._work, name=f"z1-generate-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise APIError(503, "The server is shutting down.", type="server_error", code="shutting_down")
            if len(self._waiting) >= self.max_queue:
                raise APIError(
                    429,
                    f"The server is busy ({len(self._waiting)} requests waiting); retry shortly.",
                    type="rate_limit_error",
                    code="queue_full",
                )
            self._waiting.add(job)
        self._jobs.put(job)

    def stats(self) -> dict:
        with self._lock:
            return {"running": len(self._running), "queued": len(self._waiting)}

    def _work(self) -> None:
        size = self.prompt_cache_size
        conversation = self.engine.new_conversation_cache(pool=size) if size > 0 else None
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._waiting.discard(job)
                self._running.add(job)
            try:
                for event in self.engine.generate(
                    job.prompt, job.window, job.sampling, control=job.control, conversation=conversation
                ):
                    job.push(event)
            except Exception as err:  # one bad generation must not stop the worker
                job.push(GenerationFailed(f"generation failed: {type(err).__name__}: {err}"))
                if conversation is not None:
                    conversation.reset()  # the cache may hold a half-written step
            finally:
                with self._lock:
                    self._running.discard(job)
                job.push(_END)

    def close(self) -> None:
        """Cancel every job, running or waiting; each still ends with a (cancelled) result,
        so its client gets a well-formed reply. Then the workers exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            jobs = self._running | self._waiting
        for job in jobs:
            job.control.cancel()
        for _ in self._threads:
            self._jobs.put(None)  # after the waiting jobs, which end at once
