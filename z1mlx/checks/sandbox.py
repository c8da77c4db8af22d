"""Run untrusted Python (model-written code) in a throwaway directory under limits.

Containment uses what an unprivileged user has: resource limits, a new session whose
process group is killed as a whole, a scrubbed environment, no inherited descriptors,
and no network where the platform allows it (unshare on Linux, sandbox-exec on macOS).
It keeps a candidate from hanging, eating memory, reading the caller's environment or
reaching the network; it is not a boundary against a determined attacker.
"""

import functools
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

try:
    import resource
except ImportError:  # not POSIX; run_sandboxed refuses to run there
    resource = None  # type: ignore[assignment]

IS_MACOS = sys.platform == "darwin"
IS_LINUX = sys.platform.startswith("linux")
SANDBOX_EXEC = "/usr/bin/sandbox-exec"
NO_NETWORK_PROFILE = "(version 1)(allow default)(deny network*)"
SCRIPT_NAME = "main.py"
FILE_SIZE_LIMIT = 16 * 1024 * 1024
OPEN_FILES_LIMIT = 64
KILL_GRACE_SECONDS = 1.0  # how long to drain pipes after killing the group
READ_CHUNK = 65536
# Signals a process dies of when it runs out of address space or stack.
MEMORY_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS})


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use. Frozen so a default instance is safe to share."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 1024
    output_bytes: int = 64_000  # per stream; longer output keeps its head and tail


@dataclass
class SandboxResult:
    """How a sandboxed run ended.

    status: 'ok' | 'failed' (non-zero exit) | 'timeout' (wall clock or CPU limit)
    | 'memory' (MemoryError or a memory-limit signal) | 'killed' (any other signal).
    reason: a short human phrase for everything but 'ok', e.g. "time limit (10 s)".
    isolation: what was applied, e.g. ["rlimits", "rlimit-as", "unshare-net"].
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_seconds: float
    isolation: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def run_sandboxed(script: str, *, limits: Limits = Limits()) -> SandboxResult:
    """Run `script` as a Python file in a fresh temporary directory under `limits`.

    The directory is removed afterwards and the whole process group killed, also when
    the caller is interrupted (KeyboardInterrupt) or the wall clock runs out.
    """
    if resource is None or os.name != "posix":
        raise OSError("the sandbox needs a POSIX system (Linux or macOS)")
    wrapper, isolation = isolation_wrapper()
    plan, limit_names = rlimit_plan(limits)
    isolation = limit_names + isolation
    with tempfile.TemporaryDirectory(prefix="z1-sandbox-", ignore_cleanup_errors=True) as workdir:
        path = os.path.join(workdir, SCRIPT_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(script)
        # -I ignores PYTHON* variables, so -B is what actually stops .pyc writes.
        command = [*wrapper, sys.executable, "-I", "-B", path]
        cpu_before = _children_cpu_seconds()
        start = time.monotonic()
        proc = subprocess.Popen(
            command,
            cwd=workdir,
            env=minimal_env(workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,
            preexec_fn=_rlimit_setter(plan),
        )
        try:
            stdout, stderr, timed_out = _collect(proc, limits)
        finally:
            # Also reaps stragglers that closed their pipes, and the child itself on Ctrl+C.
            _kill_group(proc)
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        wall = time.monotonic() - start
        cpu_used = _children_cpu_seconds() - cpu_before
    status, reason = classify(proc.returncode, stderr, timed_out, cpu_used, limits)
    return SandboxResult(status, proc.returncode, stdout, stderr, round(wall, 3), isolation, reason)


def minimal_env(workdir: str) -> dict[str, str]:
    """The whole environment a sandboxed process sees: nothing of the caller's."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": workdir,
        "TMPDIR": workdir,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


def isolation_wrapper() -> tuple[list[str], list[str]]:
    """Command prefix that cuts off the network, and its name for the result."""
    if IS_MACOS and os.path.exists(SANDBOX_EXEC):
        return [SANDBOX_EXEC, "-p", NO_NETWORK_PROFILE], ["sandbox-exec"]
    if IS_LINUX and unshare_net_available():
        return [shutil.which("unshare") or "unshare", "--net", "--map-root-user"], ["unshare-net"]
    return [], []


@functools.lru_cache(maxsize=1)
def unshare_net_available() -> bool:
    """Whether an unprivileged network namespace works here (tested once per process)."""
    exe = shutil.which("unshare")
    if exe is None:
        return False
    try:
        probe = subprocess.run(
            [exe, "--net", "--map-root-user", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return probe.returncode == 0


def rlimit_plan(limits: Limits) -> tuple[list[tuple[int, int, int]], list[str]]:
    """(resource, soft, hard) triples to apply in the child, and names for the result.

    Computed in the parent so the child, between fork and exec, only calls setrlimit.
    """
    cpu = max(1, math.ceil(limits.cpu_seconds))
    memory = limits.memory_mb * 1024 * 1024
    # Soft CPU limit sends SIGXCPU; the hard one a second later is SIGKILL.
    wanted = [
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, FILE_SIZE_LIMIT, FILE_SIZE_LIMIT),
        (resource.RLIMIT_NOFILE, OPEN_FILES_LIMIT, OPEN_FILES_LIMIT),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    names = ["rlimits"]
    if IS_MACOS:
        # RLIMIT_AS breaks or is ignored on macOS; DATA and RSS are the best effort there.
        for name in ("RLIMIT_DATA", "RLIMIT_RSS"):
            if hasattr(resource, name):
                wanted.append((getattr(resource, name), memory, memory))
    else:
        wanted.append((resource.RLIMIT_AS, memory, memory))
        names.append("rlimit-as")
    return [_within_hard_limit(*w) for w in wanted], names


def _within_hard_limit(res: int, soft: int, hard: int) -> tuple[int, int, int]:
    """Never ask for more than the current hard limit: an unprivileged raise fails."""
    _, current_hard = resource.getrlimit(res)
    if current_hard != resource.RLIM_INFINITY:
        hard = min(hard, current_hard)
        soft = min(soft, hard)
    return res, soft, hard


def _rlimit_setter(plan: list[tuple[int, int, int]]):
    def apply() -> None:
        for res, soft, hard in plan:
            try:
                resource.setrlimit(res, (soft, hard))
            except (OSError, ValueError):
                pass  # best effort: one refused limit must not stop the others

    return apply


def classify(returncode: int, stderr: str, timed_out: bool, cpu_used: float, limits: Limits) -> tuple[str, str]:
    """(status, reason) for a finished run."""
    if timed_out:
        return "timeout", f"time limit ({_seconds(limits.wall_seconds)} s)"
    sig = -returncode if returncode < 0 else None
    cpu_exhausted = sig == signal.SIGKILL and cpu_used >= limits.cpu_seconds - 0.05
    if sig == signal.SIGXCPU or cpu_exhausted:
        return "timeout", f"time limit ({_seconds(limits.cpu_seconds)} s of CPU)"
    if returncode != 0 and ("MemoryError" in stderr or sig in MEMORY_SIGNALS):
        return "memory", f"memory limit ({limits.memory_mb} MB)"
    if sig is not None:
        return "killed", f"killed by {_signal_name(sig)}"
    if returncode != 0:
        return "failed", f"exit status {returncode}"
    return "ok", ""


def _seconds(value: float) -> str:
    return f"{value:g}"


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


class _Capture:
    """Collects a stream, keeping its first and last bytes within a budget."""

    def __init__(self, limit: int):
        self.head_limit = limit - limit // 2
        self.tail_limit = limit // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.head_limit - len(self.head)
        self.head += data[:room]
        self.tail += data[room:] if room > 0 else data
        if len(self.tail) > self.tail_limit:
            del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        kept = len(self.head) + len(self.tail)
        middle = b"" if kept >= self.total else f"\n[... {self.total - kept} bytes omitted ...]\n".encode()
        return (bytes(self.head) + middle + bytes(self.tail)).decode("utf-8", errors="replace")


def _collect(proc: subprocess.Popen, limits: Limits) -> tuple[str, str, bool]:
    """Read both pipes until they close and the process ends, or the wall clock runs out.

    Returns (stdout, stderr, timed_out). A timeout kills the process group.
    """
    out, err = _Capture(limits.output_bytes), _Capture(limits.output_bytes)
    deadline = time.monotonic() + limits.wall_seconds
    timed_out = False
    with selectors.DefaultSelector() as selector:
        assert proc.stdout is not None and proc.stderr is not None
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if timed_out:
                    break  # something outside the group still holds a pipe
                timed_out = True
                _kill_group(proc)
                deadline = time.monotonic() + KILL_GRACE_SECONDS
                continue
            for key, _ in selector.select(remaining):
                data = os.read(key.fd, READ_CHUNK)
                if data:
                    key.data.add(data)
                else:
                    selector.unregister(key.fileobj)
    if not timed_out:
        # The pipes closed, but the process may live on (it closed stdout and stderr).
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            timed_out = True
    return out.text(), err.text(), timed_out


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
