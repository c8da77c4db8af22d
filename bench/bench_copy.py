"""Does a model copy by content? The check for the recipe's copying phase (`--copy-steps`).

Teacher-forced, on 100 fresh strings of 3-12 distinct letters each followed by a digit
(`k3b7q0...`, the recipe's copying symbols), two ways:

- `framed`: the recipe's own row, the string as the chat message and the reply the same
  string from a random place on; every reply token after the first (a guess) is scored.
- `bare`: the string twice in a row, no chat frame, no marker between; every token of the
  second copy after its first is scored. Counting positions from the frame's markers does
  not work here: only matching the token just written in the first copy does (an induction
  step, what a lookup by name rests on).

A model that copies by content scores near 100% both ways; one that learned a copy anchored on
the chat frame scores well framed and low bare (chance is under 10%).

    python bench/bench_copy.py [--model DIR] [--count 100] [--seed 3]
"""

import argparse
import json
import random
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo", help="a model name or directory")
    parser.add_argument("--count", type=int, default=100, help="fresh strings")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.count < 1:
        print("bench_copy: --count must be at least 1", file=sys.stderr)
        return 2

    import mlx.core as mx

    from z1mlx.engine import Engine
    from z1mlx.errors import Z1Error
    from z1mlx.microz1.tasks import copy_row

    try:
        engine = Engine.load(args.model)
    except Z1Error as error:
        print(f"bench_copy: {error}", file=sys.stderr)
        return 2
    tokenizer = engine.tokenizer._tokenizer  # the Hugging Face tokenizer, for character offsets

    def top(ids: list[int]) -> list[int]:
        return mx.argmax(engine.model(mx.array([ids]))[0], axis=-1).tolist()

    rng = random.Random(f"copy-check-{args.seed}")
    scores = {"framed": [0, 0], "bare": [0, 0]}
    for _ in range(args.count):
        row = copy_row(rng)
        text, reply = row["question"], row["response"]
        messages = [{"role": "user", "content": text}]
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        encoded = tokenizer(prompt + reply, add_special_tokens=False)
        ids, first = encoded["input_ids"], encoded.char_to_token(len(prompt))
        predicted = top(ids)
        for j in range(first + 1, len(ids)):
            scores["framed"][0] += predicted[j - 1] == ids[j]
            scores["framed"][1] += 1
        once = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = once + once
        predicted = top(ids)
        for j in range(len(once) + 1, len(ids)):
            scores["bare"][0] += predicted[j - 1] == ids[j]
            scores["bare"][1] += 1
    rows = [
        {"form": form, "right": right, "tokens": total, "accuracy": right / total}
        for form, (right, total) in scores.items()
    ]
    if args.json:
        print(json.dumps({"model": args.model, "count": args.count, "seed": args.seed, "rows": rows}))
        return 0
    print(f"{args.model}: {args.count} fresh strings (seed {args.seed}), tokens copied right, teacher-forced")
    for row in rows:
        print(f"  {row['form']:<8} {100 * row['accuracy']:5.1f}%  ({row['right']} of {row['tokens']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
