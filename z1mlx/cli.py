"""The `z1` command: a small dispatcher; each subcommand lives in its own module."""

import importlib
import os
import sys
import traceback

from . import __version__
from .errors import Z1Error

DEBUG_ENV = "Z1MLX_DEBUG"  # set to 1: full tracebacks, for bug reports

COMMANDS = {
    "solve": ("z1mlx.solve", "solve a problem file with the Shifted Thinking Window"),
    "chat": ("z1mlx.chat.command", "chat in a terminal UI (or a plain REPL) with live reasoning"),
    "eval": ("z1mlx.evaluation.command", "accuracy against thinking tokens on a problem set, every budget in one pass"),
    "serve": ("z1mlx.serve.command", "OpenAI-compatible HTTP server with the shifted window"),
    "finetune": ("z1mlx.finetune.command", "LoRA/DoRA/full fine-tuning on your own JSONL data"),
    "convert": ("z1mlx.convert.command", "convert a Hugging Face checkpoint to MLX (4-bit by default)"),
    "models": ("z1mlx.models", "list, locate and remove models in the store"),
}

USAGE = f"""usage: z1 [--version] COMMAND [ARGS...]

z1-mlx {__version__}: Z1-7B on MLX with the Shifted Thinking Window.

commands:
{{commands}}

examples:
  z1 solve problem.py --budget 2048          reason up to 2048 tokens, then answer
  z1 solve problem.py --model demo --check   tiny offline model; run the problem's tests
  z1 chat                                    terminal UI with a thinking-budget slider
  z1 finetune --data local.jsonl             adapt Z1 to your own problems
  z1 eval --data humaneval                   accuracy against thinking tokens, per budget
  z1 serve --port 8080                       OpenAI-compatible API on 127.0.0.1
  z1 convert efficientscaling/Z1-7B          download and convert to 4-bit MLX
  z1 models                                  what is in the store

Run `z1 COMMAND --help` for a command's options and examples.
"""


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return USAGE.format(commands="\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"z1-mlx {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    for stream in (sys.stdout, sys.stderr):
        # Model text can hold any character; a non-UTF-8 terminal gets replacements, not a crash.
        if stream is not None and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    if sys.stdout is None or sys.stderr is None:
        return 2  # started with stdout or stderr closed: nowhere to say anything
    if name not in COMMANDS:
        print(f"z1: error: unknown command {name!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    debug = os.environ.get(DEBUG_ENV, "") not in ("", "0")
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return int(module.main(rest) or 0)
    except Z1Error as err:
        if debug:
            traceback.print_exc()
        print(f"z1 {name}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"\nz1 {name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as err:  # a bug: one line, and the traceback on request
        if debug:
            raise
        print(
            f"z1 {name}: internal error: {type(err).__name__}: {err} (set {DEBUG_ENV}=1 for the traceback "
            "to include in a bug report)",
            file=sys.stderr,
        )
        return 1
