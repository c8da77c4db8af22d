"""Why `z1 convert --dtype auto` picks float32 on CPU-only hosts: decode speed of the same
4-bit model with bfloat16, float16 and float32 quantization scales, measured in one run.

    python bench/bench_scales.py [--tokens 64]
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from mlx_lm import stream_generate

    from z1mlx.convert.command import convert_checkpoint
    from z1mlx.convert.demo import TinySpec, build_checkpoint
    from z1mlx.convert.source import locate
    from z1mlx.engine import Engine

    spec = TinySpec(
        hidden_size=512,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=2,
        intermediate_size=1536,
        eos_boost=0.0,
        weight_std=0.05,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        source = locate(str(build_checkpoint(Path(tmp) / "hf", spec)))
        for dtype in ("float32", "float16", "bfloat16"):
            out = Path(tmp) / f"q4-{dtype}"
            convert_checkpoint(source, out, q_bits=4, q_group_size=64, dtype=dtype, verify=False, log=lambda m: None)
            engine = Engine.load(str(out))
            prompt = engine.chat_prompt([{"role": "user", "content": "Count to ten."}])
            speeds = []
            for _ in range(args.repeats + 1):  # the first run warms the kernels up
                *_, last = stream_generate(engine.model, engine.tokenizer, prompt, max_tokens=args.tokens)
                speeds.append(last.generation_tps)
            rows.append((dtype, statistics.median(speeds[1:])))
    base = rows[0][1]
    print(f"4-bit random Qwen2 (hidden 512, 8 layers), decode of {args.tokens} tokens; {sys.platform}")
    for dtype, tps in rows:
        print(f"  scales {dtype:<9} {tps:8.1f} tok/s   {tps / base:5.2f}x of float32")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
