"""micro-Z1 on EASY programs, by shape: where only the variable's name tells which line is meant.

Runs the model under the window on `bench_demo`'s fresh EASY programs (same seed) and splits
them by shape: one line; two lines where the second reads the first (`b = a + 3`), so the
printed variable's line can be told by its form alone (the constant or the expression); and
two constants (`z = 11`, `y = 6`, `print(z)`), where only the name in `print` tells which line
to copy. A model that finds a line by its name does as well on the last shape as on the others;
one that does not is right about half the time there.

    python bench/bench_easy.py [--model demo] [--count 200] [--seed 0]
"""

import argparse
import collections
import json
import sys

ONE, READS, CONSTANTS = "one line", "second line reads the first", "two constants"


def shape(program) -> str:
    if len(program.lines) == 1:
        return ONE
    return READS if program.lines[1].source is not None else CONSTANTS


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, demo-long or a model directory")
    parser.add_argument("--count", type=int, default=200, help="fresh EASY programs")
    parser.add_argument("--seed", type=int, default=0, help="bench_demo's seed by default")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from z1mlx.engine import Engine
    from z1mlx.errors import Z1Error
    from z1mlx.microz1 import reply_style
    from z1mlx.microz1.evaluate import FULL_BUDGET, run_one
    from z1mlx.microz1.tasks import EASY, fresh_programs
    from z1mlx.store import resolve_model

    try:
        recheck, trace = reply_style(resolve_model(args.model))
        engine = Engine.load(args.model)
    except Z1Error as error:
        print(f"bench_easy: {error}", file=sys.stderr)
        return 2
    counts: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])  # right, programs
    for program in fresh_programs(EASY, args.count, args.seed):
        outcome = run_one(engine, program, FULL_BUDGET, recheck=recheck, trace=trace)
        counts[shape(program)][0] += outcome.correct
        counts[shape(program)][1] += 1
    rows = [
        {"shape": name, "right": counts[name][0], "programs": counts[name][1]}
        for name in (ONE, READS, CONSTANTS)
        if counts[name][1]
    ]
    if args.json:
        print(json.dumps({"model": args.model, "count": args.count, "seed": args.seed, "rows": rows}))
        return 0
    print(f"{args.model}: {args.count} fresh EASY programs (seed {args.seed}), by shape")
    for row in rows:
        print(f"  {row['shape']:<28} {row['right'] / row['programs']:6.1%}  ({row['right']} of {row['programs']})")
    right = sum(row["right"] for row in rows)
    print(f"  {'all':<28} {right / args.count:6.1%}  ({right} of {args.count})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
