"""`z1 solve`: one problem file, reasoned about under the Shifted Thinking Window.

Reasoning streams to stderr, the answer to stdout, so `z1 solve p.py > answer.md` works.
"""

import ast
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from .answer import defined_names, extract_code, reasoning_and_answer
from .cliutil import (
    ArgumentParser,
    add_backend_args,
    add_model_args,
    add_sampling_args,
    add_window_args,
    cancel_on_interrupt,
    hint_from,
    load_engine,
    sampling_from,
)
from .errors import Z1Error
from .fsutil import atomic_write_text
from .prompts import solve_messages
from .window import ShiftedWindow, WindowControl

EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_NO_TESTS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXAMPLES = """\
examples:
  z1 solve problem.py --budget 2048            think up to 2048 tokens, then answer
  z1 solve problem.py --model demo --check     tiny offline model; run the problem's own tests
  z1 solve task.md --budget 0                  answer at once, no thinking
  z1 solve problem.py --out solution.py        write the final code block (atomically)
  z1 solve problem.py --json | jq .thinking_tokens
  cat problem.py | z1 solve - --quiet > answer.md
  z1 solve problem.py --backend http://gpu-box:8000   the window on a remote vLLM/SGLang/llama.cpp server

PROBLEM is a .py file (docstring or comments state the task; stubs, doctests and asserts
welcome), a .md/.txt statement, or - for standard input.

exit codes:
  0    success (and, with --check, the tests passed)
  1    --check failed (a test failed, or the code erred, timed out or ended early),
       or no code block to write for --out/--check
  3    --check found no tests in the problem: the code ran, nothing was checked
  2    usage or input error (bad flag, unreadable problem, unknown model)
  130  interrupted (Ctrl+C); what was generated so far is printed
"""

DIM, RESET = "\x1b[2m", "\x1b[0m"


@dataclass(frozen=True)
class Problem:
    source: str
    kind: str  # "py" or "text"
    label: str


def read_problem(name: str) -> Problem:
    """Read PROBLEM with one-line errors for everything a user can get wrong."""
    if name == "-":
        if sys.stdin is None:
            raise Z1Error("PROBLEM is - but standard input is closed")
        data, label = sys.stdin.buffer.read(), "<stdin>"
    else:
        path = Path(name)
        if not path.exists():
            raise Z1Error(f"{name}: no such file")
        if path.is_dir():
            raise Z1Error(f"{name}: is a directory, expected a problem file")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise Z1Error(f"{name}: cannot read ({err.strerror})") from err
        label = name
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise Z1Error(f"{label}: not UTF-8 text (undecodable byte at offset {err.start})") from err
    if not text.strip():
        raise Z1Error(f"{label}: empty problem")
    suffix = Path(name).suffix.lower()
    kind = "py" if suffix == ".py" or (name == "-" and _is_python(text)) else "text"
    return Problem(text, kind, label)


def _is_python(text: str) -> bool:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assert, ast.Import)) for n in tree.body)


class Streamer:
    """Writes events: thinking to stderr (dimmed on a terminal), the answer to stdout."""

    def __init__(self, show_reasoning: bool, stream_answer: bool):
        self.show_reasoning = show_reasoning
        self.stream_answer = stream_answer
        self.dim = sys.stderr.isatty()

    def thinking(self, text: str) -> None:
        if self.show_reasoning and text:
            sys.stderr.write(f"{DIM}{text}{RESET}" if self.dim else text)
            sys.stderr.flush()

    def shift(self, thinking_tokens: int, reason: str) -> None:
        if self.show_reasoning:
            why = "answer now" if reason == "answer_now" else f"window full at {thinking_tokens} tokens"
            sys.stderr.write(f"\n\n── {why}: I overthought it, the final answer should be: ──\n\n")
            sys.stderr.flush()

    def note(self, text: str) -> None:
        """A mark in the reasoning stream (not model text), like the shift's."""
        if self.show_reasoning:
            sys.stderr.write(f"{DIM}⟨{text}⟩{RESET}" if self.dim else f"⟨{text}⟩")
            sys.stderr.flush()

    def answer(self, text: str) -> None:
        if self.stream_answer and text:
            sys.stdout.write(text)
            sys.stdout.flush()


def summary_line(result, budget: int) -> str:
    parts = [
        f"thinking {result.thinking_tokens}/{budget} tokens",
        f"answer {result.answer_tokens} tokens",
        "window hit" if result.window_hit else "ended inside the window",
        *([f"thought longer {result.forced_continuations}x"] if result.forced_continuations else []),
        f"{result.generation_tps:.1f} tok/s",
        f"ttft {result.ttft_s:.2f}s",
        f"peak {result.peak_memory_gb:.2f} GB",
    ]
    if result.finish_reason == "cancelled":
        parts.append("interrupted")
    return "[z1] " + " · ".join(parts)


def result_json(engine_name: str, result, reasoning: str, answer: str, code: str | None, check=None) -> dict:
    return {
        "model": engine_name,
        "budget": result.budget,
        "answer_cap": result.answer_cap,
        "window_hit": result.window_hit,
        "finish_reason": result.finish_reason,
        "prompt_tokens": result.prompt_tokens,
        "thinking_tokens": result.thinking_tokens,
        "answer_tokens": result.answer_tokens,
        "prompt_token_ids": result.prompt_token_ids,
        "thinking_token_ids": result.thinking_token_ids,
        "answer_token_ids": result.answer_token_ids,
        "hint": result.hint,
        "hint_token_ids": result.hint_token_ids,
        "shift_reason": result.shift_reason,
        "cached_prompt_tokens": result.cached_prompt_tokens,
        "min_thinking": result.min_thinking,
        "forced_continuations": result.forced_continuations,
        "forced_tokens": result.forced_tokens,
        "reasoning": reasoning,
        "answer": answer,
        "code": code,
        "ttft_s": round(result.ttft_s, 4),
        "prompt_tps": round(result.prompt_tps, 2),
        "generation_tps": round(result.generation_tps, 2),
        "peak_memory_gb": round(result.peak_memory_gb, 4),
        "check": None
        if check is None
        else {"passed": check.passed, "status": check.status, "summary": check.summary()},
    }


def solution_code(reasoning: str, answer: str, defines: list[str]) -> str | None:
    """The code block that is the solution: in the answer, else anywhere in the reply, the
    last block defining one of the problem's entry points; else the answer's last block."""
    for text in (answer, reasoning + "\n" + answer):
        code = extract_code(text, defines=defines)
        if code is not None and (not defines or defined_names(code) & set(defines)):
            return code
    return extract_code(answer) or extract_code(reasoning + "\n" + answer)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="z1 solve",
        description="Solve a problem with Z1's Shifted Thinking Window: think up to --budget tokens; "
        "if the window fills, append the hint and answer in at most --answer-tokens.",
        epilog=EXAMPLES,
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    parser.add_argument("problem", metavar="PROBLEM", help="a .py, .md or .txt file, or - for stdin")
    add_window_args(parser)
    add_model_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object with text, token ids and stats")
    parser.add_argument("--out", type=Path, help="write the final code block to this file (atomically)")
    parser.add_argument(
        "--check", action="store_true", help="run the code against the problem's own tests in a sandbox"
    )
    parser.add_argument(
        "--sandbox",
        choices=("auto", "bwrap", "seatbelt", "rlimits"),
        default="auto",
        help="how --check isolates the code: auto (bubblewrap on Linux, sandbox-exec on macOS; the default), "
        "or rlimits: resource limits only, no file, process or network isolation",
    )
    add_sampling_args(parser)
    parser.add_argument("--system", default=None, help="system prompt (default: the model's own)")
    parser.add_argument("--quiet", "-q", action="store_true", help="do not show the reasoning")
    add_backend_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .events import Continuation, Done, Shift, TextDelta

    problem = read_problem(args.problem)
    sandbox = args.sandbox
    if args.check:  # before the model loads: a missing sandbox tool is a one-line error at once
        from .checks.sandbox import RLIMITS_WARNING, resolve_mode

        sandbox = resolve_mode(args.sandbox)
        if sandbox == "rlimits":
            print(f"[z1] warning: {RLIMITS_WARNING}", file=sys.stderr)
    try:
        window = ShiftedWindow(args.budget, args.answer_tokens, hint_from(args), args.min_thinking, args.continue_text)
    except ValueError as err:
        raise Z1Error(str(err)) from err
    sampling = sampling_from(args)
    engine = load_engine(args)
    if not args.quiet:
        print(
            f"[z1] model {engine.label} · budget {window.budget} · answer cap {window.answer_tokens}", file=sys.stderr
        )
    prompt = engine.chat_prompt(solve_messages(problem.source, problem.kind, args.system))

    show = not args.quiet and (not args.json or sys.stderr.isatty())
    streamer = Streamer(show_reasoning=show, stream_answer=not args.json)
    control = WindowControl(window.budget)
    result = None
    with cancel_on_interrupt(control):
        for event in engine.generate(prompt, window, sampling, control=control):
            if isinstance(event, TextDelta):
                (streamer.thinking if event.phase == "thinking" else streamer.answer)(event.text)
            elif isinstance(event, Shift):
                streamer.shift(event.thinking_tokens, event.reason)
            elif isinstance(event, Continuation):
                streamer.note(f"thinking longer ({event.thinking_tokens} < {window.min_thinking} tokens)")
            elif isinstance(event, Done):
                result = event.result

    assert result is not None, "the driver always ends with Done"
    reasoning, answer = reasoning_and_answer(
        result.thinking_text, result.answer_text, result.window_hit, stopped=result.finish_reason == "cancelled"
    )
    if not args.json:
        if result.window_hit:
            sys.stdout.write("\n")
        else:
            if show:
                sys.stderr.write("\n\n── answer ──\n")
            sys.stdout.write(answer + "\n")
        sys.stdout.flush()
    if not args.quiet:
        print(summary_line(result, window.budget), file=sys.stderr)

    tests = None
    if args.check or args.out:
        from .checks.check import tests_from_problem

        tests = tests_from_problem(problem.source if problem.kind == "py" else "")
    defines = tests.entry_points if tests is not None else []
    code = solution_code(reasoning, answer, defines)
    exit_code = EXIT_INTERRUPTED if result.finish_reason == "cancelled" else EXIT_OK
    check = None
    if exit_code == EXIT_OK and args.out:
        if code is None:
            print(f"[z1] no code block in the answer; {args.out} not written", file=sys.stderr)
            exit_code = EXIT_CHECK_FAILED
        else:
            atomic_write_text(args.out, code)
            print(f"[z1] wrote {args.out}", file=sys.stderr)
    if exit_code == EXIT_OK and args.check:
        if code is None:
            print("[z1] check failed: no code block in the answer", file=sys.stderr)
            exit_code = EXIT_CHECK_FAILED
        else:
            from .checks.check import run_check

            check = run_check(code, problem.source if problem.kind == "py" else "", sandbox=sandbox)
            print(f"[z1] {check.summary()}", file=sys.stderr)
            if check.status == "no_tests":
                exit_code = EXIT_NO_TESTS
            elif not check.passed:
                exit_code = EXIT_CHECK_FAILED
    if args.json:
        print(json.dumps(result_json(engine.name, result, reasoning, answer, code, check)))
    return exit_code
