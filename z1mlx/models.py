"""`z1 models`: what is in the store, where it lives, and removing entries."""

import argparse
import sys

from . import locations, store
from .cliutil import ArgumentParser

EXAMPLES = """\
examples:
  z1 models               list the store: name, source, bits, size, created
  z1 models --path        print where the store lives
  z1 models rm demo       remove a model from the store
"""


def human_size(size: int) -> str:
    n = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def table_rows() -> list[list[str]]:
    from .fsutil import dir_size

    rows = []
    for model in store.list_models():
        m = model.manifest
        bits = (f"{m.bits}-bit" if m.bits else m.dtype) if m else "?"
        source = (m.source + (" (random weights)" if m.random_weights else "")) if m else "?"
        created = m.created[:16].replace("T", " ") if m else ""
        rows.append([model.name, source, bits, human_size(dir_size(model.path)), created])
    return rows


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="z1 models",
        description="List, locate and remove models in the z1 store.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--path", action="store_true", help="print the store location and exit")
    sub = parser.add_subparsers(dest="action")
    sub.add_parser("list", help="list models (the default)")
    rm = sub.add_parser("rm", help="remove a model")
    rm.add_argument("name")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.path:
        print(locations.models_dir())
        return 0
    if args.action == "rm":
        path = store.remove(args.name)
        print(f"removed {args.name} ({path})", file=sys.stderr)
        return 0
    rows = table_rows()
    if not rows:
        print(f"no models in {locations.models_dir()} (try: z1 solve problem.py --model demo)", file=sys.stderr)
        return 0
    header = ["NAME", "SOURCE", "BITS", "SIZE", "CREATED"]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0
