"""Float32 training throughput on Linux: OpenBLAS's kernels for this CPU against its fallback.

Debian's OpenBLAS (0.3.21, preloaded for float32 training; see the README) falls back to its
generic Prescott kernels on x86 CPUs it does not know. The micro-Z1 recipe names the kernel set
the CPU runs (`OPENBLAS_CORETYPE`, from /proc/cpuinfo). This trains micro-Z1's fresh model with
`z1 finetune --type full` on the recipe's data, both ways, alternating, one BLAS thread each, and
prints each run's tokens/s (the trainer's own, averaged over the reports after the first) and
the ratio. On a CPU that OpenBLAS knows, the ratio is about 1.

    python bench/bench_blas.py                   # goal: >= 1 (2.25x measured on a 2-core Xeon)
    python bench/bench_blas.py --iters 60 --rounds 2
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def train(base: Path, data: Path, out: Path, env: dict, s: argparse.Namespace) -> float:
    cmd = [sys.executable, "-m", "z1mlx", "finetune", "--model", str(base), "--type", "full", "--data", str(data)]
    cmd += ["--out", str(out), "--iters", str(s.iters), "--batch-size", "12", "--lr", "5e-4", "--no-grad-checkpoint"]
    cmd += ["--report-every", str(s.report_every), "--eval-every", "1000000", "--save-every", "1000000"]
    cmd += ["--val-batches", "1", "--seed", "0"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"z1 finetune failed:\n{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_second"] for r in rows if r.get("tokens_per_second")]
    return statistics.mean(speeds[1:] or speeds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--report-every", type=int, default=10)
    p.add_argument("--rounds", type=int, default=1, help="alternating runs of each setting")
    s = p.parse_args(argv)
    from z1mlx.microz1.build import MicroSpec, build_fresh_model
    from z1mlx.microz1.recipe import OPENBLAS, child_env, cpu_flags, openblas_core
    from z1mlx.microz1.tasks import write_dataset

    core = openblas_core(cpu_flags())
    if not sys.platform.startswith("linux") or not OPENBLAS.is_file() or core is None:
        print("bench_blas: nothing to measure: it needs Linux, Debian's OpenBLAS (apt install libopenblas0-pthread)")
        print("and a CPU with AVX2 or AVX-512")
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-blas-") as tmp:
        root = Path(tmp)
        base = build_fresh_model(root / "base", MicroSpec())
        data = root / "data"
        write_dataset(data, 12 * s.iters, seed=1)
        hinted = child_env(root, 1)
        fallback = {k: v for k, v in hinted.items() if k != "OPENBLAS_CORETYPE"}
        runs: dict[str, list[float]] = {core: [], "fallback": []}
        for r in range(s.rounds):
            order = [(core, hinted), ("fallback", fallback)]
            for name, env in order if r % 2 == 0 else order[::-1]:
                runs[name].append(train(base, data, root / f"run-{name}-{r}", env, s))
                print(f"round {r + 1}: {name:9s} {runs[name][-1]:7.0f} tok/s", flush=True)
    fast, slow = statistics.mean(runs[core]), statistics.mean(runs["fallback"])
    print(
        f"OPENBLAS_CORETYPE={core}: {fast:.0f} tok/s; OpenBLAS's own choice: {slow:.0f} tok/s; ratio {fast / slow:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
