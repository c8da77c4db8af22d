"""`z1 chat`'s terminal UI: the conversation, the budget slider, live reasoning.

The app never touches mlx: it gets an engine (or a function that loads one, run in a
thread so the UI stays live) and drives a `Conversation`. Each reply is generated in a
worker thread that only appends to a `ReplyStream`; a timer draws the stream up to 15
times a second, paced so drawing takes at most 5% of the time (`RedrawPacer`): decoding
never waits for the screen.
"""

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError
from functools import partial

from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.timer import Timer
from textual.widgets import Footer, ProgressBar, Static

from z1mlx.answer import extract_code
from z1mlx.chat.conversation import Conversation
from z1mlx.chat.history import History
from z1mlx.chat.settings import load_settings, remember
from z1mlx.errors import Z1Error
from z1mlx.events import Sampling
from z1mlx.window import WindowControl

from . import budget_scale
from .messages import AssistantMessage, UserMessage
from .prompt import PromptInput
from .screens import HelpScreen, HistoryScreen
from .slider import BudgetSlider
from .stream import RedrawPacer, ReplyStream, status_text

REFRESH_INTERVAL_S = 1 / 15  # the fastest redraw rate while a reply streams
UI_SHARE = 0.05  # the most of the time redraws may take from decoding (see RedrawPacer)
SAVE_DELAY_S = 0.5  # a drag moves the slider many times; remember where it stops

WELCOME = "Ask Z1 anything. It thinks for up to the budget below, then answers.  F1: keys."


QUIT_WAIT_S = 10.0


class ChatApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "z1 chat"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        # In footer order: what matters while Z1 replies comes first.
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+s", "answer_now", "Answer now"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+t", "toggle_reasoning", "Reasoning"),
        Binding("f1", "help", "Help"),
        Binding("ctrl+l", "copy_code", "Copy code"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+o", "history", "History"),
        Binding("ctrl+b", "focus_budget", "Budget slider", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        engine=None,
        *,
        loader: Callable[[], object] | None = None,
        model_label: str | None = None,
        history: History | None = None,
        budget: int | None = None,
        answer_tokens: int | None = None,
        sampling: Sampling = Sampling(),
        system: str | None = None,
        resume: int | None = None,
        think: dict | None = None,
        clock: Callable[[], float] = time.perf_counter,
        refresh_interval: float = REFRESH_INTERVAL_S,
    ):
        if engine is None and loader is None:
            raise ValueError("ChatApp needs an engine or a loader")
        super().__init__()
        self.settings = load_settings()
        self.engine = engine
        self.loader = loader
        self.model_label = model_label or (engine.label if engine else None) or "model"
        self.history = history if history is not None else History()
        self.budget_value = self.settings.budget if budget is None else budget
        self.answer_tokens = answer_tokens or self.settings.answer_tokens
        self.sampling = sampling
        self.system = system
        self.resume_id = resume
        self.think = dict(think or {})  # hint, min_thinking, continue_text for every reply
        self.clock = clock
        self.refresh_interval = refresh_interval
        self.conversation: Conversation | None = None
        self._stream: ReplyStream | None = None
        self._active: AssistantMessage | None = None
        self._save_timer: Timer | None = None
        self._pacer: RedrawPacer | None = None
        self._closing = False
        self._status: dict = {"phase": "loading", "tps": None, "ttft": None, "peak": None}

    # Layout

    def compose(self) -> ComposeResult:
        with Vertical(id="loading"):
            yield Static("Loading model…", id="loading-label")
            yield ProgressBar(total=None, show_percentage=False, show_eta=False)
        # Not focusable: Tab goes straight from the message box to the budget slider.
        with VerticalScroll(id="conversation", can_focus=False):
            yield Static(WELCOME, id="welcome")
        with Horizontal(id="budget-bar"):
            yield Static("budget", id="budget-label")
            yield BudgetSlider(self.budget_value, id="budget")
            yield Static(budget_scale.describe(self.budget_value), id="budget-value")
        yield PromptInput(id="prompt", placeholder="Message Z1  (Enter sends · Shift+Enter or Ctrl+J: new line)")
        yield Static(id="status")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if self.settings.show_reasoning:
            self.query_one("#conversation").add_class("-show-reasoning")
        self.query_one("#prompt").focus()
        if self.resume_id is not None:
            self._show_turns(self.history.load(self.resume_id).messages)
        if self.engine is not None:
            self._engine_ready(self.engine)
        else:
            self._started_loading = time.monotonic()
            self.set_interval(0.5, self._loading_tick, name="loading")
            # A daemon thread, not a worker: quitting mid-load must not wait for the load.
            threading.Thread(target=self._load, name="z1-load", daemon=True).start()
        self._draw_status()

    @property
    def _chat(self) -> Conversation:
        """The conversation, once the model has loaded (callers check `_can_start` first)."""
        assert self.conversation is not None
        return self.conversation

    # Loading

    def _load(self) -> None:
        assert self.loader is not None
        try:
            engine = self.loader()
        except Z1Error as err:
            self._from_thread(self._load_failed, str(err))
        except Exception as err:  # the message is all a user can act on
            self._from_thread(self._load_failed, f"{type(err).__name__}: {err}")
        else:
            self._from_thread(self._engine_ready, engine)

    def _from_thread(self, callback, *args) -> None:
        if self._closing:  # the app quit while the model was loading
            return
        try:
            self.call_from_thread(callback, *args)
        except (RuntimeError, CancelledError):  # the app quit while the model was loading
            pass

    def _loading_tick(self) -> None:
        if self.engine is None:
            seconds = time.monotonic() - self._started_loading
            self.query_one("#loading-label", Static).update(f"Loading {self.model_label}… {seconds:.0f}s")

    def _load_failed(self, message: str) -> None:
        self.query_one("#loading-label", Static).update(f"Cannot load the model: {message}")
        self.query_one("#loading ProgressBar").display = False
        self._status["phase"] = "failed"
        self._draw_status()

    def _engine_ready(self, engine) -> None:
        self.engine = engine
        self.model_label = engine.label or self.model_label
        self.conversation = Conversation(
            engine,
            self.history,
            system=self.system,
            answer_tokens=self.answer_tokens,
            sampling=self.sampling,
            on_storage_problem=self._storage_problem,
            **self.think,
        )
        if self.resume_id is not None:
            self.conversation.resume(self.resume_id)
        self.query_one("#loading").display = False
        self._status["phase"] = "idle"
        self._draw_status()

    # Sending and streaming

    @property
    def busy(self) -> bool:
        return self._stream is not None

    def _can_start(self) -> bool:
        if self.conversation is None:
            self.notify("The model is still loading.", severity="warning")
            return False
        if self.busy:
            self.notify("Z1 is still replying (Esc stops it).", severity="warning")
            return False
        return True

    async def on_prompt_input_submitted(self, event: PromptInput.Submitted) -> None:
        if not self._can_start():
            return
        event.prompt.clear()
        text = event.text.strip("\n")
        message = AssistantMessage(self._budget())
        await self._mount_messages(UserMessage(text), message)
        self._start(partial(self._chat.send, text), message)

    def _budget(self) -> int:
        return self.budget_value

    def _start(self, make_events, message: AssistantMessage, turn=None) -> None:
        control = WindowControl(self._budget())
        before = (turn.thinking, turn.thinking_tokens) if turn is not None else ("", 0)
        self._stream = ReplyStream(control, self.clock, *before)
        self._active = message
        self.query_one("#conversation", VerticalScroll).anchor()
        self._status.update(phase="thinking", tps=None, ttft=None, peak=None)
        self._draw_status()
        self._pacer = RedrawPacer(self.refresh_interval, UI_SHARE)
        self.set_timer(self.refresh_interval, self._tick)
        self.run_worker(
            partial(self._generate, make_events, self._stream), thread=True, group="reply", exit_on_error=False
        )

    @staticmethod
    def _generate(make_events, stream: ReplyStream) -> None:
        """Runs in a worker thread: pull engine events and hand them over, nothing else."""
        try:
            for event in make_events(stream.control):
                stream.feed(event)
        except Z1Error as err:
            stream.fail(str(err))
        except Exception as err:
            stream.fail(f"{type(err).__name__}: {err}")

    async def _tick(self) -> None:
        """Draw the streaming reply, then schedule the next draw (see RedrawPacer)."""
        stream, message = self._stream, self._active
        if stream is None or message is None:
            return
        view = stream.view(only_if_changed=True)
        if view is not None and view.done:
            await self._finish(message, view)
            return
        if view is not None:
            with self.batch_update():
                await message.show(view)
                self._status.update(phase=view.phase, tps=view.tokens_per_s, ttft=view.ttft_s)
                self._draw_status()
        assert self._pacer is not None
        self.set_timer(self._pacer.next_delay(), self._tick)

    async def _finish(self, message: AssistantMessage, view) -> None:
        conversation = self._chat
        last = conversation.turns[-1] if conversation.turns else None
        turn = last if last is not None and last.role == "assistant" else None
        await message.finish(turn, view)
        self._stream = self._active = None
        peak = view.result.peak_memory_gb if view.result is not None else None
        self._status.update(phase="idle", tps=view.tokens_per_s, ttft=view.ttft_s, peak=peak)
        self._draw_status()

    def _draw_status(self) -> None:
        s = self._status
        self.query_one("#status", Static).update(
            status_text(self.model_label, s["phase"], s["tps"], s["ttft"], s["peak"])
        )

    # Messages on screen

    async def _mount_messages(self, *widgets) -> None:
        conversation = self.query_one("#conversation", VerticalScroll)
        self.query_one("#welcome").display = False
        await conversation.mount_all(widgets)
        conversation.scroll_end(animate=False)

    def _show_turns(self, turns) -> None:
        conversation = self.query_one("#conversation", VerticalScroll)
        conversation.query("UserMessage, AssistantMessage").remove()
        widgets = [
            UserMessage(t.content) if t.role == "user" else AssistantMessage(t.budget or 0, turn=t) for t in turns
        ]
        self.query_one("#welcome").display = not widgets
        conversation.mount_all(widgets)
        conversation.scroll_end(animate=False)

    def _last_reply_widget(self) -> AssistantMessage | None:
        replies = self.query(AssistantMessage)
        return replies.last() if replies else None

    # Actions

    def action_stop(self) -> None:
        if self._stream is not None:
            self._stream.control.cancel()

    def action_answer_now(self) -> None:
        if self._stream is not None:
            self._stream.control.answer_now()
            return
        if self.conversation is None or not self.conversation.can_answer_now:
            self.notify("Answer now works while Z1 thinks, or on a reply stopped while thinking.")
            return
        message = self._last_reply_widget()
        if message is None:
            return
        message.restart()
        self._start(self.conversation.answer_now, message, turn=self.conversation.turns[-1])

    async def action_regenerate(self) -> None:
        if not self._can_start():
            return
        if not self._chat.can_regenerate:
            self.notify("Nothing to regenerate yet.")
            return
        children = self.query_one("#conversation").children
        if children and isinstance(children[-1], AssistantMessage):
            await children[-1].remove()
        message = AssistantMessage(self._budget())
        await self._mount_messages(message)
        self._start(self._chat.regenerate, message)

    def action_toggle_reasoning(self) -> None:
        conversation = self.query_one("#conversation")
        conversation.toggle_class("-show-reasoning")
        for message in self.query(AssistantMessage):
            message.refresh_header()
        self.settings = remember(show_reasoning=conversation.has_class("-show-reasoning"))

    def action_copy_code(self) -> None:
        turns = self.conversation.turns if self.conversation else []
        replies = [t for t in turns if t.role == "assistant" and t.complete]
        code = None
        if replies:
            _, answer = replies[-1].reasoning_and_answer
            code = extract_code(answer) or extract_code(replies[-1].content)
        if code is None:
            self.notify("No code block in the last reply.", severity="warning")
            return
        self.copy_to_clipboard(code)
        lines = code.count("\n") + (not code.endswith("\n"))
        self.notify(f"Copied {lines} line{'s' if lines != 1 else ''} of code.")

    def action_new_chat(self) -> None:
        if not self._can_start():
            return
        self._chat.new()
        self._show_turns([])
        self._status.update(phase="idle", tps=None, ttft=None, peak=None)
        self._draw_status()

    def action_history(self) -> None:
        if isinstance(self.screen, HistoryScreen):
            return
        if self.busy:
            self.notify("Z1 is still replying (Esc stops it).", severity="warning")
            return
        try:
            entries = self.history.conversations()
        except Z1Error as err:
            self.notify(str(err), severity="error", timeout=15)
            return
        self.push_screen(HistoryScreen(entries), self._open_conversation)

    def _open_conversation(self, conversation_id: int | None) -> None:
        if conversation_id is None:
            return
        try:
            if self.conversation is not None:
                turns = self.conversation.resume(conversation_id).messages
            else:
                turns = self.history.load(conversation_id).messages
                self.resume_id = conversation_id  # applied once the model is loaded
        except Z1Error as err:
            self.notify(str(err), severity="error", timeout=15)
            return
        self._show_turns(turns)

    def _storage_problem(self, text: str) -> None:
        """The history could not be written (or works again): say so, from whichever thread."""
        try:
            self.call_from_thread(self.notify, text, severity="warning", timeout=15)
        except RuntimeError:  # already on the app's thread
            self.notify(text, severity="warning", timeout=15)

    def action_focus_budget(self) -> None:
        self.query_one("#budget").focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen(help_text(self)))

    async def action_quit(self) -> None:
        self.action_stop()
        # Let the generation thread finish its step: leaving while mlx runs in it can abort.
        for worker in [w for w in self.workers if w.group == "reply"]:
            try:
                await asyncio.wait_for(worker.wait(), timeout=QUIT_WAIT_S)
            except Exception:  # cancelled, failed or slow: leave all the same
                pass
        self.exit()

    # The budget slider

    def on_budget_slider_changed(self, event: BudgetSlider.Changed) -> None:
        self.budget_value = event.value
        self.query_one("#budget-value", Static).update(budget_scale.describe(event.value))
        if self._stream is not None:
            # Takes effect at the next token; below what was spent, the window shifts now.
            self._stream.control.set_budget(event.value)
        if self._save_timer is not None:
            self._save_timer.stop()
        self._save_timer = self.set_timer(SAVE_DELAY_S, self._save_budget)

    def _save_budget(self) -> None:
        self._save_timer = None
        self.settings = remember(budget=self._budget())

    def on_unmount(self) -> None:
        self._closing = True
        self.action_stop()  # the worker thread ends at its next token
        if self._save_timer is not None:
            self._save_budget()


def key_label(key: str) -> str:
    """ "ctrl+s" -> "Ctrl+S", "escape" -> "Esc", "f1" -> "F1"."""
    names = {"escape": "Esc", "enter": "Enter"}
    return "+".join(names.get(part, part.capitalize() if len(part) > 1 else part.upper()) for part in key.split("+"))


def help_text(app: App) -> str:
    rows = [
        ("Enter", "send"),
        ("Shift+Enter, Ctrl+J", "new line"),
        ("Tab", "message box <-> budget slider"),
        ("←/→ PgUp/PgDn Home/End", "move the slider (or drag it)"),
    ]
    rows += [(key_label(b.key), b.description.lower()) for b in app.BINDINGS if isinstance(b, Binding)]
    width = max(len(key) for key, _ in rows) + 3
    keys = "\n".join(f"{key:<{width}}{what}" for key, what in rows)
    return (
        f"z1 chat keys\n\n{keys}\n\n"
        "The budget caps how many tokens Z1 thinks before it is told to answer; 0 answers at once. "
        "Moving it while Z1 thinks changes the current reply: below what was already spent, it answers now. "
        'Click a reply\'s "thought" line to open its reasoning.\n\nEsc closes this help.'
    )
