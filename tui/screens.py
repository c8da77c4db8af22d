"""Modal screens: the history list and the key help."""

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option


def conversation_label(info) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.updated))
    return f"#{info.id}  {when}  {info.title or '(untitled)'}  ({info.message_count} messages)"


class HistoryScreen(ModalScreen[int | None]):
    """Pick a stored conversation to reopen; dismisses with its id (or None)."""

    BINDINGS = [Binding("escape", "dismiss_none", "Close")]

    def __init__(self, conversations: list) -> None:
        super().__init__()
        self.conversations = conversations

    def compose(self) -> ComposeResult:
        with Vertical(id="history-dialog", classes="dialog"):
            yield Static("History  ·  Enter opens  ·  Esc closes", classes="dialog-title")
            if self.conversations:
                yield OptionList(*[Option(conversation_label(c), id=str(c.id)) for c in self.conversations])
            else:
                yield Static("No conversations yet.", classes="empty")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(int(event.option.id or 0))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,f1,q", "close", "Close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-dialog", classes="dialog"):
            yield Static(Content(self.text))

    def action_close(self) -> None:
        self.dismiss(None)
