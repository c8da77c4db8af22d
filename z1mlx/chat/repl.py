"""`z1 chat --plain`: a line-oriented chat for pipes, logs and terminals without the TUI.

prompt-toolkit reads the message (persistent history, multi-line editing: Enter sends,
Alt+Enter or Ctrl+J starts a new line); rich prints the reasoning dimmed and the answer
as Markdown. The conversation logic, cache reuse and storage are `Conversation`'s, as
in the TUI. When standard input is not a terminal, messages are read one per line.
"""

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from .. import locations
from ..cliutil import cancel_on_interrupt
from ..errors import Z1Error
from ..events import Done, Shift, TextDelta
from ..window import MAX_BUDGET, WindowControl
from .conversation import Conversation, describe_shift
from .settings import remember

PROMPT = "› "
ANSWER_REFRESH_S = 0.125  # redraw the streaming Markdown answer at most 8 times a second

COMMANDS = """\
/budget N      thinking budget for the next replies (0 answers at once, up to 32768)
/answer        finish a reply you stopped while it was thinking: hint, then answer
/new           start a new conversation
/history [ID]  list stored conversations, or reopen one
/export [PATH] the conversation as Markdown (to PATH, or printed)
/quit          leave (so do Ctrl+D and a second Ctrl+C)"""


@dataclass(frozen=True)
class Command:
    name: str
    arg: str


def parse_command(line: str) -> Command | None:
    """`/name arg` -> Command; anything else is a message (None). `//x` sends "/x"."""
    text = line.strip()
    if not text.startswith("/") or text.startswith("//"):
        return None
    name, _, arg = text[1:].partition(" ")
    return Command(name.lower(), arg.strip())


def parse_budget(arg: str) -> int:
    try:
        value = int(arg.replace(",", "").replace("_", ""))
    except ValueError:
        raise Z1Error(f"/budget needs a whole number of tokens, got {arg!r}") from None
    if not 0 <= value <= MAX_BUDGET:
        raise Z1Error(f"/budget must be between 0 and {MAX_BUDGET}, got {value}")
    return value


def message_text(line: str) -> str:
    """A message as sent: `//x` escapes a leading slash."""
    return line[1:] if line.lstrip().startswith("//") else line


# Reading input


class PromptReader:
    """prompt-toolkit on a terminal (or on the given pipe input, for tests)."""

    def __init__(self, input=None, output=None):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory
        from prompt_toolkit.key_binding import KeyBindings

        bindings = KeyBindings()

        @bindings.add("enter")
        def _send(event):
            event.current_buffer.validate_and_handle()

        @bindings.add("escape", "enter")
        @bindings.add("c-j")
        def _newline(event):
            event.current_buffer.insert_text("\n")

        path = locations.repl_history_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.session = PromptSession(
            history=FileHistory(str(path)),
            multiline=True,
            key_bindings=bindings,
            input=input,
            output=output,
            prompt_continuation=lambda width, line, wrap: "… ".rjust(width),
        )

    def read(self) -> str:
        return self.session.prompt(PROMPT)


class LineReader:
    """One message per line from a pipe; EOF ends the chat."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdin

    def read(self) -> str:
        line = self.stream.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")


class Repl:
    def __init__(
        self,
        conversation: Conversation,
        budget: int,
        reader=None,
        console: Console | None = None,
        show_reasoning: bool = True,
    ):
        self.conversation = conversation
        self.budget = budget
        self.reader = reader
        self.console = console or Console(highlight=False)
        self.show_reasoning = show_reasoning
        self._interrupted = False  # the last thing the user did was Ctrl+C

    def say(self, text: str, style: str = "dim") -> None:
        self.console.print(Text(text, style=style))

    def run(self) -> int:
        label = self.conversation.engine.label
        self.say(f"z1 chat · {label} · budget {self.budget} · /help for commands, Ctrl+D to leave")
        code = self._loop()
        if not self.conversation.save_pending():
            return code or 1  # what could not be stored was said, with where it is kept
        return code

    def _loop(self) -> int:
        while True:
            try:
                line = self.reader.read()
            except KeyboardInterrupt:
                if self._interrupted:
                    return 0
                self._interrupted = True
                self.say("(Ctrl+C again, Ctrl+D or /quit leaves)")
                continue
            except EOFError:
                return 0
            self._interrupted = False
            if not line.strip():
                continue
            try:
                command = parse_command(line)
                if command is None:
                    self.reply(self.conversation.send, message_text(line))
                elif self.command(command) == "quit":
                    return 0
            except Z1Error as err:
                self.say(f"error: {err}", style="red")
            except KeyboardInterrupt:  # the second Ctrl+C during a reply
                self.say("\n(left while Z1 was replying; what it wrote so far is in the history)")
                return 130

    # Commands

    def command(self, command: Command) -> str | None:
        name, arg = command.name, command.arg
        if name in ("quit", "exit", "q"):
            return "quit"
        if name == "help":
            self.say(COMMANDS, style="")
        elif name == "budget":
            if arg:
                self.budget = parse_budget(arg)
                remember(budget=self.budget)
            self.say(f"budget: {self.budget} tokens" + (" (answer at once)" if self.budget == 0 else ""))
        elif name == "answer":
            if not self.conversation.can_answer_now:
                raise Z1Error("nothing to answer: /answer finishes a reply stopped (Ctrl+C) while thinking")
            self.reply(lambda control: self.conversation.answer_now(control), None)
        elif name == "new":
            self.conversation.new()
            self.say("new conversation")
        elif name == "history":
            self.history(arg)
        elif name == "export":
            self.export(arg)
        else:
            raise Z1Error(f"unknown command /{name} (try /help)")
        return None

    def history(self, arg: str) -> None:
        store = self.conversation.history
        if store is None:
            raise Z1Error("no chat history")
        if arg:
            try:
                conversation_id = int(arg.lstrip("#"))
            except ValueError:
                raise Z1Error(f"/history takes a conversation id, got {arg!r}") from None
            stored = self.conversation.resume(conversation_id)
            self.say(f"reopened #{stored.info.id}: {stored.info.title} ({len(stored.messages)} messages)")
            for message in stored.messages[-2:]:
                who = "you" if message.role == "user" else "z1"
                self.say(f"{who}: {' '.join(message.content.split())[:200]}", style="")
            return
        entries = store.conversations(limit=20)
        if not entries:
            self.say("no conversations yet")
        for info in entries:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.updated))
            self.say(f"#{info.id:<5} {when}  {info.title}  ({info.message_count} messages)", style="")

    def export(self, arg: str) -> None:
        store, conversation_id = self.conversation.history, self.conversation.id
        if store is None or conversation_id is None:
            raise Z1Error("nothing to export yet")
        if arg:
            store.export_to(conversation_id, Path(arg))
            self.say(f"wrote {arg}")
        else:
            self.console.print(Markdown(store.export_markdown(conversation_id)))

    # A reply

    def reply(self, start, text: str | None) -> None:
        control = WindowControl(self.budget)
        # A continued reply (/answer) already thought; its shift is counted from there.
        before = self.conversation.turns[-1].thinking_tokens if text is None else 0
        events = start(text, control) if text is not None else start(control)
        answer, last_draw, result = "", 0.0, None
        live: Live | None = None
        with cancel_on_interrupt(control):  # a second Ctrl+C while it winds down leaves
            try:
                for event in events:
                    if isinstance(event, TextDelta) and event.phase == "thinking":
                        if self.show_reasoning:
                            self.console.print(Text(event.text, style="dim"), end="", soft_wrap=True)
                    elif isinstance(event, Shift):
                        self.console.print()
                        why = describe_shift(event.reason, before + event.thinking_tokens)
                        self.say(f"── {why} · {event.hint.strip()} ──", style="yellow")
                        live = Live(console=self.console, auto_refresh=False)
                        live.start()
                    elif isinstance(event, TextDelta):
                        answer += event.text
                        if time.monotonic() - last_draw >= ANSWER_REFRESH_S:
                            if live is not None:
                                live.update(Markdown(answer), refresh=True)
                            last_draw = time.monotonic()
                    elif isinstance(event, Done):
                        result = event.result
            finally:
                if live is not None:
                    live.update(Markdown(answer))
                    live.stop()
                    if not self.console.is_terminal:  # Live ends its block with a newline only on terminals
                        self.console.print()
        if result is None:
            return
        if not result.window_hit:
            turn = self.conversation.turns[-1] if self.conversation.turns else None
            reasoning, final = turn.reasoning_and_answer if turn is not None else ("", "")
            self.console.print()
            if final and result.finish_reason != "cancelled":
                self.say("── answer ──", style="yellow")
                self.console.print(Markdown(final))
        self.say(self.summary(result, before))
        if result.finish_reason == "cancelled":
            self._interrupted = True
            more = " · /answer finishes it" if self.conversation.can_answer_now else ""
            self.say(f"stopped{more} · Ctrl+C again leaves")

    @staticmethod
    def summary(result, thinking_before: int = 0) -> str:
        thinking = thinking_before + result.thinking_tokens
        parts = [f"thinking {thinking}/{result.budget}", f"answer {result.answer_tokens}"]
        if result.window_hit:
            parts.append("window hit" if result.shift_reason == "budget" else "answered now")
        parts += [f"{result.generation_tps:.1f} tok/s", f"ttft {result.ttft_s:.2f}s"]
        return "[z1] " + " · ".join(parts)


def run_repl(conversation: Conversation, budget: int, input=None, output=None, console: Console | None = None) -> int:
    """The plain chat on this terminal (prompt-toolkit), or on lines from a pipe."""
    reader: PromptReader | LineReader
    if input is not None or sys.stdin.isatty():
        reader = PromptReader(input=input, output=output)
    else:
        reader = LineReader()
    return Repl(conversation, budget, reader, console).run()
