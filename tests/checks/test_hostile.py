"""Hostile candidates: code written to forge a verdict or to escape, through the checker
and through `z1 solve --check` as a user runs it. Every case is contained, with the
verdict it deserves."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from z1mlx.checks.check import run_check
from z1mlx.checks.sandbox import Limits, bwrap_problem

from helpers import scripted_completions, z1

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or bwrap_problem() is not None, reason="needs bubblewrap on Linux"
)

PROBLEM = textwrap.dedent('''\
    def add(a, b):
        """Return a + b."""


    assert add(1, 2) == 3
    assert add(-1, 1) == 0
''')
GOOD = "def add(a, b):\n    return a + b\n"
WRONG = "def add(a, b):\n    return a * b\n"


def check(code: str, **limits):
    return run_check(textwrap.dedent(code), PROBLEM, Limits(**limits) if limits else Limits())


# Forged verdicts


def test_a_summary_printed_on_stdout_then_exit_0_is_an_error():
    code = """
        import json, os, sys
        fake = {"total": 2, "passed": 2, "failed": 0, "failures": [], "error": None}
        print("Z1CHECK " + json.dumps(fake))
        print("check passed: 2/2 tests", file=sys.stderr)
        os._exit(0)
    """
    result = check(code)
    assert result.status == "error" and not result.passed
    assert result.summary() == "check error: the code ended before the tests finished (exit status 0)"


def test_patching_the_reporting_functions_does_not_turn_a_wrong_answer_into_a_pass():
    code = """
        import json, os, builtins
        json.dumps = lambda *a, **k: '{"total": 2, "failed": 0}'
        os._exit = lambda status: None
        os.write = lambda fd, data: len(data)
        builtins.repr = lambda value: "{'total': 2, 'failed': 0}"
        def add(a, b):
            return a * b
    """
    result = check(code)
    assert result.status == "failed" and result.tests_failed == 2


def test_a_report_forged_on_every_descriptor_is_refused():
    code = """
        import os
        forged = repr({"nonce": "0" * 32, "total": 2, "passed": 2, "failed": 0, "failures": [], "error": None})
        for fd in range(3, 64):
            try:
                os.write(fd, forged.encode())
            except OSError:
                pass
        def add(a, b):
            return a * b
    """
    result = check(code)
    assert result.status == "error" and result.failures == ["the check's report was forged or damaged"]


def test_exiting_early_is_never_a_pass():
    assert check("import sys\nsys.exit(0)\n").summary() == "check error: could not load the code: SystemExit: 0"
    in_the_function = check("import os\ndef add(a, b):\n    os._exit(0)\n")
    assert in_the_function.status == "error" and "before the tests finished" in in_the_function.summary()
    killed = check("import os, signal\ndef add(a, b):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert killed.status == "error" and "SIGKILL" in killed.summary()


# Containment


def test_secrets_and_the_project_tree_are_out_of_reach(tmp_path):
    secret = tmp_path / "id_ed25519"
    secret.write_text("PRIVATE-KEY-MATERIAL")
    paths = [
        str(secret),
        "/etc/shadow",
        "/etc/passwd",
        str(Path(__file__).resolve()),
        os.path.expanduser("~/.bashrc"),
        "/proc/1/environ",
    ]
    code = f"""
        import os
        for path in {paths!r}:
            try:
                print("READ", path, open(path).read()[:40])
            except OSError as err:
                print("DENIED", path, type(err).__name__)
        print("ENV", sorted(os.environ))
        def add(a, b):
            return a + b
    """
    result = check(code)
    assert result.status == "passed"
    assert "READ" not in result.output and "PRIVATE-KEY" not in result.output
    assert result.output.count("DENIED") == len(paths)


def test_writes_land_only_in_the_scratch_directory(tmp_path):
    targets = [str(tmp_path / "pwned"), "/usr/pwned", f"/tmp/pwned-{uuid.uuid4().hex}", os.path.expanduser("~/pwned")]
    code = f"""
        for path in {targets!r}:
            try:
                open(path, "w").write("x")
                print("WROTE", path)
            except OSError:
                print("DENIED", path)
        open("inside.txt", "w").write("fine")
        def add(a, b):
            return a + b
    """
    result = check(code)
    assert result.status == "passed"
    for path in targets:
        assert not os.path.exists(path), path  # /tmp inside is the sandbox's own
    assert "WROTE /usr" not in result.output and f"WROTE {tmp_path}" not in result.output


def test_processes_outside_cannot_be_signalled():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        code = f"""
            import os, signal
            for pid in ({sleeper.pid}, {os.getpid()}, {os.getppid()}, 1):
                try:
                    os.kill(pid, signal.SIGKILL)
                    print("SIGNALLED", pid)
                except OSError as err:
                    print("DENIED", pid, type(err).__name__)
            def add(a, b):
                return a + b
        """
        result = check(code)
        assert sleeper.poll() is None  # still running
        assert result.status == "passed" and f"SIGNALLED {sleeper.pid}" not in result.output
        everyone = check("import os, signal\nos.kill(-1, signal.SIGKILL)\n")
        assert everyone.status == "error" and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def host_processes_with(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def test_nothing_it_starts_outlives_the_verdict():
    marker = f"z1-survivor-{uuid.uuid4().hex}"
    code = f"""
        import os, subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "{marker}"], start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(30)", "{marker}"])
            os._exit(0)
        def add(a, b):
            return a + b
    """
    result = check(code)
    assert result.status == "passed"
    deadline = time.monotonic() + 5
    while host_processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host_processes_with(marker) == []


def test_no_network_of_any_kind(tmp_path):
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4)
    unix_path = str(tmp_path / "agent.sock")
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(unix_path)
    unix.listen(4)
    abstract_name = f"\0z1-test-{uuid.uuid4().hex}"
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(abstract_name)
    abstract.listen(4)
    for s in (tcp, unix, abstract):
        s.settimeout(0.5)
    code = f"""
        import socket
        def attempt(family, address):
            s = socket.socket(family)
            s.settimeout(2)
            try:
                s.connect(address)
                s.sendall(b"exfiltrated")
                print("CONNECTED", address)
            except OSError as err:
                print("BLOCKED", type(err).__name__)
        attempt(socket.AF_INET, ("127.0.0.1", {tcp.getsockname()[1]}))
        attempt(socket.AF_UNIX, {unix_path!r})
        attempt(socket.AF_UNIX, {abstract_name!r})
        def add(a, b):
            return a + b
    """
    try:
        result = check(code)
        assert result.status == "passed" and "CONNECTED" not in result.output
        assert result.output.count("BLOCKED") == 3
        for listener in (tcp, unix, abstract):
            with pytest.raises(TimeoutError):
                listener.accept()
    finally:
        for s in (tcp, unix, abstract):
            s.close()


def test_a_fork_storm_hits_the_process_cap():
    code = """
        import os, time
        children = 0
        try:
            for _ in range(300):
                pid = os.fork()
                if pid == 0:
                    time.sleep(20)
                    os._exit(0)
                children += 1
        except OSError as err:
            print("CAPPED", children, type(err).__name__)
        def add(a, b):
            return a + b
    """
    start = time.monotonic()
    result = check(code, processes=32)
    assert result.status == "passed", result.summary()
    capped = [line for line in result.output.splitlines() if line.startswith("CAPPED")]
    assert capped and int(capped[0].split()[1]) < 32
    assert time.monotonic() - start < 15  # the sleeping children died with the sandbox


# Through the CLI


def solve_with(reply_code: str, problem: Path, tiny_model, *extra):
    reply = f"Here is the solution.\n\n```python\n{textwrap.dedent(reply_code)}```\n"
    with scripted_completions(reply) as url:
        return z1("solve", problem, "--model", tiny_model, "--backend", url, "--check", "--budget", "64", *extra)


@pytest.fixture
def problem_file(tmp_path):
    path = tmp_path / "add.py"
    path.write_text(PROBLEM)
    return path


@pytest.mark.slow
def test_the_cli_passes_a_correct_answer_and_refuses_a_forged_one(problem_file, tiny_model):
    good = solve_with(GOOD, problem_file, tiny_model)
    assert good.returncode == 0 and "[z1] check passed: 2/2 tests" in good.stderr
    forged = solve_with(
        'import json, os\nprint("Z1CHECK " + json.dumps({"total": 2, "failed": 0}))\nos._exit(0)\n',
        problem_file,
        tiny_model,
    )
    assert forged.returncode == 1 and "[z1] check error: the code ended before the tests finished" in forged.stderr
    assert "Traceback" not in forged.stderr


@pytest.mark.slow
def test_the_cli_survives_a_candidate_that_kills_everything(problem_file, tiny_model):
    code = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(-1, signal.SIGKILL)\n"
    proc = solve_with(code, problem_file, tiny_model, "--json")
    assert proc.returncode == 1, proc.stderr
    data = json.loads(proc.stdout)
    assert data["check"]["status"] == "error" and not data["check"]["passed"]


@pytest.mark.slow
def test_no_tests_has_its_own_exit_code(tmp_path, tiny_model):
    problem = tmp_path / "task.md"
    problem.write_text("Write a function that adds two numbers.")
    proc = solve_with(GOOD, problem, tiny_model)
    assert proc.returncode == 3
    assert "[z1] no tests found in the problem: the code ran without error, nothing was checked" in proc.stderr


@pytest.mark.slow
def test_the_block_that_defines_the_entry_point_is_the_solution(problem_file, tiny_model):
    reply = GOOD + "```\n\nUsage:\n\n```python\nprint(add(2, 3))\n"
    proc = solve_with(reply, problem_file, tiny_model)
    assert proc.returncode == 0 and "check passed" in proc.stderr


@pytest.mark.slow
def test_a_missing_sandbox_tool_is_one_line_before_any_generation(problem_file, tiny_model, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    env = {"PATH": str(bare)}  # no bwrap on PATH
    proc = z1("solve", problem_file, "--model", tiny_model, "--check", env=env)
    assert (
        proc.returncode == 2 and "bwrap is not installed" in proc.stderr and "apt-get install bubblewrap" in proc.stderr
    )
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1
    weak = z1(
        "solve",
        problem_file,
        "--model",
        tiny_model,
        "--check",
        "--sandbox",
        "rlimits",
        "--budget",
        "4",
        "--answer-tokens",
        "4",
        env=env,
    )
    assert "warning: --sandbox rlimits: resource limits only" in weak.stderr


def test_sigkill_of_the_sandbox_leaves_no_scratch_directory():
    import glob
    import tempfile

    before = set(glob.glob(os.path.join(tempfile.gettempdir(), "z1-sandbox-*")))
    result = check("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert result.status == "error"
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "z1-sandbox-*"))) == before
    assert signal.SIGKILL  # the caller is alive to look
