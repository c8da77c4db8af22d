"""`z1 convert`: exactness against mlx-lm, atomicity, and its one-line errors."""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from z1mlx.convert.command import MANIFEST, convert_checkpoint
from z1mlx.convert.demo import TinySpec, build_checkpoint
from z1mlx.convert.source import locate

from helpers import one_line_error, z1

pytestmark = pytest.mark.slow  # real subprocesses, servers or training: see `make test-fast`


def logprobs(path, ids):
    from mlx_lm import load

    model, _ = load(str(path))
    logits = model(mx.array(ids)[None])[0].astype(mx.float32)
    return np.array(logits - mx.logsumexp(logits, axis=-1, keepdims=True))


def test_float32_conversion_matches_mlx_lm_on_the_source(tiny_checkpoint, tiny_model):
    ids = list(range(5, 45))
    np.testing.assert_allclose(logprobs(tiny_model, ids), logprobs(tiny_checkpoint, ids), rtol=0, atol=1e-5)
    manifest = json.loads((tiny_model / MANIFEST).read_text())
    assert manifest["bits"] is None and manifest["dtype"] == "float32"
    assert manifest["source"] == str(tiny_checkpoint)


def test_4bit_conversion_equals_mlx_lm_convert(tiny_checkpoint, tmp_path):
    from mlx_lm.convert import convert

    ours = tmp_path / "ours"
    manifest = convert_checkpoint(
        locate(str(tiny_checkpoint)), ours, q_bits=4, q_group_size=64, dtype="float32", log=lambda m: None
    )
    convert(
        str(tiny_checkpoint),
        mlx_path=str(tmp_path / "theirs"),
        quantize=True,
        q_bits=4,
        q_group_size=64,
        dtype="float32",
    )
    a = mx.load(str(ours / "model.safetensors"))
    b = mx.load(str(tmp_path / "theirs" / "model.safetensors"))
    assert a.keys() == b.keys() and any(k.endswith(".scales") for k in a)
    for key in a:
        assert a[key].dtype == b[key].dtype
        assert mx.array_equal(a[key], b[key]).item(), key
    assert a["model.layers.0.mlp.up_proj.scales"].dtype == mx.float32  # CPU-friendly scales
    assert manifest.bits == 4 and manifest.group_size == 64
    assert 0.0 <= manifest.top1_agreement <= 1.0
    assert 4.0 < manifest.bits_per_weight < 6.0
    recorded = json.loads((ours / MANIFEST).read_text())
    assert recorded["size_bytes"] > 0 and recorded["top1_agreement"] == manifest.top1_agreement


def test_cli_prints_agreement_size_and_bits(tiny_checkpoint, tmp_path):
    out = tmp_path / "cli-4bit"
    proc = z1("convert", tiny_checkpoint, "-o", out, "--q-bits", "8", "--q-group-size", "32")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert "top-1 agreement" in proc.stderr and "bits/weight" in proc.stderr and "MB" in proc.stderr
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["bits"] == 8 and manifest["group_size"] == 32
    # An existing output is refused without --force, and replaced with it.
    assert "already exists" in one_line_error(z1("convert", tiny_checkpoint, "-o", out))
    assert z1("convert", tiny_checkpoint, "-o", out, "--force", "--no-verify").returncode == 0


def test_killed_conversion_leaves_the_store_clean_and_reruns(tmp_path, isolated_home):
    big = build_checkpoint(tmp_path / "big-hf", TinySpec(hidden_size=512, num_hidden_layers=8, intermediate_size=1536))
    models = isolated_home / "models"
    out = models / "killed-4bit"
    proc = subprocess.Popen(
        [sys.executable, "-m", "z1mlx", "convert", str(big), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(".partial-killed") for p in models.glob(".*")):
        time.sleep(0.01)
    assert proc.poll() is None, "conversion finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    listing = z1("models")
    assert "killed-4bit" not in listing.stdout
    rerun = z1("convert", big, "-o", out, "--no-verify")
    assert rerun.returncode == 0, rerun.stderr
    assert (out / MANIFEST).is_file()
    assert not [p for p in models.iterdir() if p.name.startswith(".partial-")]


def test_interrupted_conversion_removes_its_partial_directory(tmp_path):
    big = build_checkpoint(tmp_path / "big-hf", TinySpec(hidden_size=512, num_hidden_layers=8, intermediate_size=1536))
    out = tmp_path / "out" / "x"
    proc = subprocess.Popen(
        [sys.executable, "-m", "z1mlx", "convert", str(big), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal, even where this runs in the background (which ignores SIGINT).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "out").glob(".partial-*")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert not out.exists() and not list((tmp_path / "out").glob(".partial-*"))


@pytest.fixture
def bad_sources(tmp_path, tiny_checkpoint):
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes(b"")
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    other_arch = tmp_path / "gpt2"
    other_arch.mkdir()
    (other_arch / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (other_arch / "model.safetensors").write_bytes(b"")
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_checkpoint, truncated)
    (truncated / "model.safetensors").write_bytes((tiny_checkpoint / "model.safetensors").read_bytes()[:1000])
    not_object = tmp_path / "not-object"
    shutil.copytree(tiny_checkpoint, not_object)
    (not_object / "config.json").write_text("[1, 2]")
    return {
        "no_config": no_config,
        "no_weights": no_weights,
        "other_arch": other_arch,
        "truncated": truncated,
        "not_object": not_object,
    }


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no_config", "no config.json"),
        ("no_weights", "no .safetensors weights"),
        ("other_arch", "unsupported architecture 'gpt2'; supported: qwen2"),
        ("truncated", "cannot convert (RuntimeError"),
        ("not_object", "expected a JSON object"),
    ],
)
def test_bad_source_directories(bad_sources, case, expected, tmp_path):
    line = one_line_error(z1("convert", bad_sources[case], "-o", tmp_path / "out"))
    assert expected in line and str(bad_sources[case]) in line


def test_hub_id_offline_and_not_cached(tmp_path):
    line = one_line_error(
        z1("convert", "someone/not-cached", "-o", tmp_path / "o", env={"HF_HUB_CACHE": str(tmp_path / "hf")})
    )
    assert "someone/not-cached" in line and "offline mode is on" in line


def test_not_a_source_at_all(tmp_path):
    assert "not a hub id" in one_line_error(z1("convert", "no-such-thing", "-o", tmp_path / "o"))


def test_unwritable_output(tiny_checkpoint):
    line = one_line_error(z1("convert", tiny_checkpoint, "-o", "/sys/z1-test/out", "--no-verify"))
    assert "/sys" in line and ("not writable" in line or "cannot write" in line)


def test_disk_full_is_reported_in_one_line():
    import errno

    from z1mlx.fsutil import describe_os_error

    assert describe_os_error(OSError(errno.ENOSPC, "No space left"), Path("/m/x")) == "disk full while writing /m/x"
