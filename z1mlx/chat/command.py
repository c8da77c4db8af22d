"""`z1 chat`: talk to Z1 in a terminal UI (or a plain REPL), every conversation stored.

The TUI is the default on a terminal; `--plain`, or output that is not a terminal,
gives the line-oriented REPL. `--list` and `--export` read the history without loading
a model.
"""

import argparse
import sys
from pathlib import Path

from ..cliutil import (
    ArgumentParser,
    add_backend_args,
    add_model_args,
    add_sampling_args,
    add_window_args,
    hint_from,
    load_engine,
    sampling_from,
)
from ..errors import Z1Error
from ..window import MAX_BUDGET, ShiftedWindow

EXAMPLES = """\
examples:
  z1 chat                                  terminal UI: live reasoning, budget slider, history
  z1 chat --model demo                     tiny offline model, to try the UI without downloading Z1
  z1 chat --budget 512 --answer-tokens 256 think less, answer shorter (the slider starts at 512)
  z1 chat --budget 0                       answer at once, no thinking
  z1 chat --system "Answer in French."     a system prompt for the whole conversation
  z1 chat --resume                         reopen the latest conversation (--resume 12 for #12)
  z1 chat --list                           stored conversations, newest first
  z1 chat --export 12 > chat.md            conversation #12 as Markdown (or --export 12 --out chat.md)
  z1 chat --repair                         move a damaged history aside (kept) and start afresh
  z1 chat --plain                          a plain REPL (also used when output is not a terminal)
  echo "What is 2**10?" | z1 chat --plain --model demo

TUI keys: Enter sends, Shift+Enter or Ctrl+J starts a new line, Esc stops, Ctrl+S answers now,
Ctrl+R regenerates, Ctrl+T shows/hides reasoning, Ctrl+L copies the last code block, Ctrl+N
starts a new chat, Ctrl+O opens the history, F1 lists every key, Ctrl+Q quits. Tab reaches the
budget slider (arrows, PgUp/PgDn, Home/End, or drag it with the mouse).

REPL commands: /budget N, /answer (finish a reply stopped with Ctrl+C), /new, /history [ID],
/export [PATH], /quit. Ctrl+C stops a reply; a second Ctrl+C leaves.

The budget you leave the slider at (or set with /budget) is remembered for the next run.
History: an SQLite file under the XDG data directory ($Z1MLX_HOME overrides); settings:
the XDG config directory. `z1 chat --where` prints both.
"""


def conversation_id(text: str) -> int:
    try:
        return int(text.lstrip("#"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a conversation id (see z1 chat --list), got {text!r}") from None


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="z1 chat",
        description="Chat with Z1 under the Shifted Thinking Window: watch it think, move the budget, get answers.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(parser)
    add_backend_args(parser)
    add_window_args(parser, budget=None, answer_tokens=None, max_budget=MAX_BUDGET)
    add_sampling_args(parser)
    parser.add_argument("--system", default=None, help="system prompt (default: the model's own)")
    parser.add_argument("--plain", action="store_true", help="the plain REPL instead of the terminal UI")
    parser.add_argument(
        "--resume",
        nargs="?",
        type=conversation_id,
        const=-1,
        default=None,
        metavar="ID",
        help="reopen a stored conversation (default: the latest)",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="list stored conversations and exit")
    what.add_argument("--export", type=conversation_id, metavar="ID", help="print a conversation as Markdown and exit")
    what.add_argument("--where", action="store_true", help="print where history and settings live, and exit")
    what.add_argument(
        "--repair",
        action="store_true",
        help="move a damaged history aside (it is kept, renamed) so the next chat starts a fresh one, and exit",
    )
    parser.add_argument("--out", type=Path, default=None, help="with --export: write to this file instead")
    return parser


def list_conversations(history) -> int:
    import time

    entries = history.conversations()
    if not entries:
        print("no conversations yet (z1 chat starts one)", file=sys.stderr)
        return 0
    for info in entries:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.updated))
        print(f"{info.id:>5}  {when}  {info.message_count:>3} msgs  {info.title}")
    return 0


def export(history, conversation: int, out: Path | None) -> int:
    if out is None:
        sys.stdout.write(history.export_markdown(conversation))
    else:
        history.export_to(conversation, out)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def repair_history() -> int:
    from .. import locations
    from .history import repair

    path = locations.history_db()
    aside = repair(path)
    if aside is None:
        print(f"{path}: the chat history reads fine; nothing was moved", file=sys.stderr)
        return 0
    print(f"moved the damaged history to {aside} (kept); the next z1 chat starts a fresh one", file=sys.stderr)
    return 0


def resolve_resume(history, requested: int | None) -> int | None:
    """--resume alone means the latest conversation; an id must exist."""
    if requested is None:
        return None
    if requested == -1:
        latest = history.latest()
        if latest is None:
            raise Z1Error("no conversation to resume yet")
        return latest.id
    history.load(requested)  # one-line error for an unknown id
    return requested


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .. import locations
    from .history import History
    from .settings import load_settings

    if args.where:
        print(f"history   {locations.history_db()}")
        print(f"settings  {locations.settings_file()}")
        print(f"REPL input history  {locations.repl_history_file()}")
        return 0
    if args.out is not None and args.export is None:
        raise Z1Error("--out goes with --export ID")
    if args.repair:
        return repair_history()
    if args.list:  # reading needs neither space nor write access
        return list_conversations(History(read_only=True))
    if args.export is not None:
        return export(History(read_only=True), args.export, args.out)
    history = History()
    resume = resolve_resume(history, args.resume)

    settings = load_settings()
    budget = settings.budget if args.budget is None else args.budget
    answer_tokens = args.answer_tokens or settings.answer_tokens
    sampling = sampling_from(args)
    think = {"hint": hint_from(args), "min_thinking": args.min_thinking, "continue_text": args.continue_text}
    try:
        ShiftedWindow(budget, answer_tokens, **think)
    except ValueError as err:
        raise Z1Error(str(err)) from err
    if args.plain or not sys.stdout.isatty():
        from .conversation import Conversation
        from .repl import run_repl

        engine = load_engine(args)
        conversation = Conversation(
            engine, history, system=args.system, answer_tokens=answer_tokens, sampling=sampling, **think
        )
        if resume is not None:
            conversation.resume(resume)
        return run_repl(conversation, budget)

    from ..tui.app import ChatApp  # deferred: Textual is only needed here

    app = ChatApp(
        loader=lambda: load_engine(args),
        model_label=args.model or "z1-7b",
        history=history,
        budget=budget,
        answer_tokens=answer_tokens,
        sampling=sampling,
        system=args.system,
        resume=resume,
        think=think,
    )
    app.run()
    open_chat = app.conversation
    if open_chat is not None and open_chat.unsaved:
        open_chat.on_storage_problem = lambda text: print(f"z1 chat: {text}", file=sys.stderr)
        if not open_chat.save_pending():
            return app.return_code or 1
    return app.return_code or 0
