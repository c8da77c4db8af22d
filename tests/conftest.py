"""Shared fixtures: an isolated store and tiny random Qwen2 models built on the spot.

The session `engine` ends most replies within a few hundred tokens. Stopping or answering
mid-reply needs replies that keep going, so `endless_engine` is the same tiny random Qwen2
with a zero end-of-turn row: it never ends on its own. Helpers (not fixtures) live in
`helpers.py`."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def session_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("z1home")
    return home


@pytest.fixture(autouse=True)
def isolated_home(session_home, monkeypatch) -> Path:
    """Every test sees a store under a temporary Z1MLX_HOME, never the user's."""
    monkeypatch.setenv("Z1MLX_HOME", str(session_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return session_home


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A seeded random tiny Qwen2 checkpoint in Hugging Face layout (float32)."""
    from z1mlx.convert.demo import TinySpec, build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny-hf", TinySpec())


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint, tmp_path_factory) -> Path:
    """The tiny checkpoint converted by z1 convert, unquantized float32 (exact and fast)."""
    from z1mlx.convert.command import convert_checkpoint
    from z1mlx.convert.source import locate

    out = tmp_path_factory.mktemp("tiny-mlx") / "tiny-f32"
    convert_checkpoint(
        locate(str(tiny_checkpoint)), out, quantize=False, dtype="float32", verify=False, log=lambda m: None
    )
    return out


@pytest.fixture(scope="session")
def endless_model(tmp_path_factory) -> Path:
    """A tiny model whose end-of-turn logit is zeroed: it never stops on its own,
    for tests that interrupt a long reply."""
    from z1mlx.convert.command import convert_checkpoint
    from z1mlx.convert.demo import TinySpec, build_checkpoint
    from z1mlx.convert.source import locate

    root = tmp_path_factory.mktemp("endless")
    source = build_checkpoint(root / "endless-hf", TinySpec(eos_boost=0.0))
    out = root / "endless-f32"
    convert_checkpoint(locate(str(source)), out, quantize=False, dtype="float32", verify=False, log=lambda m: None)
    return out


@pytest.fixture(scope="session")
def engine(tiny_model):
    from z1mlx.engine import Engine

    return Engine.load(str(tiny_model))


@pytest.fixture(scope="session")
def endless_engine(endless_model):
    from z1mlx.engine import Engine

    return Engine.load(str(endless_model))


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A Z1MLX_HOME of this test's own: its history and settings start empty."""
    path = tmp_path / "home"
    monkeypatch.setenv("Z1MLX_HOME", str(path))
    for name in ("BUDGET", "ANSWER_TOKENS", "SHOW_REASONING"):
        monkeypatch.delenv(f"Z1MLX_CHAT_{name}", raising=False)
    return path
