"""argparse with one-line errors, and the value types every command shares."""

import argparse
import os
import signal
import sys
from contextlib import contextmanager

from .errors import Z1Error


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors are one line (`z1 solve: error: ...`) and exit 2; `--help` shows the rest."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _number(kind: type, positive: bool):
    """An argparse type: a finite int or float, >= 0 or > 0, with a one-line complaint."""
    wanted = ("a whole number" if kind is int else "a number") + (
        (" >= 1" if kind is int else " > 0") if positive else " >= 0")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        if not (0 < value if positive else 0 <= value) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
        return value

    return parse


non_negative_int = _number(int, positive=False)
positive_int = _number(int, positive=True)
non_negative_float = _number(float, positive=False)
positive_float = _number(float, positive=True)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="z1-7b (default), demo, a directory, a store name or a hub id")
    parser.add_argument("--adapter", default=None, help="a LoRA adapter directory from `z1 finetune`")


BACKEND_KEY_ENV = "Z1MLX_API_KEY"


def add_backend_args(parser: argparse.ArgumentParser, key_flag: str = "--api-key") -> None:
    parser.add_argument("--backend", default=None, metavar="URL",
                        help="run the window on an OpenAI-compatible server (vLLM, SGLang, llama.cpp, mlx_lm.server); "
                        "--model then names the local tokenizer")
    parser.add_argument(key_flag, dest="backend_api_key", default=None,
                        help=f"bearer token for --backend (or ${BACKEND_KEY_ENV})")


def load_engine(args):
    """The engine a command asked for: local (`--model`, `--adapter`) or remote (`--backend`)."""
    if getattr(args, "backend", None):
        if args.adapter:
            raise Z1Error("--adapter cannot be used with --backend: load the adapter in the remote engine")
        from .remote import RemoteEngine

        key = args.backend_api_key or os.environ.get(BACKEND_KEY_ENV) or None
        return RemoteEngine.connect(args.backend, model=args.model, api_key=key)
    from .engine import Engine

    return Engine.load(args.model, adapter=args.adapter)


def add_window_args(parser: argparse.ArgumentParser, budget: int = 2048, answer_tokens: int = 1024) -> None:
    parser.add_argument("--budget", type=non_negative_int, default=budget,
                        help=f"thinking budget in tokens; 0 answers at once (default {budget})")
    parser.add_argument("--answer-tokens", type=positive_int, default=answer_tokens,
                        help=f"cap on the answer after the window shifts (default {answer_tokens})")


@contextmanager
def cancel_on_interrupt(control):
    """First Ctrl+C stops generation cleanly (stats still print); a second one aborts."""
    if not hasattr(signal, "SIGINT"):
        yield
        return

    def handler(signum, frame):
        if control.cancelled:
            raise KeyboardInterrupt
        control.cancel()

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
