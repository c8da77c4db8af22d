"""Batched generation under the window, against sequential runs and against `mlx_lm.server`.

1. In this process, on one model: the same jobs (prompts, each under its own window) run one
   after another with `Engine.generate`, then through `batch.Batch` holding 1, 4 and 8 sequences
   at once. Prints generated tokens/s, the ratio to sequential, and how many sequences gave
   exactly the sequential tokens (batched arithmetic may differ in the last bits).
2. Two servers on loopback, each a subprocess, the same model: `z1 serve --parallel N` and
   `mlx_lm.server --decode-concurrency N`, under the same load from this process (R requests,
   C concurrent clients, the same prompts). z1 thinks `--budget` tokens, then the hint and
   `--answer-tokens` of answer; mlx_lm.server is asked for budget + answer tokens. The model
   never ends its turn, so both generate exactly those counts. Prints completion tokens/s,
   p50/p99 latency and z1's throughput as a ratio of mlx_lm.server's (goal >= 1.0x).

The model: a random Qwen2 (hidden 512, 8 layers, 4-bit, end-of-turn logit zeroed), built here.
On this CPU decoding is compute-bound and batching gains little; on Apple silicon decoding is
bound by memory bandwidth and a batch of 8 costs little more per step than one sequence.

    python bench/bench_batch.py [--jobs 16] [--budget 96] [--answer-tokens 32]
                                [--requests 32] [--concurrency 8] [--skip-servers]
"""

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_engine import build_model
from bench_serve import percentiles


def in_process(model: Path, jobs: int, budget: int, answer_tokens: int) -> dict:
    from z1mlx.batch import Batch, generate_all
    from z1mlx.engine import Engine
    from z1mlx.events import Done, Sampling
    from z1mlx.window import ShiftedWindow

    engine = Engine.load(str(model))
    work = []
    for i in range(jobs):
        prompt = engine.chat_prompt([{"role": "user", "content": f"Problem {i}: " + "sum the digits " * (1 + i % 5)}])
        window = ShiftedWindow(budget=budget - (i % 4) * (budget // 8), answer_tokens=answer_tokens)
        work.append((i, prompt, window, Sampling()))
    for _ in engine.generate(work[0][1], replace(work[0][2], budget=8, answer_tokens=2)):
        pass  # warm up

    started = time.perf_counter()
    sequential = {}
    for key, prompt, window, sampling in work:
        for event in engine.generate(prompt, window, sampling):
            if isinstance(event, Done):
                sequential[key] = event.result
    sequential_s = time.perf_counter() - started
    tokens = sum(r.thinking_tokens + r.answer_tokens for r in sequential.values())
    rows = {"sequential": {"wall_s": sequential_s, "tokens_per_s": tokens / sequential_s, "ratio": 1.0}}
    for size in (1, 4, 8):
        started = time.perf_counter()
        got = dict(generate_all(Batch(engine, size), work))
        wall = time.perf_counter() - started
        same = sum(
            (got[k].thinking_token_ids, got[k].answer_token_ids)
            == (sequential[k].thinking_token_ids, sequential[k].answer_token_ids)
            for k in sequential
        )
        assert all(got[k].thinking_tokens == sequential[k].thinking_tokens for k in sequential)
        rows[f"batch {size}"] = {
            "wall_s": wall,
            "tokens_per_s": tokens / wall,
            "ratio": sequential_s / wall,
            "same_tokens": f"{same}/{len(sequential)}",
        }
    return {"jobs": jobs, "tokens": tokens, "rows": rows}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], port: int, log) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{command[2]} did not start (exit {proc.returncode})")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{command[2]} did not answer within 180 s")


async def load(port: int, bodies: list[dict], concurrency: int) -> dict:
    import httpx

    latencies, tokens, errors = [], 0, []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=600, limits=limits) as client:
        queue = iter(bodies)

        async def worker():
            nonlocal tokens
            for body in queue:
                t0 = time.perf_counter()
                try:
                    response = await client.post("/v1/chat/completions", json=body)
                    response.raise_for_status()
                    tokens += response.json()["usage"]["completion_tokens"]
                    latencies.append(time.perf_counter() - t0)
                except Exception as err:  # counted, shown, never stops the run
                    errors.append(f"{type(err).__name__}: {err}"[:200])

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "latency_s": percentiles(sorted(latencies)),
        "errors": errors,
    }


def servers(model: Path, requests: int, concurrency: int, budget: int, answer_tokens: int) -> dict:
    messages = [
        [{"role": "user", "content": f"Request {i}: " + "sum the digits " * (1 + i % 5)}] for i in range(requests)
    ]
    out = {}
    with tempfile.TemporaryFile() as log:
        for name in ("mlx_lm.server", "z1 serve"):
            port = free_port()
            if name == "z1 serve":
                command = [sys.executable, "-m", "z1mlx", "serve", "--model", str(model), "--port", str(port)]
                command += ["--parallel", str(concurrency), "--log-level", "warning"]
                bodies = [
                    {"model": "z1", "messages": m, "thinking_budget": budget, "max_tokens": answer_tokens}
                    for m in messages
                ]
            else:
                command = [sys.executable, "-m", "mlx_lm.server", "--model", str(model), "--port", str(port)]
                command += ["--decode-concurrency", str(concurrency), "--prompt-concurrency", str(concurrency)]
                bodies = [
                    {"model": str(model), "messages": m, "max_tokens": budget + answer_tokens, "temperature": 0.0}
                    for m in messages
                ]
            proc = start(command, port, log)
            try:
                asyncio.run(load(port, bodies[:concurrency], concurrency))  # warm up
                out[name] = asyncio.run(load(port, bodies, concurrency))
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--budget", type=int, default=96)
    parser.add_argument("--answer-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--skip-servers", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp))
        report = {"in_process": in_process(model, args.jobs, args.budget, args.answer_tokens)}
        if not args.skip_servers:
            report["servers"] = servers(model, args.requests, args.concurrency, args.budget, args.answer_tokens)
    part = report["in_process"]
    print(
        f"{part['jobs']} jobs, {part['tokens']} generated tokens, each under its own window (budget <= {args.budget})"
    )
    for name, row in part["rows"].items():
        same = f" · same tokens as sequential {row['same_tokens']}" if "same_tokens" in row else ""
        print(f"  {name:<11} {row['tokens_per_s']:8.1f} tokens/s · {row['ratio']:.2f}x sequential{same}")
    failed = False
    if "servers" in report:
        print(f"servers: {args.requests} requests, {args.concurrency} concurrent clients, same model and prompts")
        for name, row in report["servers"].items():
            lat = row["latency_s"]
            print(
                f"  {name:<14} {row['tokens_per_s']:8.1f} completion tokens/s · p50 {lat.get('p50', 0):.3f} s"
                f" · p99 {lat.get('p99', 0):.3f} s · errors {len(row['errors'])}"
            )
            failed = failed or bool(row["errors"])
            for error in row["errors"][:3]:
                print(f"    {error}", file=sys.stderr)
        ours, theirs = report["servers"]["z1 serve"], report["servers"]["mlx_lm.server"]
        ratio = ours["tokens_per_s"] / theirs["tokens_per_s"]
        print(f"  z1 serve / mlx_lm.server throughput: {ratio:.2f}x (goal >= 1.0x)")
    if args.json:
        print(json.dumps(report))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
