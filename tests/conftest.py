"""Shared fixtures: an isolated store and tiny random Qwen2 models built on the spot."""

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
    convert_checkpoint(locate(str(tiny_checkpoint)), out, quantize=False, dtype="float32", verify=False, log=lambda m: None)
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


def greedy_reference(engine, prompt: list[int], max_tokens: int) -> list[int]:
    """mlx-lm's own greedy tokens for `prompt`, up to and excluding end-of-sequence."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    out = []
    for token, _ in generate_step(mx.array(prompt), engine.model, max_tokens=max_tokens):
        if token in engine.eos_token_ids:
            break
        out.append(token)
    return out


def find_prompt(engine, *, ends_within: int | None = None, longer_than: int | None = None, tries: int = 40):
    """A chat prompt whose greedy reply ends by itself within `ends_within` tokens,
    or runs past `longer_than` tokens. Random weights: the search is seeded and stable."""
    for i in range(tries):
        prompt = engine.chat_prompt([{"role": "user", "content": f"Problem {i}: add numbers {i * 7}"}])
        limit = (ends_within or longer_than) + 1
        reply = greedy_reference(engine, prompt, limit)
        if ends_within is not None and 3 <= len(reply) < ends_within:
            return prompt, reply
        if longer_than is not None and len(reply) > longer_than:
            return prompt, reply
    raise AssertionError("no suitable prompt among the seeded candidates")
