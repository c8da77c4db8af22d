"""Many replies at once under the window: mlx-lm's `BatchGenerator` as the token sources of
the one driver.

Each sequence of a `Batch` is the driver itself (`window.drive`, or `window.sweep_steps`
for a budget sweep) over its own `BatchTokens`, with its own window, sampling and live
controls. A `BatchTokens` feeds its segment into the shared `BatchGenerator` and yields
`WAITING` until the batch's next step brings its token, so the drivers run side by side in
one thread, cooperatively, and every decision (the budget, the shift, the answer cap,
think longer, answer-now, cancel) is made by the same code as for a single reply.

When a sequence's segment ends (its window fills, it asks for the answer now, it ends its
turn), its KV cache is taken out of the batch (`BatchGenerator.remove(...,
return_prompt_caches=True)`), and the next segment goes back in with that same cache: at
the shift only the hint is prefilled, never prompt + thinking again. Sequences join and
leave while others run; a consumer that goes away (`Batch.drop`) leaves at once.

Greedy tokens equal a sequential `Engine.generate` where the batched arithmetic gives the
same argmax (left-padded caches, batched matmuls): `tests/engine/test_batch.py` checks it
on a float32 model, and `bench/bench_batch.py` measures the agreement on the demo model.
"""

import queue
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from .backend import WAITING, Piece, Segment
from .engine import UNLIMITED, nearest_cache, peak_memory_gb, separate_runs
from .events import WAIT, Done, GenerationResult, Sampling
from .window import ShiftedWindow, WindowControl, drive, sweep_steps


class BatchTokens:
    """One sequence's `backend.TokenSource` in a `Batch` (and `window.Rewindable`, for sweeps).

    Between segments the sequence's cache is out of the batch, in `cache`, holding exactly
    `tokens`; during one it is in the `BatchGenerator` under `uid`.
    """

    exact_counts = True
    reports_prefill = True

    def __init__(self, batch: "Batch", sampler, processors):
        self.batch = batch
        self.sampler, self.processors = sampler, processors
        self.uid: int | None = None
        self.cache: list = []
        self.tokens: list[int] = []  # the ids the cache holds
        self.pending: list[int] = []  # prompt tokens not yet in the cache
        self.inbox: deque[int] = deque()  # tokens the batch generated, not yet streamed
        self.finished_cache: tuple | None = None  # (cache, ids) handed back with the end token

    def begin(self, prompt: list[int]) -> int:
        self.cache, held = self.batch._cache_for(prompt)
        self.tokens, self.pending = list(prompt[:held]), list(prompt[held:])
        return held

    def stream(
        self, feed_ids: list[int], feed_text: str, limit: int, should_stop: Callable[[int], str | None]
    ) -> Generator[Piece, None, Segment]:
        from mlx_lm.models.cache import trim_prompt_cache

        feed = self.pending + list(feed_ids)
        self.pending = []
        if not feed:  # go on from the last token: its logits were not kept, so feed it again
            trim_prompt_cache(self.cache, 1)
            feed = [self.tokens.pop()]
        self.batch._insert(self, feed)
        self.tokens.extend(feed)
        eos = self.batch.engine.eos_token_ids
        detok = self.batch.engine._detokenizer()
        out: list[int] = []
        end = "stopped"
        try:
            while True:
                # The live controls as they are now: after each token, and again after each wait,
                # so a cancel, answer-now or lowered budget from the consumer lands on the next token.
                if should_stop(len(out)):
                    break
                if not self.inbox:
                    yield WAITING
                    continue
                token = self.inbox.popleft()
                self.tokens.append(token)
                if token in eos:
                    end = "stop"
                    break
                out.append(token)
                detok.add_token(token)
                yield Piece(detok.last_segment, [token], len(out))
        finally:
            self.batch._take_out(self)
        detok.finalize()
        if tail := detok.last_segment:
            yield Piece(tail, [], len(out))
        return Segment(end, detok.text, out, len(out))  # type: ignore[arg-type]

    def drop_end(self) -> None:
        from mlx_lm.models.cache import trim_prompt_cache

        trim_prompt_cache(self.cache, 1)
        self.tokens.pop()

    def rewind(self, keep: int) -> bool:
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        held = len(self.tokens)
        if self.uid is not None or self.pending or keep > held or not can_trim_prompt_cache(self.cache):
            return False
        if held > keep:
            trim_prompt_cache(self.cache, held - keep)
            del self.tokens[keep:]
        return True

    def decode(self, ids: list[int]) -> str:
        return self.batch.engine.decode_segment(ids)

    def peak_memory_gb(self) -> float:
        return peak_memory_gb()


@dataclass(eq=False)
class Sequence:
    """One reply (or one budget sweep) in a batch. `Batch.step` reports what it produced."""

    key: Any  # the caller's own tag
    steps: Generator | None = field(repr=False)  # the driver (None in a `ThreadBatch`)
    source: BatchTokens | None = field(repr=False)
    control: WindowControl | None = None
    done: bool = False
    error: BaseException | None = None
    results: list[GenerationResult] = field(default_factory=list)


class Batch:
    """Sequences under their own windows, stepped together through one `BatchGenerator`.

    `add` and `add_sweep` start sequences (at any time, also while others run); `step`
    advances every sequence by one batch step and returns what each produced: events
    (`TextDelta`, `Shift`, `Continuation`, `Done`) for `add`, `GenerationResult`s for
    `add_sweep`, or the exception that ended a sequence. Use it from one thread.
    """

    one_pass = True  # `add_sweep` answers every budget from one phase 1

    def __init__(self, engine, size: int = 8, prompt_cache_size: int = 0):
        if size < 1:
            raise ValueError("a batch holds at least one sequence")
        self.engine = engine
        self.size = size
        self.pool = None
        if prompt_cache_size > 0:
            from mlx_lm.models.cache import LRUPromptCache

            self.pool = LRUPromptCache(max_size=prompt_cache_size)
        self._generator = self._new_generator()
        self._in_generator: dict[int, BatchTokens] = {}
        self._live: list[Sequence] = []
        self._early: list[tuple[Sequence, Any]] = []

    def _new_generator(self):
        from mlx_lm.generate import BatchGenerator

        return BatchGenerator(
            self.engine.model,
            max_tokens=UNLIMITED,
            stop_tokens=[[token] for token in sorted(self.engine.eos_token_ids)],
            completion_batch_size=self.size,
            prefill_batch_size=min(self.size, 8),
        )

    def __len__(self) -> int:
        return len(self._live)

    # Joining and leaving

    def add(
        self,
        prompt: list[int],
        window: ShiftedWindow = ShiftedWindow(),
        sampling: Sampling = Sampling(),
        control: WindowControl | None = None,
        key: Any = None,
    ) -> Sequence:
        """A reply to `prompt` under `window`; `step` reports its events."""
        control = control or WindowControl(window.budget)
        source = self._source(sampling)
        steps = drive(source, prompt, window, control, self.engine.encode)
        return self._start(Sequence(key, steps, source, control))

    def add_sweep(self, prompt: list[int], window: ShiftedWindow, budgets: list[int], key: Any = None) -> Sequence:
        """Greedy results for every budget of `budgets` from one phase 1 (`window.sweep`)."""
        source = self._source(Sampling())
        steps = sweep_steps(source, prompt, window, budgets, self.engine.encode)
        return self._start(Sequence(key, steps, source))

    def drop(self, sequence: Sequence) -> None:
        """Take a sequence out now (its consumer went away); it reports nothing more."""
        if sequence.done:
            return
        sequence.done = True
        self._live.remove(sequence)
        self._early = [(s, item) for s, item in self._early if s is not sequence]
        assert sequence.steps is not None and sequence.source is not None
        sequence.steps.close()  # BatchTokens.stream's `finally` takes its cache out of the generator
        self._take_out(sequence.source)

    def _source(self, sampling: Sampling) -> BatchTokens:
        sampler, processors = self.engine._sampler_and_processors(sampling)
        return BatchTokens(self, sampler, processors)

    def _start(self, sequence: Sequence) -> Sequence:
        self._live.append(sequence)
        self._advance(sequence, self._early)  # it feeds its prompt into the generator now
        return sequence

    # Stepping

    def step(self) -> list[tuple[Sequence, Any]]:
        """One batch step: one token (or a prefill chunk) for every sequence in the generator,
        then every sequence runs on until it waits again. Returns what they produced."""
        out, self._early = self._early, []
        if self._in_generator:
            try:
                _, responses = self._generator.next()
            except Exception as err:  # a failed step leaves every cache in the batch unusable
                self._fail_all(err, out)
                return out
            for response in responses:
                source = self._in_generator.get(response.uid)
                if source is None:
                    continue
                source.inbox.append(response.token)
                if response.finish_reason is not None:  # the generator has let it go, with its cache
                    source.finished_cache = (response.prompt_cache, response.all_tokens)
        for sequence in list(self._live):
            self._advance(sequence, out)
        return out

    def run(self) -> Iterator[tuple[Sequence, Any]]:
        """Step until every sequence is done (more may be added meanwhile)."""
        while self._live or self._early:
            yield from self.step()

    def _advance(self, sequence: Sequence, out: list) -> None:
        if sequence.done:
            return
        assert sequence.steps is not None and sequence.source is not None
        while True:
            try:
                item = next(sequence.steps)
            except StopIteration:
                self._finish(sequence)
                return
            except Exception as err:
                sequence.error = err
                self._finish(sequence)
                self._take_out(sequence.source)
                out.append((sequence, err))
                return
            if item is WAIT:
                return
            if isinstance(item, Done):
                sequence.results.append(item.result)
            elif isinstance(item, GenerationResult):
                sequence.results.append(item)
            out.append((sequence, item))

    def _finish(self, sequence: Sequence) -> None:
        sequence.done = True
        self._live.remove(sequence)
        source = sequence.source
        assert source is not None
        if self.pool is not None and sequence.error is None and source.uid is None and source.tokens:
            self.pool.insert_cache("model", list(source.tokens), source.cache)

    def _fail_all(self, err: Exception, out: list) -> None:
        for sequence in list(self._live):
            sequence.error = err
            sequence.done = True
            if sequence.steps is not None:
                sequence.steps.close()
            out.append((sequence, err))
        self._live.clear()
        self._in_generator.clear()
        self._generator.close()
        self._generator = self._new_generator()  # the pool's caches are copies: they stay good

    # The generator's side of a `BatchTokens`

    def _cache_for(self, prompt: list[int]) -> tuple[list, int]:
        return nearest_cache(self.engine.make_cache, self.pool, prompt)

    def _insert(self, source: BatchTokens, feed: list[int]) -> None:
        (uid,) = self._generator.insert(
            [feed],
            max_tokens=[UNLIMITED],
            caches=[source.cache],
            all_tokens=[list(source.tokens)],
            samplers=[source.sampler],
            logits_processors=[source.processors],
        )
        source.uid, source.cache, source.finished_cache = uid, [], None
        self._in_generator[uid] = source

    def _take_out(self, source: BatchTokens) -> None:
        """Take a sequence's cache out of the generator, holding exactly what it streamed: a
        token generated but not streamed is cut off; feed tokens not yet prefilled go back to
        `pending`."""
        from mlx_lm.models.cache import trim_prompt_cache

        uid = source.uid
        if uid is None:
            return
        source.uid = None
        del self._in_generator[uid]
        if source.finished_cache is not None:
            cache, held = source.finished_cache
            source.finished_cache = None
        else:
            cache, held = self._generator.remove([uid], return_prompt_caches=True)[uid]
        held = list(held)
        if unstreamed := len(source.inbox):
            trim_prompt_cache(cache, unstreamed)
            del held[-unstreamed:]
            source.inbox.clear()
        expected = source.tokens
        assert held == expected[: len(held)], "the generator's cache lost step with the sequence"
        source.pending = expected[len(held) :] + source.pending
        source.cache, source.tokens = cache, held

    def close(self) -> None:
        for sequence in list(self._live):
            self.drop(sequence)
        self._generator.close()


_FINISHED = object()


class ThreadBatch:
    """The `Batch` interface over any backend's own `generate`, one thread per sequence: a
    remote engine's server batches by itself (vLLM, SGLang, mlx_lm.server), so N requests
    in flight are its batch. Sweeps are one run per budget there (`engine.separate_runs`)."""

    one_pass = False  # `add_sweep` is one run per budget

    def __init__(self, backend, size: int = 8):
        if size < 1:
            raise ValueError("a batch holds at least one sequence")
        self.backend, self.size = backend, size
        self._items: queue.Queue = queue.Queue()
        self._live: list[Sequence] = []

    def __len__(self) -> int:
        return len(self._live)

    def add(
        self,
        prompt: list[int],
        window: ShiftedWindow = ShiftedWindow(),
        sampling: Sampling = Sampling(),
        control: WindowControl | None = None,
        key: Any = None,
    ) -> Sequence:
        control = control or WindowControl(window.budget)
        return self._start(
            Sequence(key, None, None, control), lambda: self.backend.generate(prompt, window, sampling, control=control)
        )

    def add_sweep(self, prompt: list[int], window: ShiftedWindow, budgets: list[int], key: Any = None) -> Sequence:
        def results():
            by_budget = separate_runs(self.backend, prompt, window, budgets, Sampling())
            return [by_budget[b] for b in sorted(by_budget, reverse=True)]

        return self._start(Sequence(key, None, None), results)

    def _start(self, sequence: Sequence, make: Callable[[], Any]) -> Sequence:
        self._live.append(sequence)
        threading.Thread(target=self._run, args=(sequence, make), name="z1-sequence", daemon=True).start()
        return sequence

    def _run(self, sequence: Sequence, make: Callable[[], Any]) -> None:
        try:
            for item in make():
                self._items.put((sequence, item))
        except Exception as err:  # reported as the sequence's item, as `Batch` does
            self._items.put((sequence, err))
        finally:
            self._items.put((sequence, _FINISHED))

    def step(self, wait: float = 0.05) -> list[tuple[Sequence, Any]]:
        """What the sequences produced since the last step (waiting up to `wait` s for something)."""
        try:
            items = [self._items.get(timeout=wait)]
        except queue.Empty:
            return []
        while True:
            try:
                items.append(self._items.get_nowait())
            except queue.Empty:
                break
        out = []
        for sequence, item in items:
            if item is _FINISHED:
                if sequence in self._live:
                    self._live.remove(sequence)
                sequence.done = True
                continue
            if sequence.done:  # dropped
                continue
            if isinstance(item, BaseException):
                sequence.error = item
            elif isinstance(item, Done):
                sequence.results.append(item.result)
            elif isinstance(item, GenerationResult):
                sequence.results.append(item)
            out.append((sequence, item))
        return out

    def run(self) -> Iterator[tuple[Sequence, Any]]:
        while self._live:
            yield from self.step()

    def drop(self, sequence: Sequence) -> None:
        if sequence.control is not None:
            sequence.control.cancel()  # the thread's generation ends at its next token
        sequence.done = True
        if sequence in self._live:
            self._live.remove(sequence)

    def close(self) -> None:
        for sequence in list(self._live):
            self.drop(sequence)


def generate_all(
    batch: "Batch | ThreadBatch", jobs: list[tuple[Any, list[int], ShiftedWindow, Sampling]]
) -> Iterator[tuple]:
    """Each job's `GenerationResult`, as (key, result), in the order they finish; at most
    `batch.size` in the batch at once. A failed job raises its exception."""
    waiting = deque(jobs)
    while waiting or len(batch):
        while waiting and len(batch) < batch.size:
            key, prompt, window, sampling = waiting.popleft()
            batch.add(prompt, window, sampling, key=key)
        for sequence, item in batch.step():
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Done):
                yield sequence.key, item.result


__all__ = ["Batch", "BatchTokens", "Sequence", "ThreadBatch", "generate_all", "sweep_all"]


def sweep_all(
    batch: "Batch | ThreadBatch", jobs: list[tuple[Any, list[int], ShiftedWindow, list[int]]]
) -> Iterator[tuple]:
    """Each job's budget sweep, as (key, {budget: GenerationResult}), in the order they
    finish; at most `batch.size` sweeps at once. A failed job raises its exception."""
    waiting = deque(jobs)
    running: list[Sequence] = []
    while waiting or running:
        while waiting and len(batch) < batch.size:
            key, prompt, window, budgets = waiting.popleft()
            running.append(batch.add_sweep(prompt, window, budgets, key=key))
        for _, item in batch.step():
            if isinstance(item, BaseException):
                raise item
        for sequence in [s for s in running if s.done]:
            running.remove(sequence)
            yield sequence.key, {r.budget: r for r in sequence.results}
