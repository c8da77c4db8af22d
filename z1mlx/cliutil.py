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
        (" >= 1" if kind is int else " > 0") if positive else " >= 0"
    )

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
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
    parser.add_argument(
        "--backend",
        default=None,
        metavar="URL",
        help="run the window on an OpenAI-compatible server (vLLM, SGLang, llama.cpp, mlx_lm.server); "
        "--model then names the local tokenizer",
    )
    parser.add_argument(
        key_flag, dest="backend_api_key", default=None, help=f"bearer token for --backend (or ${BACKEND_KEY_ENV})"
    )
    parser.add_argument(
        "--draft-model",
        default=None,
        metavar="M",
        help="speculative decoding: a small model with the same tokenizer proposes tokens, --model verifies "
        "(any --model form; z1-7b-draft: Qwen2.5-Coder-0.5B-Instruct, demo-draft for demo)",
    )
    parser.add_argument(
        "--num-draft-tokens",
        type=int,
        default=None,
        metavar="K",
        help="tokens the draft proposes per step (default 3)",
    )


def load_engine(args):
    """The engine a command asked for: local (`--model`, `--adapter`) or remote (`--backend`)."""
    draft = getattr(args, "draft_model", None)
    draft_tokens = getattr(args, "num_draft_tokens", None)
    if getattr(args, "backend", None):
        if args.adapter:
            raise Z1Error("--adapter cannot be used with --backend: load the adapter in the remote engine")
        if draft or draft_tokens is not None:
            raise Z1Error("--draft-model cannot be used with --backend: give the draft to the remote engine")
        from .remote import RemoteEngine

        key = args.backend_api_key or os.environ.get(BACKEND_KEY_ENV) or None
        return RemoteEngine.connect(args.backend, model=args.model, api_key=key)
    from .engine import Engine

    return Engine.load(args.model, adapter=args.adapter, draft_model=draft, num_draft_tokens=draft_tokens)


def at_most(parse, limit: int):
    """An argparse type: `parse`, then no more than `limit`."""

    def bounded(text: str):
        value = parse(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit}, got {text!r}")
        return value

    return bounded


def add_window_args(
    parser: argparse.ArgumentParser,
    budget: int | None = 2048,
    answer_tokens: int | None = 1024,
    *,
    hint: bool = True,
    max_budget: int | None = None,
) -> None:
    """--budget, --answer-tokens, think longer (--min-thinking, --continue-text) and the hint.

    A default of None means "the command decides" (chat: the last budget used)."""
    from .window import CONTINUE_TEXT

    budget_default = f"default {budget}" if budget is not None else "default: the last one used, else 2048"
    budget_type = non_negative_int if max_budget is None else at_most(non_negative_int, max_budget)
    parser.add_argument(
        "--budget",
        type=budget_type,
        default=budget,
        help=f"thinking budget in tokens; 0 answers at once ({budget_default})",
    )
    answer_default = answer_tokens if answer_tokens is not None else 1024
    parser.add_argument(
        "--answer-tokens",
        type=positive_int,
        default=answer_tokens,
        help=f"cap on the answer after the window shifts (default {answer_default})",
    )
    parser.add_argument(
        "--min-thinking",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="think longer: when the model ends before N thinking tokens, drop its end and feed "
        "--continue-text instead (default 0: off)",
    )
    parser.add_argument(
        "--continue-text",
        default=CONTINUE_TEXT,
        metavar="TEXT",
        help=f"what --min-thinking feeds in place of an early end (default {CONTINUE_TEXT!r})",
    )
    if hint:
        group = parser.add_mutually_exclusive_group()
        group.add_argument("--hint", default=None, help="text appended when the window fills (default: Z1's hint)")
        group.add_argument("--boxed", action="store_true", help="the \\boxed{} variant of the hint, for math")


def hint_from(args) -> str:
    from .window import BOXED_HINT, HINT

    return BOXED_HINT if getattr(args, "boxed", False) else (getattr(args, "hint", None) or HINT)


def add_sampling_args(parser: argparse.ArgumentParser, *, what: str = "sampling") -> None:
    """The sampling flags every command shares (`what` names them in --help, e.g. "default")."""
    parser.add_argument(
        "--temp", type=non_negative_float, default=0.0, help=f"{what} temperature (default 0: greedy, as in the paper)"
    )
    parser.add_argument("--top-p", type=positive_float, default=1.0, help="nucleus sampling (default 1: off)")
    parser.add_argument("--top-k", type=non_negative_int, default=0, help="top-k sampling (default 0: off)")
    parser.add_argument("--min-p", type=non_negative_float, default=0.0, help="min-p sampling (default 0: off)")
    parser.add_argument("--repetition-penalty", type=positive_float, default=None, help="e.g. 1.1 (default: off)")
    parser.add_argument("--seed", type=non_negative_int, default=None, help="random seed for sampling")


def sampling_from(args):
    """The `Sampling` of parsed sampling flags; a value out of range is a one-line error."""
    from .events import Sampling

    try:
        return Sampling(args.temp, args.top_p, args.top_k, args.min_p, args.repetition_penalty, args.seed)
    except ValueError as err:
        raise Z1Error(str(err)) from err


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
