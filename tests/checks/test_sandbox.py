"""`z1 solve --check`: untrusted code runs in a sandbox against the problem's own tests."""

import json
import os
import signal
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from z1mlx.checks.check import run_check
from z1mlx.checks.sandbox import Limits, run_sandboxed

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the sandbox is POSIX-only")

PROBLEM = textwrap.dedent('''\
    """Add two numbers.

    >>> add(1, 2)
    3
    """


    def add(a, b):
        """Return a + b.

        >>> add(2, 3)
        5
        """


    assert add(0, 0) == 0

    if __name__ == "__main__":
        assert add(2, 2) == 4
''')

GOOD = "def add(a, b):\n    return a + b\n"
BAD = "def add(a, b):\n    return a - b\n"


def test_a_correct_solution_passes_the_asserts_and_agrees_with_the_examples():
    result = run_check(GOOD, PROBLEM)
    assert result.passed and result.status == "passed"
    assert result.tests_run == 2 and result.advisory_run == 2  # two asserts; two docstring examples, advisory
    assert result.summary() == "check passed: 2/2 tests; docstring examples (advisory): 2/2 agree"
    assert result.sandbox.isolation[0] in ("bwrap", "seatbelt")


def test_a_wrong_solution_fails_and_names_the_failing_assert():
    result = run_check(BAD, PROBLEM)
    assert not result.passed and result.status == "failed"
    assert result.tests_run == 2 and result.tests_failed == 1  # only add(0, 0) survives a - b
    assert result.failures == ["assert add(2, 2) == 4"]
    assert result.summary() == (
        "check failed: 1/2 tests failed (assert add(2, 2) == 4); docstring examples (advisory): 0/2 agree"
    )
    assert any("add(2, 3)" in f and "-1" in f for f in result.advisory_failures)


def test_without_asserts_the_docstring_examples_are_the_tests():
    problem = (
        'def add(a, b):\n    """\n    >>> add(2, 3)\n    5\n    >>> add(1, 1) == 2\n'
        '    >>> add("a", "b")\n    "ab"\n    """\n'
    )
    result = run_check(GOOD, problem)
    assert result.status == "passed" and result.tests_run == 3 and result.advisory_run == 0
    failed = run_check(BAD, problem)
    assert failed.status == "failed" and failed.tests_failed == 3
    assert any("add(1, 1) == 2" in f and "False" in f for f in failed.failures)


def test_the_candidates_own_main_block_does_not_run():
    code = GOOD + 'if __name__ == "__main__":\n    raise SystemExit("ran as main")\n'
    assert run_check(code, PROBLEM).passed


def test_an_endless_loop_is_stopped_by_the_time_limit():
    result = run_check(
        "def add(a, b):\n    while True:\n        pass\n", PROBLEM, Limits(wall_seconds=3, cpu_seconds=2)
    )
    assert not result.passed and result.status == "timeout"
    assert result.summary().startswith("check stopped: time limit")
    assert result.sandbox.wall_seconds < 5


def test_a_sleeping_process_is_stopped_by_the_wall_clock():
    result = run_sandboxed("import time\ntime.sleep(60)\n", limits=Limits(wall_seconds=1))
    assert result.status == "timeout"
    assert result.reason == "time limit (1 s)" and result.wall_seconds < 3


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS does not enforce an address-space limit")
def test_a_memory_hog_is_stopped_by_the_memory_limit():
    result = run_check("x = bytearray(4 * 1024**3)\n", PROBLEM, Limits(memory_mb=256))
    assert not result.passed and result.status == "memory"
    assert result.summary() == "check stopped: memory limit (256 MB)"


def test_the_working_directory_is_a_fresh_one_removed_afterwards(tmp_path):
    import glob
    import tempfile

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "z1-sandbox-*")))
    result = run_sandboxed("import os\nprint(os.getcwd(), os.listdir('.'))\nopen('scratch.txt', 'w').write('x')\n")
    assert result.status == "ok"
    workdir, listing = result.stdout.split(" ", 1)
    assert os.path.isabs(workdir) and workdir != os.getcwd() and listing.strip() == "['main.py']"
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "z1-sandbox-*"))) == before


def test_the_directory_is_removed_and_the_process_killed_on_ctrl_c(tmp_path):
    report = tmp_path / "report.json"
    script = (
        "import json, os, time\n"
        f"open({str(report)!r}, 'w').write(json.dumps([os.getcwd(), os.getpid()]))\n"
        "time.sleep(60)\n"
    )

    # A real SIGINT at the main thread, as Ctrl+C delivers it (not SIGALRM: pytest-timeout's),
    # once the script is running (its report is written): on a loaded machine that takes a while.
    stop = threading.Event()

    def press_ctrl_c():
        deadline = time.monotonic() + 25
        while not stop.is_set() and not (report.exists() and report.read_text()) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not stop.is_set():
            signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    # Ctrl+C raises KeyboardInterrupt, even where the tests run in the background (which ignores SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    ctrl_c = threading.Thread(target=press_ctrl_c, daemon=True)
    ctrl_c.start()
    try:
        with pytest.raises(KeyboardInterrupt):  # rlimits: the script reports to a host path
            run_sandboxed(script, limits=Limits(wall_seconds=30), mode="rlimits")
    finally:
        stop.set()
        signal.signal(signal.SIGINT, previous)
    workdir, pid = json.loads(report.read_text())
    assert not os.path.exists(workdir)
    assert process_ends(pid)


def process_ends(pid: int, within: float = 10.0) -> bool:
    """Whether `pid` is gone or dead (a zombie: killed, waiting for init to reap it, which a
    loaded machine can leave for a while), checked until `within` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except (OSError, IndexError):
            pass  # no /proc (macOS), or it ended in between: poll again
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def test_the_environment_is_minimal(monkeypatch):
    monkeypatch.setenv("Z1_SANDBOX_SECRET", "do-not-leak")
    result = run_sandboxed("import json, os\nprint(json.dumps(dict(os.environ)))\nprint(os.getcwd())\n")
    env_line, cwd = result.stdout.splitlines()
    env = json.loads(env_line)
    assert "Z1_SANDBOX_SECRET" not in env
    assert env["PATH"] == "/usr/bin:/bin" and env["HOME"] == cwd and env["TMPDIR"] in (cwd, "/tmp")
    assert set(env) - {"PWD"} == {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED"}


def test_inherited_file_descriptors_are_closed():
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        script = (
            f"import os\ntry:\n    os.fstat({write_end})\n    print('open')\nexcept OSError:\n    print('closed')\n"
        )
        result = run_sandboxed(script)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result.stdout.strip() == "closed"


def test_stdin_is_empty():
    result = run_sandboxed("import sys\nprint(repr(sys.stdin.read()))\n")
    assert result.stdout.strip() == "''"


def test_the_network_is_cut_off_where_isolation_is_available():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    script = (
        "import socket\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "    print('connected')\n"
        "except OSError:\n"
        "    print('blocked')\n"
    )
    try:
        result = run_sandboxed(script)
    finally:
        server.close()
    assert result.isolation[0] in ("bwrap", "seatbelt")
    assert result.stdout.strip() == "blocked"


def test_long_output_is_truncated_keeping_head_and_tail():
    result = run_sandboxed("for i in range(100000):\n    print(i)\n", limits=Limits(output_bytes=1000))
    assert result.status == "ok"
    assert len(result.stdout) < 1200 and "bytes omitted" in result.stdout
    assert result.stdout.startswith("0\n1\n") and result.stdout.endswith("99999\n")


def test_a_syntax_error_in_the_candidate_is_reported():
    result = run_check("def add(a, b)\n    return a + b\n", PROBLEM)
    assert not result.passed and result.status == "error"
    assert "SyntaxError" in result.summary() and "SyntaxError" in result.output


def test_without_tests_the_code_just_runs_as_main():
    problem = "Write a program that prints hello."
    code = 'if __name__ == "__main__":\n    print("hello")\n'
    result = run_check(code, problem)
    assert not result.passed and result.status == "no_tests" and "hello" in result.output
    assert result.summary() == "no tests found in the problem: the code ran without error, nothing was checked"
    crashed = run_check("raise ValueError('nope')\n", problem)
    assert not crashed.passed and crashed.status == "error"
    assert crashed.summary() == "check error: the code failed: ValueError: nope"
