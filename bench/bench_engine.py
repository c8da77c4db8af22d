"""Engine benchmarks against mlx-lm, measured in the same process on the same model.

1. decode tokens/s: `Engine.generate` vs `mlx_lm.stream_generate` (goal >= 0.97)
2. a window-hit run (budget B, hint, answer) vs plain generation of as many tokens (goal <= 1.03)
3. cap-to-first-answer-token latency: ours (prefill the hint only) vs the reference's
   re-tokenize-and-re-send of prompt + partial text + hint, at B = 512 and 2048

Model: a random Qwen2 (hidden 512, 8 layers) converted to 4-bit with float32 scales,
whose end-of-turn logit is zeroed so every run has the same length.

    python bench/bench_engine.py [--quick]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def build_model(root: Path) -> Path:
    from z1mlx.convert.command import convert_checkpoint
    from z1mlx.convert.demo import TinySpec, build_checkpoint
    from z1mlx.convert.source import locate

    spec = TinySpec(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=1536,
        eos_boost=0.0,
        weight_std=0.05,
    )
    source = build_checkpoint(root / "bench-hf", spec)
    out = root / "bench-4bit"
    convert_checkpoint(
        locate(str(source)), out, q_bits=4, q_group_size=64, dtype="float32", verify=False, log=lambda m: None
    )
    return out


def mlx_lm_decode(engine, prompt, n):
    from mlx_lm import stream_generate

    *_, last = stream_generate(engine.model, engine.tokenizer, prompt, max_tokens=n)
    return last.generation_tps


def engine_decode(engine, prompt, n):
    from z1mlx.events import Done
    from z1mlx.window import ShiftedWindow

    for event in engine.generate(prompt, ShiftedWindow(budget=n, answer_tokens=1)):
        if isinstance(event, Done):
            # Compare phase-1 decode only: same number of tokens as mlx-lm.
            return event.result


def timed_engine_run(engine, prompt, budget, answer):
    from z1mlx.events import Done, Shift, TextDelta
    from z1mlx.window import ShiftedWindow

    start = time.perf_counter()
    shifted_at = first_answer_at = None
    for event in engine.generate(prompt, ShiftedWindow(budget=budget, answer_tokens=answer)):
        if isinstance(event, Shift):
            shifted_at = time.perf_counter()
        elif isinstance(event, TextDelta) and event.phase == "answer" and first_answer_at is None:
            first_answer_at = time.perf_counter()
        elif isinstance(event, Done):
            result = event.result
    return time.perf_counter() - start, first_answer_at - shifted_at, result


def timed_plain_run(engine, prompt, n):
    from mlx_lm import stream_generate

    start = time.perf_counter()
    for _ in stream_generate(engine.model, engine.tokenizer, prompt, max_tokens=n):
        pass
    return time.perf_counter() - start


def reference_shift_latency(engine, prompt_text, thinking_text, hint):
    """The reference's phase 2: re-tokenize everything and prefill it in a fresh cache."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    start = time.perf_counter()
    ids = engine.encode(prompt_text + thinking_text + hint)
    for _ in generate_step(mx.array(ids), engine.model, max_tokens=1):
        break
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats (a smoke run)")
    args = parser.parse_args(argv)
    decode_tokens = 128 if args.quick else 512
    repeats = 2 if args.quick else 5
    budgets = (128, 512) if args.quick else (512, 2048)

    from z1mlx.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        engine = Engine.load(str(build_model(Path(tmp))))
        messages = [{"role": "user", "content": "Write a function that returns the n-th prime number."}]
        prompt_text = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        prompt = engine.chat_prompt(messages)
        # Warm up kernels (the CPU JIT) before timing anything.
        engine_decode(engine, prompt, 32)
        mlx_lm_decode(engine, prompt, 32)

        ours, theirs = [], []
        for _ in range(repeats):
            ours.append(engine_decode(engine, prompt, decode_tokens).generation_tps)
            theirs.append(mlx_lm_decode(engine, prompt, decode_tokens))
        decode_ratio = statistics.median(ours) / statistics.median(theirs)

        budget, answer = decode_tokens // 2, decode_tokens // 2
        hit_times, plain_times = [], []
        for _ in range(repeats):
            hit_times.append(timed_engine_run(engine, prompt, budget, answer)[0])
            plain_times.append(timed_plain_run(engine, prompt, budget + answer + 1))
        hit_ratio = statistics.median(hit_times) / statistics.median(plain_times)

        latency_rows = []
        for b in budgets:
            ours_latency, refs = [], []
            for _ in range(max(1, repeats // 2)):
                _, latency, result = timed_engine_run(engine, prompt, b, 2)
                ours_latency.append(latency)
                refs.append(reference_shift_latency(engine, prompt_text, result.thinking_text, result.hint))
            latency_rows.append((b, statistics.median(ours_latency), statistics.median(refs)))

    print(f"model: random Qwen2 hidden 512, 8 layers, 4-bit (float32 scales); {sys.platform}")
    print(f"{'benchmark':<52} {'z1':>10} {'mlx-lm/ref':>11} {'ratio':>7}  goal")
    print(
        f"{'1. decode tokens/s (' + str(decode_tokens) + ' tokens)':<52} {statistics.median(ours):>10.1f} "
        f"{statistics.median(theirs):>11.1f} {decode_ratio:>7.3f}  >= 0.97"
    )
    print(
        f"{f'2. window hit ({budget}+hint+{answer}) vs plain, seconds':<52} {statistics.median(hit_times):>10.3f} "
        f"{statistics.median(plain_times):>11.3f} {hit_ratio:>7.3f}  <= 1.03"
    )
    for b, ours_s, ref_s in latency_rows:
        print(
            f"{f'3. cap -> first answer token at B={b}, seconds':<52} {ours_s:>10.4f} {ref_s:>11.4f} "
            f"{ref_s / ours_s:>6.1f}x  faster"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
