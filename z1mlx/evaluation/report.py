"""The summary as people read it: a table, and accuracy against mean thinking tokens as a text plot."""

import io
from pathlib import Path

MARKS = "*o+x#@%&"


def table(summary: dict) -> str:
    rows = [("model", "budget", "pass@1", "thinking", "hit", "answer", "natural")]
    for model, entry in summary["models"].items():
        for b in entry["budgets"]:
            natural = b["mean_natural_length"]
            rows.append(
                (
                    model,
                    str(b["budget"]),
                    f"{b['pass@1']:.1%}",
                    f"{b['mean_thinking_tokens']:.1f}",
                    f"{b['window_hit_rate']:.0%}",
                    f"{b['mean_answer_tokens']:.1f}",
                    "-" if natural is None else f"{natural:.1f}",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths))) for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot(summary: dict, width: int = 60, height: int = 14) -> str:
    """pass@1 (rows) against mean thinking tokens (columns), one mark per model, a point per budget."""
    points = [
        (MARKS[i % len(MARKS)], b["mean_thinking_tokens"], b["pass@1"])
        for i, entry in enumerate(summary["models"].values())
        for b in entry["budgets"]
    ]
    if not points:
        return ""
    x_max = max(x for _, x, _ in points) or 1.0
    grid = [[" "] * width for _ in range(height)]
    for mark, x, y in points:
        col = min(width - 1, int(x / x_max * (width - 1)))
        row = height - 1 - min(height - 1, int(y * (height - 1)))
        grid[row][col] = mark
    lines = [
        f"{'100%' if r == 0 else ('  0%' if r == height - 1 else '    ')} |{''.join(row)}" for r, row in enumerate(grid)
    ]
    lines.append("     +" + "-" * width)
    lines.append(f"      0{'mean thinking tokens'.center(width - 2 - len(f'{x_max:.0f}'))}{x_max:.0f}")
    legend = "  ".join(f"{MARKS[i % len(MARKS)]} {m}" for i, m in enumerate(summary["models"]))
    return "\n".join(["pass@1 against mean thinking tokens (a point per budget)", *lines, "      " + legend])


def merge(runs: list[tuple[str, dict]]) -> dict:
    """Summaries of earlier runs (`--compare`) as one, each model named `RUN:MODEL` where the
    runs are several (a run's name: its directory's)."""
    merged: dict = {"models": {}}
    for name, summary in runs:
        for model, entry in summary.get("models", {}).items():
            merged["models"][f"{name}:{model}" if len(runs) > 1 else model] = entry
    return merged


def write_figures(summary: dict, out: Path) -> list[Path] | None:
    """`curve.png` and `curve.svg` in `out`: pass@1 against mean thinking tokens, a curve per
    model and a labelled point per budget (matplotlib, the `plot` extra). None without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    from ..fsutil import atomic_write_bytes

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for model, entry in summary["models"].items():
        points = sorted((b["mean_thinking_tokens"], b["pass@1"], b["budget"]) for b in entry["budgets"])
        if not points:
            continue
        xs, ys, budgets = zip(*points)
        axes.plot(xs, [y * 100 for y in ys], marker="o", label=model)
        for x, y, budget in points:
            axes.annotate(str(budget), (x, y * 100), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel("mean thinking tokens")
    axes.set_ylabel("pass@1 (%)")
    axes.set_title("accuracy against thinking tokens (a point per budget)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    written = []
    for suffix in ("png", "svg"):
        buffer = io.BytesIO()
        figure.savefig(buffer, format=suffix)
        path = out / f"curve.{suffix}"
        atomic_write_bytes(path, buffer.getvalue())
        written.append(path)
    plt.close(figure)
    return written
