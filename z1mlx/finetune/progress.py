"""Training progress on stderr: a rich bar on a terminal, one plain line per report otherwise."""

import sys
import time


def eta_text(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class Progress:
    """Iteration/total, losses, tokens/s, ETA and peak memory: a rich bar on a terminal,
    one plain line per report otherwise (logs, CI, pipes)."""

    def __init__(self, total: int, start: int, rich: bool):
        self.total, self.start = total, start
        self.t0: float | None = None
        self.first = start
        self.stats = {"train_loss": None, "val_loss": None, "tokens_per_second": None, "peak_memory_gb": None}
        self._bar = None
        if rich:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[line]}"),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("train", total=total, completed=start, line="starting ...")

    def __enter__(self):
        if self._bar:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar:
            self._bar.__exit__(*exc)

    def eta(self, iteration: int) -> float | None:
        if self.t0 is None or iteration <= self.first:
            return None
        rate = (time.perf_counter() - self.t0) / (iteration - self.first)
        return rate * (self.total - iteration)

    def line(self, iteration: int) -> str:
        s = self.stats
        return (
            f"train_loss {fmt(s['train_loss'], '.3f')}  val_loss {fmt(s['val_loss'], '.3f')}  "
            f"{fmt(s['tokens_per_second'], ',.0f')} tok/s  peak {fmt(s['peak_memory_gb'], '.2f')} GB  "
            f"ETA {eta_text(self.eta(iteration))}"
        )

    def note(self, message: str) -> None:
        if self._bar:
            self._bar.console.print(f"[z1] {message}", markup=False, highlight=False)
        else:
            print(f"[z1] {message}", file=sys.stderr, flush=True)

    def step(self, iteration: int) -> None:
        if self.t0 is None:
            self.t0, self.first = time.perf_counter(), iteration - 1
        if self._bar:
            self._bar.update(self._task, completed=iteration, line=self.line(iteration))

    def report(self, event: dict) -> None:
        for key in self.stats:
            if event.get(key) is not None:
                self.stats[key] = event[key]
        it = event["iteration"]
        if self._bar:
            self._bar.update(self._task, completed=it, line=self.line(it))
        else:
            print(f"[z1] iter {it}/{self.total}  {self.line(it)}", file=sys.stderr, flush=True)
