"""micro-Z1's lookups inside a trace, by how far back the looked-up line is.

Teacher-forced: each fresh HARD program's prompt and the trained reply go through the model
in one forward pass, and at every chain lookup the model's top token is compared with the
right one. In an in-order trace the lookup is the first digit of V (s's value) in
`t = s + N = V + N = R`, in a named one of V in `t = s + N, s = V, ...`; in a goal trace,
which evaluates each value from the line above, it is the backward copy: the first token
after `s = ` on s's line, copied from the program line that assigns s. Grouped by the
number of program lines between t's line and s's: a model that matches names does as well
at every distance; one that leans on position does well only where the data mostly put the
line (the plain layout: 70% of chain lookups are of the line just above). A wrong lookup
that gives what the line above t's holds instead (its value, or its expression's first
token) is counted apart ("took the line above's"): that is recency standing in for the name.

    python bench/bench_lookups.py [--model demo] [--count 150] [--seed 7]
"""

import argparse
import collections
import json
import sys


def lookup_sites(program, prompt: str, reply: str, trace: str):
    """(character offset in prompt + reply, distance in lines, what the line above holds instead)
    of each chain lookup: in order, the first digit of the value after `t = s + N = ` in the
    trace's line for t; named, the first digit after `t = s + N, s = `; goal, the first token
    after `s = ` in the backward copy of s's line."""
    from z1mlx.microz1.tasks import IN_ORDER, NAMED

    starts = [len(prompt)]
    for text in reply.split("\n"):
        starts.append(starts[-1] + len(text) + 1)
    values = program.values()
    chain = program.chain()
    for index, distance in program.chain_lookups():
        above = program.lines[index - 1]
        if trace == IN_ORDER:
            yield starts[index] + len(f"{program.lines[index].text()} = "), distance, str(values[above.target])
            continue
        source = program.lines[index].source
        if trace == NAMED:  # `t = s + N, s = V, ...`: V, after the source's name
            site = starts[index] + len(f"{program.lines[index].text()}, {source} = ")
            yield site, distance, str(values[above.target])
            continue
        decoy = above.text().split(" = ", 1)[1]  # the expression of the line above t's
        yield starts[chain.index(source)] + len(f"{source} = "), distance, decoy


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, demo-long or a model directory")
    parser.add_argument("--count", type=int, default=150, help="fresh HARD programs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import mlx.core as mx

    from z1mlx.engine import Engine
    from z1mlx.microz1 import reply_style
    from z1mlx.microz1.evaluate import messages_for
    from z1mlx.microz1.tasks import HARD, SCAN, expected_reply, fresh_programs
    from z1mlx.store import resolve_model

    recheck, trace = reply_style(resolve_model(args.model))
    if trace == SCAN:
        print(f"bench_lookups: {args.model} writes scan traces, which look nothing up by name", file=sys.stderr)
        return 2
    engine = Engine.load(args.model)
    tokenizer = engine.tokenizer._tokenizer  # the Hugging Face tokenizer, for character offsets

    def ids_of(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    hits: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0, 0])  # right, lookups, took the line above's
    for program in fresh_programs(HARD, args.count, args.seed):
        prompt = tokenizer.apply_chat_template(messages_for(program), add_generation_prompt=True, tokenize=False)
        reply = expected_reply(program, recheck, trace)
        encoded = tokenizer(prompt + reply, add_special_tokens=False)
        ids = encoded["input_ids"]
        predicted = mx.argmax(engine.model(mx.array([ids]))[0], axis=-1).tolist()
        for char, distance, above in lookup_sites(program, prompt, reply, trace):
            token = encoded.char_to_token(char)
            right = predicted[token - 1] == ids[token]
            hits[distance][0] += right
            hits[distance][1] += 1
            hits[distance][2] += distance > 1 and not right and predicted[token - 1] == ids_of(above)[0]
    rows = [
        {"distance": d, "right": r, "lookups": n, "accuracy": r / n, "took_line_above": a}
        for d, (r, n, a) in sorted(hits.items())
    ]
    right, total = sum(r["right"] for r in rows), sum(r["lookups"] for r in rows)
    if args.json:
        print(json.dumps({"model": args.model, "trace": trace, "count": args.count, "seed": args.seed, "rows": rows}))
        return 0
    print(
        f"{args.model}: chain lookups on {args.count} fresh HARD programs (seed {args.seed}), {trace} trace, "
        "teacher-forced"
    )
    for row in rows:
        share = row["lookups"] / total
        wrong = row["lookups"] - row["right"]
        above = f"; {row['took_line_above']} of {wrong} wrong took the line above's" if row["distance"] > 1 else ""
        print(
            f"  {row['distance']} line(s) back  {row['accuracy']:6.1%}  of {row['lookups']:4d} ({share:.0%} of lookups)"
            f"{above}"
        )
    print(f"  all              {right / total:6.1%}  of {total:4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
