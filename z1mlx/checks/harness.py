"""The check harness: runs INSIDE the sandbox, with the standard library alone.

`checks.build_check_script` sends this file's source followed by one call,
`main(CODE, TESTS, CHANNEL)` (the sandbox has already capped the processes and dropped
to the unprivileged uid). Before any candidate code runs, the harness reads the run's
secret from its nonce descriptor and closes it, removes its own script file, and keeps
its own references to the functions it reports with. Then it loads the problem's helper
definitions, the candidate, the problem's test functions, and runs the tests.

The report goes to a descriptor of its own (never stdout or stderr, which the candidate
may print anything on) as the repr of one dict with the secret; the parent accepts it only
if the secret matches and the count of tests run is the count it extracted. A candidate
that exits early, exits 0 before the tests, prints a report of its own, or replaces
`json.dumps`, `os.write`, `os._exit` or `repr` therefore fails. What this cannot stop:
code that searches the harness's memory for the secret, or rewrites the harness's own
functions, and then reports a pass itself (the sandbox still contains it).
"""

import ast
import linecache
import os
import sys
import traceback
import types


# doctest imports pdb for its debugger alone (a third of the harness's start-up); a
# stand-in while it loads. The checks never stop in a debugger, and a later `import pdb`
# gets the real one.
class _NoDebugger:
    def __init__(self, *args, **kwargs):
        pass

    def __getattr__(self, name):  # reset, set_trace, ...: nothing to do
        return lambda *args, **kwargs: None


if "pdb" not in sys.modules:
    sys.modules["pdb"] = types.ModuleType("pdb")
    sys.modules["pdb"].Pdb = _NoDebugger  # type: ignore[attr-defined]
    sys.modules["pdb"].set_trace = lambda *args, **kwargs: None  # type: ignore[attr-defined]
    import doctest

    del sys.modules["pdb"]
else:
    import doctest

MAX_FAILURES = 5
MESSAGE_CHARS = 300


def short(text):
    text = " ".join(str(text).split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 3] + "..."


def describe(exc):
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    return short(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


class Report:
    def __init__(self):
        self.total = 0
        self.failed = 0
        self.failures = []
        self.memory = False

    def message(self, text):
        if len(self.failures) < MAX_FAILURES:
            self.failures.append(short(text))

    def saw(self, exc):
        if isinstance(exc, MemoryError):
            self.memory = True


def enter(channel):
    """Everything that must happen before the candidate's first line; returns the secret
    and the reporting functions as they are now."""
    nonce = os.read(channel["nonce_fd"], 256).decode()
    os.close(channel["nonce_fd"])
    try:
        os.unlink(os.path.abspath(sys.argv[0]))  # this script: nothing of the run left to read
    except OSError:
        pass
    # The report is the repr of built-in values: no library code the candidate could patch.
    return nonce, {"write": os.write, "exit": os._exit, "repr": repr, "close": os.close}


def run_source(source, namespace, filename):
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)


def load(code, before, after):
    """The problem's helpers (`before`), the candidate, then the problem's test functions
    (`after`), in one namespace: a real module `solution`, so dataclasses, pickle and
    `from solution import f` work."""
    module = types.ModuleType("solution")
    sys.modules["solution"] = module
    namespace = module.__dict__
    for source in before:
        try:
            exec(source, namespace)
        except Exception:
            pass  # a test that needs it will say so
    run_source(code, namespace, "<solution>")
    for source in after:
        exec(source, namespace)
    return namespace


def print_candidate_traceback(exc):
    # Only the candidate's frames: the harness's own are noise to the reader.
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<solution>":
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb, file=sys.stderr)


def failing_line(exc, source):
    lines = source.splitlines()
    lineno = None
    for frame, line in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == "<problem>":
            lineno = line
    if lineno and 0 < lineno <= len(lines):
        return lines[lineno - 1].strip()
    return lines[0].strip()


def run_steps(steps, namespace, report):
    for step in steps:
        code = compile(step["source"], "<problem>", "exec")
        if step["kind"] == "setup":
            try:
                exec(code, namespace)
            except Exception as exc:
                report.saw(exc)  # the asserts that rely on it fail and say why
            continue
        report.total += 1
        try:
            exec(code, namespace)
        except AssertionError as exc:
            report.failed += 1
            detail = f" -- {exc}" if str(exc) else ""
            report.message(failing_line(exc, step["source"]) + detail)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            report.failed += 1
            report.saw(exc)
            report.message(f"{failing_line(exc, step['source'])}: {describe(exc)}")


def literal(text):
    try:
        return True, ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


class ReadingChecker(doctest.OutputChecker):
    """Docstring examples compared as a person reads them: `>>> f(x) == y` with no output
    line expects True, and values that differ only in quoting or spacing agree."""

    def check_output(self, want, got, optionflags):
        if super().check_output(want, got, optionflags):
            return True
        if not want.strip():
            return got.strip() == "True"
        wanted, expected = literal(want)
        parsed, actual = literal(got)
        return wanted and parsed and type(expected) is type(actual) and expected == actual


class Runner(doctest.DocTestRunner):
    def __init__(self, report):
        super().__init__(checker=ReadingChecker(), verbose=False, optionflags=doctest.NORMALIZE_WHITESPACE)
        self.report = report

    def report_failure(self, out, test, example, got):
        want = example.want.strip()
        self.report.message(f"{test.name}: >>> {example.source.strip()} expected {want!r}, got {got.strip()!r}")

    def report_unexpected_exception(self, out, test, example, exc_info):
        self.report.saw(exc_info[1])
        self.report.message(f"{test.name}: >>> {example.source.strip()} raised {describe(exc_info[1])}")


def run_doctests(blocks, namespace, report):
    parser = doctest.DocTestParser()
    runner = Runner(report)
    for block in blocks:
        test = parser.get_doctest(block["docstring"], namespace, block["name"], "<problem>", block["lineno"])
        failed, attempted = runner.run(test, out=lambda text: None, clear_globs=False)
        report.total += attempted
        report.failed += failed


def run_as_main(code):
    """No tests: the candidate runs as a program, and its report says how it ended."""
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    run_source(code, namespace, "<solution>")


def main(code, tests, channel):
    nonce, keep = enter(channel)
    report, advisory = Report(), Report()
    error = None
    try:
        if tests is None:
            run_as_main(code)
        else:
            namespace = load(code, tests["before"], tests["after"])
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        if tests is not None or exc.code not in (None, 0):
            error = f"SystemExit: {exc.code}"
    except BaseException as exc:
        report.saw(exc)
        print_candidate_traceback(exc)
        error = describe(exc)
    if error is None and tests is not None:
        run_steps(tests["steps"], namespace, report)
        run_doctests(tests["doctests"], namespace, advisory if tests["advisory_doctests"] else report)
    if report.memory or advisory.memory:
        print("MemoryError raised by the code under test", file=sys.stderr)
    summary = {
        "nonce": nonce,
        "total": report.total,
        "passed": report.total - report.failed,
        "failed": report.failed,
        "failures": report.failures,
        "error": error,
        "advisory": {"total": advisory.total, "failed": advisory.failed, "failures": advisory.failures},
    }
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    keep["write"](channel["report_fd"], keep["repr"](summary).encode())
    keep["close"](channel["report_fd"])
    keep["exit"](0 if error is None and report.failed == 0 else 1)
