"""The request scheduler of `z1 serve`: one thread that batches generations in arrival order.

Each job streams its backend's events back to its request's event loop; a client that
disconnects cancels its job (queued or running) at the next token.
"""

import asyncio
import queue
import threading
from dataclasses import dataclass, field

from ..backend import Backend
from ..events import Done, Sampling
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
    """One thread that runs up to `parallel` generations at once, admitted in arrival order.

    It drives the backend's `Batcher` (`Backend.batch`): locally, mlx-lm's `BatchGenerator`
    with each request under its own window, and the KV caches of the last
    `prompt_cache_size` prompts kept (mlx-lm's `LRUPromptCache`), so a prompt sharing a
    prefix with any of them (a chat resent with one more turn, from any client) prefills
    only the rest (0: a fresh cache per request); for a remote engine, `parallel` requests
    in flight. A request joins the batch at its next step and leaves it when it ends or its
    client goes (its control is cancelled: it ends at its next token).
    """

    def __init__(self, engine: Backend, parallel: int = 1, max_queue: int = 64, prompt_cache_size: int = 10):
        self.engine = engine
        self.parallel = parallel
        self.max_queue = max_queue
        self.prompt_cache_size = prompt_cache_size
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._waiting: set[Job] = set()
        self._running: set[Job] = set()
        self._closed = False
        self._peak = 0  # the most generations running at once
        self._thread = threading.Thread(target=self._work, name="z1-generate", daemon=True)
        self._thread.start()

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
            return {
                "running": len(self._running),
                "queued": len(self._waiting),
                "parallel": self.parallel,
                "peak_batch": self._peak,
            }

    def _work(self) -> None:
        batch = self.engine.batch(self.parallel, self.prompt_cache_size)
        stopping = False
        while not (stopping and not len(batch)):
            while not stopping and len(batch) < self.parallel:
                try:
                    job = self._jobs.get(block=not len(batch))  # idle: sleep until a request comes
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                self._admit(batch, job)
            try:
                items = batch.step()
            except Exception as err:  # the batch itself failed: every request in it gets a 500
                for job in list(self._running):
                    self._end(job, GenerationFailed(f"generation failed: {type(err).__name__}: {err}"))
                batch = self.engine.batch(self.parallel, self.prompt_cache_size)
                continue
            for sequence, item in items:
                job = sequence.key
                if isinstance(item, BaseException):  # one bad generation must not stop the others
                    self._end(job, GenerationFailed(f"generation failed: {type(item).__name__}: {item}"))
                else:
                    job.push(item)
                    if isinstance(item, Done):
                        self._end(job)
        batch.close()

    def _admit(self, batch, job: Job) -> None:
        with self._lock:
            self._waiting.discard(job)
            self._running.add(job)
            # Counted as it joins, before its generation can start (a remote batch starts it at once).
            self._peak = max(self._peak, len(self._running))
        try:
            batch.add(job.prompt, job.window, job.sampling, job.control, key=job)
        except Exception as err:
            self._end(job, GenerationFailed(f"generation failed: {type(err).__name__}: {err}"))

    def _end(self, job: Job, failure: GenerationFailed | None = None) -> None:
        if failure is not None:
            job.push(failure)
        with self._lock:
            self._running.discard(job)
        job.push(_END)

    def close(self) -> None:
        """Cancel every job, running or waiting; each still ends with a (cancelled) result,
        so its client gets a well-formed reply. Then the thread exits."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            jobs = self._running | self._waiting
        for job in jobs:
            job.control.cancel()
        self._jobs.put(None)  # after the waiting jobs, which end at once
