"""The TUI's plain logic (no Textual): the budget scale, the reply stream, the labels."""

import threading

from z1mlx.events import Done, Shift, TextDelta
from z1mlx.tui import budget_scale as scale
from z1mlx.tui.stream import ReplyStream, counter_text, shift_mark, status_text
from z1mlx.window import HINT, WindowControl

from helpers import StepClock


def test_stops_start_at_answer_at_once_then_64_to_32768():
    assert scale.STOPS[0] == 0 and scale.STOPS[1] == 64 and scale.STOPS[-1] == 32768
    assert list(scale.STOPS) == sorted(set(scale.STOPS))


def test_snap_and_step():
    assert scale.snap(1000) == 1024 and scale.snap(5) == 0 and scale.snap(40) == 64
    assert scale.snap(10**6) == 32768 and scale.snap(-5) == 0
    assert scale.step(2048, 1) == 3072 and scale.step(2048, -1) == 1536
    # Between stops, a step goes to the neighbour in that direction.
    assert scale.step(1000, 1) == 1024 and scale.step(1000, -1) == 768
    assert scale.step(32768, 1) == 32768 and scale.step(0, -1) == 0
    assert scale.step(64, scale.PAGE) == 512


def test_track_positions():
    assert scale.fraction(0) == 0.0 and scale.fraction(32768) == 1.0
    assert scale.from_fraction(0.0) == 0 and scale.from_fraction(1.0) == 32768
    assert all(scale.from_fraction(scale.fraction(v)) == v for v in scale.STOPS)
    assert scale.from_cell(0, 40) == 0 and scale.from_cell(39, 40) == 32768 and scale.from_cell(5, 1) == 0
    assert scale.describe(0) == "answer at once" and scale.describe(2048) == "2,048 tokens"


def test_stream_collects_deltas_shift_and_done_with_clocked_stats():
    control = WindowControl(3)
    stream = ReplyStream(control, StepClock(step=0.5, start=0.0))
    assert stream.view().phase == "thinking" and stream.view(only_if_changed=True) is None
    for n, text in enumerate(["a", "b", "c"], 1):
        stream.feed(TextDelta(text, "thinking", n))
    stream.feed(Shift(3, HINT, "budget"))
    stream.feed(TextDelta("X", "answer", 1))
    view = stream.view(only_if_changed=True)
    assert (view.thinking, view.answer, view.hint, view.shift_at) == ("abc", "X", HINT, 3)
    assert view.phase == "answering" and view.budget == 3
    # Clock read at start (0.5) and at each delta (1.0 .. 2.5): ttft 0.5 s, 3 tokens in 1.5 s.
    assert view.ttft_s == 0.5 and view.tokens_per_s == 2.0
    stream.feed(Done(result="r"))
    assert stream.view().done and stream.view().result == "r"


def test_stream_continuing_a_stopped_reply_counts_earlier_thinking():
    stream = ReplyStream(WindowControl(100), StepClock(), thinking_before="old", thinking_tokens_before=7)
    stream.feed(Shift(0, HINT, "answer_now"))
    view = stream.view()
    assert view.thinking == "old" and view.thinking_tokens == 7 and view.shift_at == 7


def test_stream_is_fed_from_another_thread():
    stream = ReplyStream(WindowControl(10_000), StepClock())
    worker = threading.Thread(target=lambda: [stream.feed(TextDelta("x", "thinking", n)) for n in range(1, 5001)])
    worker.start()
    worker.join()
    assert stream.view().thinking == "x" * 5000 and stream.view().thinking_tokens == 5000


def test_failure_ends_the_stream():
    stream = ReplyStream(WindowControl(1), StepClock())
    stream.fail("boom")
    assert stream.view().done and stream.view().error == "boom"


def test_labels():
    assert counter_text("thinking", 812, 2048, True) == "▾ thinking 812 / 2048"
    assert counter_text("done", 812, 2048, False) == "▸ thought 812 / 2048 tokens"
    assert counter_text("done", 0, 0, False) == "▸ answered at once (budget 0)"
    assert (
        shift_mark("budget", 64, HINT)
        == "── window full at 64 tokens · I overthought it, the final answer should be: ──"
    )
    assert shift_mark("answer_now", 9, HINT).startswith("── answer now at 9 tokens")
    assert shift_mark("budget", 0, HINT).startswith("── answer at once (budget 0)")
    assert status_text("m", "idle") == "m · idle · – tok/s · ttft – · peak –"
    assert status_text("m", "thinking", 12.34, 0.5, 1.234) == "m · thinking · 12.3 tok/s · ttft 0.50s · peak 1.23 GB"


def test_the_tui_never_imports_mlx_and_the_engine_never_imports_textual_or_rich():
    import subprocess
    import sys

    code = (
        "import sys; import z1mlx.engine, z1mlx.chat.conversation; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('textual', 'rich')], 'engine pulled in a UI'; "
        "import z1mlx.tui.app, z1mlx.chat.command; "
        "assert not [m for m in sys.modules if m.split('.')[0] == 'mlx' or m.startswith('mlx_lm')], 'tui pulled in mlx'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_redraw_pacer_keeps_the_ui_under_its_share():
    from z1mlx.tui.stream import RedrawPacer

    cpu = [0.0]
    pacer = RedrawPacer(min_interval=0.05, share=0.05, max_interval=0.5, cpu_clock=lambda: cpu[0])
    cpu[0] += 0.001  # a cheap frame: redraw at the fastest rate
    assert pacer.next_delay() == 0.05
    cpu[0] += 0.010  # 10 ms of drawing: wait 200 ms, so drawing is 5% of the time
    assert abs(pacer.next_delay() - 0.2) < 1e-9
    cpu[0] += 1.0  # a pathological frame: still redraw twice a second
    assert pacer.next_delay() == 0.5
