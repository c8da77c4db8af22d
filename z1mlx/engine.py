"""The generation loop: mlx-lm's `generate_step` with the Shifted Thinking Window.

`Engine.generate` yields events (text deltas tagged with their phase, the shift, the
final result). Both phases run in ONE prompt cache: at the shift only the hint's tokens
are prefilled, where the reference implementation re-sends prompt + partial text + hint.
Front ends (solve, chat, TUI, server) consume these events; none of them touches mlx.
"""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

from .errors import Z1Error
from .window import ShiftedWindow, WindowControl

Phase = Literal["thinking", "answer"]


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0  # greedy, as in the paper's evaluations
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float | None = None
    seed: int | None = None

    def __post_init__(self):
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
    tokens: int  # tokens generated in this phase so far


@dataclass
class Shift:
    thinking_tokens: int
    hint: str
    reason: Literal["budget", "answer_now"]


@dataclass
class GenerationResult:
    prompt_tokens: int
    thinking_tokens: int
    answer_tokens: int
    window_hit: bool
    finish_reason: Literal["stop", "length", "cancelled"]
    budget: int
    answer_cap: int
    hint: str | None
    shift_reason: str | None
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

    @property
    def text(self) -> str:
        """The reply as the model saw it: thinking, then hint and answer if it shifted."""
        return self.thinking_text + (self.hint or "") + self.answer_text


@dataclass
class Done:
    result: GenerationResult


Event = TextDelta | Shift | Done


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

            loaded_model, tokenizer = load(str(path), adapter_path=str(adapter) if adapter else None)
        except Z1Error:
            raise
        except Exception as err:  # mlx-lm raises many kinds for a damaged directory
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise Z1Error(f"{path}: cannot load model ({type(err).__name__}: {message})")
        return cls(loaded_model, tokenizer, path, describe(path))

    # Prompts

    def chat_prompt(self, messages: list[dict], prefill: str = "") -> list[int]:
        """Token ids of a conversation rendered with the model's chat template."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer.encode(text + prefill, add_special_tokens=False)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def new_conversation_cache(self) -> ConversationCache:
        return ConversationCache(self.model)

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
    ) -> Iterator[Event]:
        """Generate a reply to `prompt` (token ids) under the shifted window, as events."""
        import mlx.core as mx
        from mlx_lm.generate import generate_step, generation_stream, wired_limit

        if not prompt:
            raise Z1Error("the prompt is empty")
        control = control or WindowControl(window.budget)
        conversation = conversation or self.new_conversation_cache()
        reused = conversation.reuse(prompt)
        pending = list(prompt[reused:])  # prompt tokens not yet in the cache
        sampler, processors = self._sampler_and_processors(sampling)
        hint_ids = self.encode(window.hint)
        eos = self.eos_token_ids
        ids = {"thinking": [], "answer": []}
        texts = {"thinking": "", "answer": ""}
        clock = {"start": time.perf_counter(), "first": None, "prefill": 0.0, "hint": 0.0}
        finish = "length"
        shift_reason = None
        shifted = False
        budget_at_shift = None
        mx.reset_peak_memory()

        def phase(phase_name: Phase, feed: list[int], cap: int | None):
            """Stream one phase; the cache holds every token fed and received."""
            nonlocal finish, shift_reason
            steps = generate_step(
                mx.array(feed), self.model, max_tokens=-1, sampler=sampler,
                logits_processors=self._with_history(processors, conversation.tokens),
                prompt_cache=conversation.cache,
            )
            conversation.tokens.extend(feed)
            out = ids[phase_name]
            detok = self._detokenizer()
            fed_at = time.perf_counter()
            try:
                for token, _ in steps:
                    if not out:  # the phase's first token: its prefill is over
                        latency = time.perf_counter() - fed_at
                        if clock["first"] is None:
                            clock["first"], clock["prefill"] = time.perf_counter(), latency
                        else:
                            clock["hint"] = latency
                    conversation.tokens.append(token)
                    if token in eos:
                        finish = "stop"
                        break
                    out.append(token)
                    detok.add_token(token)
                    yield TextDelta(detok.last_segment, phase_name, len(out))
                    if control.cancelled:
                        finish = "cancelled"
                        break
                    if cap is None:
                        shift_reason = control.shift_reason(len(out))
                        if shift_reason:
                            break
                    elif len(out) >= cap:
                        break
            finally:
                steps.close()
            detok.finalize()
            if tail := detok.last_segment:
                yield TextDelta(tail, phase_name, len(out))
            texts[phase_name] = detok.text

        try:
            with wired_limit(self.model, [generation_stream]):
                if control.cancelled:
                    finish = "cancelled"
                else:
                    shift_reason = control.shift_reason(0)  # budget 0 or answer-now: no thinking
                    if shift_reason is None:
                        yield from phase("thinking", pending, None)
                        pending = []
                if shift_reason and finish == "length":
                    # The window is hit: the hint goes into the same cache, then the answer.
                    shifted = True
                    budget_at_shift = control.budget  # the window that was hit, whatever moves later
                    yield Shift(len(ids["thinking"]), window.hint, shift_reason)
                    yield from phase("answer", pending + hint_ids, window.answer_tokens)
        except GeneratorExit:
            raise  # the consumer stopped reading: the cache still holds exactly its tokens
        except BaseException:
            # A failure mid-step leaves the cache and its token list out of step, and can
            # leave mlx's random state unevaluable (a failed compiled sampler): renew both.
            conversation.reset()
            mx.random.seed(int.from_bytes(os.urandom(4), "little"))
            raise

        ended = time.perf_counter()
        window_hit = shifted
        generated = len(ids["thinking"]) + len(ids["answer"])
        first = clock["first"]
        decode_seconds = (ended - first - clock["hint"]) if first else 0.0
        yield Done(GenerationResult(
            prompt_tokens=len(prompt),
            thinking_tokens=len(ids["thinking"]),
            answer_tokens=len(ids["answer"]),
            window_hit=window_hit,
            finish_reason=finish,
            budget=control.budget if budget_at_shift is None else budget_at_shift,
            answer_cap=window.answer_tokens,
            hint=window.hint if window_hit else None,
            shift_reason=shift_reason if window_hit else None,
            thinking_text=texts["thinking"],
            answer_text=texts["answer"],
            prompt_token_ids=list(prompt),
            thinking_token_ids=ids["thinking"],
            hint_token_ids=hint_ids if window_hit else [],
            answer_token_ids=ids["answer"],
            ttft_s=(first - clock["start"]) if first else 0.0,
            prompt_tps=(len(prompt) - reused) / clock["prefill"] if clock["prefill"] > 0 else 0.0,
            generation_tps=(generated - 1) / decode_seconds if generated > 1 and decode_seconds > 0 else 0.0,
            peak_memory_gb=mx.get_peak_memory() / 1e9,
            cached_prompt_tokens=reused,
        ))
