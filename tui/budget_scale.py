"""The thinking-budget scale behind the slider: plain arithmetic, no Textual.

The slider snaps to a short list of useful budgets, evenly spaced on screen so the
small ones (where a token more or less matters) get as much room as the large ones.
0 means "answer at once"; the rest run from 64 to the model's 32768 positions.
"""

from bisect import bisect_left, bisect_right

from z1mlx.window import MAX_BUDGET

STOPS: tuple[int, ...] = (
    0,
    64,
    128,
    256,
    384,
    512,
    768,
    1024,
    1536,
    2048,
    3072,
    4096,
    6144,
    8192,
    12288,
    16384,
    24576,
    MAX_BUDGET,
)
PAGE = 4  # stops per page up/down


def clamp(value: int) -> int:
    return max(STOPS[0], min(STOPS[-1], int(value)))


def nearest_index(value: int) -> int:
    """Index of the stop closest to `value` (ties go to the smaller budget)."""
    value = clamp(value)
    right = bisect_left(STOPS, value)
    if right == 0:
        return 0
    if right == len(STOPS):
        return len(STOPS) - 1
    left = right - 1
    return left if value - STOPS[left] <= STOPS[right] - value else right


def snap(value: int) -> int:
    return STOPS[nearest_index(value)]


def step(value: int, stops: int) -> int:
    """Move `stops` stops up (positive) or down; a value between stops moves to the
    neighbouring stop in that direction first."""
    value = clamp(value)
    if stops > 0:
        index = bisect_right(STOPS, value) - 1 + stops
    elif stops < 0:
        index = bisect_left(STOPS, value) + stops
    else:
        return value
    return STOPS[max(0, min(len(STOPS) - 1, index))]


def fraction(value: int) -> float:
    """Where `value` sits on the track, 0.0 (left) to 1.0 (right)."""
    return nearest_index(value) / (len(STOPS) - 1)


def from_fraction(position: float) -> int:
    """The stop under a point on the track (0.0 .. 1.0)."""
    position = max(0.0, min(1.0, position))
    return STOPS[round(position * (len(STOPS) - 1))]


def from_cell(x: int, width: int) -> int:
    """The stop under column `x` of a track `width` cells wide."""
    return from_fraction(x / (width - 1)) if width > 1 else STOPS[0]


def describe(value: int) -> str:
    """The value as the slider shows it."""
    return "answer at once" if value == 0 else f"{value:,} tokens"
