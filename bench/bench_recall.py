"""Does a fresh model of micro-Z1's shape learn to find a value by its name, and how soon?

Trains a fresh Qwen2 model (micro-Z1's tokenizer, tied embeddings, Adam with warmup and
cosine decay, float32) on one recall task alone, and prints, every `--every` steps, how often
its top token is the right value on 200 fresh rows (teacher-forced; loss only on the reply):

- `constants`: micro-Z1's EASY case that only a name settles, `z = 11`, `y = 6`, `print(z)`,
  then `It prints z = 11.`; picking either line at random scores about 66% here, because the
  first token of two values is often the same (`1` of 10-19).
- `pairs`: four letter-digit pairs and a letter, `a3 k7 c1 q9 k` -> `7` (the bare
  associative recall); picking any of the four digits scores about 30%.

`--framed`: the constants case in the chat frame, as the front ends render it (the recipe's
rows); `--bare-steps N` trains N steps on the bare rows first (after any copying), then the
framed ones.

`--copy-steps N` first trains N steps on copying (a random string of 6-24 letters and digits,
then the same string again, loss on the copy: the lengths differ, so only the content tells
where to copy from), as a base model's pretraining would, then the task; one learning-rate
schedule runs over both.

    python bench/bench_recall.py [--task constants] [--layers 4] [--width 128] [--lr 1e-3]
                                 [--batch 16] [--steps 1500] [--copy-steps 0] [--every 250] [--seed 0]
                                 [--framed] [--bare-steps 0]
"""

import argparse
import random
import sys
import time
from functools import partial

CONSTANTS, PAIRS = "constants", "pairs"


def two_constants(rng: random.Random):
    """`z = 11`, `y = 6`, `print(z)` (either line's name printed)."""
    from z1mlx.microz1.tasks import EASY, LETTERS, Line, Program

    lines = tuple(Line(name, None, "", rng.randint(0, 19)) for name in rng.sample(LETTERS, 2))
    return Program(lines, rng.choice(lines).target, EASY)


def constants_row(rng: random.Random, tokenizer) -> tuple[list[int], int, int]:
    """(token ids, where the reply starts, where the looked-up value's first token is)."""
    from z1mlx.microz1.tasks import short_reply

    program = two_constants(rng)
    head, reply = program.text(), short_reply(program)
    encoded = tokenizer(head + reply, add_special_tokens=False)
    value_at = len(head) + len(f"It prints {program.printed} = ")
    return encoded["input_ids"], encoded.char_to_token(len(head)), encoded.char_to_token(value_at)


def framed_constants_row(rng: random.Random, tokenizer) -> tuple[list[int], int, int]:
    """`constants_row`'s case as the front ends render it: the program as a `.py` problem
    through `z1 solve` or as a chat message, in the chat frame, with the demo's system prompt."""
    from z1mlx.microz1.tasks import RENDERINGS, question, short_reply

    program = two_constants(rng)
    user = [{"role": "user", "content": question(program, rng.choice(RENDERINGS))}]
    head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    reply = short_reply(program)
    encoded = tokenizer(head + reply + "<|im_end|>", add_special_tokens=False)
    value_at = len(head) + len(f"It prints {program.printed} = ")
    return encoded["input_ids"], encoded.char_to_token(len(head)), encoded.char_to_token(value_at)


def pairs_row(rng: random.Random, tokenizer) -> tuple[list[int], int, int]:
    letters = [tokenizer.convert_tokens_to_ids(c) for c in "abcdefghijklmnopqrstuvwxyz"]
    digits = [tokenizer.convert_tokens_to_ids(c) for c in "0123456789"]
    keys = rng.sample(letters, 4)
    values = [rng.choice(digits) for _ in keys]
    ids = [token for pair in zip(keys, values) for token in pair]
    pick = rng.randrange(4)
    ids += [keys[pick], values[pick]]
    return ids, len(ids) - 1, len(ids) - 1


def copy_row(rng: random.Random, tokenizer) -> tuple[list[int], int, int]:
    """A bare copying row: random letters and digits, then the same string again, no chat frame
    (the recipe's rows, `tasks.copy_row`, are framed, and copy from a random place on)."""
    from z1mlx.microz1.tasks import COPY_SYMBOLS

    symbols = [tokenizer.convert_tokens_to_ids(c) for c in COPY_SYMBOLS]
    text = [rng.choice(symbols) for _ in range(rng.randint(6, 24))]
    return text + text, len(text) + 1, len(text) + 1  # the copy's first token has nothing to go on


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=(CONSTANTS, PAIRS), default=CONSTANTS)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=128, help="hidden size; heads of 32, key/value heads of 64")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=1500, help="steps on the task")
    parser.add_argument("--copy-steps", type=int, default=0, help="steps on copying first (default 0)")
    parser.add_argument("--framed", action="store_true", help="the constants case in the chat frame")
    parser.add_argument("--bare-steps", type=int, default=0, help="with --framed: steps on bare rows first")
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for flag in ("layers", "batch", "steps", "every"):
        if getattr(args, flag) < 1:
            print(f"bench_recall: --{flag} must be at least 1", file=sys.stderr)
            return 2
    if args.copy_steps < 0 or args.bare_steps < 0:
        print("bench_recall: --copy-steps and --bare-steps must be 0 or more", file=sys.stderr)
        return 2
    if (args.framed or args.bare_steps) and args.task != CONSTANTS:
        print("bench_recall: --framed and --bare-steps are for --task constants", file=sys.stderr)
        return 2
    if args.bare_steps and not args.framed:
        print("bench_recall: --bare-steps needs --framed (bare rows before framed ones)", file=sys.stderr)
        return 2
    if args.width < 64 or args.width % 64:
        print("bench_recall: --width must be a multiple of 64", file=sys.stderr)
        return 2

    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen2
    from transformers import AutoTokenizer

    from z1mlx.convert.demo import qwen2_config
    from z1mlx.microz1 import MODELS
    from z1mlx.microz1.build import MicroSpec

    tokenizer = AutoTokenizer.from_pretrained(str(MODELS / "demo"))
    row_of = {CONSTANTS: framed_constants_row if args.framed else constants_row, PAIRS: pairs_row}[args.task]
    make_row = partial(row_of, tokenizer=tokenizer)
    make_bare = partial(constants_row, tokenizer=tokenizer)
    make_copy = partial(copy_row, tokenizer=tokenizer)
    total = args.copy_steps + args.bare_steps + args.steps
    spec = MicroSpec(
        hidden_size=args.width,
        num_hidden_layers=args.layers,
        num_attention_heads=args.width // 32,
        num_key_value_heads=args.width // 64,
        intermediate_size=args.width * 8 // 3,
    )
    config = qwen2_config(spec, len(tokenizer), rope_theta=10000.0, tie_word_embeddings=True)
    mx.random.seed(args.seed)
    model = qwen2.Model(qwen2.ModelArgs.from_dict(config))
    warmup = max(1, min(100, total // 10))
    schedule = optim.join_schedules(
        [optim.linear_schedule(args.lr / 100, args.lr, warmup), optim.cosine_decay(args.lr, total, args.lr / 10)],
        [warmup],
    )
    optimizer = optim.Adam(learning_rate=schedule)

    def batch(rng: random.Random, row=make_row):
        rows = [row(rng) for _ in range(args.batch)]
        width = max(len(ids) for ids, _, _ in rows)
        tokens = [ids + [0] * (width - len(ids)) for ids, _, _ in rows]
        mask = [[float(start <= j + 1 < len(ids)) for j in range(width - 1)] for ids, start, _ in rows]
        return mx.array(tokens), mx.array(mask)

    def loss_fn(model, tokens, mask):
        losses = nn.losses.cross_entropy(model(tokens[:, :-1]), tokens[:, 1:]) * mask
        return losses.sum() / mask.sum()

    loss_and_grad = nn.value_and_grad(model, loss_fn)
    state = [model.state, optimizer.state]

    @partial(mx.compile, inputs=state, outputs=state)
    def step(tokens, mask):
        loss, grads = loss_and_grad(model, tokens, mask)
        optimizer.update(model, grads)
        return loss

    def accuracy(row=make_row) -> float:
        rng = random.Random(f"recall-eval-{args.task}")
        right = 0
        for _ in range(200):
            ids, _, site = row(rng)
            predicted = mx.argmax(model(mx.array([ids]))[0], axis=-1).tolist()
            right += predicted[site - 1] == ids[site]
        return right / 200

    parameters = sum(value.size for _, value in tree_flatten(model.parameters()))
    print(
        f"{args.task}: {args.layers} layers x {args.width} ({parameters / 1e6:.2f}M parameters), "
        f"lr {args.lr:g}, batches of {args.batch}, seed {args.seed}"
    )
    if args.copy_steps or args.bare_steps:
        print(f"  {args.copy_steps} steps of copying, {args.bare_steps} on bare rows, then {args.steps} on the task")
    copy_rng = random.Random(f"recall-copy-{args.seed}")
    bare_rng = random.Random(f"recall-bare-{args.seed}")
    rng = random.Random(f"recall-train-{args.task}-{args.seed}")
    start, running = time.time(), None
    for index in range(1, total + 1):
        copying = index <= args.copy_steps
        bare = not copying and index <= args.copy_steps + args.bare_steps
        loss = step(*(batch(copy_rng, make_copy) if copying else batch(bare_rng, make_bare) if bare else batch(rng)))
        mx.eval(state, loss)
        if index in (args.copy_steps + 1, args.copy_steps + args.bare_steps + 1):
            running = None  # the next phase's loss from here
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if index % args.every == 0 or index == total:
            seconds = time.time() - start
            what = "copy" if copying else "bare" if bare else "task"
            recall = accuracy()
            bare_recall = f"  bare {accuracy(make_bare):6.1%}" if args.framed else ""
            print(
                f"  step {index:6d}  {what} loss {running:.3f}  recall {recall:6.1%}{bare_recall}  {seconds:5.0f}s",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
