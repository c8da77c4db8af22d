"""Load test for `z1 serve`: a few hundred chat requests from concurrent clients on loopback.

Prints throughput and latency percentiles; exits 1 if any request failed or returned a
malformed reply. Without --url it starts `z1 serve` itself on a free port and stops it.

  python bench/bench_serve.py                                  the demo model, 200 requests, 8 clients
  python bench/bench_serve.py --model ./tiny --requests 400 --concurrency 16 --json
  python bench/bench_serve.py --url http://127.0.0.1:8080 --budget 256 --answer-tokens 128
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx


@dataclass
class Outcome:
    ok: bool
    latency_s: float
    ttft_s: float | None = None
    completion_tokens: int = 0
    error: str = ""


@dataclass
class Report:
    requests: int
    concurrency: int
    wall_s: float
    outcomes: list[Outcome] = field(repr=False)

    @property
    def errors(self) -> list[str]:
        return [o.error for o in self.outcomes if not o.ok]

    def summary(self) -> dict:
        ok = [o for o in self.outcomes if o.ok]
        latencies = sorted(o.latency_s for o in ok)
        ttfts = sorted(o.ttft_s for o in ok if o.ttft_s is not None)
        tokens = sum(o.completion_tokens for o in ok)
        return {
            "requests": self.requests,
            "concurrency": self.concurrency,
            "errors": len(self.errors),
            "wall_s": round(self.wall_s, 3),
            "requests_per_s": round(len(ok) / self.wall_s, 2) if self.wall_s else 0.0,
            "completion_tokens_per_s": round(tokens / self.wall_s, 1) if self.wall_s else 0.0,
            "latency_s": percentiles(latencies),
            "ttft_s": percentiles(ttfts),
        }


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}

    def at(q):  # nearest-rank percentile
        return round(values[min(len(values) - 1, max(0, int(round(q * len(values) + 0.5)) - 1))], 4)

    return {
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(values[-1], 4),
        "mean": round(statistics.fmean(values), 4),
    }


def check_reply(body: dict, budget: int) -> int:
    """The completion tokens of a well-formed reply; raises ValueError otherwise."""
    usage = body.get("usage") or {}
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
    if not isinstance(reasoning, int) or reasoning > budget:
        raise ValueError(f"bad reasoning_tokens {reasoning!r} for budget {budget}")
    choice = body["choices"][0]
    if choice["finish_reason"] not in ("stop", "length") or not isinstance(choice["message"]["content"], str):
        raise ValueError(f"bad choice {choice!r}"[:200])
    return usage["completion_tokens"]


async def one_request(client: httpx.AsyncClient, index: int, args) -> Outcome:
    budget = args.budget if index % 3 else 0  # every third request answers at once
    body = {
        "model": "z1",
        "messages": [{"role": "user", "content": f"Request {index}: sum the numbers 1..{index}"}],
        "thinking_budget": budget,
        "max_tokens": args.answer_tokens,
    }
    stream = index % 2 == 1
    start = time.perf_counter()
    try:
        if not stream:
            response = await client.post("/v1/chat/completions", json=body)
            response.raise_for_status()
            tokens = check_reply(response.json(), budget)
            return Outcome(True, time.perf_counter() - start, completion_tokens=tokens)
        body.update(stream=True, stream_options={"include_usage": True})
        ttft, content, reasoning, final, usage = None, "", "", None, None
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise ValueError(chunk["error"]["message"])
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk["choices"]:
                    delta = choice["delta"]
                    if ttft is None and (delta.get("content") or delta.get("reasoning_content")):
                        ttft = time.perf_counter() - start
                    content += delta.get("content") or ""
                    reasoning += delta.get("reasoning_content") or ""
                    final = choice["finish_reason"] or final
        merged = {"usage": usage, "choices": [{"finish_reason": final, "message": {"content": content}}]}
        tokens = check_reply(merged, budget)
        return Outcome(True, time.perf_counter() - start, ttft, tokens)
    except Exception as err:  # every failure is counted and shown, none stops the run
        return Outcome(False, time.perf_counter() - start, error=f"request {index}: {type(err).__name__}: {err}"[:300])


async def run_load(url: str, requests: int, concurrency: int, args, api_key: str | None = None) -> Report:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=args.timeout, limits=limits) as client:
        counter = iter(range(requests))
        outcomes: list[Outcome] = []

        async def client_loop():
            for index in counter:  # a shared iterator: each client takes the next request
                outcomes.append(await one_request(client, index, args))

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        return Report(requests, concurrency, time.perf_counter() - start, outcomes)


@contextmanager
def z1_serve(model: str, timeout: float = 120.0):
    """`z1 serve --port 0` in a subprocess; yields its base URL and always stops it."""
    with tempfile.TemporaryFile(mode="w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "z1mlx", "serve", "--model", model, "--port", "0", "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                log.seek(0)
                found = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", log.read())
                if found:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"z1 serve did not start:\n{log.read()}")
                time.sleep(0.1)
            yield found.group(1)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def print_report(summary: dict, out=sys.stdout) -> None:
    lat, ttft = summary["latency_s"], summary["ttft_s"]
    print(
        f"requests {summary['requests']} · concurrency {summary['concurrency']} · errors {summary['errors']} · "
        f"wall {summary['wall_s']:.2f} s",
        file=out,
    )
    print(
        f"throughput {summary['requests_per_s']:.2f} req/s · {summary['completion_tokens_per_s']:.1f} "
        f"completion tokens/s",
        file=out,
    )
    if lat:
        print(
            f"latency   p50 {lat['p50']:.3f} s · p90 {lat['p90']:.3f} s · p99 {lat['p99']:.3f} s · "
            f"max {lat['max']:.3f} s",
            file=out,
        )
    if ttft:
        print(
            f"ttft      p50 {ttft['p50']:.3f} s · p90 {ttft['p90']:.3f} s · p99 {ttft['p99']:.3f} s "
            f"(streamed requests)",
            file=out,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running z1 serve (default: start one with --model)")
    parser.add_argument("--model", default="demo", help="model for the server started here (default demo)")
    parser.add_argument("--api-key", default=os.environ.get("Z1MLX_SERVE_API_KEY"), help="bearer token for --url")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--budget", type=int, default=16, help="thinking budget per request (every third: 0)")
    parser.add_argument("--answer-tokens", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=300.0, help="per request, seconds")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)

    def run(url):
        return asyncio.run(run_load(url, args.requests, args.concurrency, args, args.api_key))

    if args.url:
        report = run(args.url.rstrip("/").removesuffix("/v1"))
    else:
        with z1_serve(args.model) as url:
            report = run(url)
    summary = report.summary()
    if args.json:
        print(json.dumps(summary))
    else:
        print_report(summary)
    for error in report.errors[:10]:
        print(error, file=sys.stderr)
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
