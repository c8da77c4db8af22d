"""Run untrusted Python (model-written code) in an OS-level sandbox, under limits.

Modes:
- `bwrap` (Linux, bubblewrap): a new mount, PID, network, IPC and UTS namespace. The
  filesystem is a read-only view of /usr and the interpreter's own prefix, a fresh /tmp
  and a fresh writable scratch directory: no home, no project tree, no host /tmp or /run,
  so no filesystem sockets either. The code runs as an unprivileged uid (65534) even when
  the caller is root, cannot see or signal any process outside, has no network of any kind,
  and dies with its parent; everything it started dies with it.
- `seatbelt` (macOS, sandbox-exec): a profile with the same intent (no network, no writes
  outside the scratch directory, no reads of the home directory).
- `rlimits`: only when asked for by name. Resource limits, a scrubbed environment, a
  killed process group. It does NOT stop reads or writes of the caller's files, signals to
  the caller's processes, or local sockets (`RLIMITS_WARNING`).

Every mode applies the same limits: CPU time (the main one), a generous wall clock,
address space, file size, open files, and a process cap (bwrap and seatbelt).

The interpreter is the base Python of the one running z1, with `-I -S -B`: the standard
library only, no site-packages of z1's environment.
"""

import functools
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from ..errors import Z1Error

try:
    import resource
except ImportError:  # not POSIX; run_sandboxed refuses to run there
    resource = None  # type: ignore[assignment]

IS_MACOS = sys.platform == "darwin"
IS_LINUX = sys.platform.startswith("linux")
SANDBOX_EXEC = "/usr/bin/sandbox-exec"
SCRIPT_NAME = "main.py"
INSIDE = "/sandbox"  # the scratch directory's path inside a bwrap sandbox
NOBODY = 65534
# Inside bwrap, before the script: cap the processes and, when the sandbox left it to us
# (caller root, so no user namespace), drop to NOBODY, whose processes the kernel counts.
BOOTSTRAP = (
    "import os, resource, sys\n"
    "cap, drop = int(sys.argv[1]), sys.argv[2] == '1'\n"
    "if drop:\n"
    "    os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
    "if cap:\n"
    "    resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))\n"
    "sys.argv = sys.argv[3:]\n"
    "with open(sys.argv[0], encoding='utf-8') as f:\n"
    "    source = f.read()\n"
    "del cap, drop, f\n"
    "exec(compile(source, sys.argv[0], 'exec'), {'__name__': '__main__', '__file__': sys.argv[0]})\n"
)
FILE_SIZE_LIMIT = 16 * 1024 * 1024
OPEN_FILES_LIMIT = 64
KILL_GRACE_SECONDS = 1.0  # how long to drain pipes after killing the group
READ_CHUNK = 65536
MODES = ("auto", "bwrap", "seatbelt", "rlimits")
# Signals a process dies of when it runs out of address space or stack.
MEMORY_SIGNALS = frozenset({signal.SIGSEGV, signal.SIGBUS})
RLIMITS_WARNING = (
    "--sandbox rlimits: resource limits only; the code can read and write your files, signal your processes "
    "and use local sockets"
)


class SandboxUnavailable(Z1Error):
    """The isolation tool is missing or does not work here."""


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use. Frozen so a default instance is safe to share.

    CPU time is the limit that decides; the wall clock is generous so that a loaded
    machine does not fail a correct solution, and only stops code that sleeps or blocks.
    """

    wall_seconds: float = 60.0
    cpu_seconds: int = 10
    memory_mb: int = 1024
    output_bytes: int = 64_000  # per stream; longer output keeps its head and tail
    processes: int = 64


@dataclass
class SandboxResult:
    """How a sandboxed run ended.

    status: 'ok' | 'failed' (non-zero exit) | 'timeout' (wall clock or CPU limit)
    | 'memory' (MemoryError or a memory-limit signal) | 'killed' (any other signal).
    reason: a short human phrase for everything but 'ok', e.g. "time limit (10 s)".
    isolation: what was applied, e.g. ["bwrap", "rlimits", "rlimit-as"].
    report: what the code wrote to its report channel (`Channel`), if it had one.
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_seconds: float
    isolation: list[str] = field(default_factory=list)
    reason: str = ""
    report: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Channel:
    """Descriptors the sandboxed process gets besides stdin/stdout/stderr: `report_fd` to
    write its report on, `nonce_fd` to read one secret from (the parent writes it and
    closes its end at once). Printing cannot reach either."""

    report_fd: int
    nonce_fd: int
    nonce: str


def run_sandboxed(
    script: str | None = None,
    *,
    limits: Limits = Limits(),
    mode: str = "auto",
    build=None,
    stdin: str | None = None,
) -> SandboxResult:
    """Run a Python file in a fresh scratch directory, isolated by `mode`, under `limits`.

    `script` is the file's text; or `build(channel)` returns it, for a
    script that reports on a `Channel` (the harness). `stdin` is the text the process reads
    on its standard input (else it reads nothing). The directory is removed afterwards
    and every process of the run killed, also when the caller is interrupted or the wall
    clock runs out.
    """
    if resource is None or os.name != "posix":
        raise OSError("the sandbox needs a POSIX system (Linux or macOS)")
    mode = resolve_mode(mode)
    plan, isolation = rlimit_plan(limits)
    with tempfile.TemporaryDirectory(prefix="z1-sandbox-", ignore_cleanup_errors=True) as outer:
        workdir = os.path.join(outer, "work")
        os.mkdir(workdir)
        drop = mode == "bwrap" and os.geteuid() == 0  # BOOTSTRAP then drops to NOBODY
        if drop:
            os.chown(workdir, NOBODY, NOBODY)
        report_r, report_w = os.pipe()
        nonce_r, nonce_w = os.pipe()
        channel = Channel(report_w, nonce_r, secrets.token_hex(16))
        text = build(channel) if build is not None else script
        path = os.path.join(workdir, SCRIPT_NAME)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text or "")
        if drop:
            os.chown(path, NOBODY, NOBODY)
        python = base_python()
        if mode == "bwrap":
            command, env = bwrap_command(workdir, python, drop, limits.processes), None
            isolation = ["bwrap", *isolation]
        elif mode == "seatbelt":
            command = [SANDBOX_EXEC, "-p", seatbelt_profile(workdir), python, "-I", "-S", "-B", path]
            env = minimal_env(workdir, workdir)
            isolation = ["seatbelt", *isolation]
        else:
            command, env = [python, "-I", "-S", "-B", path], minimal_env(workdir, workdir)
        cpu_before = _children_cpu_seconds()
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                command,
                cwd=workdir,
                env=env if env is not None else {},
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                close_fds=True,
                pass_fds=(report_w, nonce_r),
                start_new_session=True,
                preexec_fn=_rlimit_setter(plan),
            )
        finally:
            os.close(report_w)
            os.close(nonce_r)
        try:
            os.write(nonce_w, channel.nonce.encode())
        except OSError:
            pass  # the process is already gone; the verdict says so
        finally:
            os.close(nonce_w)
        if stdin is not None:
            threading.Thread(target=_feed, args=(proc.stdin, stdin), daemon=True).start()
        try:
            stdout, stderr, report, timed_out = _collect(proc, report_r, limits)
        finally:
            # Also reaps stragglers that closed their pipes, and the child itself on Ctrl+C.
            _kill_group(proc)
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            os.close(report_r)
        wall = time.monotonic() - start
        cpu_used = _children_cpu_seconds() - cpu_before
        if drop:
            _chown_back(outer)  # so the caller can remove what NOBODY wrote
    returncode = proc.returncode
    if mode == "bwrap" and returncode > 128:
        returncode = 128 - returncode  # bwrap exits 128 + N when its child dies of signal N
    status, reason = classify(returncode, stderr, timed_out, cpu_used, limits)
    return SandboxResult(status, returncode, stdout, stderr, round(wall, 3), isolation, reason, report)


def resolve_mode(mode: str) -> str:
    """The mode to use: `auto` is bwrap on Linux, seatbelt on macOS. One line when the
    tool is missing or does not work, saying how to get it."""
    if mode not in MODES:
        raise Z1Error(f"--sandbox {mode!r}: choose from {', '.join(MODES)}")
    if mode == "auto":
        mode = "seatbelt" if IS_MACOS else "bwrap"
    if mode == "bwrap":
        if not IS_LINUX:
            raise SandboxUnavailable("--sandbox bwrap works on Linux only")
        problem = bwrap_problem()
        if problem:
            raise SandboxUnavailable(problem)
    if mode == "seatbelt" and not (IS_MACOS and os.path.exists(SANDBOX_EXEC)):
        raise SandboxUnavailable(f"--sandbox seatbelt needs macOS's {SANDBOX_EXEC}")
    return mode


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot isolate here (missing, or namespaces refused), or None."""
    exe = shutil.which("bwrap")
    if exe is None:
        return (
            "--check runs code in a bubblewrap sandbox, and bwrap is not installed: install it "
            "(Debian/Ubuntu: sudo apt-get install bubblewrap; Fedora: sudo dnf install bubblewrap), "
            "or pass --sandbox rlimits for resource limits only (no file, process or network isolation)"
        )
    probe = [exe, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    if os.geteuid() != 0:
        probe[1:1] = ["--unshare-user"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as err:
        return f"bwrap does not run here ({type(err).__name__}); pass --sandbox rlimits for resource limits only"
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or ["unknown error"])[-1]
        return (
            f"bwrap cannot create its namespaces here ({why}); allow unprivileged user namespaces "
            "(sysctl kernel.unprivileged_userns_clone=1), or pass --sandbox rlimits for resource limits only"
        )
    return None


def base_python() -> str:
    """The base interpreter behind the one running z1 (a virtual environment's `python` is a link)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return os.path.realpath(base)


def minimal_env(home: str, tmp: str) -> dict[str, str]:
    """The whole environment a sandboxed process sees: nothing of the caller's."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmp,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": "0",
    }


def bwrap_command(workdir: str, python: str, as_root: bool, processes: int) -> list[str]:
    """bubblewrap's command line for `python -I -B main.py` in `workdir` (through `BOOTSTRAP`)."""
    command = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net", "--unshare-ipc"]
    command += ["--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    if as_root:
        # No user namespace: the harness drops to NOBODY before the candidate loads, so
        # the kernel counts its processes against RLIMIT_NPROC (root's are exempt).
        command += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        command += ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    command += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    prefix = os.path.realpath(sys.base_prefix)
    if not prefix.startswith("/usr/"):
        # Its parents exist inside only as mount points; make them traversable by NOBODY.
        parent = os.path.dirname(prefix)
        parents: list[str] = []
        while parent not in ("/", ""):
            parents.insert(0, parent)
            parent = os.path.dirname(parent)
        for folder in parents:
            command += ["--perms", "0755", "--dir", folder]
        command += ["--ro-bind", prefix, prefix]
    command += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp"]
    command += ["--bind", workdir, INSIDE, "--chdir", INSIDE, "--clearenv"]
    for name, value in minimal_env(INSIDE, "/tmp").items():
        command += ["--setenv", name, value]
    script = f"{INSIDE}/{SCRIPT_NAME}"
    run = [python, "-I", "-S", "-B", "-c", BOOTSTRAP, str(processes), "1" if as_root else "0", script]
    return [shutil.which("bwrap") or "bwrap", *command[1:], *run]


def seatbelt_profile(workdir: str) -> str:
    """A sandbox-exec profile: no network, writes only in `workdir` and /dev/null, no reads
    of the home directory, no signals to other processes."""
    home = os.path.realpath(os.path.expanduser("~"))
    scratch = os.path.realpath(workdir)
    return (
        "(version 1)(allow default)"
        "(deny network*)"
        "(deny signal (target others))"
        f'(deny file-read* (subpath "{home}"))'
        "(deny file-write*)"
        f'(allow file-write* (subpath "{scratch}") (literal "/dev/null"))'
        f'(allow file-read* (subpath "{scratch}"))'
        f'(allow file-read* (subpath "{os.path.realpath(sys.base_prefix)}"))'
    )


def rlimit_plan(limits: Limits) -> tuple[list[tuple[int, int, int]], list[str]]:
    """(resource, soft, hard) triples to apply in the child, and names for the result.

    Computed in the parent so the child, between fork and exec, only calls setrlimit.
    The process cap is set inside the sandbox (`BOOTSTRAP`), where it counts only its processes.
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


class _Report:
    """The report channel: a bounded buffer (a report larger than this is not one of ours)."""

    LIMIT = 1 << 20

    def __init__(self) -> None:
        self.data = bytearray()
        self.overflow = False

    def add(self, data: bytes) -> None:
        if len(self.data) + len(data) > self.LIMIT:
            self.overflow = True
        else:
            self.data += data


def _collect(proc: subprocess.Popen, report_fd: int, limits: Limits) -> tuple[str, str, str | None, bool]:
    """Read the pipes until they close and the process ends, or the wall clock runs out.

    Returns (stdout, stderr, report, timed_out). A timeout kills the process group.
    """
    out, err, report = _Capture(limits.output_bytes), _Capture(limits.output_bytes), _Report()
    deadline = time.monotonic() + limits.wall_seconds
    timed_out = False
    with selectors.DefaultSelector() as selector:
        assert proc.stdout is not None and proc.stderr is not None
        selector.register(proc.stdout, selectors.EVENT_READ, out)
        selector.register(proc.stderr, selectors.EVENT_READ, err)
        selector.register(report_fd, selectors.EVENT_READ, report)
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
    text = None if report.overflow or not report.data else report.data.decode("utf-8", errors="replace")
    return out.text(), err.text(), text, timed_out


def _feed(pipe, text: str) -> None:
    """Write the process's standard input in a thread of its own (the output is read meanwhile)."""
    try:
        pipe.write(text.encode("utf-8"))
    except OSError:
        pass  # it exited, or closed its input, without reading all of it
    finally:
        try:
            pipe.close()
        except OSError:
            pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone


def _chown_back(root: str) -> None:
    uid, gid = os.getuid(), os.getgid()
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            try:
                os.lchown(name, uid, gid)
            except OSError:
                pass


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
