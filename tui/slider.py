"""BudgetSlider: a one-line slider over the budget scale (keys and mouse).

Textual ships no slider; this one is small on purpose. The scale (which values, where
they sit) is `budget_scale`; this widget only maps keys and mouse cells onto it.
"""

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from . import budget_scale


class BudgetSlider(Widget, can_focus=True):
    BINDINGS = [
        Binding("left", "step(-1)", "Less", show=False),
        Binding("right", "step(1)", "More", show=False),
        Binding("pagedown", "step(-4)", "Much less", show=False),
        Binding("pageup", "step(4)", "Much more", show=False),
        Binding("home", "jump(0)", "Answer at once", show=False),
        Binding("end", "jump(1)", "Largest", show=False),
    ]
    COMPONENT_CLASSES = {"budget-slider--filled", "budget-slider--knob", "budget-slider--empty"}

    value: reactive[int] = reactive(budget_scale.STOPS[0])

    class Changed(Message):
        """The budget moved (by the user or by code)."""

        def __init__(self, slider: "BudgetSlider", value: int) -> None:
            super().__init__()
            self.slider = slider
            self.value = value

        @property
        def control(self) -> "BudgetSlider":
            return self.slider

    def __init__(self, value: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.set_reactive(BudgetSlider.value, budget_scale.clamp(value))
        self._dragging = False

    def watch_value(self, value: int) -> None:
        self.post_message(self.Changed(self, value))

    def validate_value(self, value: int) -> int:
        return budget_scale.clamp(value)

    def render(self) -> Text:
        width = max(self.content_size.width, 2)
        knob = round(budget_scale.fraction(self.value) * (width - 1))
        text = Text(no_wrap=True, overflow="crop")
        text.append("━" * knob, self.get_component_rich_style("budget-slider--filled"))
        text.append("●", self.get_component_rich_style("budget-slider--knob"))
        text.append("─" * (width - knob - 1), self.get_component_rich_style("budget-slider--empty"))
        return text

    # Keys

    def action_step(self, stops: int) -> None:
        self.value = budget_scale.step(self.value, stops)

    def action_jump(self, end: int) -> None:
        self.value = budget_scale.STOPS[-1] if end else budget_scale.STOPS[0]

    # Mouse: press anywhere on the track, drag while held.

    def _set_from_mouse(self, event) -> None:
        offset = event.get_content_offset_capture(self)
        self.value = budget_scale.from_cell(offset.x, self.content_size.width)

    def on_mouse_down(self, event) -> None:
        self._dragging = True
        self.capture_mouse()
        self.focus()
        self._set_from_mouse(event)

    def on_mouse_move(self, event) -> None:
        if self._dragging:
            self._set_from_mouse(event)

    def on_mouse_up(self, event) -> None:
        if self._dragging:
            self._set_from_mouse(event)
            self._dragging = False
            self.release_mouse()
