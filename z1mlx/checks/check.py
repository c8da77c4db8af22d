"""`z1 solve --check`: run a candidate solution against the problem file's own tests.

The tests are the problem's doctests (module, function, class and method docstrings),
its top-level asserts and the asserts in its `if __name__ == "__main__":` block. They run
in the sandbox, inside a harness that loads the candidate as module `solution`.
"""

import ast
import doctest
import io
import json
import tokenize
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .harness import MESSAGE_CHARS, SUMMARY_PREFIX
from .sandbox import Limits, SandboxResult, run_sandboxed

# The harness's own source runs in the sandbox: a real module, linted and type-checked.
HARNESS = (Path(__file__).parent / "harness.py").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Step:
    """One statement taken from the problem: an 'assert' (a test) or 'setup' it needs."""

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

    imports: list[str] = field(default_factory=list)  # run before the candidate
    steps: list[Step] = field(default_factory=list)  # run after it, in file order
    doctests: list[DocTestBlock] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(s.kind == "assert" for s in self.steps) + sum(d.examples for d in self.doctests)

    @property
    def empty(self) -> bool:
        return self.count == 0


@dataclass
class CheckResult:
    """The outcome of `run_check`.

    status: 'passed' | 'failed' (a test failed) | 'timeout' | 'memory'
    | 'error' (the code could not be loaded or the run ended abnormally)
    | 'no_tests' (the problem has none; the code ran without error).
    failures: the first few failure messages (for 'timeout'/'memory', the limit hit).
    """

    passed: bool
    status: str
    tests_run: int
    failures: list[str]
    output: str
    sandbox: SandboxResult
    tests_failed: int = 0

    def summary(self) -> str:
        """One line for the terminal, e.g. `check failed: 1/3 tests failed (assert f(2) == 5)`."""
        noun = "test" if self.tests_run == 1 else "tests"
        first = self.failures[0] if self.failures else "unknown error"
        if self.status == "passed":
            return f"check passed: {self.tests_run}/{self.tests_run} {noun}"
        if self.status == "no_tests":
            return "check passed: the problem has no tests; the code ran without error"
        if self.status == "failed":
            return f"check failed: {self.tests_failed}/{self.tests_run} {noun} failed ({first})"
        if self.status in ("timeout", "memory"):
            return f"check stopped: {first}"
        return f"check failed: {first}"


def tests_from_problem(problem_source: str) -> ProblemTests:
    """Extract doctests and asserts from a problem file's source.

    A file that does not parse (a stub with no body, say) still yields its doctests.
    """
    try:
        tree = ast.parse(problem_source)
    except (SyntaxError, ValueError):
        return ProblemTests(doctests=_doctest_blocks_in_text(problem_source))
    return ProblemTests(
        imports=[ast.unparse(node) for node in tree.body if _is_import(node) and not _is_future(node)],
        steps=_steps(tree.body),
        doctests=_doctest_blocks(tree),
    )


def build_check_script(code: str, tests: ProblemTests) -> str:
    """The Python file the sandbox runs: the candidate `code` plus a harness for `tests`.

    With no tests it is the code itself, run as `__main__`.
    """
    if tests.empty:
        return code
    data = json.dumps(asdict(tests))
    return f"{HARNESS}\n\nmain({code!r}, json.loads({data!r}))\n"


def run_check(code: str, problem_source: str, limits: Limits = Limits()) -> CheckResult:
    """Run the candidate `code` against the tests in `problem_source`, sandboxed."""
    tests = tests_from_problem(problem_source)
    result = run_sandboxed(build_check_script(code, tests), limits=limits)
    return interpret(result, tests)


def interpret(result: SandboxResult, tests: ProblemTests) -> CheckResult:
    """Turn a sandbox run of a check script into a CheckResult."""
    summary, stdout = _split_summary(result.stdout)
    output = _join_output(stdout, result.stderr)

    def outcome(status: str, failures: list[str], run: int = 0, failed: int = 0) -> CheckResult:
        passed = status in ("passed", "no_tests")
        return CheckResult(passed, status, run, failures, output, result, failed)

    if result.status in ("timeout", "memory"):
        return outcome(result.status, [result.reason])
    if tests.empty:
        if result.ok:
            return outcome("no_tests", [])
        return outcome("error", [_last_line(result.stderr) or result.reason])
    if summary is None:
        why = _last_line(result.stderr) or result.reason or f"exit status {result.returncode}"
        return outcome("error", [f"the code stopped before the tests finished: {why}"])
    run, failed = int(summary.get("total", 0)), int(summary.get("failed", 0))
    failures = [str(f) for f in summary.get("failures", [])]
    if summary.get("error"):
        return outcome("error", [f"could not load the code: {summary['error']}"])
    if failed:
        return outcome("failed", failures, run, failed)
    if not result.ok:
        # All tests passed, yet the process did not exit cleanly afterwards.
        return outcome("error", [result.reason], run)
    return outcome("passed", [], run)


def _split_summary(stdout: str) -> tuple[dict | None, str]:
    """The harness's last summary line, and stdout without it."""
    lines = stdout.splitlines(keepends=True)
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(SUMMARY_PREFIX):
            try:
                summary = json.loads(lines[i][len(SUMMARY_PREFIX) :])
            except ValueError:
                return None, stdout
            return (summary if isinstance(summary, dict) else None), "".join(lines[:i] + lines[i + 1 :])
    return None, stdout


def _join_output(stdout: str, stderr: str) -> str:
    return "\n".join(part.rstrip("\n") for part in (stdout, stderr) if part.strip())


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:MESSAGE_CHARS] if lines else ""


def _steps(body: list[ast.stmt], in_main: bool = False) -> list[Step]:
    """Asserts (and statements containing them) plus the assignments they may rely on.

    Top-level imports are not steps: they run before the candidate instead.
    """
    steps = []
    for node in body:
        if isinstance(node, ast.If) and _is_main_guard(node):
            steps += _steps(node.body, in_main=True)
        elif _is_test(node):
            steps.append(Step("assert", ast.unparse(node), node.lineno))
        elif _is_assignment(node) or (in_main and _is_import(node) and not _is_future(node)):
            steps.append(Step("setup", ast.unparse(node), node.lineno))
    return steps


def _is_test(node: ast.stmt) -> bool:
    if isinstance(node, ast.Assert):
        return True
    # A loop or block of asserts is one test: `for a, b in CASES: assert f(a) == b`.
    compound = (ast.For, ast.While, ast.With, ast.If, ast.Try)
    return isinstance(node, compound) and any(isinstance(n, ast.Assert) for n in ast.walk(node))


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


def _doctest_blocks(tree: ast.Module) -> list[DocTestBlock]:
    blocks = []
    for name, node in _documented(tree, ""):
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
