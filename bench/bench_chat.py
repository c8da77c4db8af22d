"""Chat benchmarks: what the conversation cache and the TUI cost.

1. Time to first token at turn N (default 10) of one conversation vs turn 1, with the
   conversation's KV cache reused (goal <= 1.5x); the same without reuse, for contrast.
2. Decode tokens/s of a reply streamed through the TUI (headless Textual, real
   rendering) vs the headless engine on the same prompt (goal >= 0.9x).

Models, built on the spot, random, with the end-of-turn logit zeroed so every reply
fills its window: for (1) a 4-bit model with Z1-7B's proportions (an MLP 5.3x the hidden
size), since attention over the history must weigh what it weighs in Z1; for (2) the
demo model's size, whose tokens are cheapest, so the UI's share of the time is as large
as it can be. `--model` takes any model `z1 chat` does, for both (z1-7b on a Mac).

    python bench/bench_chat.py [--model M] [--turns 10] [--repeats 3] [--quick]
"""

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path


def build_model(root: Path, name: str, spec) -> Path:
    from z1mlx.convert.command import convert_checkpoint
    from z1mlx.convert.demo import build_checkpoint
    from z1mlx.convert.source import locate

    source = build_checkpoint(root / f"{name}-hf", spec)
    out = root / name
    quantize = spec.hidden_size >= 512  # the wide model as Z1 ships: 4-bit (float32 scales on CPU)
    convert_checkpoint(
        locate(str(source)),
        out,
        quantize=quantize,
        q_bits=4,
        q_group_size=64,
        dtype="float32",
        verify=False,
        log=lambda m: None,
    )
    return out


def ttft_model_spec():
    """Z1-7B's proportions, narrowed: MLP 5.3x the hidden size and 128-wide heads, so
    attention over a long history costs what it costs Z1 relative to the rest."""
    from z1mlx.convert.demo import TinySpec

    return TinySpec(
        hidden_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=1,
        intermediate_size=2816,
        eos_boost=0.0,
        weight_std=0.05,
    )


def decode_model_spec():
    """The demo model's size, never ending its turn: the cheapest tokens, the UI's worst case."""
    from dataclasses import replace

    from z1mlx.convert.demo import DEMO_SPEC

    return replace(DEMO_SPEC, eos_boost=0.0)


def question(turn: int) -> str:
    return f"Question {turn}: write a Python function that returns the {turn}th prime, and explain it."


def ttft_per_turn(engine, turns: int, budget: int, answer: int):
    """Time to first token of each turn of one conversation (cache reused), and the
    same at the last turn with a fresh cache (the whole conversation prefilled)."""
    from z1mlx.chat.conversation import Conversation
    from z1mlx.window import WindowControl

    chat = Conversation(engine, answer_tokens=answer)
    times = []
    for turn in range(1, turns + 1):
        for _ in chat.send(question(turn), WindowControl(budget)):
            pass
        times.append(chat.last_result.ttft_s)
    return times, chat


def ttft_without_reuse(chat, budget: int) -> float:
    from z1mlx.window import WindowControl

    chat.forget_cache()
    for _ in chat.regenerate(WindowControl(budget)):
        pass
    return chat.last_result.ttft_s


def headless_decode(engine, prompt: list[int], budget: int, answer: int) -> float:
    from z1mlx.events import Done
    from z1mlx.window import ShiftedWindow

    for event in engine.generate(prompt, ShiftedWindow(budget=budget, answer_tokens=answer)):
        if isinstance(event, Done):
            return event.result.generation_tps


def tui_decode(engine, text: str, budget: int, answer: int, store: Path) -> float:
    """One reply sent through the real app, rendered by Textual's headless driver."""
    from z1mlx.chat.history import History
    from z1mlx.tui.app import ChatApp
    from z1mlx.tui.prompt import PromptInput

    async def run() -> float:
        app = ChatApp(engine, history=History(store), budget=budget, answer_tokens=answer)
        async with app.run_test(size=(120, 40)) as pilot:
            prompt = app.query_one(PromptInput)
            prompt.text = text
            await pilot.press("enter")
            while app.busy or app.conversation.last_result is None:
                await asyncio.sleep(0.05)  # only the app's own work runs meanwhile
            return app.conversation.last_result.generation_tps

    return asyncio.run(run())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="any --model of z1 chat (default: built random models)")
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--budget", type=int, default=128, help="thinking budget per turn in the TTFT run")
    parser.add_argument("--answer-tokens", type=int, default=64)
    parser.add_argument("--decode-tokens", type=int, default=1500, help="reply length in the decode run")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and tokens")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.decode_tokens = 1, 600

    from z1mlx.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        engine = Engine.load(args.model or str(build_model(tmp, "chat-ttft", ttft_model_spec())))
        ttft_per_turn(engine, 2, 16, 8)  # warm-up: kernels, allocator
        print(
            f"1. time to first token by turn: {engine.label}\n"
            f"   {args.turns} turns, budget {args.budget}, answer {args.answer_tokens}; median of {args.repeats}"
        )
        runs = [ttft_per_turn(engine, args.turns, args.budget, args.answer_tokens) for _ in range(args.repeats)]
        by_turn = [statistics.median(run[0][i] for run in runs) for i in range(args.turns)]
        context = runs[-1][1].last_result.prompt_tokens
        print("   by turn (ms): " + " ".join(f"{t * 1000:.0f}" for t in by_turn))
        print(
            f"   turn 1 {by_turn[0] * 1000:.1f} ms, turn {args.turns} {by_turn[-1] * 1000:.1f} ms "
            f"({context} prompt tokens): ratio {by_turn[-1] / by_turn[0]:.2f}   (goal <= 1.5)"
        )
        fresh = ttft_without_reuse(runs[-1][1], args.budget)
        print(
            f"   without the cache, turn {args.turns} would take {fresh * 1000:.1f} ms (ratio {fresh / by_turn[0]:.2f})"
        )

        if not args.model:
            engine = Engine.load(str(build_model(tmp, "chat-decode", decode_model_spec())))
        headless_decode(engine, engine.chat_prompt([{"role": "user", "content": "warm up"}]), 32, 8)
        budget = args.decode_tokens - 100
        text = question(1)
        prompt = engine.chat_prompt([{"role": "user", "content": text}])
        print(
            f"\n2. decode tokens/s: {engine.label}\n   {budget} thinking + 100 answer tokens; median of {args.repeats}"
        )
        headless, tui = [], []
        for i in range(args.repeats):
            headless.append(headless_decode(engine, prompt, budget, 100))
            tui.append(tui_decode(engine, text, budget, 100, tmp / f"history-{i}.sqlite3"))
        h, t = statistics.median(headless), statistics.median(tui)
        print(f"   headless engine {h:8.1f} tok/s")
        print(f"   TUI streaming   {t:8.1f} tok/s")
        print(f"   ratio {t / h:.2f}   (goal >= 0.9)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
