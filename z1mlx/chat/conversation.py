"""A multi-turn conversation over the engine, shared by the TUI, the REPL and the server.

One `ConversationCache` per conversation: each turn renders the whole conversation with
the chat template, and the engine trims the cache to the common prefix and prefills only
the rest. Re-tokenizing a reply's text rarely gives back the ids the model generated, so
the prompt is built from the exact ids of the longest earlier prompt (or prompt + reply)
whose text it starts with; only the new text is encoded. That keeps the whole history a
cache hit and time to first token flat as the conversation grows.

The text stored for the next turn is the full reply (`GenerationResult.text`: thinking,
hint, answer), so the prefix the model saw is the prefix it sees again. Each message is
written to the history as it completes; a streaming reply's row is rewritten at most
once per `flush_interval` seconds.
"""

import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..backend import Backend
from ..errors import Z1Error
from ..events import Done, Sampling, Shift, TextDelta
from ..window import CONTINUE_TEXT, DEFAULT_ANSWER_TOKENS, HINT, ShiftedWindow, WindowControl
from .history import History, StoredConversation, StoredMessage

FLUSH_INTERVAL_S = 1.0


@dataclass
class Turn(StoredMessage):
    """A message, plus the exact token ids behind it (in memory only) for cache reuse."""

    prompt_text: str | None = None
    prompt_ids: list[int] | None = None
    thinking_ids: list[int] | None = None
    reply_ids: list[int] | None = None

    @property
    def stopped_while_thinking(self) -> bool:
        return self.role == "assistant" and self.finish_reason == "cancelled" and self.hint is None


def _turn_from(message: StoredMessage) -> Turn:
    return Turn(**{name: getattr(message, name) for name in StoredMessage.__dataclass_fields__})


class Conversation:
    """Messages, their KV cache and their history row, turn after turn."""

    def __init__(
        self,
        engine: Backend,
        history: History | None = None,
        *,
        system: str | None = None,
        answer_tokens: int = DEFAULT_ANSWER_TOKENS,
        sampling: Sampling = Sampling(),
        hint: str = HINT,
        min_thinking: int = 0,
        continue_text: str = CONTINUE_TEXT,
        clock: Callable[[], float] = time.monotonic,
        flush_interval: float = FLUSH_INTERVAL_S,
        on_storage_problem: Callable[[str], None] | None = None,
    ):
        self.engine = engine
        self.history = history
        self.system = system
        self.answer_tokens = answer_tokens
        self.sampling = sampling
        self.hint = hint
        self.min_thinking = min_thinking
        self.continue_text = continue_text
        self.clock = clock
        self.flush_interval = flush_interval
        self.id: int | None = None
        self.turns: list[Turn] = []
        self._cache = None
        self.last_result = None  # GenerationResult of the latest reply
        # When the history cannot be written (locked, full disk, read-only), the conversation goes
        # on in memory and into a recovery file; it is written to the history once that works again.
        self.on_storage_problem = on_storage_problem or (lambda text: print(f"z1 chat: {text}", file=sys.stderr))
        self.unsaved = False
        self.recovery_file: Path | None = None

    # Lifecycle

    def new(self) -> None:
        """Start over: a fresh conversation (its history row appears with its first message)."""
        self.id = None
        self.turns = []
        self.last_result = None
        if self._cache is not None:
            self._cache.reset()

    def forget_cache(self) -> None:
        """Drop the KV cache: the next turn prefills the whole conversation (a baseline to measure against)."""
        if self._cache is not None:
            self._cache.reset()

    def resume(self, conversation_id: int) -> StoredConversation:
        if self.history is None:
            raise Z1Error("no chat history to resume from")
        stored = self.history.load(conversation_id)
        self.new()
        self.id = stored.info.id
        self.system = stored.info.system
        self.turns = [_turn_from(m) for m in stored.messages]
        return stored

    def messages(self, turns: list[Turn] | None = None) -> list[dict]:
        """The chat-template messages: system prompt (if any), then every turn's content."""
        turns = self.turns if turns is None else turns
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": t.role, "content": t.content} for t in turns]

    @property
    def busy_reply(self) -> Turn | None:
        last = self.turns[-1] if self.turns else None
        return last if last and last.role == "assistant" and not last.complete else None

    @property
    def can_regenerate(self) -> bool:
        return any(t.role == "user" for t in self.turns)

    @property
    def can_answer_now(self) -> bool:
        """A reply stopped while thinking can be finished: hint, then answer."""
        return bool(self.turns) and self.turns[-1].stopped_while_thinking

    # Replies

    def send(self, text: str, control: WindowControl) -> Iterator:
        """Add a user message and stream the reply's engine events."""
        if not text.strip():
            raise Z1Error("empty message")
        user = Turn("user", text)
        self._store(user)
        self.turns.append(user)
        return self._reply(control)

    def regenerate(self, control: WindowControl) -> Iterator:
        """Drop the last reply (if any) and answer the last user message again."""
        if not self.can_regenerate:
            raise Z1Error("nothing to regenerate yet")
        while self.turns and self.turns[-1].role == "assistant":
            dropped = self.turns.pop()
            if self.history is not None and dropped.id is not None:
                self.history.delete_message(dropped.id)
        return self._reply(control)

    def answer_now(self, control: WindowControl) -> Iterator:
        """Finish a reply stopped while thinking: append the hint in the same cache and answer."""
        if not self.can_answer_now:
            raise Z1Error("no stopped reply to answer (answer now works on a reply stopped while thinking)")
        turn = self.turns[-1]
        if turn.prompt_ids is None:  # resumed from the history: rebuild the ids once
            _, turn.prompt_ids = self._prompt(self.messages(self.turns[:-1]))
        thinking_ids = turn.thinking_ids if turn.thinking_ids is not None else self._encode(turn.thinking)
        control.answer_now()
        return self._run(turn, turn.prompt_ids + thinking_ids, control, continuing=True)

    def _reply(self, control: WindowControl) -> Iterator:
        prompt_text, prompt_ids = self._prompt(self.messages())
        turn = Turn(
            "assistant", "", budget=control.budget, complete=False, prompt_text=prompt_text, prompt_ids=prompt_ids
        )
        self._store(turn)
        self.turns.append(turn)
        return self._run(turn, prompt_ids, control, continuing=False)

    def _run(self, turn: Turn, prompt_ids: list[int], control: WindowControl, continuing: bool) -> Iterator:
        window = ShiftedWindow(
            budget=control.budget,
            answer_tokens=self.answer_tokens,
            hint=self.hint,
            min_thinking=0 if continuing else self.min_thinking,
            continue_text=self.continue_text,
        )
        thinking_before = turn.thinking if continuing else ""
        thinking_ids_before = (turn.thinking_ids or []) if continuing else []
        thinking_parts: list[str] = [thinking_before]
        answer_parts: list[str] = []
        turn.complete = False
        last_flush = self.clock()
        finished = False
        events = self.engine.generate(
            prompt_ids, window, self.sampling, control=control, conversation=self._conversation_cache()
        )
        try:
            for event in events:
                if isinstance(event, TextDelta):
                    (thinking_parts if event.phase == "thinking" else answer_parts).append(event.text)
                    if event.phase == "thinking":
                        turn.thinking_tokens = len(thinking_ids_before) + event.tokens
                    else:
                        turn.answer_tokens = event.tokens
                elif isinstance(event, Shift):
                    turn.hint, turn.shift_reason = event.hint, event.reason
                elif isinstance(event, Done):
                    self._finish(turn, event.result, thinking_before, thinking_ids_before)
                    finished = True
                if not finished and self.clock() - last_flush >= self.flush_interval:
                    turn.thinking, turn.answer = "".join(thinking_parts), "".join(answer_parts)
                    turn.content = turn.thinking + (turn.hint or "") + turn.answer
                    self._update(turn)
                    last_flush = self.clock()
                yield event
        finally:
            events.close()
            if not finished:  # the consumer stopped listening, or the engine failed
                turn.thinking, turn.answer = "".join(thinking_parts), "".join(answer_parts)
                turn.content = turn.thinking + (turn.hint or "") + turn.answer
                turn.finish_reason = "cancelled"
                turn.complete = True
                turn.reply_ids = None  # the cache no longer matches this text exactly
                self._update(turn)

    def _finish(self, turn: Turn, result, thinking_before: str, thinking_ids_before: list[int]) -> None:
        turn.thinking = thinking_before + result.thinking_text
        turn.thinking_ids = thinking_ids_before + result.thinking_token_ids
        turn.thinking_tokens = len(turn.thinking_ids)
        turn.hint = result.hint
        turn.shift_reason = result.shift_reason
        turn.answer = result.answer_text
        turn.answer_tokens = result.answer_tokens
        turn.content = turn.thinking + (turn.hint or "") + turn.answer
        turn.reply_ids = turn.thinking_ids + result.hint_token_ids + result.answer_token_ids
        turn.finish_reason = result.finish_reason
        if not thinking_before:  # a continued reply keeps the budget it thought under
            turn.budget = result.budget
        turn.ttft_s = result.ttft_s
        turn.tokens_per_s = result.generation_tps
        turn.complete = True
        self.last_result = result
        if result.finish_reason == "cancelled" and not turn.content:
            # Stopped before the first token: nothing worth keeping.
            self.turns.remove(turn)
            if self.history is not None and turn.id is not None:
                self.history.delete_message(turn.id)
            return
        self._update(turn)

    # Prompt building

    def _encode(self, text: str) -> list[int]:
        return self.engine.encode(text) if text else []

    def _prompt(self, messages: list[dict]) -> tuple[str, list[int]]:
        """(text, ids) of the rendered conversation, reusing the exact ids of earlier turns."""
        text = self.engine.render(messages)
        best_text, best_ids = "", []
        for turn in self.turns:
            if turn.prompt_text is None or turn.prompt_ids is None:
                continue
            known = [(turn.prompt_text, turn.prompt_ids)]
            if turn.reply_ids is not None:
                known.append((turn.prompt_text + turn.content, turn.prompt_ids + turn.reply_ids))
            for known_text, known_ids in known:
                if len(known_text) > len(best_text) and text.startswith(known_text):
                    best_text, best_ids = known_text, known_ids
        return text, list(best_ids) + self._encode(text[len(best_text) :])

    def _conversation_cache(self):
        if self._cache is None:
            self._cache = self.engine.new_conversation_cache()
        return self._cache

    # Storage

    def _store(self, turn: Turn) -> None:
        if self.history is None:
            return
        # `turn` is about to join `self.turns`: what is kept or retried includes it.
        if self.unsaved:
            self._retry_storage(pending=turn)
            return
        try:
            if self.id is None:
                self.id = self.history.new_conversation(model=self.engine.name, system=self.system)
            self.history.add_message(self.id, turn)
        except Z1Error as err:
            self._storage_failed(err, pending=turn)

    def _update(self, turn: Turn) -> None:
        if self.history is None:
            return
        if self.unsaved:
            self._save_recovery()
            if turn.complete:
                self._retry_storage()
            return
        if turn.id is not None:
            try:
                self.history.update_message(turn)
            except Z1Error as err:
                self._storage_failed(err)

    def save_pending(self) -> bool:
        """At the end of a chat: one more try to store what the history could not take. True when
        everything is stored; otherwise says once more where the conversation is kept."""
        if self.history is None or not self.unsaved:
            return True
        self._retry_storage()
        if self.unsaved:
            where = f"it is kept in {self.recovery_file}" if self.recovery_file else "it could not be saved anywhere"
            self.on_storage_problem(f"this conversation is not in the history ({self.history.path}); {where}")
        return not self.unsaved

    def _storage_failed(self, err: Z1Error, pending: Turn | None = None) -> None:
        first = not self.unsaved
        self.unsaved = True
        self._save_recovery(pending)
        if first:
            where = f"; until then it is saved to {self.recovery_file}" if self.recovery_file else ""
            self.on_storage_problem(f"{err}. The conversation goes on and is stored once the history works{where}")

    def _with(self, pending: Turn | None) -> list[Turn]:
        return self.turns + ([pending] if pending is not None and all(t is not pending for t in self.turns) else [])

    def _save_recovery(self, pending: Turn | None = None) -> None:
        from .. import locations
        from ..fsutil import atomic_write_text
        from .history import ConversationInfo, to_markdown

        now = time.time()
        turns = self._with(pending)
        info = ConversationInfo(self.id or 0, "", self.engine.name, self.system, now, now, len(turns))
        text = to_markdown(StoredConversation(info, list[StoredMessage](turns)))
        if self.recovery_file is not None:
            places = [self.recovery_file]
        else:  # the data directory, or the temporary one when that cannot be written either
            name = f"chat-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.md"
            places = [locations.data_dir() / "recovered" / name, Path(tempfile.gettempdir()) / f"z1-{name}"]
        for place in places:
            try:
                place.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(place, text)
            except (OSError, Z1Error):
                continue
            self.recovery_file = place
            return
        self.recovery_file = None  # nowhere to write either: it stays in memory

    def _retry_storage(self, pending: Turn | None = None) -> None:
        """Write the whole conversation as a new one in the history, once the history takes it."""
        assert self.history is not None
        conversation = None
        try:
            conversation = self.history.new_conversation(model=self.engine.name, system=self.system)
            for turn in self._with(pending):
                self.history.add_message(conversation, turn)
        except Z1Error:
            if conversation is not None:  # no half-written copy is left behind
                try:
                    self.history.delete_conversation(conversation)
                except Z1Error:
                    pass
            self._save_recovery(pending)
            return
        self.id, self.unsaved = conversation, False
        self.on_storage_problem(f"the conversation is stored in the history again (#{conversation})")


def describe_shift(reason: str | None, thinking_tokens: int) -> str:
    """Why and where a reply's window shifted, as the chat front ends label it."""
    if reason == "answer_now":
        return f"answer now at {thinking_tokens} tokens"
    if reason == "budget":
        return "answer at once (budget 0)" if thinking_tokens == 0 else f"window full at {thinking_tokens} tokens"
    return f"window shifted at {thinking_tokens} tokens"
