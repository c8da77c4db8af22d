"""The model store and the five forms of `--model`."""

import json
import shutil
from pathlib import Path

import pytest

from z1mlx import locations, store
from z1mlx.convert.command import MANIFEST, Manifest
from z1mlx.errors import ModelNotAvailable, Z1Error

from helpers import one_line_error, z1


def test_locations_follow_z1mlx_home_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("Z1MLX_HOME", str(tmp_path / "h"))
    assert locations.models_dir() == tmp_path / "h" / "models"
    assert locations.history_db().is_relative_to(tmp_path / "h")
    monkeypatch.delenv("Z1MLX_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert locations.models_dir() == tmp_path / "cache" / "z1mlx" / "models"
    assert locations.history_db() == tmp_path / "data" / "z1mlx" / "history.sqlite3"


def test_demo_alias_builds_once_and_is_labelled(isolated_home):
    first = store.resolve_model("demo-random")
    stamp = (first / MANIFEST).stat().st_mtime_ns
    assert store.resolve_model("demo-random") == first
    assert (first / MANIFEST).stat().st_mtime_ns == stamp  # reused, not rebuilt
    manifest = Manifest.read(first)
    assert manifest.random_weights and manifest.bits == 4 and manifest.dtype == "float32"
    assert "random weights" in store.describe(first)


def test_models_lists_and_removes(tiny_model, isolated_home):
    target = locations.models_dir() / "listed-f32"
    shutil.copytree(tiny_model, target)
    listing = z1("models")
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if line.startswith("listed-f32"))
    assert "float32" in row and "KB" in row
    assert z1("models", "--path").stdout.strip() == str(locations.models_dir())
    removed = z1("models", "rm", "listed-f32")
    assert removed.returncode == 0 and not target.exists()
    assert "no model named 'listed-f32'" in one_line_error(z1("models", "rm", "listed-f32"))


def test_model_forms_local_mlx_dir_and_store_name(tiny_model, isolated_home):
    assert store.resolve_model(str(tiny_model)) == tiny_model.resolve()
    shutil.copytree(tiny_model, locations.models_dir() / "by-name", dirs_exist_ok=True)
    assert store.resolve_model("by-name") == locations.models_dir() / "by-name"


def test_model_form_local_hf_dir_is_converted_once(tiny_checkpoint, isolated_home):
    path = store.resolve_model(str(tiny_checkpoint))
    assert path.parent == locations.models_dir()
    manifest = Manifest.read(path)
    assert manifest.source == str(tiny_checkpoint.resolve()) and manifest.bits == 4
    stamp = (path / MANIFEST).stat().st_mtime_ns
    assert store.resolve_model(str(tiny_checkpoint)) == path
    assert (path / MANIFEST).stat().st_mtime_ns == stamp


def fake_hub_cache(cache: Path, repo_id: str, checkpoint: Path) -> Path:
    """The layout huggingface_hub writes: refs/main -> snapshots/<commit>."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    shutil.copytree(checkpoint, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def test_model_form_hub_id_from_the_hf_cache(tiny_checkpoint, tmp_path, isolated_home):
    hf_cache = tmp_path / "hf"
    fake_hub_cache(hf_cache, "someone/Tiny-Coder", tiny_checkpoint)
    proc = z1(
        "solve",
        "-",
        "--model",
        "someone/Tiny-Coder",
        "--budget",
        "3",
        "--answer-tokens",
        "2",
        "--json",
        input="Add two numbers.",
        env={"HF_HUB_CACHE": str(hf_cache)},
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model"] == "tiny-coder-4bit"
    manifest = Manifest.read(locations.models_dir() / "tiny-coder-4bit")
    assert manifest.source == "someone/Tiny-Coder"
    assert manifest.revision == "0123456789abcdef0123456789abcdef01234567"


def test_default_alias_resolves_from_the_store(tiny_model, isolated_home):
    target = locations.models_dir() / "z1-7b-4bit"
    shutil.copytree(tiny_model, target, dirs_exist_ok=True)
    manifest = Manifest.read(target)
    manifest.source, manifest.name = "efficientscaling/Z1-7B", "z1-7b-4bit"
    manifest.write(target)
    try:
        assert store.resolve_model("z1-7b") == target
        assert store.resolve_model(None) == target
    finally:
        shutil.rmtree(target)


def test_default_alias_offline_says_how_to_fix(isolated_home):
    with pytest.raises(ModelNotAvailable) as err:
        store.resolve_model("z1-7b")
    assert "offline mode is on" in str(err.value) and "z1 convert efficientscaling/Z1-7B" in str(err.value)


def test_unknown_model_and_file_instead_of_directory(tmp_path):
    with pytest.raises(Z1Error, match="unknown model 'nope'"):
        store.resolve_model("nope")
    some_file = tmp_path / "f.txt"
    some_file.write_text("x")
    with pytest.raises(Z1Error, match="not a model directory"):
        store.resolve_model(str(some_file))


def test_atomic_write_keeps_usual_modes_and_reports_errors_in_one_line(tmp_path):
    import os

    from z1mlx.fsutil import atomic_write_text

    new = tmp_path / "sub" / "solution.py"
    old_umask = os.umask(0o022)
    try:
        atomic_write_text(new, "x = 1\n")
    finally:
        os.umask(old_umask)
    assert new.read_text() == "x = 1\n" and (new.stat().st_mode & 0o777) == 0o644
    new.chmod(0o600)
    atomic_write_text(new, "x = 2\n")
    assert (new.stat().st_mode & 0o777) == 0o600 and not [p for p in new.parent.iterdir() if p.name.startswith(".")]
    with pytest.raises(Z1Error, match="is a directory"):
        atomic_write_text(tmp_path, "x")
    with pytest.raises(Z1Error, match="cannot write|not writable"):
        atomic_write_text(new / "under-a-file.py", "x")


def test_damaged_demo_is_rebuilt(isolated_home):
    demo = store.resolve_model("demo-random")
    (demo / MANIFEST).unlink()
    rebuilt = store.resolve_model("demo-random")
    assert rebuilt == demo and (demo / MANIFEST).is_file()


def test_store_path_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("Z1MLX_HOME", str(blocker))
    with pytest.raises(Z1Error, match="not a directory"):
        store.list_models()
