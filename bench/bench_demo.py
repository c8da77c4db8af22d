"""micro-Z1's figures on fresh programs (seeds never used in training), under the window.

    python bench/bench_demo.py [--count 200] [--write]

For `demo` (mixed short/long training) and `demo-long` (its long-only twin): EASY and HARD
accuracy at a budget that covers the full trace, mean thinking tokens, HARD accuracy
against the budget (0, 8, 16, 32, 64, full) with the share of shifted replies that still
gave a number, and the twin's thinking tokens over the mixed easy+hard set as a ratio to
the mixed model's (the paper's "same accuracy with ~30% of the thinking tokens", at micro
scale). Every figure is set against its goal. Wrong replies are broken down by where they first
left the trained reply: a program line copied wrong, a variable's value looked up wrong, a
sum or difference wrong, or other. `--write` stores the figures next to the
shipped models (`z1mlx/microz1/models/figures.json`), which the tests check the shipped
models against.
"""

import argparse
import json
import sys
import time
from pathlib import Path

GOALS = {
    "easy_accuracy": 0.95,
    "easy_thinking_max": 12,
    "hard_accuracy": 0.85,
    "adaptive_ratio": 4.0,
    "twin_gap_points": 5.0,
    "twin_token_ratio": 2.0,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200, help="fresh programs of each kind (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="store the figures in the package's figures.json")
    args = parser.parse_args(argv)

    from z1mlx.engine import Engine
    from z1mlx.microz1 import MODELS, reply_style
    from z1mlx.microz1.evaluate import BUDGETS, FULL_BUDGET, evaluate

    figures: dict = {"count": args.count, "seed": args.seed, "budgets": list(BUDGETS), "models": {}}
    started = time.perf_counter()
    for name in ("demo", "demo-long"):
        engine = Engine.load(name)
        recheck, trace = reply_style(MODELS / name)  # wrong replies are diagnosed against the model's own style
        easy = evaluate(engine, "easy", args.count, (FULL_BUDGET,), seed=args.seed, recheck=recheck, trace=trace)[0]
        hard = evaluate(engine, "hard", args.count, BUDGETS, seed=args.seed, recheck=recheck, trace=trace)
        figures["models"][name] = {"easy": easy.as_dict(), "hard": [s.as_dict() for s in hard]}
    elapsed = time.perf_counter() - started

    mixed, twin = figures["models"]["demo"], figures["models"]["demo-long"]
    m_easy, m_hard = mixed["easy"], mixed["hard"][-1]
    t_easy, t_hard = twin["easy"], twin["hard"][-1]
    adaptive = m_hard["mean_thinking_tokens"] / max(m_easy["mean_thinking_tokens"], 1e-9)
    mixed_tokens = (m_easy["mean_thinking_tokens"] + m_hard["mean_thinking_tokens"]) / 2
    twin_tokens = (t_easy["mean_thinking_tokens"] + t_hard["mean_thinking_tokens"]) / 2
    gap = 100 * (m_hard["accuracy"] - t_hard["accuracy"])
    figures["summary"] = {
        "easy_accuracy": m_easy["accuracy"],
        "easy_thinking": m_easy["mean_thinking_tokens"],
        "hard_accuracy": m_hard["accuracy"],
        "hard_thinking": m_hard["mean_thinking_tokens"],
        "adaptive_ratio": adaptive,
        "twin_hard_accuracy": t_hard["accuracy"],
        "twin_gap_points": gap,
        "twin_token_ratio": twin_tokens / mixed_tokens,
        "answered_after_hint": min(
            (s["answered_after_hint"] for s in mixed["hard"] if s["answered_after_hint"] is not None), default=None
        ),
    }
    s = figures["summary"]

    def verdict(ok: bool) -> str:
        return "meets the goal" if ok else "MISSES the goal"

    print(f"micro-Z1 on {args.count} fresh programs of each kind (seed {args.seed}), greedy, {elapsed:.0f}s")
    rows = [
        ("EASY accuracy (full budget)", f"{s['easy_accuracy']:.1%}", ">= 95%", s["easy_accuracy"] >= 0.95),
        ("EASY mean thinking tokens", f"{s['easy_thinking']:.1f}", "<= 12", s["easy_thinking"] <= 12),
        ("HARD accuracy (full budget)", f"{s['hard_accuracy']:.1%}", ">= 85%", s["hard_accuracy"] >= 0.85),
        ("adaptive length HARD/EASY tokens", f"{adaptive:.1f}x", ">= 4x", adaptive >= 4),
        ("twin HARD accuracy gap", f"{gap:+.1f} points", "<= 5", gap <= 5),
        (
            "twin/mixed thinking tokens (easy+hard)",
            f"{s['twin_token_ratio']:.2f}x",
            ">= 2x",
            s["twin_token_ratio"] >= 2,
        ),
    ]
    for label, value, goal, ok in rows:
        print(f"  {label:<40}{value:>14}   goal {goal:<8} {verdict(ok)}")
    for name in ("demo", "demo-long"):
        print(f"{name}: HARD accuracy by budget (thinking tokens; shifted replies that gave a number)")
        for row in figures["models"][name]["hard"]:
            answered = row["answered_after_hint"]
            after = f"{answered:.0%} of {row['window_hits']}" if answered is not None else "no shift"
            budget = "full" if row["budget"] == FULL_BUDGET else row["budget"]
            print(
                f"  budget {budget!s:>5}: {row['accuracy']:6.1%}  ({row['mean_thinking_tokens']:.1f} tokens; {after})"
            )
        easy = figures["models"][name]["easy"]
        print(f"  EASY: {easy['accuracy']:.1%} ({easy['mean_thinking_tokens']:.1f} tokens)")
        for kind, row in (("EASY", easy), ("HARD", figures["models"][name]["hard"][-1])):
            errors = row["errors"]
            if sum(errors.values()):
                where = ", ".join(f"{k} {v}" for k, v in errors.items() if v)
                print(f"  {kind} wrong replies by where they first went wrong: {where}")
    rising = [r["accuracy"] for r in mixed["hard"]]
    print(f"HARD accuracy rises with the budget: {all(b >= a - 0.02 for a, b in zip(rising, rising[1:]))}")
    if args.write:
        path = Path(MODELS) / "figures.json"
        path.write_text(json.dumps(figures, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
