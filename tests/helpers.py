"""Test helpers (not fixtures): the real `z1` command in a subprocess as a user runs it,
servers on 127.0.0.1, mlx-lm's own greedy tokens to compare with, fake clocks and gates."""

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from z1mlx.events import TextDelta


def z1(*args, env=None, timeout=300, input=None):
    """Run `python -m z1mlx ARGS` with the test's environment; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "z1mlx", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        input=input,
    )


def one_line_error(proc) -> str:
    """The single stderr line of a failed command (asserting there is exactly one, no traceback)."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    # Progress lines ("[INFO] Loading", "[z1] converting ...") may come before the error.
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("[INFO]", "[z1]"))]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    return lines[0]


def wait_healthy(url: str, proc, deadline: float, why=lambda: "the server did not start") -> None:
    """Poll GET /health until it answers 200, while the server process lives."""
    import time

    import httpx

    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, why()
        time.sleep(0.1)


def stop(proc) -> None:
    """Terminate a server, and kill it if it does not go within 20 s."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def serve(model, *extra, env=None, timeout=90):
    """`z1 serve --port 0` on 127.0.0.1 in a subprocess; yields (base URL, stderr path); always stops it."""
    with tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False) as log:
        full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "z1mlx",
                "serve",
                "--model",
                str(model),
                "--port",
                "0",
                "--log-level",
                "warning",
                *map(str, extra),
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=full_env,
        )
    log_path = Path(log.name)
    try:
        deadline = time.monotonic() + timeout
        while not (found := re.search(r"at (http://127\.0\.0\.1:\d+)/v1", log_path.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        url = found.group(1)
        wait_healthy(url, proc, deadline, log_path.read_text)
        yield url, log_path
    finally:
        stop(proc)
        log_path.unlink(missing_ok=True)


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


class StepClock:
    """A fake clock: every reading is `step` seconds after the previous one."""

    def __init__(self, step: float = 0.05, start: float = 100.0):
        self.now = start
        self.step = step
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.now += self.step
            return self.now


class GatedEngine:
    """The real engine, paused after `pause_after` thinking tokens until `release()`
    (or the reply is cancelled): a reply frozen mid-reasoning, for snapshots."""

    def __init__(self, engine, pause_after: int):
        self._engine = engine
        self.pause_after = pause_after
        self.reached = threading.Event()
        self._release = threading.Event()

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def release(self) -> None:
        self._release.set()

    def generate(self, prompt, window, sampling, control=None, conversation=None):
        for event in self._engine.generate(prompt, window, sampling, control=control, conversation=conversation):
            yield event
            if isinstance(event, TextDelta) and event.phase == "thinking" and event.tokens == self.pause_after:
                self.reached.set()
                while not self._release.wait(0.02):
                    if control is not None and control.cancelled:
                        break


async def wait_until(pilot, predicate, timeout: float = 20.0, what: str = "condition"):
    """Let the app run until `predicate()` holds (no bare sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextmanager
def scripted_completions(reply: str):
    """An OpenAI-compatible completions server on 127.0.0.1 whose model always writes
    `reply` and ends its turn: for running `z1 solve --backend URL` on chosen replies."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, status, body: bytes, kind: str):
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            models = {"object": "list", "data": [{"id": "scripted", "object": "model", "owned_by": "tests"}]}
            self._send(200, json.dumps(models).encode(), "application/json")

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            events = [
                {"choices": [{"text": reply, "finish_reason": None}]},
                {"choices": [{"text": "", "finish_reason": "stop"}]},
            ]
            body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            self._send(200, body.encode(), "text/event-stream")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
