"""Full disks and damaged settings: the random demo model built into a full store, `z1 convert`
onto a full disk (blaming the output, not the source), a settings file nested past recursion.

The full disk is a real one: a small tmpfs made by bubblewrap, so mlx's own writers meet ENOSPC."""

import json
import shutil
import subprocess
import sys

import pytest

from z1mlx import locations
from z1mlx.chat.settings import ChatSettings, load_settings, remember

from helpers import one_line_error, z1

BWRAP = shutil.which("bwrap")
needs_bwrap = pytest.mark.skipif(BWRAP is None, reason="bubblewrap (bwrap) is not installed")


def on_small_disk(size: int, script: str, **env: str) -> subprocess.CompletedProcess:
    sets = [a for k, v in env.items() for a in ("--setenv", k, v)]
    return subprocess.run(
        [BWRAP, "--dev-bind", "/", "/", "--size", str(size), "--tmpfs", "/mnt/full", *sets, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )


AND_LIST = "code=$?; ls -A 2>/dev/null"  # then a directory: what was left there, on stdout; exit with the code
EXIT = "; exit $code"


def py(*args: str) -> str:
    return " ".join([sys.executable, "-m", "z1mlx", *map(str, args)])


@needs_bwrap
@pytest.mark.parametrize("size", [64 * 1024, 2 * 1024 * 1024])
def test_the_random_demo_model_into_a_full_store(tmp_path, size):
    problem = tmp_path / "p.py"
    problem.write_text("x = 3\nprint(x)\n")
    proc = on_small_disk(
        size,
        f"{py('solve', problem, '--model', 'demo-random', '--budget', '4')}; {AND_LIST} /mnt/full/home/models{EXIT}",
        Z1MLX_HOME="/mnt/full/home",
    )
    line = one_line_error(proc)
    assert proc.returncode == 2 and "cannot build demo-random" in line, proc.stderr
    assert "/mnt/full/home" in line and "the disk is full or not writable; free some space" in line, line
    assert proc.stdout.strip() == ""  # no half-built model is left in the store


@needs_bwrap
def test_convert_onto_a_full_disk_blames_the_output(tiny_checkpoint):
    proc = on_small_disk(
        64 * 1024,
        f"{py('convert', tiny_checkpoint, '--out', '/mnt/full/out')}; {AND_LIST} /mnt/full{EXIT}",
    )
    line = one_line_error(proc)
    assert "cannot write /mnt/full/out" in line and "the disk is full" in line, line
    assert str(tiny_checkpoint) not in line  # the source is fine
    assert proc.stdout.strip() == ""  # nothing that looks like a result is left


def test_a_settings_file_nested_100000_deep_is_one_line_and_kept(home):
    path = locations.settings_file()
    path.parent.mkdir(parents=True)
    damaged = "[" * 100_000 + "]" * 100_000
    path.write_text(damaged)
    proc = z1("chat", "--plain", "--model", "demo", "--budget", "8", input="/budget 4\n")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    told = [line for line in proc.stderr.splitlines() if str(path) in line]
    assert told == [f"z1: {path}: ignored, using the default settings (nested too deeply); fix or delete the file"]
    assert path.read_text() == damaged  # the user's file is theirs to fix: never overwritten


def test_a_damaged_settings_file_is_said_once_and_never_overwritten(home, capsys):
    path = locations.settings_file()
    path.parent.mkdir(parents=True)
    path.write_text('{"budget": 512,')
    assert load_settings() == ChatSettings()
    assert load_settings() == ChatSettings()
    assert remember(budget=64).budget == 64
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(path) in err[0] and "fix or delete the file" in err[0]
    assert path.read_text() == '{"budget": 512,'
    path.write_text(json.dumps({"budget": 512}))
    assert remember(answer_tokens=100) == ChatSettings(512, 100, False)
    assert json.loads(path.read_text())["answer_tokens"] == 100
