"""Training throughput: `z1 finetune` against `mlx_lm lora` on the same data and settings.

Both train LoRA on the same small random Qwen2 model (4-bit, as the default QLoRA), the
same rows (Z1's question/response for z1; the same conversations as `messages` with
--mask-prompt for mlx-lm), batch size, rank, layers and sequence length, one after the
other in this process's run, alternating. Throughput is each tool's own training
tokens/s (tokens in the loss per second of training steps, as mlx-lm measures it),
averaged over the reports after the first (the first includes compiling).

Where row lengths vary, z1 is faster than the overhead alone explains: it hands the
trainer token ids, so mlx-lm's `iterate_batches` sorts rows by length and batches pad
little, where `mlx_lm lora`'s lazily tokenized dataset reports every row's length as its
number of JSON fields and batches come in file order. `--spread 0` measures the wrapper's
overhead alone.

    python bench/bench_finetune.py              # prints both and the ratio (goal >= 0.95)
    python bench/bench_finetune.py --iters 120 --rounds 3
"""

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = (
    "def solve return total for in range if else while list dict set sorted value index target "
    "seen numbers the answer is first let me think step by step check edge cases empty list"
).split()


def build_model(root: Path, hidden: int, layers: int) -> Path:
    from z1mlx.convert.command import convert_checkpoint
    from z1mlx.convert.demo import TinySpec, build_checkpoint
    from z1mlx.convert.source import locate

    spec = TinySpec(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(2, hidden // 64),
        num_key_value_heads=2,
        intermediate_size=hidden * 2,
        vocab_target=768,
    )
    source = build_checkpoint(root / "hf", spec)
    out = root / "mlx-4bit"
    convert_checkpoint(locate(str(source)), out, quantize=True, dtype="float32", verify=False, log=lambda m: None)
    return out


def write_data(root: Path, rows: int, words: int, spread: float, seed: int = 0) -> tuple[Path, Path, Path]:
    rng = random.Random(seed)

    def text(n):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    def row():
        return {
            "question": text(words // 4),
            "response": text(rng.randint(round(words * (1 - spread)), round(words * (1 + spread)))),
        }

    train = [row() for _ in range(rows)]
    valid = [row() for _ in range(max(8, rows // 20))]
    z1_train, z1_valid = root / "train-z1.jsonl", root / "valid-z1.jsonl"
    for path, data in ((z1_train, train), (z1_valid, valid)):
        path.write_text("".join(json.dumps(r) + "\n" for r in data))
    mlx_dir = root / "mlx-data"
    mlx_dir.mkdir()
    for name, data in (("train", train), ("valid", valid)):
        chats = [
            {"messages": [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["response"]}]}
            for r in data
        ]
        (mlx_dir / f"{name}.jsonl").write_text("".join(json.dumps(c) + "\n" for c in chats))
    return z1_train, z1_valid, mlx_dir


def run_z1(model: Path, train: Path, valid: Path, out: Path, home: Path, s: argparse.Namespace) -> list[float]:
    cmd = [
        sys.executable,
        "-m",
        "z1mlx",
        "finetune",
        "--data",
        str(train),
        "--valid",
        str(valid),
        "--model",
        str(model),
        "--out",
        str(out),
        "--iters",
        str(s.iters),
        "--batch-size",
        str(s.batch_size),
        "--rank",
        "8",
        "--layers",
        str(s.layers),
        "--lr",
        "1e-4",
        "--max-seq-length",
        "2048",
        "--no-grad-checkpoint",
        "--report-every",
        str(s.report_every),
        "--eval-every",
        "1000000",
        "--save-every",
        "1000000",
        "--val-batches",
        "1",
        "--seed",
        "0",
    ]
    env = {**os.environ, "Z1MLX_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"z1 finetune failed:\n{result.stderr}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["tokens_per_second"] for r in rows if r["tokens_per_second"]]


REPORT = re.compile(r"^\s*(\d+)\s+([\d.]+)\s+[▼▲]\s+([\d,]+)\s+")


def run_mlx_lm(model: Path, data: Path, out: Path, s: argparse.Namespace) -> list[float]:
    cmd = [
        sys.executable,
        "-m",
        "mlx_lm",
        "lora",
        "--model",
        str(model),
        "--train",
        "--data",
        str(data),
        "--mask-prompt",
        "--fine-tune-type",
        "lora",
        "--iters",
        str(s.iters),
        "--batch-size",
        str(s.batch_size),
        "--num-layers",
        str(s.layers),
        "--learning-rate",
        "1e-4",
        "--max-seq-length",
        "2048",
        "--steps-per-report",
        str(s.report_every),
        "--steps-per-eval",
        "1000000",
        "--save-every",
        "1000000",
        "--val-batches",
        "1",
        "--adapter-path",
        str(out),
        "--seed",
        "0",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode:
        raise SystemExit(f"mlx_lm lora failed:\n{result.stderr}{result.stdout}")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout)
    return [float(m.group(3).replace(",", "")) for m in map(REPORT.match, plain.splitlines()) if m]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--rows", type=int, default=200)
    p.add_argument("--words", type=int, default=40, help="words per response, on average")
    p.add_argument(
        "--spread",
        type=float,
        default=0.5,
        help="responses vary by this fraction of --words (0: nearly equal lengths, little padding either way)",
    )
    p.add_argument("--report-every", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2, help="alternating runs of each tool")
    s = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        root = Path(tmp)
        model = build_model(root, s.hidden, s.layers)
        train, valid, mlx_data = write_data(root, s.rows, s.words, s.spread)
        z1_runs, mlx_runs = [], []
        for r in range(s.rounds):
            for name in ("z1", "mlx") if r % 2 == 0 else ("mlx", "z1"):
                if name == "z1":
                    reports = run_z1(model, train, valid, root / f"z1-{r}", root / "home", s)
                    z1_runs.append(statistics.mean(reports[1:]))
                else:
                    reports = run_mlx_lm(model, mlx_data, root / f"mlx-{r}", s)
                    mlx_runs.append(statistics.mean(reports[1:]))
                print(
                    f"round {r + 1} {name:>3}: {statistics.mean(reports[1:]):8.1f} tokens/s "
                    f"({len(reports) - 1} reports)",
                    file=sys.stderr,
                )
    z1_tps, mlx_tps = statistics.mean(z1_runs), statistics.mean(mlx_runs)
    print(
        f"model: random Qwen2, hidden {s.hidden}, {s.layers} layers, 4-bit; LoRA rank 8 on {s.layers} layers; "
        f"batch {s.batch_size}; {s.iters} iterations; {s.rounds} rounds; response length spread {s.spread:g}"
    )
    print(f"z1 finetune   {z1_tps:10.1f} tokens/s")
    print(f"mlx_lm lora   {mlx_tps:10.1f} tokens/s")
    print(f"ratio {z1_tps / mlx_tps:.3f} (goal >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
