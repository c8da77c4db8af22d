"""Chat settings remembered across runs, in one JSON file (`locations.settings_file()`).

Each field can be overridden for one run with an environment variable named
`Z1MLX_CHAT_<FIELD>` (for example `Z1MLX_CHAT_BUDGET=512`); command-line options win
over both. A damaged or hand-edited file never stops the chat: bad values fall back
to the defaults.
"""

import json
import os
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .. import locations
from ..errors import Z1Error
from ..fsutil import atomic_write_text
from ..window import DEFAULT_ANSWER_TOKENS, DEFAULT_BUDGET, MAX_BUDGET

ENV_PREFIX = "Z1MLX_CHAT_"


@dataclass(frozen=True)
class ChatSettings:
    budget: int = DEFAULT_BUDGET
    """Thinking budget in tokens, the slider's last value (0 answers at once)."""
    answer_tokens: int = DEFAULT_ANSWER_TOKENS
    """Cap on the answer after the window shifts."""
    show_reasoning: bool = False
    """Keep every reply's reasoning expanded after its answer starts."""

    def validated(self) -> "ChatSettings":
        defaults = ChatSettings()
        budget = self.budget if _is_int(self.budget) and 0 <= self.budget <= MAX_BUDGET else defaults.budget
        answer = (
            self.answer_tokens if _is_int(self.answer_tokens) and self.answer_tokens >= 1 else defaults.answer_tokens
        )
        show = self.show_reasoning if isinstance(self.show_reasoning, bool) else defaults.show_reasoning
        return ChatSettings(budget, answer, show)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _from_env(settings: ChatSettings) -> ChatSettings:
    changes: dict[str, int | bool] = {}
    for f in fields(ChatSettings):
        raw = os.environ.get(ENV_PREFIX + f.name.upper())
        if raw is None:
            continue
        if f.type in (bool, "bool"):
            changes[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
        else:
            try:
                changes[f.name] = int(raw)
            except ValueError:
                continue
    return replace(settings, **changes).validated()  # type: ignore[arg-type]


_WARNED: set[Path] = set()


def _read(path: Path) -> tuple[dict, str | None]:
    """The file's fields, and what is wrong with it (None: fine, or no file at all)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError, RecursionError) as err:  # unreadable, not JSON, or nested past recursion
        return {}, "nested too deeply" if isinstance(err, RecursionError) else str(err).splitlines()[0]
    return (data, None) if isinstance(data, dict) else ({}, "not a JSON object")


def _settings_from(data: dict) -> ChatSettings:
    known = {f.name for f in fields(ChatSettings)}
    return ChatSettings(**{k: v for k, v in data.items() if k in known}).validated()


def load_settings(path: Path | None = None, env: bool = True) -> ChatSettings:
    """The saved settings; a damaged file is said once (one line) and the defaults are used."""
    path = Path(path) if path else locations.settings_file()
    data, problem = _read(path)
    if problem and path not in _WARNED:
        _WARNED.add(path)
        print(f"z1: {path}: ignored, using the default settings ({problem}); fix or delete the file", file=sys.stderr)
    settings = _settings_from(data)
    return _from_env(settings) if env else settings


def save_settings(settings: ChatSettings, path: Path | None = None) -> None:
    """Write atomically; a failure to remember a slider position is not worth an error."""
    path = Path(path) if path else locations.settings_file()
    try:
        atomic_write_text(path, json.dumps(asdict(settings), indent=2) + "\n")
    except Z1Error:
        pass


def remember(path: Path | None = None, **changes) -> ChatSettings:
    """Update some fields in the file, leaving the others (and any env overrides) alone."""
    path = Path(path) if path else locations.settings_file()
    data, problem = _read(path)
    settings = replace(_settings_from(data), **changes).validated()
    if problem is None:  # a damaged file is the user's to fix: it is never overwritten
        save_settings(settings, path)
    return settings
