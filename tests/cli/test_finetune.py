"""`z1 finetune` end to end on the tiny model: real training through mlx-lm's trainer."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from z1mlx import cli, store
from z1mlx.finetune import command as finetune

pytestmark = pytest.mark.slow  # real subprocesses, servers or training: see `make test-fast`

QUESTIONS = [
    "Which animal jumps?",
    "What number is the answer?",
    "How do I print the result?",
    "How do I sort the words?",
]
ANSWERS = [
    "The quick brown fox jumps over the lazy dog.",
    "So the answer is 42.",
    "print(solve(10))",
    "return sorted(set(words))",
]
# A tiny random model learns these in a few dozen steps at this rate (checked over several seeds).
TRAIN_FLAGS = [
    "--iters",
    "60",
    "--batch-size",
    "4",
    "--lr",
    "1e-3",
    "--layers",
    "2",
    "--save-every",
    "10",
    "--eval-every",
    "20",
    "--report-every",
    "5",
    "--val-batches",
    "1",
]
FUSED = "tiny-finetuned"


def write_learnable(path: Path) -> Path:
    rows = [{"question": QUESTIONS[i % 4], "response": ANSWERS[i % 4]} for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def z1(args: list[str], home: Path, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "Z1MLX_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "z1mlx", *args], env=env, capture_output=True, text=True, timeout=300, **kw
    )


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["finetune", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_learnable(tmp_path_factory.mktemp("ftdata") / "learn.jsonl")


@pytest.fixture(scope="module")
def trained(data, tiny_model, session_home, tmp_path_factory):
    """The uninterrupted reference run, fused into the store afterwards."""
    out = tmp_path_factory.mktemp("ft") / "run"
    result = z1(
        ["finetune", "--data", str(data), "--model", str(tiny_model), "--out", str(out), *TRAIN_FLAGS, "--fuse", FUSED],
        session_home,
    )
    assert result.returncode == 0, result.stderr
    return out, result


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def greedy(model, tokenizer, i: int, max_tokens: int = 24) -> str:
    from mlx_lm import generate

    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[i]}], add_generation_prompt=True)
    return generate(model, tokenizer, prompt, max_tokens=max_tokens)


def greedy_tokens(model, prompt: list[int], n: int = 16) -> list[int]:
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    return [token for token, _ in generate_step(mx.array(prompt), model, max_tokens=n)]


def test_training_lowers_the_loss_and_teaches_the_answers(trained, tiny_model):
    from mlx_lm import load

    out, _ = trained
    rows = [r for r in metrics(out) if r["train_loss"] is not None]
    assert rows[-1]["iteration"] == 60
    assert rows[-1]["train_loss"] <= 0.7 * rows[0]["train_loss"], rows
    base, tokenizer = load(str(tiny_model))
    tuned, _ = load(str(tiny_model), adapter_path=str(out))
    for i in range(4):
        assert greedy(tuned, tokenizer, i) == ANSWERS[i]
        assert greedy(base, tokenizer, i) != ANSWERS[i]


def test_output_directory(trained, data, tiny_model):
    out, result = trained
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["num_layers"] == 2 and config["lora_parameters"]["rank"] == 8
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "0000010",
        "0000020",
        "0000030",
        "0000040",
        "0000050",
        "0000060",
    ]
    # Optimizer state is kept for the newest checkpoint only (the one to resume from).
    assert [p.parent.name for p in (out / "checkpoints").glob("*/optimizer.safetensors")] == ["0000060"]
    assert (out / "adapters.safetensors").read_bytes() == (
        out / "checkpoints/0000060/adapters.safetensors"
    ).read_bytes()
    rows = metrics(out)
    assert set(rows[0]) == {
        "iteration",
        "train_loss",
        "val_loss",
        "learning_rate",
        "tokens_per_second",
        "peak_memory_gb",
    }
    assert [r["iteration"] for r in rows] == list(range(0, 61, 5))
    assert [r["iteration"] for r in rows if r["val_loss"] is not None] == [0, 20, 40, 60]
    assert all(r["tokens_per_second"] > 0 and r["peak_memory_gb"] > 0 for r in rows[1:])
    manifest = json.loads((out / "finetune.json").read_text())
    from z1mlx.finetune.data import sha256_file

    assert manifest["data"]["train"] == {"path": str(data), "sha256": sha256_file(data), "format": "question/response"}
    assert manifest["base_model"]["path"] == str(tiny_model)
    assert manifest["settings"]["lr"] == 1e-3 and manifest["iters"] == 60
    assert manifest["mlx_lm_version"] and manifest["mlx_version"] and manifest["z1mlx_version"]
    # Not a terminal: one plain line per report, and the result path on stdout.
    assert "[z1] iter 60/60  train_loss " in result.stderr and " tok/s  peak " in result.stderr
    assert result.stdout.strip() == str(out)


def test_fused_model_is_in_the_store_and_matches_base_plus_adapter(trained, tiny_model, isolated_home):
    from mlx_lm import load

    out, _ = trained
    stored = store.find(FUSED)
    assert stored is not None and stored.manifest.base_model == str(tiny_model)
    assert stored.manifest.top1_agreement == 1.0
    assert store.resolve_model(FUSED) == stored.path
    fused, tokenizer = load(str(stored.path))
    adapted, _ = load(str(tiny_model), adapter_path=str(out))
    for text in QUESTIONS + ["Something else entirely", "def solve(n):"]:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True)
        assert greedy_tokens(fused, prompt) == greedy_tokens(adapted, prompt)


def test_fusing_onto_a_4bit_base_measures_agreement(data, tiny_checkpoint, session_home, tmp_path):
    """Re-quantizing fused weights can round an adapter away: the agreement is measured,
    and --fuse-dequantize keeps base + adapter exactly."""
    from mlx_lm import load

    from z1mlx.convert.command import convert_checkpoint
    from z1mlx.convert.source import locate

    base = tmp_path / "q4"
    convert_checkpoint(locate(str(tiny_checkpoint)), base, dtype="float32", verify=False, log=lambda m: None)
    out = tmp_path / "q4run"
    flags = [
        "--iters",
        "10",
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--layers",
        "2",
        "--save-every",
        "10",
        "--eval-every",
        "10",
        "--report-every",
        "5",
        "--val-batches",
        "1",
    ]
    result = z1(
        [
            "finetune",
            "--data",
            str(data),
            "--model",
            str(base),
            "--out",
            str(out),
            *flags,
            "--fuse",
            "q4-fused",
            "--fuse-dequantize",
        ],
        session_home,
    )
    assert result.returncode == 0, result.stderr
    assert "top-1 agreement with base + adapter 100.0%" in result.stderr
    fused_dir = session_home / "models" / "q4-fused"
    manifest = store.Manifest.read(fused_dir)
    assert manifest.top1_agreement == 1.0 and manifest.bits is None
    fused, tokenizer = load(str(fused_dir))
    adapted, _ = load(str(base), adapter_path=str(out))
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[0]}], add_generation_prompt=True)
    assert greedy_tokens(fused, prompt) == greedy_tokens(adapted, prompt)


def test_engine_applies_the_adapter_without_fusing(trained, tiny_model):
    """What `z1 solve/chat --adapter DIR` load."""
    from z1mlx.engine import Engine

    engine = Engine.load(str(tiny_model), adapter=trained[0])
    prompt = engine.chat_prompt([{"role": "user", "content": QUESTIONS[1]}])
    assert engine.tokenizer.decode(greedy_tokens(engine.model, prompt, 8)).startswith(ANSWERS[1])


def test_interrupt_then_resume_matches_the_uninterrupted_run(trained, data, tiny_model, session_home, tmp_path):
    import mlx.core as mx

    out = tmp_path / "run"
    env = {**os.environ, "Z1MLX_HOME": str(session_home), "HF_HUB_OFFLINE": "1"}
    args = ["finetune", "--data", str(data), "--model", str(tiny_model), "--out", str(out), *TRAIN_FLAGS]
    proc = subprocess.Popen(
        [sys.executable, "-m", "z1mlx", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while not (out / "checkpoints/0000010/state.json").exists():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped = max(int(p.name) for p in (out / "checkpoints").iterdir())
    assert 10 <= stopped < 60
    assert (out / "adapters.safetensors").read_bytes() == (
        out / f"checkpoints/{stopped:07d}/adapters.safetensors"
    ).read_bytes()
    command = stderr.split("resume with: ")[1].splitlines()[0]
    assert command == shlex.join(["z1", *args, "--resume"])

    resumed = z1(shlex.split(command)[1:], session_home)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at iteration {stopped} of 60" in resumed.stderr
    iterations = [r["iteration"] for r in metrics(out)]
    assert iterations == sorted(set(iterations)) and iterations[-1] == 60
    assert (out / "checkpoints/0000060").is_dir()
    # Same batches, restored optimizer state: the same adapter as the uninterrupted run.
    reference = mx.load(str(trained[0] / "adapters.safetensors"))
    weights = mx.load(str(out / "adapters.safetensors"))
    assert reference.keys() == weights.keys()
    for name in reference:
        assert mx.allclose(reference[name], weights[name], atol=1e-4).item(), name


def test_resume_refuses_other_data_model_or_settings(trained, data, tiny_model, tiny_checkpoint, tmp_path, capsys):
    out, _ = trained
    other = write_learnable(tmp_path / "other.jsonl")
    other.write_text(other.read_text() + json.dumps({"question": "extra", "response": "row"}) + "\n")
    cases = [
        (["--data", str(other)], "it was trained on train data"),
        (["--data", str(data), "--model", str(tiny_checkpoint)], "it was trained on base model"),
        (["--data", str(data), "--rank", "4"], "--rank 4 differs from the run being resumed (8)"),
        (["--data", str(data), "--batching", "shuffled"], "--batching shuffled differs from the run being resumed"),
        (["--data", str(data), "--model", str(tiny_model)], f"{out} already finished 60 iterations"),
    ]
    before = sorted(p.name for p in out.rglob("*"))
    for extra, message in cases:
        code, _, err = run_cli(["--out", str(out), "--resume", *extra], capsys)
        assert code == 2 and message in err, err
        assert "Traceback" not in err
    assert sorted(p.name for p in out.rglob("*")) == before


GOOD = '{"question": "q", "response": "r"}'
GOOD_CHAT = '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}'
BAD_DATA = [
    ("bad JSON", [GOOD, '{"question": "q"'] + [GOOD] * 8, 2, "invalid JSON"),
    ("missing field", [GOOD, '{"question": "q"}'] + [GOOD] * 8, 2, "missing field 'response'"),
    ("empty field", ['{"question": "", "response": "r"}'] + [GOOD] * 8, 1, "field 'question' is empty"),
    (
        "unknown role",
        [GOOD_CHAT, '{"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]}']
        + [GOOD_CHAT] * 8,
        2,
        "messages[1]: unknown role 'tool'",
    ),
    ("mixed formats", [GOOD, '{"prompt": "q", "completion": "r"}'] + [GOOD] * 8, 2, "mixed formats"),
    (
        "too long",
        [GOOD, json.dumps({"question": "q", "response": "word " * 200})] + [GOOD] * 8,
        2,
        "670 tokens, longer than --max-seq-length 256",
    ),
]


@pytest.mark.parametrize("lines, line, message", [c[1:] for c in BAD_DATA], ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_reported_by_file_and_line_and_writes_nothing(lines, line, message, tiny_model, tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(row + "\n" for row in lines))
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        [
            "--data",
            str(path),
            "--model",
            str(tiny_model),
            "--out",
            str(out),
            "--max-seq-length",
            "256",
            "--batch-size",
            "2",
        ],
        capsys,
    )
    assert code == 2
    assert err.startswith(f"{path}:{line}: {message}")
    assert len(err.strip().splitlines()) == 2, err
    assert err.strip().splitlines()[-1].startswith("z1 finetune: error: ") and "nothing was written" in err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists()


def test_many_errors_list_twenty_then_a_count(tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    path.write_text('{"question": "q"}\n' * 25)
    code, _, err = run_cli(["--data", str(path), "--out", str(tmp_path / "out")], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and lines[0] == f"{path}:1: missing field 'response'" and lines[19].startswith(f"{path}:20:")
    assert (
        lines[20] == "... and 5 more"
        and lines[21] == "z1 finetune: error: 25 problems in the data; nothing was written"
    )


def test_dry_run_prints_statistics_and_writes_nothing(data, tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_cli(
        ["--data", str(data), "--model", str(tiny_model), "--out", str(out), "--batch-size", "4", "--dry-run"], capsys
    )
    assert code == 0 and not out.exists()
    assert f"file: {data} (question/response)" in stdout
    assert "train: 20 rows; tokens per row min " in stdout and " / median " in stdout
    assert "valid: 4 rows" in stdout and "validation: a seeded 5% hold-out" in stdout
    assert "iterations: 10 at batch size 4 (2 epochs)" in stdout


def test_dry_run_with_a_data_directory(data, tiny_model, tmp_path, capsys):
    directory = tmp_path / "data"
    directory.mkdir()
    (directory / "train.jsonl").write_text(data.read_text())
    (directory / "valid.jsonl").write_text("".join(data.read_text().splitlines(keepends=True)[:4]))
    code, stdout, _ = run_cli(
        ["--data", str(directory), "--model", str(tiny_model), "--batch-size", "4", "--dry-run"], capsys
    )
    assert code == 0
    assert "validation: the --valid file" in stdout and "train: 24 rows" in stdout and "valid: 4 rows" in stdout


def test_worker_crash_is_reported_with_its_cause(data, tiny_model, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "out"
    code, _, err = run_cli(["--data", str(data), "--model", str(broken), "--out", str(out), *TRAIN_FLAGS], capsys)
    assert code == 1
    message = err.strip().splitlines()[-1]
    assert message.startswith("z1 finetune: error: training failed: ") and f"details in {out / 'train.log'}" in message
    assert "Traceback" in (out / "train.log").read_text()


def test_resume_needs_a_run_directory(tmp_path, capsys):
    code, _, err = run_cli(["--resume"], capsys)
    assert code == 2 and "--resume needs --out DIR" in err
    code, _, err = run_cli(["--resume", "--out", str(tmp_path)], capsys)
    assert code == 2 and "nothing to resume" in err


def test_existing_output_directory_is_not_overwritten(data, tiny_model, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    code, _, err = run_cli(["--data", str(data), "--model", str(tiny_model), "--out", str(tmp_path / "out")], capsys)
    assert code == 2 and "already exists; pass --resume" in err


def test_help_explains_defaults_with_examples(capsys):
    with pytest.raises(SystemExit):
        finetune.main(["--help"])
    text = capsys.readouterr().out
    for needle in ("z1 finetune --data local.jsonl", "--resume", "16 GB Mac", "QLoRA", "never truncated", "--fuse"):
        assert needle in text
