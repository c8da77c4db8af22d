"""`z1 eval`'s one-pass sweep against separate runs, measured in the same process on the same model.

For budgets 256, 512, 1024 and 2048 on a model that thinks past 2048 (a random Qwen2, hidden 512,
8 layers, 4-bit with float32 scales, end-of-turn logit zeroed), on a few prompts:
- separate: one `Engine.generate` per budget (what running `z1 solve --budget B` four times costs);
- sweep: `Engine.sweep` (one phase 1 of 2048, then each smaller budget answers from the cut cache).
Both give the same tokens (checked here); the goal is a sweep >= 1.6x faster.

    python bench/bench_sweep.py [--prompts 3] [--budgets 256,512,1024,2048] [--answer-tokens 32]
"""

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_engine import build_model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=3)
    parser.add_argument("--budgets", default="256,512,1024,2048")
    parser.add_argument("--answer-tokens", type=int, default=32)
    args = parser.parse_args(argv)
    budgets = sorted(int(b) for b in args.budgets.split(","))

    from z1mlx.engine import Engine
    from z1mlx.events import Done
    from z1mlx.window import ShiftedWindow

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine.load(str(build_model(Path(tmp))))
        window = ShiftedWindow(budget=max(budgets), answer_tokens=args.answer_tokens)
        prompts = [
            engine.chat_prompt([{"role": "user", "content": f"Problem {i}: sum the digits"}])
            for i in range(args.prompts)
        ]
        engine.sweep(prompts[0], window, [8, 16])  # warm up
        separate_s = sweep_s = 0.0
        for prompt in prompts:
            started = time.perf_counter()
            separate = {}
            for budget in budgets:
                for event in engine.generate(prompt, replace(window, budget=budget)):
                    if isinstance(event, Done):
                        separate[budget] = event.result
            separate_s += time.perf_counter() - started
            started = time.perf_counter()
            swept, one_pass = engine.sweep(prompt, window, budgets)
            sweep_s += time.perf_counter() - started
            assert one_pass
            for budget in budgets:
                a, b = separate[budget], swept[budget]
                assert (a.thinking_token_ids, a.answer_token_ids) == (b.thinking_token_ids, b.answer_token_ids)
                assert a.window_hit and a.thinking_tokens == budget
    tokens_separate = sum(budgets) + len(budgets) * args.answer_tokens
    tokens_sweep = max(budgets) + len(budgets) * args.answer_tokens
    print(f"budgets {budgets}, answer cap {args.answer_tokens}, {args.prompts} prompts, same tokens: yes")
    print(f"separate runs: {separate_s:.2f} s ({tokens_separate} tokens generated per prompt)")
    print(f"one-pass sweep: {sweep_s:.2f} s ({tokens_sweep} tokens generated per prompt)")
    ratio = separate_s / sweep_s
    print(f"sweep speedup: {ratio:.2f}x (token ratio {tokens_separate / tokens_sweep:.2f}x; goal >= 1.6x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
