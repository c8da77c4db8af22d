"""`z1 eval`'s progress: a rich bar on a terminal, plain lines elsewhere."""

import io

from rich.console import Console

from z1mlx.evaluation.command import _progress
from z1mlx.evaluation.runner import Progress


def test_the_bar_shows_problems_budgets_and_running_accuracy():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    with _progress("demo", 4, [0, 8, 512], console=console) as report:
        report(Progress("demo", 1, 4, 1, True))
        report(Progress("demo", 4, 4, 3, True))
    text = out.getvalue()
    assert "demo" in text and "4/4" in text
    assert "budgets 0,8,512" in text and "accuracy at budget 512 75.0%" in text


def test_without_a_terminal_it_prints_plain_lines(capsys):
    with _progress("demo", 2, [8]) as report:
        report(Progress("demo", 1, 2, 0, True))  # within 10 s of the start: a line only at the end
        report(Progress("demo", 2, 2, 2, True))
    lines = capsys.readouterr().err.splitlines()
    assert lines == [lines[-1]] and lines[-1].startswith("[z1] demo: 2/2 · accuracy at budget 8 100.0% · ")
