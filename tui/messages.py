"""The conversation's messages: a user's text, and Z1's reply (reasoning, shift mark, answer).

Widgets only draw; what a reply contains comes from `stream.ReplyView` while it streams
and from the conversation's `Turn` once it is done. Which parts show is decided in
app.tcss by classes: `-thinking` (still in phase 1), `-expanded` (this reply's reasoning
opened by a click) and the conversation's `-show-reasoning` (the toggle key).
"""

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.content import Content
from textual.widgets import Markdown, Static
from textual.widgets.markdown import MarkdownStream

from .stream import ReplyView, counter_text, shift_mark

# While streaming only the reasoning's tail is drawn: redrawing a long text on every
# refresh would steal time from decoding. The whole text is set once the reply ends.
TAIL_CHARS = 2400


class UserMessage(Static):
    def __init__(self, text: str) -> None:
        super().__init__(Content(text))


class ReasoningHeader(Static):
    def on_click(self) -> None:
        message = self.parent
        if isinstance(message, AssistantMessage):
            message.toggle_class("-expanded")
            message.refresh_header()


class AssistantMessage(Vertical):
    def __init__(self, budget: int, turn=None) -> None:
        super().__init__(classes="" if turn is not None else "-thinking")
        self.budget = budget
        self.turn = turn
        self.thinking_tokens = turn.thinking_tokens if turn is not None else 0
        self.phase = "done" if turn is not None else "thinking"
        self._stream: MarkdownStream | None = None
        self._answer_sent = 0

    def compose(self) -> ComposeResult:
        turn = self.turn
        reasoning, answer = turn.reasoning_and_answer if turn is not None else ("", "")
        yield ReasoningHeader(classes="reasoning-header")
        yield Static(Content(reasoning), classes="reasoning")
        mark = shift_mark(turn.shift_reason, self.thinking_tokens, turn.hint) if turn is not None and turn.hint else ""
        yield Static(mark, classes="shift-mark" + (" -shown" if mark else ""), markup=False)
        yield Markdown(answer, classes="answer")
        note = Static(
            self._note(turn.finish_reason, turn.hint is not None) if turn else "", classes="reply-note", markup=False
        )
        note.display = bool(turn and self._note(turn.finish_reason, turn.hint is not None))
        yield note

    def on_mount(self) -> None:
        self.refresh_header()

    @property
    def expanded(self) -> bool:
        conversation = self.parent
        shown = conversation is not None and conversation.has_class("-show-reasoning")
        return self.phase == "thinking" or self.has_class("-expanded") or shown

    def refresh_header(self) -> None:
        self.query_one(".reasoning-header", Static).update(
            counter_text(self.phase, self.thinking_tokens, self.budget, self.expanded)
        )

    async def show(self, view: ReplyView) -> None:
        """Draw a reply in progress (called a few times a second, never per token)."""
        self.budget = view.budget
        self.thinking_tokens = view.thinking_tokens
        if view.phase == "thinking":
            tail = view.thinking[-TAIL_CHARS:]
            self.query_one(".reasoning", Static).update(Content(("…" if len(tail) < len(view.thinking) else "") + tail))
        if view.hint is not None and self.phase == "thinking":
            self._show_shift(view.shift_reason, view.shift_at or 0, view.hint)
        if self.phase == "answering" and len(view.answer) > self._answer_sent:
            if self._stream is None:
                self._stream = Markdown.get_stream(self.query_one(".answer", Markdown))
            await self._stream.write(view.answer[self._answer_sent :])
            self._answer_sent = len(view.answer)
        self.refresh_header()

    def restart(self) -> None:
        """Continue a reply that was stopped while thinking (answer now): its answer streams next."""
        self.phase = "thinking"
        self.add_class("-thinking")
        self._answer_sent = 0
        self._stream = None
        self.query_one(".answer", Markdown).update("")  # the stopped reply had no answer to keep
        self._set_note("")

    def _show_shift(self, reason: str | None, at: int, hint: str) -> None:
        # The answer starts: the reasoning folds away (unless the user keeps it open).
        self.phase = "answering"
        self.remove_class("-thinking")
        mark = self.query_one(".shift-mark", Static)
        mark.update(shift_mark(reason, at, hint))
        mark.add_class("-shown")

    async def finish(self, turn, view: ReplyView | None = None) -> None:
        """The reply is over: draw its final text once (full reasoning, whole Markdown)."""
        self.turn = turn
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        if turn is None:  # nothing was kept (stopped before the first token, or failed)
            self.phase = "done"
            self.remove_class("-thinking")
            error = view.error if view is not None else None
            self._set_note(f"error: {error}" if error else "stopped before any token")
            self.refresh_header()
            return
        if turn.hint is not None and self.phase == "thinking":
            reason = view.shift_reason if view is not None else "budget"
            self._show_shift(reason, (view.shift_at if view is not None else None) or turn.thinking_tokens, turn.hint)
        self.phase = "done"
        self.remove_class("-thinking")
        self.thinking_tokens = turn.thinking_tokens
        if turn.budget is not None:
            self.budget = turn.budget
        reasoning, answer = turn.reasoning_and_answer
        self.query_one(".reasoning", Static).update(Content(reasoning))
        await self.query_one(".answer", Markdown).update(answer)
        self._answer_sent = len(answer)
        error = view.error if view is not None else None
        note = f"error: {error}" if error else self._note(turn.finish_reason, turn.hint is not None)
        self._set_note(note)
        self.refresh_header()

    def _set_note(self, text: str) -> None:
        note = self.query_one(".reply-note", Static)
        note.update(text)
        note.display = bool(text)

    @staticmethod
    def _note(finish_reason: str | None, shifted: bool) -> str:
        if finish_reason == "cancelled":
            return "stopped" + ("" if shifted else " while thinking · answer now (ctrl+s) finishes it")
        if finish_reason == "length" and shifted:
            return "answer cut at its token cap"
        if finish_reason is None:
            return "interrupted"
        return ""
