"""micro-Z1's lookups inside a trace, by how far back the looked-up line is.

Teacher-forced: each fresh HARD program's prompt and the trained reply go through the model
in one forward pass, and at every chain line `t = s + N, s is V, V + N = R, t is R` the model's
top token at the first digit of V (s's value, looked up) is compared with the right one. Grouped by the
number of lines between the line and the one that assigned s: a model that matches names
does as well at every distance; one that leans on position does well only where the data
mostly put the line (the plain layout: 70% of chain lookups are of the line just above).

    python bench/bench_lookups.py [--model demo] [--count 150] [--seed 7]
"""

import argparse
import collections
import json
import sys


def lookup_sites(program, prompt: str, reply: str):
    """(character offset in prompt + reply, distance in lines) of each chain lookup: the first
    digit of the value after `t = s + N, s is ` in the trace's line for t."""
    from z1mlx.microz1.tasks import lookup_column

    starts = [len(prompt)]
    for text in reply.split("\n"):
        starts.append(starts[-1] + len(text) + 1)
    for index, distance in program.chain_lookups():
        yield starts[index] + lookup_column(program.lines[index]), distance


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="demo, demo-long or a model directory")
    parser.add_argument("--count", type=int, default=150, help="fresh HARD programs")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    import mlx.core as mx

    from z1mlx.engine import Engine
    from z1mlx.microz1.evaluate import messages_for
    from z1mlx.microz1.tasks import HARD, expected_reply, fresh_programs

    engine = Engine.load(args.model)
    tokenizer = engine.tokenizer._tokenizer  # the Hugging Face tokenizer, for character offsets
    hits: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])
    for program in fresh_programs(HARD, args.count, args.seed):
        prompt = tokenizer.apply_chat_template(messages_for(program), add_generation_prompt=True, tokenize=False)
        reply = expected_reply(program)
        encoded = tokenizer(prompt + reply, add_special_tokens=False)
        ids = encoded["input_ids"]
        predicted = mx.argmax(engine.model(mx.array([ids]))[0], axis=-1).tolist()
        for char, distance in lookup_sites(program, prompt, reply):
            token = encoded.char_to_token(char)
            hits[distance][0] += predicted[token - 1] == ids[token]
            hits[distance][1] += 1
    rows = [{"distance": d, "right": r, "lookups": n, "accuracy": r / n} for d, (r, n) in sorted(hits.items())]
    right, total = sum(r["right"] for r in rows), sum(r["lookups"] for r in rows)
    if args.json:
        print(json.dumps({"model": args.model, "count": args.count, "seed": args.seed, "rows": rows}))
        return 0
    print(f"{args.model}: chain lookups on {args.count} fresh HARD programs (seed {args.seed}), teacher-forced")
    for row in rows:
        share = row["lookups"] / total
        print(
            f"  {row['distance']} line(s) back  {row['accuracy']:6.1%}  of {row['lookups']:4d} ({share:.0%} of lookups)"
        )
    print(f"  all              {right / total:6.1%}  of {total:4d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
