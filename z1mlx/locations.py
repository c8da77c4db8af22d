"""Every path z1-mlx reads or writes, resolved in one place.

`$Z1MLX_HOME` puts everything under one directory; otherwise the XDG base
directories are used: models in the cache dir (they can be rebuilt), chat
history in the data dir, settings in the config dir.
"""

import os
from pathlib import Path


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def home_override() -> Path | None:
    value = os.environ.get("Z1MLX_HOME")
    return Path(value).expanduser() if value else None


def store_dir() -> Path:
    """Root of the model store."""
    home = home_override()
    return home if home else _xdg("XDG_CACHE_HOME", ".cache") / "z1mlx"


def models_dir() -> Path:
    return store_dir() / "models"


def sources_dir() -> Path:
    """Checkpoints z1 builds itself (the demo model's Hugging Face layout)."""
    return store_dir() / "sources"


def data_dir() -> Path:
    home = home_override()
    return home / "data" if home else _xdg("XDG_DATA_HOME", ".local/share") / "z1mlx"


def config_dir() -> Path:
    home = home_override()
    return home / "config" if home else _xdg("XDG_CONFIG_HOME", ".config") / "z1mlx"


def history_db() -> Path:
    return data_dir() / "history.sqlite3"


def settings_file() -> Path:
    return config_dir() / "settings.json"


def repl_history_file() -> Path:
    return data_dir() / "repl_history"
