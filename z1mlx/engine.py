"""The local backend: a model loaded with mlx-lm, as a token source for the window driver.

`Engine.generate` hands `window.drive` a `LocalTokens` over mlx-lm's `generate_step` and
ONE prompt cache: at the shift only the hint's tokens are prefilled, where the reference
implementation re-sends prompt + partial text + hint. The driver decides everything else.
Front ends (solve, chat, TUI, server) consume the events; none of them touches mlx.
"""

import functools
import json
import os
from collections.abc import Callable, Generator
from dataclasses import replace
from pathlib import Path

from .backend import Events, Piece, Segment
from .errors import Z1Error
from .events import Done, GenerationResult, Sampling
from .window import ShiftedWindow, WindowControl, drive

__all__ = ["ConversationCache", "Engine", "LocalTokens", "Sampling"]


class ConversationCache:
    """A KV cache and the exact token ids it holds, reused across turns.

    A new prompt is matched against the cached ids; the cache is trimmed to the common
    prefix and only the rest is prefilled, so time to first token stays flat as a
    conversation grows.
    """

    def __init__(self, make: Callable[[], list]):
        self._make = make  # a fresh cache: the model's layers (then the draft's, with a draft model)
        self.cache: list = []
        self.tokens: list[int] = []
        self.reset()

    def reset(self) -> None:
        self.cache = self._make()
        self.tokens = []

    def reuse(self, prompt: list[int]) -> int:
        """Trim to the longest reusable prefix of `prompt`; return its length."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        common = 0
        for a, b in zip(self.tokens, prompt):
            if a != b:
                break
            common += 1
        common = min(common, len(prompt) - 1)  # generation needs at least one token fed
        if common < len(self.tokens):
            if common == 0 or not can_trim_prompt_cache(self.cache):
                self.reset()
                return 0
            trim_prompt_cache(self.cache, len(self.tokens) - common)
            del self.tokens[common:]
        return common


class PooledConversationCache(ConversationCache):
    """A `ConversationCache` over mlx-lm's `LRUPromptCache`, for a server's many clients.

    Before each prompt, the cache in hand goes into the pool under the exact ids it holds;
    the prompt then starts from the pooled cache sharing its longest prefix (a copy), so
    alternating conversations each keep their prefix.
    """

    def __init__(self, make: Callable[[], list], size: int):
        from mlx_lm.models.cache import LRUPromptCache

        self._pool = LRUPromptCache(max_size=size)
        super().__init__(make)

    def reuse(self, prompt: list[int]) -> int:
        if self.tokens:
            self._pool.insert_cache("model", list(self.tokens), self.cache)
        self.cache, held = nearest_cache(self._make, self._pool, prompt)
        self.tokens = list(prompt[:held])
        return held


def nearest_cache(make: Callable[[], list], pool, prompt: list[int]) -> tuple[list, int]:
    """A KV cache to start `prompt` from, and how many of its tokens it holds: a copy of the
    cache in `pool` (mlx-lm's `LRUPromptCache`, or None) sharing the longest prefix, cut to
    leave at least one token to feed; else a fresh cache and 0."""
    from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

    cache, held = None, 0
    if pool is not None:
        cache, rest = pool.fetch_nearest_cache("model", list(prompt))
        held = len(prompt) - len(rest)
        if cache is not None and held == len(prompt):  # generation needs at least one token fed
            if can_trim_prompt_cache(cache):
                trim_prompt_cache(cache, 1)
                held -= 1
            else:
                cache, held = None, 0
    if cache is None or held == 0:
        return make(), 0
    return cache, held


# Tokens the draft proposes per step: mlx_lm.generate's default for --draft-model.
DEFAULT_DRAFT_TOKENS = 3
# A length no segment reaches: the driver stops each segment itself (exact counts).
UNLIMITED = 1 << 30


def _fresh_cache(model, draft) -> list:
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    return cache + make_prompt_cache(draft) if draft is not None else cache


def _load(path: Path, adapter: Path | None):
    try:
        from mlx_lm import load

        return load(str(path), adapter_path=str(adapter) if adapter else None)[:2]
    except Z1Error:
        raise
    except Exception as err:  # mlx-lm raises many kinds for a damaged directory
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise Z1Error(f"{path}: cannot load model ({type(err).__name__}: {message})") from err


def _eos_ids(model_path: Path, tokenizer) -> set[int]:
    ids = set(tokenizer.eos_token_ids or ())
    try:
        generation = json.loads((model_path / "generation_config.json").read_text())
    except (OSError, json.JSONDecodeError):
        generation = {}
    extra = generation.get("eos_token_id")
    if isinstance(extra, int):
        ids.add(extra)
    elif isinstance(extra, list):
        ids.update(i for i in extra if isinstance(i, int))
    return ids


class Engine:
    """A loaded model and tokenizer, and the shifted-window generation loop."""

    def __init__(self, model, tokenizer, model_path: Path, label: str | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.model_path = Path(model_path)
        from .store import model_name

        self.name = model_name(self.model_path)
        self.label = label or self.name  # for display: says so when the weights are random
        self.eos_token_ids = _eos_ids(self.model_path, tokenizer)
        self.draft = None  # a draft model for speculative decoding (`use_draft`)
        self.draft_name: str | None = None
        self.num_draft_tokens = DEFAULT_DRAFT_TOKENS
        self.draft_counts = {"generated": 0, "accepted": 0}  # tokens since load, and those the draft proposed

    @classmethod
    def load(
        cls,
        model: str | None = None,
        adapter: str | Path | None = None,
        draft_model: str | None = None,
        num_draft_tokens: int | None = None,
    ) -> "Engine":
        """Resolve `--model` (see `store.resolve_model`) and load it, with an optional adapter
        and an optional draft model for speculative decoding."""
        from .store import describe, resolve_model

        path = resolve_model(model)
        if adapter is not None:
            adapter = Path(adapter).expanduser()
            if not (adapter / "adapter_config.json").is_file():
                raise Z1Error(f"{adapter}: not an adapter directory (no adapter_config.json)")
        loaded_model, tokenizer = _load(path, adapter)
        engine = cls(loaded_model, tokenizer, path, describe(path))
        if draft_model is not None:
            draft_path = resolve_model(draft_model)
            draft, draft_tokenizer = _load(draft_path, None)
            engine.use_draft(draft, draft_tokenizer, draft_model, num_draft_tokens)
        elif num_draft_tokens is not None:
            raise Z1Error("--num-draft-tokens needs --draft-model")
        return engine

    def use_draft(self, draft, draft_tokenizer, name: str, num_draft_tokens: int | None = None) -> None:
        """Decode speculatively: `draft` proposes, this model verifies. Refused (one line) when
        the draft's tokenizer is not this model's: its proposals would be other tokens."""
        mine, theirs = self.tokenizer.get_vocab(), draft_tokenizer.get_vocab()
        if mine != theirs:
            differ = len(set(mine.items()) ^ set(theirs.items()))
            raise Z1Error(
                f"--draft-model {name}: its tokenizer does not match {self.name}'s ({differ} token ids differ); "
                "a draft model must share the model's tokenizer"
            )
        k = DEFAULT_DRAFT_TOKENS if num_draft_tokens is None else num_draft_tokens
        if not 1 <= k <= 64:
            raise Z1Error(f"--num-draft-tokens: must be between 1 and 64, got {k}")
        self.draft, self.draft_name, self.num_draft_tokens = draft, name, k

    def make_cache(self) -> list:
        """A fresh KV cache: the model's layers, then the draft's (mlx-lm's speculative layout)."""
        return _fresh_cache(self.model, self.draft)

    # Prompts

    def render(self, messages: list[dict]) -> str:
        """A conversation rendered with the model's chat template, ready for the reply."""
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def chat_prompt(self, messages: list[dict], prefill: str = "") -> list[int]:
        """Token ids of a conversation rendered with the model's chat template."""
        return self.tokenizer.encode(self.render(messages) + prefill, add_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def new_conversation_cache(self, pool: int = 0) -> ConversationCache:
        """A cache for one conversation; with `pool` > 0, one that keeps up to `pool` earlier
        prompts' caches (mlx-lm's `LRUPromptCache`) and starts each prompt from the nearest."""
        make = functools.partial(_fresh_cache, self.model, self.draft)
        return PooledConversationCache(make, pool) if pool > 0 else ConversationCache(make)

    # Generation

    def _detokenizer(self):
        """mlx-lm's streaming detokenizer, keeping a leading space so text == decode(ids)."""
        detok = self.tokenizer.detokenizer
        if hasattr(detok, "_maybe_trim_space"):
            detok._maybe_trim_space = lambda text: text
        return detok

    def decode_segment(self, ids: list[int]) -> str:
        """The text a segment of exactly these tokens streams (the detokenizer's, leading space kept)."""
        detok = self._detokenizer()
        for token in ids:
            detok.add_token(token)
        detok.finalize()
        return detok.text

    def _sampler_and_processors(self, sampling: Sampling):
        import mlx.core as mx
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        if sampling.seed is not None:
            mx.random.seed(sampling.seed)
        vocab = getattr(getattr(self.model, "args", None), "vocab_size", None)
        sampler = make_sampler(
            temp=sampling.temperature,
            top_p=sampling.top_p if sampling.top_p < 1 else 0.0,
            min_p=sampling.min_p,
            top_k=0 if vocab and sampling.top_k >= vocab else sampling.top_k,  # all tokens: no cut
        )
        processors = make_logits_processors(repetition_penalty=sampling.repetition_penalty)
        return sampler, processors

    @staticmethod
    def _with_history(processors, history: list[int]):
        """Logits processors see only the tokens of one `generate_step` call; give them all."""
        if not processors or not history:
            return processors
        import mlx.core as mx

        prefix = mx.array(history[-256:])  # penalties look back a few dozen tokens at most

        def wrap(processor):
            return lambda tokens, logits: processor(mx.concatenate([prefix, tokens]), logits)

        return [wrap(p) for p in processors]

    def generate(
        self,
        prompt: list[int],
        window: ShiftedWindow = ShiftedWindow(),
        sampling: Sampling = Sampling(),
        control: WindowControl | None = None,
        conversation: ConversationCache | None = None,
    ) -> Events:
        """Generate a reply to `prompt` (token ids) under the shifted window, as events."""
        import mlx.core as mx
        from mlx_lm.generate import generation_stream, wired_limit

        conversation = conversation or self.new_conversation_cache()
        source = LocalTokens(self, conversation, sampling)
        try:
            with wired_limit(self.model, [generation_stream]):  # type: ignore[list-item]
                yield from drive(source, prompt, window, control, self.encode)
        except GeneratorExit:
            raise  # the consumer stopped reading: the cache still holds exactly its tokens
        except BaseException:
            # A failure mid-step leaves the cache and its token list out of step, and can
            # leave mlx's random state unevaluable (a failed compiled sampler): renew both.
            conversation.reset()
            mx.random.seed(int.from_bytes(os.urandom(4), "little"))
            raise

    def batch(self, size: int, prompt_cache_size: int = 0):
        """Up to `size` replies at once through mlx-lm's `BatchGenerator` (see `batch.Batch`).
        With a draft model, one at a time (`BatchGenerator` does not speculate; neither does
        mlx_lm.server's batch), each reply speculative."""
        from .batch import Batch, ThreadBatch

        if self.draft is not None:
            return ThreadBatch(self, 1)
        return Batch(self, size, prompt_cache_size)

    def sweep(
        self,
        prompt: list[int],
        window: ShiftedWindow,
        budgets: list[int],
        sampling: Sampling = Sampling(),
    ) -> tuple[dict[int, GenerationResult], bool]:
        """Results for every budget of `budgets` on one prompt, and whether they came from one pass.

        Greedy (without think longer): one phase 1 under the largest budget, then each smaller
        budget answers from a cache cut back to prompt + budget (`window.sweep`); each result
        equals a separate `generate` with that budget, token for token. Sampled, or with
        think longer, the prefix property does not hold: one separate run per budget."""
        from mlx_lm.generate import generation_stream, wired_limit

        from .window import sweep

        if sampling.temperature == 0 and not window.min_thinking:
            source = LocalTokens(self, self.new_conversation_cache(), sampling)
            with wired_limit(self.model, [generation_stream]):  # type: ignore[list-item]
                results = list(sweep(source, prompt, window, budgets, self.encode))
            return {r.budget: r for r in results}, True
        return separate_runs(self, prompt, window, budgets, sampling), False


def separate_runs(backend, prompt: list[int], window: ShiftedWindow, budgets: list[int], sampling: Sampling):
    """One `generate` per budget (any backend): the sweep where one pass cannot serve them all."""
    out: dict[int, GenerationResult] = {}
    for budget in sorted(set(budgets), reverse=True):
        for event in backend.generate(prompt, replace(window, budget=budget), sampling):
            if isinstance(event, Done):
                out[budget] = event.result
    return out


class LocalTokens:
    """`generate_step` over one `ConversationCache`, segment after segment (see `backend.TokenSource`);
    with a draft model, mlx-lm's `speculative_generate_step` over the model's and the draft's caches.

    mlx-lm feeds each token it yields into the cache before yielding it, so after a
    segment the cache holds every token received, an end token included (`drop_end`
    trims it for think-longer). Speculation accepts several tokens per step, and leaves the
    model's and the draft's caches at different points; after each segment both are cut back
    to the tokens the driver took (never past the budget), and what one of them lacks is fed
    with the next segment (`pending`).
    """

    exact_counts = True
    reports_prefill = True

    def __init__(self, engine: Engine, conversation: ConversationCache, sampling: Sampling):
        self.engine = engine
        self.conversation = conversation
        self.sampler, self.processors = engine._sampler_and_processors(sampling)
        self.pending: list[int] = []  # tokens of the context not yet in the cache

    def begin(self, prompt: list[int]) -> int:
        import mlx.core as mx

        mx.reset_peak_memory()
        reused = self.conversation.reuse(prompt)
        self.pending = list(prompt[reused:])
        return reused

    def _steps(self, feed: list[int]) -> Generator[tuple[int, bool], None, None]:
        """(token, from_draft) pairs after `feed`, from mlx-lm's own generation loop; closing
        this closes mlx-lm's generator at once (its own cache bookkeeping runs then)."""
        import mlx.core as mx
        from mlx_lm.generate import generate_step, speculative_generate_step

        engine, conversation = self.engine, self.conversation
        processors = engine._with_history(self.processors, conversation.tokens)
        if engine.draft is None:
            inner = generate_step(
                mx.array(feed),
                engine.model,
                max_tokens=-1,
                sampler=self.sampler,
                logits_processors=processors,
                prompt_cache=conversation.cache,
            )
        else:
            inner = speculative_generate_step(
                mx.array(feed),
                engine.model,
                engine.draft,
                num_draft_tokens=engine.num_draft_tokens,
                max_tokens=UNLIMITED,  # the driver ends each segment (the budget, exactly)
                sampler=self.sampler,
                logits_processors=processors,
                prompt_cache=conversation.cache,
            )
        try:
            for step in inner:
                yield int(step[0]), len(step) > 2 and bool(step[2])
        finally:
            inner.close()

    def stream(
        self, feed_ids: list[int], feed_text: str, limit: int, should_stop: Callable[[int], str | None]
    ) -> Generator[Piece, None, Segment]:
        conversation, eos = self.conversation, self.engine.eos_token_ids
        feed = self.pending + list(feed_ids)
        self.pending = []
        if not feed:
            # Go on from the last token: its logits were not kept, so feed it again.
            from mlx_lm.models.cache import trim_prompt_cache

            trim_prompt_cache(conversation.cache, 1)
            feed = [conversation.tokens.pop()]
        steps = self._steps(feed)
        conversation.tokens.extend(feed)
        out: list[int] = []
        detok = self.engine._detokenizer()
        end = "stopped"
        counts = self.engine.draft_counts
        try:
            for step, from_draft in steps:
                token = step
                conversation.tokens.append(token)
                counts["generated"] += 1
                counts["accepted"] += bool(from_draft)
                if token in eos:
                    end = "stop"
                    break
                out.append(token)
                detok.add_token(token)
                yield Piece(detok.last_segment, [token], len(out))
                if should_stop(len(out)):
                    break
        finally:
            steps.close()
            if self.engine.draft is not None:
                self._align()
        detok.finalize()
        if tail := detok.last_segment:
            yield Piece(tail, [], len(out))
        return Segment(end, detok.text, out, len(out))  # type: ignore[arg-type]

    def _align(self) -> None:
        """Cut the model's and the draft's caches back to the same point, no further than the
        tokens taken; the tokens either lacks go to `pending`, fed before the next segment."""
        from mlx_lm.models.cache import trim_prompt_cache

        conversation = self.conversation
        layers = len(self.engine.model.layers)
        parts = (conversation.cache[:layers], conversation.cache[layers:])
        held = min(len(conversation.tokens), *(part[0].offset for part in parts))
        for part in parts:
            if part[0].offset > held:
                trim_prompt_cache(part, part[0].offset - held)
        self.pending = conversation.tokens[held:] + self.pending
        del conversation.tokens[held:]

    def drop_end(self) -> None:
        from mlx_lm.models.cache import trim_prompt_cache

        if self.pending:  # the end token never reached the cache
            self.pending.pop()
            return
        trim_prompt_cache(self.conversation.cache, 1)
        self.conversation.tokens.pop()

    def rewind(self, keep: int) -> bool:
        """Cut the context back to its first `keep` tokens (a budget sweep); False where it cannot be."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        conversation = self.conversation
        cached = len(conversation.tokens)
        if not cached or keep > cached + len(self.pending) or not can_trim_prompt_cache(conversation.cache):
            return False
        if keep >= cached:
            del self.pending[keep - cached :]
            return True
        trim_prompt_cache(conversation.cache, cached - keep)
        del conversation.tokens[keep:]
        self.pending = []
        return True

    def decode(self, ids: list[int]) -> str:
        return self.engine.decode_segment(ids)

    def peak_memory_gb(self) -> float:
        return peak_memory_gb()


def peak_memory_gb() -> float:
    import mlx.core as mx

    return mx.get_peak_memory() / 1e9
