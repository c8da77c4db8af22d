"""Running the real `z1` command in a subprocess, as a user would."""

import os
import subprocess
import sys


def z1(*args, env=None, timeout=300, input=None):
    """Run `python -m z1mlx ARGS` with the test's environment; returns CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "z1mlx", *map(str, args)],
        capture_output=True, text=True, env=full_env, timeout=timeout, input=input,
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
