"""The parent side of the worker protocol: start `z1mlx.finetune.worker`, read its JSON
lines into progress, relay Ctrl+C between two steps, and explain how it ended."""

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .progress import Progress

LOG = "train.log"


@dataclass
class Outcome:
    status: str  # done, interrupted, error
    iteration: int
    event: dict


def run_worker(job_path: Path, out: Path, progress: Progress) -> Outcome:
    log = open(out / LOG, "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "z1mlx.finetune.worker", str(job_path)],
        stdout=subprocess.PIPE,
        stderr=log,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    interrupts = 0

    def on_sigint(signum, frame):
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            progress.note("stopping after the current step and saving the adapter (Ctrl+C again to abort)")
            # A terminal's Ctrl+C reaches the worker too; `kill` covers a SIGINT sent to us alone.
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        elif proc.poll() is None:
            proc.kill()

    previous = signal.signal(signal.SIGINT, on_sigint)
    final, iteration = None, progress.start
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = event.get("event")
            if kind == "step":
                iteration = event["iteration"]
                progress.step(iteration)
            elif kind == "report":
                progress.report(event)
            elif kind == "checkpoint":
                progress.note(f"checkpoint {event['iteration']}: {event['path']}")
            elif kind == "start":
                progress.note(
                    f"training {event['trainable_parameters'] / 1e6:.2f}M of {event['total_parameters'] / 1e6:.1f}M "
                    f"parameters on {event['train_rows']} rows (validation: {event['valid_rows']})"
                )
            elif kind in ("done", "interrupted", "error"):
                final = event
        proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    if final is not None:
        status = final["event"]
        return Outcome(status, final.get("iteration", iteration), final)
    if interrupts:
        return Outcome("interrupted", iteration, {"checkpoint": None})
    code = proc.returncode
    if code < 0:
        name = signal.Signals(-code).name
        cause = f"the training process was killed by {name}"
        if -code == signal.SIGKILL:
            cause += " (out of memory? try a smaller --batch-size or --max-seq-length, or --grad-checkpoint)"
    else:
        cause = f"the training process exited with status {code}: {_last_line(out / LOG)}"
    return Outcome("error", iteration, {"message": cause})


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1].strip() if lines else "no output"
