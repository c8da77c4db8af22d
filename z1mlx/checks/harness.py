"""The check harness: runs INSIDE the sandbox, with the standard library alone.

`checks.build_check_script` sends this file's source followed by one call,
`main(CODE, TESTS)`. The summary goes straight to fd 1, so a candidate that replaced or
closed sys.stdout cannot hide it, and os._exit skips the candidate's atexit hooks and
non-daemon threads.
"""

import doctest
import json
import linecache
import os
import sys
import traceback
import types

SUMMARY_PREFIX = "Z1CHECK "
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


def load(code, imports):
    # A real module, so dataclasses, pickle and `from solution import f` work.
    module = types.ModuleType("solution")
    sys.modules["solution"] = module
    namespace = module.__dict__
    for source in imports:
        try:
            exec(source, namespace)
        except Exception:
            pass  # a test that needs it will say so
    linecache.cache["<solution>"] = (len(code), None, code.splitlines(True), "<solution>")
    exec(compile(code, "<solution>", "exec"), namespace)
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


class Runner(doctest.DocTestRunner):
    def __init__(self, report):
        super().__init__(verbose=False, optionflags=doctest.NORMALIZE_WHITESPACE)
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


def main(code, tests):
    """Run `tests` (a `checks.ProblemTests` as a dict) against the candidate `code`; the
    summary goes to fd 1 and the process exits here."""
    report = Report()
    error = None
    try:
        namespace = load(code, tests["imports"])
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        report.saw(exc)
        print_candidate_traceback(exc)
        error = describe(exc)
    if error is None:
        run_steps(tests["steps"], namespace, report)
        run_doctests(tests["doctests"], namespace, report)
    if report.memory:
        print("MemoryError raised by the code under test", file=sys.stderr)
    summary = {
        "total": report.total,
        "passed": report.total - report.failed,
        "failed": report.failed,
        "failures": report.failures,
        "error": error,
    }
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(1, ("\n" + SUMMARY_PREFIX + json.dumps(summary) + "\n").encode())
    os._exit(0 if error is None and report.failed == 0 else 1)
