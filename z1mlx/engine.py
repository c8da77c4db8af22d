"""The local backend: a model loaded with mlx-lm, as a token source for the window driver.

`Engine.generate` hands `window.drive` a `LocalTokens` over mlx-lm's `generate_step` and
ONE prompt cache: at the shift only the hint's tokens are prefilled, where the reference
implementation re-sends prompt + partial text + hint. The driver decides everything else.
Front ends (solve, chat, TUI, server) consume the events; none of them touches mlx.
"""

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

    def __init__(self, model):
        self._model = model
        self.cache: list = []
        self.tokens: list[int] = []
        self.reset()

    def reset(self) -> None:
        from mlx_lm.models.cache import make_prompt_cache

        self.cache = make_prompt_cache(self._model)
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

    def __init__(self, model, size: int):
        from mlx_lm.models.cache import LRUPromptCache

        self._pool = LRUPromptCache(max_size=size)
        super().__init__(model)

    def reuse(self, prompt: list[int]) -> int:
        if self.tokens:
            self._pool.insert_cache("model", list(self.tokens), self.cache)
        self.cache, held = nearest_cache(self._model, self._pool, prompt)
        self.tokens = list(prompt[:held])
        return held


def nearest_cache(model, pool, prompt: list[int]) -> tuple[list, int]:
    """A KV cache to start `prompt` from, and how many of its tokens it holds: a copy of the
    cache in `pool` (mlx-lm's `LRUPromptCache`, or None) sharing the longest prefix, cut to
    leave at least one token to feed; else a fresh cache and 0."""
    from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

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
        return make_prompt_cache(model), 0
    return cache, held


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

    @classmethod
    def load(cls, model: str | None = None, adapter: str | Path | None = None) -> "Engine":
        """Resolve `--model` (see `store.resolve_model`) and load it, with an optional adapter."""
        from .store import describe, resolve_model

        path = resolve_model(model)
        if adapter is not None:
            adapter = Path(adapter).expanduser()
            if not (adapter / "adapter_config.json").is_file():
                raise Z1Error(f"{adapter}: not an adapter directory (no adapter_config.json)")
        try:
            from mlx_lm import load

            loaded_model, tokenizer = load(str(path), adapter_path=str(adapter) if adapter else None)[:2]
        except Z1Error:
            raise
        except Exception as err:  # mlx-lm raises many kinds for a damaged directory
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise Z1Error(f"{path}: cannot load model ({type(err).__name__}: {message})") from err
        return cls(loaded_model, tokenizer, path, describe(path))

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
        return PooledConversationCache(self.model, pool) if pool > 0 else ConversationCache(self.model)

    # Generation

    def _detokenizer(self):
        """mlx-lm's streaming detokenizer, keeping a leading space so text == decode(ids)."""
        detok = self.tokenizer.detokenizer
        if hasattr(detok, "_maybe_trim_space"):
            detok._maybe_trim_space = lambda text: text
        return detok

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
        """Up to `size` replies at once through mlx-lm's `BatchGenerator` (see `batch.Batch`)."""
        from .batch import Batch

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
    """`generate_step` over one `ConversationCache`, segment after segment (see `backend.TokenSource`).

    mlx-lm feeds each token it yields into the cache before yielding it, so after a
    segment the cache holds every token received, an end token included (`drop_end`
    trims it for think-longer).
    """

    exact_counts = True
    reports_prefill = True

    def __init__(self, engine: Engine, conversation: ConversationCache, sampling: Sampling):
        self.engine = engine
        self.conversation = conversation
        self.sampler, self.processors = engine._sampler_and_processors(sampling)
        self.pending: list[int] = []  # prompt tokens not yet in the cache

    def begin(self, prompt: list[int]) -> int:
        import mlx.core as mx

        mx.reset_peak_memory()
        reused = self.conversation.reuse(prompt)
        self.pending = list(prompt[reused:])
        return reused

    def stream(
        self, feed_ids: list[int], feed_text: str, limit: int, should_stop: Callable[[int], str | None]
    ) -> Generator[Piece, None, Segment]:
        import mlx.core as mx
        from mlx_lm.generate import generate_step

        conversation, eos = self.conversation, self.engine.eos_token_ids
        feed = self.pending + list(feed_ids)
        self.pending = []
        if not feed:
            # Go on from the last token: its logits were not kept, so feed it again.
            from mlx_lm.models.cache import trim_prompt_cache

            trim_prompt_cache(conversation.cache, 1)
            feed = [conversation.tokens.pop()]
        steps = generate_step(
            mx.array(feed),
            self.engine.model,
            max_tokens=-1,
            sampler=self.sampler,
            logits_processors=self.engine._with_history(self.processors, conversation.tokens),
            prompt_cache=conversation.cache,
        )
        conversation.tokens.extend(feed)
        out: list[int] = []
        detok = self.engine._detokenizer()
        end = "stopped"
        try:
            for step, _ in steps:
                token = int(step)  # mlx-lm yields Python ints already
                conversation.tokens.append(token)
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
        detok.finalize()
        if tail := detok.last_segment:
            yield Piece(tail, [], len(out))
        return Segment(end, detok.text, out, len(out))  # type: ignore[arg-type]

    def drop_end(self) -> None:
        from mlx_lm.models.cache import trim_prompt_cache

        trim_prompt_cache(self.conversation.cache, 1)
        self.conversation.tokens.pop()

    def rewind(self, keep: int) -> bool:
        """Cut the cache back to its first `keep` tokens (a budget sweep); False where it cannot be."""
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        conversation = self.conversation
        held = len(conversation.tokens)
        if self.pending or keep > held or not can_trim_prompt_cache(conversation.cache):
            return False
        if held > keep:
            trim_prompt_cache(conversation.cache, held - keep)
            del conversation.tokens[keep:]
        return True

    def decode(self, ids: list[int]) -> str:
        detok = self.engine._detokenizer()
        for token in ids:
            detok.add_token(token)
        detok.finalize()
        return detok.text

    def peak_memory_gb(self) -> float:
        import mlx.core as mx

        return mx.get_peak_memory() / 1e9
